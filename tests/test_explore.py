"""Exploration: the ConceptEnv step semantics, the explore() budget and query log, and PPO learning.

Everything here runs on SyntheticTask (a model with planted failure cells and a known answer),
so no model under test is trained and the expected outcomes can be computed by hand.
"""

from __future__ import annotations

import inspect

import numpy as np
import polars as pl
import pytest

from failfade.concepts import Axis, ConceptSpace
from failfade.explore.env import ConceptEnv
from failfade.explore.search import explore
from failfade.landscape import cell_table
from failfade.puffer import make_native
from failfade.tasks.synthetic import SyntheticTask


class SpyTask(SyntheticTask):
    """A SyntheticTask that records every batched score() call."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def score(self, input_ids, cells):
        self.calls.append((np.array(input_ids, copy=True), np.array(cells, copy=True)))
        return super().score(input_ids, cells)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py


ENV_HAS_BONUS_KINDS = "bonus" in inspect.signature(ConceptEnv.__init__).parameters


def make_env(task, num_agents=8, seed=3, novelty_coef=0.0, **kw):
    """The env as exploration builds it: natively vectorized through failfade.puffer."""
    if novelty_coef and ENV_HAS_BONUS_KINDS:
        kw.setdefault("bonus", "count")  # the documented count-based bonus novelty_coef / sqrt(visits)
    return make_native(ConceptEnv, task=task, num_agents=num_agents, seed=seed, novelty_coef=novelty_coef, **kw)


# --- env step semantics ----------------------------------------------------------------------------


def test_spaces_follow_the_task():
    task = SyntheticTask(shape=(2, 3, 4), obs_dim=11, seed=0)
    env = make_env(task, num_agents=6)
    assert env.single_observation_space.shape == (11,)
    assert env.single_observation_space.dtype == np.float32
    assert env.single_action_space.n == 24  # one action per cell of the 2x3x4 grid
    assert env.num_agents == 6
    assert env.observations.shape == (6, 11)
    assert env.rewards.shape == (6,)
    assert env.terminals.shape == (6,)
    assert env.truncations.shape == (6,)


def test_reset_writes_observations_in_place():
    task = SyntheticTask(seed=0)
    env = make_env(task, num_agents=8)
    env.observations[:] = np.nan
    obs, _ = env.reset(seed=5)
    assert np.shares_memory(obs, env.observations)
    ids = env.input_ids.copy()
    assert ids.shape == (8,) and ((ids >= 0) & (ids < task.n_inputs)).all()
    np.testing.assert_array_equal(env.observations, task.observations[ids])
    # the same seed draws the same inputs; another seed other inputs
    env.reset(seed=5)
    np.testing.assert_array_equal(env.input_ids, ids)
    env.reset(seed=6)
    assert not np.array_equal(env.input_ids, ids)


def test_step_scores_num_agents_pairs_in_one_call():
    task = SpyTask(seed=0)
    env = make_env(task, num_agents=8)
    env.reset(seed=1)
    ids = env.input_ids.copy()
    actions = np.array([task.planted[0], 0, 1, 124, task.planted[1], 7, 7, 60])
    task.calls.clear()
    env.step(actions)
    assert len(task.calls) == 1, "all explorers must be scored in ONE batched call"
    called_ids, called_cells = task.calls[0]
    np.testing.assert_array_equal(called_ids, ids)  # the inputs the explorers observed
    np.testing.assert_array_equal(called_cells, actions)
    last_ids, last_cells, out = env.last
    np.testing.assert_array_equal(last_ids, ids)
    np.testing.assert_array_equal(last_cells, actions)
    ref = SyntheticTask(seed=0).score(ids, actions)
    np.testing.assert_array_equal(out.failure, ref.failure)
    np.testing.assert_array_equal(out.prediction, ref.prediction)
    np.testing.assert_array_equal(out.delta, ref.delta)


def test_rewards_equal_failures_without_novelty():
    task = SyntheticTask(seed=0)
    env = make_env(task, num_agents=16, novelty_coef=0.0)
    env.reset(seed=2)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(10):
        # half the explorers on planted cells, half anywhere: both outcomes occur
        actions = np.concatenate([rng.choice(task.planted, 8), rng.integers(0, task.n_cells, 8)])
        ids = env.input_ids.copy()
        _, rewards, *_ = env.step(actions)
        expected = task.score(ids, actions).failure.astype(np.float32)
        np.testing.assert_array_equal(rewards, expected)
        seen |= set(rewards.tolist())
    assert seen == {0.0, 1.0}


def test_novelty_bonus_by_hand():
    coef = 0.5
    task = SyntheticTask(seed=0)
    env = make_env(task, num_agents=8, novelty_coef=coef)
    env.reset(seed=4)
    p = int(task.planted[0])
    # step 1: cell p three times, cell 3 twice, cells 7, 8, 9 once -> visits after the step
    a1 = np.array([p, p, p, 3, 3, 7, 8, 9])
    visits1 = np.array([3, 3, 3, 2, 2, 1, 1, 1], dtype=float)
    ids = env.input_ids.copy()
    _, r1, *_ = env.step(a1)
    fail1 = task.score(ids, a1).failure.astype(float)
    np.testing.assert_allclose(r1, fail1 + coef / np.sqrt(visits1), rtol=1e-6)
    # step 2: visits accumulate across steps: p 3+1, cell 3 2+3, cell 10 0+4
    a2 = np.array([p, 3, 3, 3, 10, 10, 10, 10])
    visits2 = np.array([4, 5, 5, 5, 4, 4, 4, 4], dtype=float)
    ids = env.input_ids.copy()
    _, r2, *_ = env.step(a2)
    fail2 = task.score(ids, a2).failure.astype(float)
    np.testing.assert_allclose(r2, fail2 + coef / np.sqrt(visits2), rtol=1e-6)
    assert r2.dtype == np.float32


@pytest.mark.skipif(not ENV_HAS_BONUS_KINDS, reason="this ConceptEnv has only the count bonus")
def test_uncertainty_bonus_by_hand():
    """Level-set bonus: min(P(rate >= tau), P(rate < tau)) under the Beta(k+1, n-k+1) posterior."""
    from scipy.stats import beta

    coef, tau = 0.7, 0.5
    task = SyntheticTask(seed=0)
    env = make_env(task, num_agents=8, novelty_coef=coef, bonus="uncertainty", tau=tau)
    env.reset(seed=4)
    p, q = int(task.planted[0]), int(task.planted[1])
    n, k = np.zeros(task.n_cells), np.zeros(task.n_cells)
    for actions in (np.array([p, p, p, 3, 3, 7, q, q]), np.array([p, 3, 3, 3, q, 10, 10, 10])):
        ids = env.input_ids.copy()
        _, r, *_ = env.step(actions)
        fail = task.score(ids, actions).failure
        np.add.at(n, actions, 1)
        np.add.at(k, actions, fail)
        below = beta.cdf(tau, k[actions] + 1, n[actions] - k[actions] + 1)
        np.testing.assert_allclose(r, fail + coef * np.minimum(below, 1 - below), rtol=1e-5, atol=1e-6)


def test_every_episode_is_one_step():
    task = SyntheticTask(seed=0)
    env = make_env(task, num_agents=8)
    env.reset(seed=0)
    for t in range(3):
        _, _, terminals, truncations, _ = env.step(np.full(8, t))
        assert terminals.dtype == bool and terminals.all()
        assert not truncations.any()


def test_visits_are_counted_and_reset():
    task = SyntheticTask(seed=0)
    env = make_env(task, num_agents=8)
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    all_actions = []
    for _ in range(12):
        a = rng.integers(0, 20, 8)  # a small range: many repeats within and across steps
        all_actions.append(a)
        env.step(a)
    np.testing.assert_array_equal(env.visits, np.bincount(np.concatenate(all_actions), minlength=task.n_cells))
    env.reset(seed=0)
    assert env.visits.sum() == 0


def test_a_new_input_is_sampled_after_each_step():
    task = SyntheticTask(seed=0)
    env = make_env(task, num_agents=8)
    obs, _ = env.reset(seed=9)
    observed = env.input_ids.copy()
    all_ids = [observed]
    for t in range(6):
        next_obs, *_ = env.step(np.full(8, t))
        # the scored inputs are exactly those the explorers observed before acting
        np.testing.assert_array_equal(env.last[0], observed)
        # ...and the observation buffer now shows freshly drawn inputs, written in place
        assert np.shares_memory(next_obs, env.observations)
        assert not np.array_equal(env.input_ids, observed)
        np.testing.assert_array_equal(env.observations, task.observations[env.input_ids])
        observed = env.input_ids.copy()
        all_ids.append(observed)
    assert len(np.unique(np.concatenate(all_ids))) > 20  # 56 draws from 256 inputs are not a fixed set


# --- explore(): budget, query log, determinism ---------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ppo", "random"])
@pytest.mark.parametrize("budget,num_agents", [(1000, 32), (160, 32), (100, 7), (64, 64)])
def test_budget_is_rounded_down_to_whole_steps(algorithm, budget, num_agents):
    task = SyntheticTask(seed=0)
    q, _ = explore(task, budget, num_agents, seed=0, algorithm=algorithm, progress=False)
    steps = budget // num_agents
    assert q.height == steps * num_agents
    assert q.height <= budget
    # every env step contributes one query per explorer
    per_step = q.group_by("step").agg(pl.len().alias("n"), pl.col("explorer").n_unique().alias("k")).sort("step")
    assert per_step["step"].to_list() == list(range(steps))
    assert set(per_step["n"].to_list()) == {num_agents}
    assert set(per_step["k"].to_list()) == {num_agents}


def _odd_levels_task() -> SyntheticTask:
    """A 2x3x4 grid whose level values differ from their positions, and non-constant labels."""
    task = SyntheticTask(shape=(2, 3, 4), n_inputs=64, obs_dim=8, seed=3)
    task.space = ConceptSpace([
        Axis("rotation", "rotate", (0.0, 15.0), "°"),
        Axis("contrast", "contrast", (1.0, 0.5, 0.25)),
        Axis("blur", "gaussian_blur", (2.0, 4.0, 8.0, 16.0)),
    ])
    task.labels = (np.arange(task.n_inputs) * 7 % 10).astype(np.int64)
    return task


@pytest.mark.parametrize("algorithm", ["ppo", "random"])
def test_query_log_columns_and_values(algorithm):
    task = _odd_levels_task()
    q, _ = explore(task, 256, 16, seed=11, algorithm=algorithm, progress=False)
    for col in ("step", "explorer", "input_id", "label", "cell", "prediction", "delta", "failure",
                "rotation", "contrast", "blur", "seed", "algorithm"):
        assert col in q.columns, col
    assert q.height == 256
    cells = q["cell"].to_numpy()
    ids = q["input_id"].to_numpy()
    assert ((cells >= 0) & (cells < 24)).all()
    assert ((ids >= 0) & (ids < task.n_inputs)).all()
    # level values, row-major over the axes in config order (cell = 12*i + 4*j + k)
    i, j, k = cells // 12, (cells // 4) % 3, cells % 4
    np.testing.assert_array_equal(q["rotation"].to_numpy(), np.array([0.0, 15.0])[i])
    np.testing.assert_array_equal(q["contrast"].to_numpy(), np.array([1.0, 0.5, 0.25])[j])
    np.testing.assert_array_equal(q["blur"].to_numpy(), np.array([2.0, 4.0, 8.0, 16.0])[k])
    np.testing.assert_array_equal(q["label"].to_numpy(), task.labels[ids])
    ref = task.score(ids, cells)  # the synthetic model is a fixed function of (input, cell)
    np.testing.assert_array_equal(q["failure"].to_numpy(), ref.failure)
    np.testing.assert_array_equal(q["prediction"].to_numpy(), ref.prediction)
    np.testing.assert_allclose(q["delta"].to_numpy(), ref.delta, rtol=1e-6)
    assert q["failure"].dtype == pl.Boolean
    assert set(q["seed"].to_list()) == {11}
    assert set(q["algorithm"].to_list()) == {algorithm}
    assert q.n_unique(["step", "explorer"]) == q.height


@pytest.mark.parametrize("algorithm", ["ppo", "random"])
def test_explore_is_deterministic_per_seed(algorithm):
    task = SyntheticTask(seed=0)
    q1, log1 = explore(task, 512, 32, seed=4, algorithm=algorithm, progress=False)
    q2, log2 = explore(task, 512, 32, seed=4, algorithm=algorithm, progress=False)
    q3, _ = explore(task, 512, 32, seed=5, algorithm=algorithm, progress=False)
    assert q1.equals(q2)
    timeless = [c for c in log1.columns if c != "seconds"]
    assert log1.select(timeless).equals(log2.select(timeless))
    # the seed column differs trivially; the explored (input, cell) pairs must differ too
    assert not q1.drop("seed").equals(q3.drop("seed"))
    assert not np.array_equal(q1["cell"].to_numpy(), q3["cell"].to_numpy())
    assert not np.array_equal(q1["input_id"].to_numpy(), q3["input_id"].to_numpy())


# --- PPO learns on the planted-failure model -------------------------------------------------------

# Measured (SyntheticTask(seed=0), 10 planted cells of 125, budget 1024, 32 agents, seeds 0-2):
# share of queries on planted cells PPO 0.28-0.32 (late half 0.43-0.49) vs random 0.076-0.085
# (~3.7x; late half ~6x); recall of planted cells as landscape failure cells PPO 1.0/1.0/0.9 vs
# random 0.7/0.7/0.7 (over seeds 0-9: 0.97 vs 0.74). At 2048 queries random's recall catches up
# (~0.97), so the comparison is made at 1024, where exploration efficiency is what matters.
BUDGET, AGENTS, SEEDS = 1024, 32, (0, 1, 2)
# the failure-seeking configuration (no level-set prior): what these tests check is that the learner
# itself learns; the default's prior is tested below, against the levelset searcher alone
FAILURE_SEEKING = {"prior": "none", "ent_coef": 0.01, "uniform_mix": 0.25}


@pytest.fixture(scope="module")
def planted_runs():
    task = SyntheticTask(seed=0)
    planted = set(task.planted.tolist())
    assert len(planted) == 10
    runs = {}
    for algorithm in ("ppo", "random"):
        for seed in SEEDS:
            q, log = explore(task, BUDGET, AGENTS, seed=seed, algorithm=algorithm, progress=False,
                             params=FAILURE_SEEKING if algorithm == "ppo" else None)
            cells = cell_table(task.space, q, threshold=0.5)
            found = set(cells.filter(pl.col("is_failure"))["cell"].to_list())
            runs[algorithm, seed] = {
                "queries": q,
                "log": log,
                "on_planted": float(q["cell"].is_in(sorted(planted)).mean()),
                "on_planted_late": float(q.filter(pl.col("step") >= q["step"].max() // 2)["cell"].is_in(sorted(planted)).mean()),
                "recall": len(found & planted) / len(planted),
            }
    for algorithm in ("ppo", "random"):
        r = [runs[algorithm, s] for s in SEEDS]
        print(f"\n{algorithm:>6} @ {BUDGET} queries: on-planted {[round(x['on_planted'], 3) for x in r]}, "
              f"late half {[round(x['on_planted_late'], 3) for x in r]}, recall {[x['recall'] for x in r]}")
    return runs


def _mean(runs, algorithm, key):
    return float(np.mean([runs[algorithm, s][key] for s in SEEDS]))


def test_ppo_concentrates_queries_on_planted_cells(planted_runs):
    ppo, rnd = _mean(planted_runs, "ppo", "on_planted"), _mean(planted_runs, "random", "on_planted")
    # random lands on planted cells about 10/125 of the time
    assert 0.04 < rnd < 0.13
    assert ppo > 2.5 * rnd, (ppo, rnd)
    # the learned policy (second half of the budget) is far more focused than random
    ppo_late = _mean(planted_runs, "ppo", "on_planted_late")
    rnd_late = _mean(planted_runs, "random", "on_planted_late")
    assert ppo_late > 3.5 * rnd_late, (ppo_late, rnd_late)


def test_ppo_recall_of_planted_cells_beats_random(planted_runs):
    ppo, rnd = _mean(planted_runs, "ppo", "recall"), _mean(planted_runs, "random", "recall")
    assert ppo >= rnd + 0.15, (ppo, rnd)
    assert ppo >= 0.8, ppo


def test_ppo_learning_log_shows_learning(planted_runs):
    for seed in SEEDS:
        log = planted_runs["ppo", seed]["log"]
        updates = log["n_updates"].drop_nulls().to_numpy()
        assert len(updates) > 0 and updates.max() > 0
        assert (np.diff(updates) > 0).all(), "n_updates counts up with every update"
        assert log["queries"].max() == (BUDGET // AGENTS) * AGENTS
        rate = log["failure_rate"].to_numpy()
        first, last = rate[:2].mean(), rate[-2:].mean()
        assert last > 2 * first, (seed, first, last)
    # random search does not learn: its failure rate stays near the base rate throughout
    for seed in SEEDS:
        rate = planted_runs["random", seed]["log"]["failure_rate"].to_numpy()
        assert rate[-2:].mean() < 0.2


def test_ppo_sampler_draws_each_cell_with_its_policy_probability():
    """The inverse-CDF sampler behind PPO.act: frequencies match π, impossible cells never come up,
    and the same generator seed gives the same draws."""
    import torch

    from failfade.explore.ppo import sample

    probs = torch.tensor([0.5, 0.3, 0.0, 0.2])
    rows = 40_000
    logp = probs.log().expand(rows, -1)
    draws = sample(logp, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).double() / rows
    assert freq[2] == 0
    # 4 standard errors of a binomial share at n = 40,000 is at most 0.01
    np.testing.assert_allclose(freq.numpy(), probs.numpy(), atol=0.01)
    again = sample(logp, torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    # rows differ: a row-dependent policy is honoured row by row
    two = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).clamp_min(1e-30).log().repeat(500, 1)
    d2 = sample(two, torch.Generator().manual_seed(1))
    assert (d2[0::2] == 0).all() and (d2[1::2] == 1).all()


# --- the default PPO: a learned, bounded residual on the confirm prior --------------------------------

# Measured (SyntheticTask(seed=0), 4096 queries, 32 agents, seeds 0-2, 2026-11-28): share of queries
# that fail, PPO (default) 0.153/0.162/0.158, its prior alone (the confirm searcher) 0.118/0.106/0.117,
# ratio 1.30/1.53/1.34; over the last two log rows PPO 0.195/0.195/0.145 against confirm
# 0.129/0.137/0.094. With the actor's tilt switched off (residual_bound 1e-6) PPO read 0.92/1.00/1.08 of
# the prior alone, hence the 1.2 below. (Before the marginal left the query's own input out, seed 0
# read 1.31, and earlier code 1.47: the margin was never wide.)
@pytest.fixture(scope="module")
def prior_runs():
    task = SyntheticTask(seed=0)
    runs = {}
    # "prior": the confirm searcher settling cells at the landscape's level, exactly PPO's prior alone
    for algorithm, params in (("ppo", {}), ("prior", {"settle_strictness": 1}), ("random", {})):
        for seed in SEEDS:
            q, log = explore(task, 4096, AGENTS, seed=seed, algorithm="confirm" if algorithm == "prior" else algorithm,
                             params=params, progress=False)
            cells = cell_table(task.space, q, threshold=0.5)
            found = set(cells.filter(pl.col("is_failure"))["cell"].to_list())
            runs[algorithm, seed] = {"fails": float(q["failure"].mean()), "log": log,
                                     "recall": len(found & set(task.planted.tolist())) / len(task.planted)}
    return runs


def test_default_ppo_learns_failures_on_top_of_its_prior(prior_runs):
    """The prior alone is the confirm searcher; what the actor learns from the failure reward must
    show up as more failures found than the prior alone, seed by seed, over the whole run and
    over its last rollouts (where the prior has settled most cells and only the actor still tilts)."""
    for seed in SEEDS:
        ppo, prior_only = prior_runs["ppo", seed]["fails"], prior_runs["prior", seed]["fails"]
        assert ppo > 1.2 * prior_only, (seed, ppo, prior_only)
        log = prior_runs["ppo", seed]["log"]
        assert log["n_updates"].drop_nulls().max() > 0
        late, late_prior = (prior_runs[a, seed]["log"]["failure_rate"].to_numpy()[-2:].mean() for a in ("ppo", "prior"))
        assert late > 1.2 * late_prior, (seed, late, late_prior)


def test_default_ppo_maps_the_planted_cells(prior_runs):
    ppo = _mean(prior_runs, "ppo", "recall")
    assert ppo >= 0.95 and ppo >= _mean(prior_runs, "random", "recall"), (ppo, _mean(prior_runs, "random", "recall"))


def test_ppo_prior_is_macroscopic_only():
    task = SyntheticTask(seed=0)
    with pytest.raises(ValueError, match="macroscopic mode only"):
        explore(task, 64, 8, seed=0, algorithm="ppo", params={"prior": "levelset"}, mode="microscopic", progress=False,
                micro={"step_cap": 4, "alpha": 0.05, "start": "origin"})
    # the default's prior does not apply to moves: microscopic PPO runs without it
    q, _ = explore(task, 64, 8, seed=0, algorithm="ppo", mode="microscopic", progress=False,
                   micro={"step_cap": 4, "alpha": 0.05, "start": "origin"})
    assert q.height == 64


def test_confirm_draws_shrink_on_large_grids_only():
    """The confirm allocation draws draws × open cells posterior samples per step: past 2^18 the
    draws shrink (to no fewer than 16), so a 15,625-cell grid stays cheap; small grids keep every
    draw and the same result."""
    from failfade.explore.env import LevelSet

    small = LevelSet(125, 0.5)
    rng = np.random.default_rng(3)
    small.update(rng.integers(0, 125, 2000), rng.random(2000) < 0.3)
    a = small.confirm(np.random.default_rng(7))
    b = small.confirm(np.random.default_rng(7), max_samples=2 ** 40)
    assert np.array_equal(a, b) and abs(a.sum() - 1) < 1e-3

    big = LevelSet(15_625, 0.5)  # all unvisited: every cell open, every draw finds a winner
    share = big.confirm(np.random.default_rng(0))
    won = share > 1e-6
    assert 1 <= won.sum() <= 16 and abs(share[won].sum() - 1) < 1e-9
    assert np.allclose(share[won] * 16, np.round(share[won] * 16))  # whole draws out of 16
