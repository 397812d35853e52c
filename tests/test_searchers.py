"""The searchers: the explore() contract for every algorithm, the exhaustive ground truth,
microscopic walks, the outcome cache, DQN's update schedule and learning, importance weighting
under a contextual policy, and the behaviour specific to each baseline.

Everything runs on SyntheticTask (planted failure cells, outcomes a fixed function of (input,
cell)) or on tiny hand-made tasks, so every expectation is computed from first principles.
(tests/test_explore.py covers the macroscopic env's step semantics and PPO vs random.)
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from failfade.concepts import Axis, ConceptSpace
from failfade.explore.baselines import ThresholdSearcher
from failfade.tasks.cache import CachedTask
from failfade.explore.dqn import DQNConfig
from failfade.explore.micro_env import MicroEnv
from failfade.explore.search import ALGORITHMS, exhaustive, explore
from failfade.landscape import cell_table
from failfade.metrics import true_rates
from failfade.puffer import make_native
from failfade.stats import weighted_cell_rates
from failfade.tasks import Outcomes
from failfade.tasks.synthetic import SyntheticTask


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py


SEARCHERS = [a for a in ALGORITHMS if a != "exhaustive"]
CONTEXTUAL = ("ppo", "dqn")  # searchers that choose cells given the input (they report π(cell | input))
MICRO = {"step_cap": 4, "alpha": 0.05, "start": "origin"}


def _run(task, budget, agents, seed, algorithm, **kw):
    return explore(task, budget, agents, seed=seed, algorithm=algorithm, progress=False, **kw)


def _share_on(q: pl.DataFrame, cells) -> float:
    return float(q["cell"].is_in(sorted(int(c) for c in cells)).mean())


# --- 1. the contract of every searcher (macroscopic) ----------------------------------------------


@pytest.mark.parametrize("algorithm", SEARCHERS)
@pytest.mark.parametrize("budget,agents", [(300, 16), (96, 32)])
def test_budget_is_respected(algorithm, budget, agents):
    task = SyntheticTask(seed=0)
    q, log = _run(task, budget, agents, 0, algorithm)
    expected = (budget // agents) * agents  # 288 and 96: whole env steps only
    assert q.height == expected
    assert log["queries"].max() == expected
    # one query per explorer per step
    assert q.n_unique(["step", "explorer"]) == q.height
    assert sorted(q["explorer"].unique().to_list()) == list(range(agents))
    cells, ids = q["cell"].to_numpy(), q["input_id"].to_numpy()
    assert ((cells >= 0) & (cells < task.n_cells)).all()
    assert ((ids >= 0) & (ids < task.n_inputs)).all()
    # the outcomes are the model's (a fixed function of the pair)
    np.testing.assert_array_equal(q["failure"].to_numpy(), task.score(ids, cells).failure)


@pytest.mark.parametrize("algorithm", SEARCHERS)
def test_deterministic_per_seed_and_labelled(algorithm):
    task = SyntheticTask(seed=0)
    q1, _ = _run(task, 320, 16, 7, algorithm)
    q2, _ = _run(task, 320, 16, 7, algorithm)
    q3, _ = _run(task, 320, 16, 8, algorithm)
    assert q1.equals(q2)
    assert not np.array_equal(q1["cell"].to_numpy(), q3["cell"].to_numpy())
    assert set(q1["algorithm"].to_list()) == {algorithm}
    assert set(q1["seed"].to_list()) == {7} and set(q3["seed"].to_list()) == {8}


@pytest.mark.parametrize("algorithm", SEARCHERS)
def test_propensity_only_for_contextual_searchers(algorithm):
    task = SyntheticTask(seed=0)
    q, _ = _run(task, 320, 16, 1, algorithm)
    p = q["propensity"].to_numpy()
    assert q["propensity"].dtype == pl.Float64
    if algorithm in CONTEXTUAL:
        assert np.isfinite(p).all()
        assert ((p > 0) & (p <= 1)).all(), (p.min(), p.max())
    else:
        assert np.isnan(p).all()


def test_ppo_propensity_starts_uniform_and_is_bounded_by_the_mix():
    """The actor starts at zero logits: at step 0 π is the prior, uniform for the level-set prior
    before any query; afterwards the uniform mix keeps π ≥ uniform_mix / n."""
    task = SyntheticTask(seed=0)
    q, _ = _run(task, 1024, 32, 2, "ppo", params={"uniform_mix": 0.25, "prior": "levelset"})
    n = task.n_cells
    p0 = q.filter(pl.col("step") == 0)["propensity"].to_numpy()
    np.testing.assert_allclose(p0, 1.0 / n, rtol=1e-5)
    p = q["propensity"].to_numpy()
    assert (p >= 0.25 / n * (1 - 1e-5)).all()
    assert p.max() > 2.0 / n  # the policy did move away from uniform


def test_dqn_propensity_follows_the_epsilon_schedule():
    """ε-greedy: π(a | s) = ε/n + (1 − ε)·[a = greedy], with ε linear from 1 to 0.05 over half the steps."""
    task = SyntheticTask(seed=0)
    agents, steps = 16, 32
    q, _ = _run(task, agents * steps, agents, 3, "dqn")
    n, cfg = task.n_cells, DQNConfig()
    for s in range(steps):
        frac = min(1.0, s / (cfg.exploration_fraction * steps))
        eps = cfg.start_epsilon + frac * (cfg.end_epsilon - cfg.start_epsilon)
        p = q.filter(pl.col("step") == s)["propensity"].to_numpy()
        lo, hi = eps / n, eps / n + (1 - eps)
        assert np.all(np.isclose(p, lo) | np.isclose(p, hi)), (s, eps, np.unique(p))
    late = q.filter(pl.col("step") >= steps // 2)["propensity"].to_numpy()
    eps = cfg.end_epsilon
    # at ε = 0.05 about 95% of actions are the greedy one
    assert np.isclose(late, eps / n + 1 - eps).mean() > 0.85


def test_unknown_algorithm_or_mode_is_rejected():
    task = SyntheticTask(seed=0)
    with pytest.raises(ValueError, match="unknown algorithm"):
        _run(task, 64, 8, 0, "simulated_annealing")
    with pytest.raises(ValueError, match="unknown exploration mode"):
        _run(task, 64, 8, 0, "random", mode="mesoscopic")


# --- 2. exhaustive: the ground truth ---------------------------------------------------------------


@pytest.mark.parametrize("via_explore", [True, False])
def test_exhaustive_covers_every_pair_once(via_explore):
    task = SyntheticTask(shape=(3, 4, 5), n_inputs=37, seed=2)
    if via_explore:
        q, log = explore(task, 10, 3, seed=5, algorithm="exhaustive", progress=False)  # budget is ignored
    else:
        q, log = exhaustive(task, seed=5, progress=False, chunk=97)  # chunks that do not divide 37*60
    n = task.n_inputs * task.n_cells
    assert q.height == n
    assert q.n_unique(["input_id", "cell"]) == n
    ids, cells = q["input_id"].to_numpy(), q["cell"].to_numpy()
    assert set(ids.tolist()) == set(range(task.n_inputs)) and set(cells.tolist()) == set(range(task.n_cells))
    np.testing.assert_array_equal(q["failure"].to_numpy(), task.score(ids, cells).failure)
    # per-cell failure rate over all inputs is the task's true rate
    per_cell = q.group_by("cell").agg(pl.col("failure").mean().alias("rate"), pl.len().alias("n")).sort("cell")
    assert set(per_cell["n"].to_list()) == {task.n_inputs}
    np.testing.assert_allclose(per_cell["rate"].to_numpy(), task.true_failure_rate(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(true_rates(task.n_cells, q), task.true_failure_rate(), rtol=0, atol=1e-12)
    assert set(q["algorithm"].to_list()) == {"exhaustive"} and set(q["seed"].to_list()) == {5}
    assert np.isnan(q["propensity"].to_numpy()).all()
    assert log["queries"].to_list() == [n]
    assert log["failure_rate"][0] == pytest.approx(task.true_failure_rate().mean())
    # the planted cells really are the failing ones (a sanity check of the ground truth itself)
    truth = task.true_failure_rate()
    assert truth[task.planted].min() > 0.6 and np.delete(truth, task.planted).max() < 0.3


# --- 3. microscopic mode ---------------------------------------------------------------------------


def _check_walks(task, q: pl.DataFrame, step_cap: int) -> dict:
    """Replay the documented episode rule on the query table and check every move; return counts."""
    shape = np.array(task.space.shape)
    coords_all = task.space.coords(q["cell"].to_numpy())
    counts = dict(episodes=0, by_failure=0, by_cap=0, moves=0, stays=0, new_input=0, boundaries=0, far=0)
    for e in range(q["explorer"].max() + 1):
        rows = np.flatnonzero(q["explorer"].to_numpy() == e)
        rows = rows[np.argsort(q["step"].to_numpy()[rows])]
        ids, fails = q["input_id"].to_numpy()[rows], q["failure"].to_numpy()[rows]
        coords = coords_all[rows]
        t, prev, ep_input = 0, None, None
        for j in range(len(rows)):
            c = coords[j]
            if t == 0:  # the first move of an episode starts at the origin
                assert c.sum() <= 1 and c.min() >= 0, (e, j, c)
                if ep_input is not None:
                    counts["boundaries"] += 1
                    counts["new_input"] += int(ids[j] != ep_input)
                ep_input = ids[j]
                counts["episodes"] += 1
            else:  # within an episode: same input, one level along one axis, or a clipped move
                assert ids[j] == ep_input, (e, j)
                d = np.abs(c - prev)
                assert d.sum() <= 1, (e, j, prev, c)
                if d.sum() == 0:
                    assert ((prev == 0) | (prev == shape - 1)).any(), (e, j, prev)  # only at a grid edge
                    counts["stays"] += 1
                else:
                    counts["moves"] += 1
            counts["far"] += int(c.sum() >= 2)
            t += 1
            if fails[j] or t >= step_cap:
                counts["by_failure" if fails[j] else "by_cap"] += 1
                t = 0
            prev = c
    return counts


@pytest.mark.parametrize("algorithm", ["ppo", "dqn", "random"])
def test_microscopic_walks(algorithm):
    task = SyntheticTask(seed=0)
    budget, agents = 1000, 16
    q, _ = _run(task, budget, agents, 0, algorithm, mode="microscopic", micro=MICRO)
    assert q.height == (budget // agents) * agents
    assert np.isnan(q["propensity"].to_numpy()).all()  # moves, not cells, are chosen: no π(cell | input)
    c = _check_walks(task, q, MICRO["step_cap"])
    # the replay saw both ways an episode ends, real moves and walks that got away from the origin
    assert c["by_failure"] > 0 and c["by_cap"] > 0, c
    assert c["moves"] > 0 and c["far"] > 0, c
    # a new episode draws a new input (1/256 chance of the same one)
    assert c["new_input"] >= 0.9 * c["boundaries"], c


@pytest.mark.parametrize("algorithm", ["bandit", "epsilon_greedy", "levelset", "threshold"])
def test_microscopic_rejects_other_searchers(algorithm):
    with pytest.raises(ValueError, match="microscopic"):
        _run(SyntheticTask(seed=0), 64, 8, 0, algorithm, mode="microscopic", micro=MICRO)


def test_micro_env_moves_and_reward_by_hand():
    """Reward = failure − α without the bonus; the walk moves ±1 level, clipped at the grid edge;
    an episode ends on failure or at the step cap and restarts at the origin."""
    alpha, cap = 0.07, 3
    task = SyntheticTask(shape=(3, 3, 3), n_inputs=8, obs_dim=4, planted=[9], p_fail=1.0, p_base=0.0, seed=0)
    assert tuple(task.space.coords([9])[0]) == (1, 0, 0)  # the only (always) failing cell
    env = make_native(MicroEnv, task=task, num_agents=4, seed=0, novelty_coef=0.0, step_cap=cap, alpha=alpha)
    env.reset(seed=1)
    # actions: 2k = axis k up, 2k + 1 = axis k down
    a = np.array([0, 1, 2, 5])
    expected_pos = [[(1, 0, 0), (0, 0, 0), (0, 1, 0), (0, 0, 0)],  # step 1: down moves from the origin stay
                    [(1, 0, 0), (0, 0, 0), (0, 2, 0), (0, 0, 0)],  # explorer 0 failed: restarted, moves again
                    [(1, 0, 0), (0, 0, 0), (0, 2, 0), (0, 0, 0)]]  # explorer 2 clipped at the top edge
    expected_done = [[True, False, False, False], [True, False, False, False], [True, True, True, True]]  # cap 3
    for step in range(3):
        ids = env.input_ids.copy()
        _, rewards, terminals, truncations, _ = env.step(a)
        last_ids, cells, out = env.last
        np.testing.assert_array_equal(last_ids, ids)
        np.testing.assert_array_equal(cells, task.space.index(np.array(expected_pos[step])))
        fail = task.score(ids, cells).failure
        np.testing.assert_array_equal(fail, cells == 9)
        np.testing.assert_allclose(rewards, fail.astype(np.float32) - np.float32(alpha), rtol=0, atol=1e-7)
        assert rewards.dtype == np.float32
        np.testing.assert_array_equal(terminals, expected_done[step])
        assert not truncations.any()
    # after the cap everyone restarts at the origin (one-hot of level 0 on each axis)
    d = task.observations.shape[1]
    np.testing.assert_array_equal(env.pos, 0)
    assert (env.observations[:, d:].reshape(4, 3, 3).argmax(2) == 0).all()


# --- 4. the outcome cache --------------------------------------------------------------------------


class CountingTask(SyntheticTask):
    """Records every pair the model is actually asked to score."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = 0
        self.scored: list[tuple[int, int]] = []

    def score(self, input_ids, cells):
        self.calls += 1
        self.scored += list(zip(np.asarray(input_ids).tolist(), np.asarray(cells).tolist()))
        return super().score(input_ids, cells)


def _expected_accounting(q: pl.DataFrame):
    """Replay the query table batch by batch: (hits, misses, distinct pairs) of a cold cache."""
    known, missing_queries = set(), 0
    for (_,), batch in q.sort("step", "explorer").group_by(["step"], maintain_order=True):
        pairs = list(zip(batch["input_id"].to_list(), batch["cell"].to_list()))
        missing_queries += sum(p not in known for p in pairs)
        known |= set(pairs)
    return q.height - missing_queries, len(known), known


def test_cache_is_transparent_and_never_rescores():
    kw = dict(n_inputs=16, seed=0)  # 16 x 125 pairs: a searcher revisits many of them
    plain, _ = _run(SyntheticTask(**kw), 1024, 32, 3, "bandit")
    inner = CountingTask(**kw)
    cached = CachedTask(inner)
    q1, _ = _run(cached, 1024, 32, 3, "bandit")
    assert q1.equals(plain)  # an outcome-driven searcher follows exactly the same path
    hits, misses, pairs = _expected_accounting(q1)
    assert hits > 0
    assert (cached.hits, cached.misses) == (hits, misses)
    assert len(inner.scored) == len(set(inner.scored)) == misses  # every pair scored exactly once
    assert set(inner.scored) == pairs
    calls = inner.calls
    # the same search again: nothing new is scored, and the table is identical
    q2, _ = _run(cached, 1024, 32, 3, "bandit")
    assert q2.equals(q1)
    assert inner.calls == calls and len(inner.scored) == misses
    assert cached.misses == misses
    assert cached.hits == hits + q1.height


def test_cache_scores_a_repeated_pair_once_per_batch():
    inner = CountingTask(n_inputs=8, seed=1)
    cached = CachedTask(inner)
    ids, cells = np.array([0, 0, 1, 0, 1]), np.array([5, 5, 5, 7, 5])
    out = cached.score(ids, cells)
    assert inner.calls == 1
    assert sorted(inner.scored) == [(0, 5), (0, 7), (1, 5)]
    assert (cached.hits, cached.misses) == (0, 3)
    ref = SyntheticTask(n_inputs=8, seed=1).score(ids, cells)
    for f in ("prediction", "delta", "failure"):
        np.testing.assert_array_equal(getattr(out, f), getattr(ref, f))
    # known pairs and one new pair: only the new one reaches the model
    cached.score(np.array([1, 0, 2]), np.array([5, 7, 5]))
    assert inner.calls == 2 and inner.scored[-1] == (2, 5) and len(inner.scored) == 4
    assert (cached.hits, cached.misses) == (2, 4)
    cached.score(np.array([2, 2]), np.array([5, 5]))
    assert inner.calls == 2 and (cached.hits, cached.misses) == (4, 4)


def test_cache_save_and_load_round_trip(tmp_path):
    path = tmp_path / "cache" / "outcomes.npz"
    kw = dict(n_inputs=32, seed=4)
    first = CachedTask(CountingTask(**kw), path)
    q, _ = _run(first, 512, 16, 0, "random")
    first.save()
    assert path.is_file()
    assert not list(path.parent.glob("*.tmp.npz"))  # written atomically
    inner = CountingTask(**kw)
    second = CachedTask(inner, path)
    ids, cells = q["input_id"].to_numpy(), q["cell"].to_numpy()
    out = second.score(ids, cells)
    assert inner.calls == 0 and second.misses == 0 and second.hits == q.height
    np.testing.assert_array_equal(out.failure, q["failure"].to_numpy())
    np.testing.assert_array_equal(out.prediction, q["prediction"].to_numpy())
    np.testing.assert_array_equal(out.delta, q["delta"].to_numpy())
    # a pair the first run never saw still goes to the model
    unseen = next((i, c) for i in range(32) for c in range(125) if not first.known[i, c])
    second.score(np.array([unseen[0]]), np.array([unseen[1]]))
    assert inner.scored == [unseen]
    # a cache for another split (other shape) is ignored, not misapplied
    other = CachedTask(CountingTask(n_inputs=33, seed=4), path)
    assert not other.known.any()


# --- 5. DQN: the update schedule and learning ------------------------------------------------------


def _expected_updates(cfg: DQNConfig, steps: int, agents: int) -> int:
    """observe() runs once per env step s = 1..steps, after adding `agents` transitions; it updates
    (gradient_steps times) when the buffer holds ≥ learning_starts and s % train_frequency == 0."""
    assert cfg.buffer_size >= cfg.learning_starts
    first = math.ceil(cfg.learning_starts / agents)  # first step with enough transitions
    rounds = max(0, steps // cfg.train_frequency - (first - 1) // cfg.train_frequency)
    return cfg.gradient_steps * rounds


@pytest.mark.parametrize("params", [{}, {"learning_starts": 100, "train_frequency": 3, "gradient_steps": 2}])
def test_dqn_counts_its_updates(params):
    task = SyntheticTask(seed=0)
    agents, budget = 32, 2048
    steps = budget // agents
    cfg = DQNConfig(**params)
    expected = _expected_updates(cfg, steps, agents)
    if not params:
        assert expected == 4 * (64 - 16 + 1) == 196  # defaults: first update at step 16 (512 transitions)
    else:
        assert expected == 2 * len(range(6, 65, 3)) == 40  # steps 6, 9, ..., 63
    _, log = _run(task, budget, agents, 0, "dqn", params=params)
    upd = log.filter(pl.col("n_updates").is_not_null())
    assert upd["n_updates"].max() == expected
    # one log row per update round, each adding gradient_steps updates
    np.testing.assert_array_equal(np.diff(upd["n_updates"].to_numpy()), cfg.gradient_steps)
    assert upd["n_updates"][0] == cfg.gradient_steps
    first_round = math.ceil(cfg.learning_starts / agents)
    first_round += (-first_round) % cfg.train_frequency
    assert upd["queries"][0] == first_round * agents
    assert np.isfinite(upd["q_loss"].to_numpy()).all()
    assert upd["epsilon"][-1] == pytest.approx(cfg.end_epsilon)


def test_dqn_without_learning_never_updates():
    task = SyntheticTask(seed=0)
    q, log = _run(task, 2048, 32, 0, "dqn", params={"learn": False})
    assert "q_loss" not in log.columns and "n_updates" not in log.columns
    # nor does it learn without saying so: the trained DQN puts ~70% of its queries on the planted
    # cells (test below), an untrained one near the planted share of the grid (10 of 125)
    assert _share_on(q, task.planted) < 0.2


# Measured (SyntheticTask(seed=0), 10 planted cells of 125, 4096 queries, 32 agents, seeds 0-2):
# share of queries on planted cells, trained 0.70/0.70/0.71 vs untrained 0.02/0.03/0.07.
def test_trained_dqn_finds_the_planted_cells():
    task = SyntheticTask(seed=0)
    trained, untrained = [], []
    for seed in (0, 1, 2):
        q, _ = _run(task, 4096, 32, seed, "dqn")
        trained.append(_share_on(q, task.planted))
        q, _ = _run(task, 4096, 32, seed, "dqn", params={"learn": False})
        untrained.append(_share_on(q, task.planted))
    t, u = float(np.mean(trained)), float(np.mean(untrained))
    assert t > 0.4, trained
    assert t > 4 * max(u, 10 / 125), (trained, untrained)  # and well above random's 10/125 too
    assert all(a > b for a, b in zip(trained, untrained)), (trained, untrained)


# --- 6. importance weighting removes contextual bias -----------------------------------------------


class ContextTask:
    """One axis of 4 cells; input i (with a latent x_i in [0, 1]) fails at cell c with probability
    p[i, c]: x_i, 1 − x_i, 0.5 and x_i² — fixed per pair, like a real model."""

    def __init__(self, n_inputs: int = 200, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.space = ConceptSpace([Axis("severity", "contrast", (1.0, 2.0, 3.0, 4.0))])
        self.n_cells, self.n_inputs = 4, n_inputs
        self.x = rng.random(n_inputs)
        self.p = np.stack([self.x, 1 - self.x, np.full(n_inputs, 0.5), self.x**2], 1)
        self.fail = rng.random((n_inputs, 4)) < self.p
        self.labels = np.zeros(n_inputs, dtype=np.int64)
        self.observations = np.stack([self.x, 1 - self.x], 1).astype(np.float32)

    def true_rate(self) -> np.ndarray:  # the estimand: the rate over the (uniform) input set
        return self.fail.mean(0)

    def score(self, input_ids, cells) -> Outcomes:
        f = self.fail[np.asarray(input_ids), np.asarray(cells)]
        return Outcomes(f.astype(np.int64), f.astype(np.float32), f)


def _snis_se(cells, fails, w, rate, n_cells):
    """Delta-method standard error of the self-normalized estimate Σw·f / Σw, per cell."""
    resid = fails - np.nan_to_num(rate)[cells]
    num = np.bincount(cells, weights=(w * resid) ** 2, minlength=n_cells)
    den = np.bincount(cells, weights=w, minlength=n_cells)
    return np.sqrt(num) / den


def test_importance_weights_remove_contextual_bias():
    task = ContextTask()
    truth = task.true_rate()
    rng = np.random.default_rng(1)
    n = 100_000
    ids = rng.integers(0, task.n_inputs, n)
    # a failure-seeking contextual policy: π(c | i) ∝ 0.1 + p[i, c]
    pi = 0.1 + task.p
    pi /= pi.sum(1, keepdims=True)
    cells = (rng.random(n)[:, None] > np.cumsum(pi[ids], 1)).sum(1)
    prop = pi[ids, cells]
    fails = task.score(ids, cells).failure

    plain, n_plain, _ = weighted_cell_rates(cells, fails, None, task.n_cells)
    rate, n_eff, k_eff = weighted_cell_rates(cells, fails, prop, task.n_cells)
    se_plain = _snis_se(cells, fails, np.ones(n), plain, task.n_cells)
    se = _snis_se(cells, fails, 1 / prop, rate, task.n_cells)
    assert se.max() < 0.01  # tens of thousands of queries per cell
    # weighted: within 5 standard errors of the truth on every cell
    assert (np.abs(rate - truth) < 5 * se).all(), (rate, truth, se)
    # unweighted: biased towards failures wherever failure depends on the input (cells 0, 1, 3)...
    bias = plain - truth
    for c in (0, 1, 3):
        assert bias[c] > 0.05 and bias[c] > 10 * se_plain[c], (c, plain, truth, se_plain)
    # ...and unbiased where it does not (cell 2: fails at rate 0.5 whatever the input)
    assert abs(bias[2]) < 5 * se_plain[2]
    # the bookkeeping: raw counts without weights, fewer effective samples with them
    np.testing.assert_array_equal(n_plain, np.bincount(cells, minlength=4))
    assert (n_eff < n_plain).all() and (n_eff > 0.3 * n_plain).all()
    np.testing.assert_allclose(k_eff, rate * n_eff)
    # NaN propensities weigh 1: a mixed table falls back to plain counts
    nan_rate, _, _ = weighted_cell_rates(cells, fails, np.full(n, np.nan), task.n_cells)
    np.testing.assert_allclose(nan_rate, plain)
    # the landscape uses the weighted estimate when the table carries propensities
    q = pl.DataFrame({"cell": cells.astype(np.int32), "failure": fails, "delta": fails.astype(np.float32),
                      "propensity": prop})
    table = cell_table(task.space, q, threshold=0.5)
    np.testing.assert_allclose(table["failure_rate"].to_numpy(), rate)
    np.testing.assert_allclose(table["effective_queries"].to_numpy(), n_eff)
    np.testing.assert_array_equal(table["queries"].to_numpy(), n_plain)


def test_random_search_on_a_custom_task_is_unbiased():
    """Any object with the task interface works with explore(); a non-contextual searcher's plain
    rates are unbiased, within binomial error."""
    task = ContextTask()
    q, _ = _run(task, 20_000, 50, 0, "random")
    assert q.height == 20_000
    rate, n, _ = weighted_cell_rates(q["cell"].to_numpy(), q["failure"].to_numpy(), None, task.n_cells)
    se = np.sqrt(0.25 / n)
    assert (np.abs(rate - task.true_rate()) < 5 * se).all(), (rate, task.true_rate())


# --- 7. the baselines ------------------------------------------------------------------------------


# Measured (SyntheticTask(seed=0), 1024 queries, 32 agents, seeds 0-2): share of queries on planted
# cells random 0.076-0.085, bandit 0.76-0.78, epsilon_greedy 0.78-0.80.
@pytest.fixture(scope="module")
def planted_shares():
    task = SyntheticTask(seed=0)
    return {(a, s): _share_on(_run(task, 1024, 32, s, a)[0], task.planted)
            for a in ("random", "bandit", "epsilon_greedy") for s in (0, 1, 2)}


@pytest.mark.parametrize("algorithm", ["bandit", "epsilon_greedy"])
def test_bandits_find_the_planted_cells(planted_shares, algorithm):
    rnd = float(np.mean([planted_shares["random", s] for s in (0, 1, 2)]))
    assert 0.04 < rnd < 0.13  # random lands on 10 of 125 cells about 8% of the time
    for s in (0, 1, 2):
        share = planted_shares[algorithm, s]
        assert share > 0.5 and share > 5 * rnd, (algorithm, s, share, rnd)


@pytest.mark.parametrize("seed", [0, 1])
def test_levelset_samples_where_the_side_of_tau_is_open(seed):
    """Planted cells failing half the time sit on τ = 0.5: their side stays uncertain, so levelset
    keeps sampling them; the same cells failing 97% of the time are settled after a few queries
    and get no more than the 3% cells do. (random: 10 of 125 cells, about 8% either way.)"""
    on_tau = SyntheticTask(p_fail=0.5, p_base=0.03, seed=seed)
    clear = SyntheticTask(p_fail=0.97, p_base=0.03, seed=seed)
    q_tau, _ = _run(on_tau, 2048, 32, seed, "levelset", tau=0.5)
    q_clear, _ = _run(clear, 2048, 32, seed, "levelset", tau=0.5)
    assert _share_on(q_tau, on_tau.planted) > 0.4, _share_on(q_tau, on_tau.planted)
    assert _share_on(q_clear, clear.planted) < 0.12, _share_on(q_clear, clear.planted)
    # its rates need no importance weights: it chooses cells without looking at the input
    assert np.isnan(q_tau["propensity"].to_numpy()).all()


def test_epsilon_is_honoured():
    """With ε = 1 epsilon-greedy is uniform; with the default it concentrates."""
    task = SyntheticTask(seed=0)
    q, _ = _run(task, 1024, 32, 0, "epsilon_greedy", params={"epsilon": 1.0})
    assert _share_on(q, task.planted) < 0.15
    assert q["cell"].n_unique() > 100  # 1024 uniform draws over 125 cells miss almost none


def test_threshold_searcher_switches_after_its_successes():
    """The searcher itself: an explorer's input changes right after its k-th non-failure."""
    ts = ThresholdSearcher(n_cells=10, seed=0, num_agents=2, n_inputs=10_000, successes=3)
    cur = ts.choose_inputs(None, 2)
    obs = np.zeros((2, 1), np.float32)
    # explorer 0 never fails; explorer 1 fails every other query
    pattern = [(False, True), (False, False), (False, True), (False, False), (False, True), (False, False)]
    ok = np.zeros(2, int)
    for fails in pattern:
        fails = np.array(fails)
        ts.observe(obs, ts.act(obs, cur), np.zeros(2), fails)
        ok += ~fails
        nxt = ts.choose_inputs(None, 2)
        for e in range(2):
            if ok[e] == 3:
                assert nxt[e] != cur[e]
                ok[e] = 0
            else:
                assert nxt[e] == cur[e]
        cur = nxt


@pytest.mark.parametrize("params,k", [(None, 5), ({"successes": 2}, 2)])
def test_threshold_runs_end_right_after_the_kth_success(params, k):
    task = SyntheticTask(n_inputs=10_000, seed=0)  # a new input is almost never the old one again
    q, _ = _run(task, 1024, 16, 0, "threshold", params=params)
    runs = 0
    for e in range(16):
        s = q.filter(pl.col("explorer") == e).sort("step")
        ids, fails = s["input_id"].to_numpy(), s["failure"].to_numpy()
        ok = 0
        for j in range(len(ids) - 1):
            ok += int(not fails[j])
            if ok == k:  # the k-th success: the next query is on a new input
                assert ids[j + 1] != ids[j], (e, j, k)
                ok, runs = 0, runs + 1
            else:
                assert ids[j + 1] == ids[j], (e, j, ok, k)
    assert runs > 50


def test_ppo_records_the_marginal_and_its_tilt_is_bounded():
    """Each query carries the policy's marginal π̄ for its cell at its step (the mean over the
    step's other explorers); with the prior, the actor's bounded residual keeps π/π̄ within e^(±4·bound)
    after the uniform mix, so the stabilized importance weights stay bounded."""
    task = SyntheticTask(seed=0)
    bound = 0.5
    q, _ = _run(task, 4096, 64, 1, "ppo", params={"residual_bound": bound, "uniform_mix": 0.0, "learning_rate": 0.05})
    ratio = q["propensity"].to_numpy() / q["marginal"].to_numpy()
    assert np.isfinite(ratio).all()
    assert ratio.max() <= np.exp(4 * bound) * (1 + 1e-4) and ratio.min() >= np.exp(-4 * bound) * (1 - 1e-4)
    assert ratio.std() > 0.01  # the actor did learn an input-dependent tilt


def test_the_marginal_leaves_the_querys_own_input_out():
    """π̄ over the step's explorers including the query's own input correlates with that input, so
    π̄/π leans towards the inputs a failure-seeking policy picked the cell for (at N = 1 every weight
    is 1: the plain rate). Left out, the estimate is unbiased; the old one is measurably not."""
    from failfade.stats import others_marginal, query_weights, stabilized_propensity

    np.testing.assert_allclose(others_marginal(np.array([0.3, 0.3, 0.5]), np.array([0.1, 0.5, 0.2])),
                               [(0.9 - 0.1) / 2, (0.9 - 0.5) / 2, (1.5 - 0.2) / 2])
    assert np.isnan(others_marginal(np.array([0.4]), np.array([0.4]))).all()
    np.testing.assert_allclose(query_weights(stabilized_propensity(np.array([0.5, 0.4]), np.array([np.nan, 0.2])), 2), [2.0, 0.5])

    task = ContextTask()
    truth = task.true_rate()
    rng = np.random.default_rng(3)
    steps, n_agents = 100_000, 2
    pi = 0.05 + task.p  # a failure-seeking contextual policy: π(c | i) ∝ 0.05 + p[i, c]
    pi /= pi.sum(1, keepdims=True)
    ids = rng.integers(0, task.n_inputs, (steps, n_agents))
    cells = (rng.random((steps, n_agents))[..., None] > np.cumsum(pi[ids], -1)).sum(-1)
    prop = pi[ids, cells]
    with_own = pi[ids].mean(1)[np.arange(steps)[:, None], cells]  # the step's marginal, own input included
    others = np.stack([others_marginal(with_own[t], prop[t]) for t in range(steps)])
    c, f = cells.ravel(), task.score(ids.ravel(), cells.ravel()).failure
    old, _, _ = weighted_cell_rates(c, f, (prop / with_own).ravel(), task.n_cells)
    new, _, _ = weighted_cell_rates(c, f, (prop / others).ravel(), task.n_cells)
    se = _snis_se(c, f, (others / prop).ravel(), new, task.n_cells)
    assert (np.abs(new - truth) < 5 * se).all(), (new, truth, se)
    assert (old - truth)[[0, 1, 3]].min() > 5 * se.max(), (old, truth, se)  # too high where failure follows the input


def test_an_unknown_walk_start_is_refused():
    """`start: "rnd"` walked from the origin without a word."""
    with pytest.raises(ValueError, match="explore.micro.start: 'rnd' is not origin or random"):
        explore(SyntheticTask(shape=(3, 3), seed=0), 64, 8, 0, "random", mode="microscopic", micro={"start": "rnd"},
                progress=False)


def test_a_sharp_policys_stabilized_weights_are_exact():
    """With no uniform mixing and a sharp policy, one input can hold nearly all of a cell's mass: the
    others' share (the marginal less the query's own row) cancelled to 0 in float32 and the weight
    fell back to 1/π (1.0 where π̄/π was 5e-13). Computed in float64 it matches π̄/π from the
    policy's float64 probabilities."""
    import torch

    from failfade.explore.ppo import PPO, PPOConfig
    from failfade.stats import query_weights, stabilized_propensity

    task = SyntheticTask(shape=(5, 5, 5), seed=0)
    agent = PPO(task.observations.shape[1], task.n_cells, PPOConfig(uniform_mix=0.0, prior="none"), seed=3)
    with torch.no_grad():
        for prm in agent.agent.actor.parameters():
            prm.normal_(0, 15.0)
    obs = task.observations[:64].copy()
    a = agent.act(obs)
    w = query_weights(stabilized_propensity(agent.last_propensity, agent.last_marginal), 64)
    with torch.no_grad():
        mu = agent.agent.double()(torch.from_numpy(obs).double())[0].exp().numpy()
    exact = np.array([np.delete(mu[:, a[i]], i).mean() for i in range(64)]) / mu[np.arange(64), a]
    assert (agent.last_marginal > 0).all()
    assert exact.min() < 1e-6  # the case that cancelled: a cell almost only this input's
    np.testing.assert_allclose(w, exact, rtol=1e-3)


def test_the_sampler_draws_the_logged_probabilities_and_keeps_its_stream():
    """sample() inverts the CDF in float64 with the float32 uniform refined by a second generator's
    low bits: the frequencies follow the probabilities (a chi-square test on a skewed policy with
    cells down to 1e-4), and against the float32 inversion it replaced, the same generator gives the
    same draws but where a draw lands within 2^-24 of a boundary."""
    import torch
    from scipy import stats as st

    from failfade.explore.ppo import sample

    n, draws = 125, 200_000
    probs = np.geomspace(1.0, 1e-4, n)
    probs /= probs.sum()
    logp = torch.from_numpy(np.log(probs)).float().expand(draws, n)
    got = sample(logp, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)).numpy()
    counts = np.bincount(got, minlength=n)
    expected = draws * probs
    keep = expected >= 5  # chi-square's rule; the rarest cells pooled
    obs = np.append(counts[keep], counts[~keep].sum())
    exp_ = np.append(expected[keep], expected[~keep].sum())
    assert st.chisquare(obs, exp_ * obs.sum() / exp_.sum()).pvalue > 1e-3
    g = torch.Generator().manual_seed(0)
    cdf32 = logp.exp().cumsum(-1)
    old = torch.searchsorted(cdf32, torch.rand(draws, 1, generator=g) * cdf32[:, -1:]).squeeze(-1).clamp_(max=n - 1)
    assert (old.numpy() == got).mean() > 0.999


def test_ppo_level_set_holds_the_landscapes_effective_counts():
    """PPO's prior settles a cell when the landscape will show it settled: its level set must hold
    the very n_eff and k_eff the landscape computes from the logged propensity and marginal."""
    from failfade.explore.ppo import PPO, PPOConfig
    from failfade.landscape import propensities

    task = SyntheticTask(shape=(4, 4), n_inputs=64, obs_dim=8)
    agent = PPO(8, task.n_cells, PPOConfig(num_steps=2), seed=0)
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(12):
        ids = rng.integers(0, task.n_inputs, 16)
        obs = task.observations[ids]
        cells = agent.act(obs)
        out = task.score(ids, cells)
        rows.append(pl.DataFrame({"cell": cells, "failure": out.failure, "propensity": agent.last_propensity,
                                  "marginal": agent.last_marginal}))
        agent.observe(obs, cells, out.failure.astype(np.float32), out.failure, obs, np.ones(16, np.float32))
    q = pl.concat(rows)
    _, n_eff, k_eff = weighted_cell_rates(q["cell"].to_numpy(), q["failure"].to_numpy(), propensities(q), task.n_cells)
    seen = np.isfinite(n_eff) & (n_eff > 0)
    assert seen.sum() > task.n_cells // 2
    assert agent.n_updates > 0  # the policy moved, so π and π̄ differ from step to step
    np.testing.assert_allclose(agent.levels.n[seen], n_eff[seen], rtol=1e-12)
    np.testing.assert_allclose(agent.levels.k[seen], k_eff[seen], rtol=1e-12, atol=1e-12)
    assert (agent.levels.n[~seen] == 0).all()


def test_cell_interval_covers_when_the_weights_depend_on_the_outcome():
    """A policy that picks cells by the input's difficulty, on cells whose failures follow that
    difficulty, gives failing and passing queries different weights: Wilson's interval at Kish's
    effective size undercovers there; at the size the cell's sandwich variance implies
    (stats.rates_from_sums, what the landscape draws) it covers. 8 cells, a softmax over the
    failure probability with no uniform share, 800 queries a cell, 300 runs (measured: Kish's worst
    cell 0.900, the landscape's 0.937; 0.90-0.91 against 0.94-0.96 on seeds 1-3)."""
    from failfade.stats import wilson_interval

    rng = np.random.default_rng(0)
    n_inputs, n_cells, runs = 2000, 8, 300
    d = rng.random(n_inputs)  # input difficulty
    p = 1 / (1 + np.exp(-(np.linspace(-1.5, 1.5, n_cells) + np.linspace(-4, 4, n_cells) * (d[:, None] - 0.5))))
    truth = p.mean(0)
    pi = np.exp(6.0 * p)
    pi /= pi.sum(1, keepdims=True)
    cdf = np.cumsum(pi, 1)
    covered = {"kish": np.zeros(n_cells), "landscape": np.zeros(n_cells)}
    for _ in range(runs):
        ids = rng.integers(0, n_inputs, 800 * n_cells)
        cells = (rng.random(len(ids))[:, None] > cdf[ids]).sum(1).clip(max=n_cells - 1)
        fails = rng.random(len(ids)) < p[ids, cells]
        w = 1 / pi[ids, cells]
        rate, n_eff, k_eff = weighted_cell_rates(cells, fails, pi[ids, cells], n_cells)
        kish = np.bincount(cells, w, n_cells) ** 2 / np.bincount(cells, w * w, n_cells)
        assert (n_eff <= kish * (1 + 1e-12)).all()
        for name, n in (("kish", kish), ("landscape", n_eff)):
            lo, hi = wilson_interval(rate * n, n)
            covered[name] += (lo <= truth) & (truth <= hi)
    kish, landscape = covered["kish"] / runs, covered["landscape"] / runs
    assert kish.min() <= 0.91, kish  # the problem is real in this setting...
    assert landscape.min() >= 0.925, landscape  # ...and the landscape's interval covers
    assert (landscape >= kish).all()


def test_cell_interval_size_is_kish_unless_the_weights_follow_the_outcome():
    """stats.rates_from_sums: plain counts keep n exactly (every k of every n up to 300); weights
    that ignore the outcome, in a balanced pattern, keep Kish's size; a few heavy weights all on
    failures cut it."""
    from failfade.stats import rates_from_sums

    for n in range(1, 301):
        k, ns = np.arange(n + 1.0), np.full(n + 1, float(n))
        _, n_eff, k_eff = rates_from_sums(ns, ns, k, k)
        np.testing.assert_array_equal(n_eff, ns)
        np.testing.assert_allclose(k_eff, k, rtol=1e-15)
    w = np.array([1.0, 3.0] * 50)  # the same weights on failures and passes
    f = np.array([1.0, 1.0, 0.0, 0.0] * 25)
    kish = w.sum() ** 2 / (w * w).sum()
    _, n_eff, _ = rates_from_sums([w.sum()], [(w * w).sum()], [(w * f).sum()], [(w * w * f).sum()])
    assert n_eff[0] == pytest.approx(kish)
    # 20 failures among 200, the 10 heaviest weights (10 against 1) all on failures: Kish 70.7, 47.8 here
    f = np.r_[np.ones(20), np.zeros(180)]
    w = np.r_[np.full(10, 10.0), np.ones(190)]
    _, n_eff, _ = rates_from_sums([w.sum()], [(w * w).sum()], [(w * f).sum()], [(w * w * f).sum()])
    assert n_eff[0] < 0.7 * (w.sum() ** 2 / (w * w).sum())


def test_stabilized_weights_cost_nothing_when_the_policy_ignores_the_input():
    """A policy whose cell preferences change from step to step but never with the input: π/π̄ = 1,
    so n_eff equals the raw count, whereas the plain 1/π weights lose effective size."""
    from failfade.landscape import propensities
    from failfade.stats import weighted_cell_rates

    rng = np.random.default_rng(0)
    steps, per_step, n_cells = 20, 50, 4
    rows = []
    for t in range(steps):
        pi = rng.dirichlet(np.ones(n_cells))  # this step's preferences, the same for every input
        cells = rng.choice(n_cells, per_step, p=pi)
        rows.append(pl.DataFrame({"cell": cells, "failure": rng.random(per_step) < 0.3,
                                  "propensity": pi[cells], "marginal": pi[cells]}))
    q = pl.concat(rows)
    n = np.bincount(q["cell"].to_numpy(), minlength=n_cells)
    _, n_eff, _ = weighted_cell_rates(q["cell"].to_numpy(), q["failure"].to_numpy(), propensities(q), n_cells)
    np.testing.assert_allclose(n_eff, n)
    _, n_plain, _ = weighted_cell_rates(q["cell"].to_numpy(), q["failure"].to_numpy(), q["propensity"].to_numpy(), n_cells)
    assert (n_plain < 0.9 * n).all()


def test_confirm_allocation_goes_to_cheap_open_cells():
    """LevelSet.confirm: settled cells (interval wholly above or below τ) get nothing; of two open
    cells, the one far above τ (cheap to confirm) gets far more than one stuck at τ; a weighted
    update settles a cell exactly when the landscape's interval (on n_eff) would."""
    from failfade.explore.env import LevelSet
    from failfade.stats import wilson_interval

    lv = LevelSet(4, 0.5)
    lv.update(np.repeat([0, 1, 2, 3], [40, 3, 200, 40]),
              np.concatenate([np.ones(40), [1, 1, 1], np.arange(200) % 2 == 0, np.zeros(40)]))
    share = lv.confirm(np.random.default_rng(0), draws=2000)
    assert share[0] < 1e-3 and share[3] < 1e-3  # settled: 40/40 failing, 0/40 failing
    assert share[1] > 5 * share[2]  # 3/3 failing: a few more queries confirm it; 100/200: hopeless
    # weighted: the same 10 failures out of 10 queries, but with unequal weights n_eff < 10
    w = np.array([5.0] + [1.0] * 9)
    lv = LevelSet(2, 0.5)
    lv.update(np.zeros(10, int), np.ones(10), w)
    lv.update(np.array([1]), np.array([1.0]), np.array([1.0]))  # cell 1 stays open
    n_eff = w.sum() ** 2 / (w ** 2).sum()
    assert lv.n[0] == pytest.approx(n_eff) and lv.k[0] == pytest.approx(n_eff)
    lo, _ = wilson_interval(np.array([n_eff]), np.array([n_eff]))
    assert (lv.confirm(np.random.default_rng(0))[0] < 1e-3) == bool(lo[0] >= 0.5)


def test_confirm_searcher_maps_a_planted_landscape():
    task = SyntheticTask(seed=0)
    q, _ = _run(task, 4096, 64, 0, "confirm")
    assert np.isnan(q["propensity"].to_numpy()).all()  # it ignores the input: no weights
    table = cell_table(task.space, q, 0.5)
    found = set(table.filter(pl.col("is_failure"))["cell"].to_list())
    planted = set(task.planted.tolist())
    assert len(found & planted) >= 9 and len(found - planted) <= 1, (sorted(found), sorted(planted))


def test_weighted_inputs_draws_the_failing_inputs_more():
    """The paper's ε-weighted input sampler: an input's weight rises by ε per failure, falls by ε per
    success (floor 0.01), and inputs are drawn in proportion to it."""
    from failfade.explore.baselines import WeightedInputSearcher

    s = WeightedInputSearcher(n_cells=4, seed=0, num_agents=3, n_inputs=5, epsilon=0.1)
    s.act(np.zeros((3, 2)), np.array([0, 0, 1]))
    s.observe(None, None, None, np.array([True, True, False]))
    np.testing.assert_allclose(s.weights, [1.2, 0.9, 1, 1, 1])
    for _ in range(20):
        s.act(np.zeros((1, 2)), np.array([1]))
        s.observe(None, None, None, np.array([False]))
    assert s.weights[1] == pytest.approx(0.01)
    draws = np.concatenate([s.choose_inputs(None, 1000) for _ in range(5)])
    assert (draws == 0).mean() > (draws == 2).mean() > 30 * (draws == 1).mean()
    # through explore(): a task where input 0 always fails and the others never do
    task = SyntheticTask(shape=(2, 2), n_inputs=8, seed=0, p_fail=0.0, p_base=0.0)
    task._u[0] = -1.0  # u < p for every cell of input 0
    q, _ = explore(task, 1600, 16, 0, "weighted_inputs", {}, progress=False)
    assert (q["input_id"] == 0).mean() > 0.5


class DifficultyTask:
    """5 x 5 grid; input i has a difficulty d_i ~ U(0, 1) and fails at cell (a, b) iff d_i < 0.1 +
    0.1·(a + b): a hard input fails at many cells, as on real models."""

    def __init__(self, n_inputs=500, seed=0):
        rng = np.random.default_rng(seed)
        self.space = ConceptSpace([Axis(n, "contrast", tuple(float(i) for i in range(5))) for n in ("a", "b")])
        self.n_cells, self.n_inputs = 25, n_inputs
        a, b = np.divmod(np.arange(25), 5)
        self.fail = rng.random(n_inputs)[:, None] < (0.1 + 0.1 * (a + b))[None, :]
        self.labels = np.zeros(n_inputs, dtype=np.int64)
        self.observations = rng.standard_normal((n_inputs, 4)).astype(np.float32)

    def score(self, input_ids, cells):
        f = self.fail[np.asarray(input_ids), np.asarray(cells)]
        return Outcomes(f.astype(np.int64), f.astype(np.float32), f)


def test_microscopic_walks_bias_the_landscape_so_the_workflow_refuses_them():
    """Why config.validate refuses explore.mode: microscopic. A walk ends at its input's first
    failure, so the inputs reaching a far cell are those that passed the near ones: the per-cell
    rates from walks are far too low, where random one-shot queries on the same task are not."""
    task = DifficultyTask()
    truth = task.fail.mean(0)
    q, _ = explore(task, 4000, 32, 0, "random", progress=False, mode="microscopic", micro=MICRO)
    walks = cell_table(task.space, q, 0.5)
    seen = walks["queries"].to_numpy() > 0
    q, _ = explore(task, 4000, 32, 0, "random", progress=False)
    shots = cell_table(task.space, q, 0.5)
    walk_err = (walks["failure_rate"].to_numpy() - truth)[seen].mean()
    shot_err = (shots["failure_rate"].to_numpy() - truth).mean()
    assert walk_err < -0.1 and abs(shot_err) < 0.03, (walk_err, shot_err)  # seeds 0-2: walks -0.18 to -0.23, shots < 0.01


@pytest.mark.parametrize("algorithm", ["confirm", "ppo"])
def test_the_confirm_allocation_settles_cells_at_the_landscapes_confidence(algorithm):
    """landscape.confidence reaches the confirm allocation (PPO's prior): a cell counts as settled in
    exploration at the level the landscape will show it settled, not at a fixed 95%."""
    from failfade.explore.search import SEARCHERS, SearchSpec

    spec = SearchSpec(125, 16, 256, 32, 10, 0.5, "macroscopic", confidence=0.8)
    assert SEARCHERS[algorithm](spec, {}, 0).levels.confidence == 0.8
    task = SyntheticTask()
    runs = {c: _run(task, 3200, 32, 0, algorithm, confidence=c)[0]["cell"].to_list() for c in (0.8, 0.95)}
    assert runs[0.8] != runs[0.95]
    assert _run(task, 3200, 32, 0, algorithm)[0]["cell"].to_list() == runs[0.95]  # 0.95 is the default


def test_dqn_queries_are_weighed_by_plain_propensities():
    """DQN logs π but no marginal: after ε decays, stabilized weights π̄/π reach a few hundred and
    the landscape's Wilson(n_eff) interval under-covered (0.90-0.93 at 4,000 queries on a grid whose
    failures follow the input, against 0.95-0.97 with 1/π; dqn.py)."""
    from failfade.landscape import propensities

    q, _ = _run(SyntheticTask(), 2048, 32, 0, "dqn")
    assert np.isfinite(q["propensity"].to_numpy()).all() and np.isnan(q["marginal"].to_numpy()).all()
    # the landscape weighs each query by 1/π, not by a stabilized π̄/π
    np.testing.assert_allclose(propensities(q), q["propensity"].to_numpy(), rtol=1e-12)
    assert q["propensity"].to_numpy().std() > 0  # π varies (ε decays), so the weights are not all equal


class _FlatTask:
    """Every cell fails on a fixed random 48% of the inputs: no cell is a failure cell (τ = 0.5)."""

    def __init__(self, seed: int, rate: float = 0.48, n_inputs: int = 4000):
        self.space = ConceptSpace([Axis(f"a{k}", "contrast", tuple(float(i) for i in range(5))) for k in range(2)])
        self.n_cells, self.n_inputs = self.space.n_cells, n_inputs
        rng = np.random.default_rng(seed)
        self.observations = rng.standard_normal((n_inputs, 8)).astype(np.float32)
        self.labels = np.zeros(n_inputs, np.int64)
        self.fail = rng.random((n_inputs, self.n_cells)) < rate

    def score(self, ids, cells):
        f = self.fail[np.asarray(ids), np.asarray(cells)]
        return Outcomes(f.astype(np.int64), f.astype(np.float32), f)


def test_confirm_does_not_stop_a_cell_the_moment_its_interval_clears_tau():
    """Optional stopping: when `confirm` stopped querying a cell as soon as its 95% lower bound
    cleared τ, cells at a true rate of 0.48 were called failing 6.8% of the time (17 of 250 here),
    against the fixed-sample interval's nominal 2.5%; settled at 99%, 1 or 2 of 250."""
    false_calls = cells = 0
    for seed in range(10):
        task = _FlatTask(seed)
        q, _ = explore(task, 6400, 32, seed=seed, algorithm="confirm", params={}, progress=False, tau=0.5)
        table = cell_table(task.space, q, 0.5)
        below = task.fail.mean(0) < 0.5
        false_calls += int((table["is_failure"].to_numpy() & below).sum())
        cells += int(below.sum())
    assert cells >= 240 and false_calls <= 6, (false_calls, cells)


def test_levelset_keeps_going_on_a_model_that_never_fails():
    """A robust model (or one whose failures were faded): past ~53 clean queries a cell's
    uncertainty was 1 - p_below, exactly 0 in double precision, so once every cell was that sure the
    levelset searcher's weights summed to 0 and it crashed (NaN probabilities). The upper tail is now
    computed directly, and all-zero weights spread the queries evenly."""
    from failfade.explore.env import exploration_bonus
    from failfade.explore.search import explore
    from failfade.tasks.synthetic import SyntheticTask

    bonus = exploration_bonus("uncertainty", np.array([100.0, 2000.0]), np.array([3.0, 0.0]), 0.5)
    assert bonus[0] > 0 and bonus[0] == pytest.approx(6.8e-26, rel=0.1)  # was exactly 0
    task = SyntheticTask(p_fail=0.0, p_base=0.0, seed=0)
    q, _ = explore(task, 64 * 125, 64, 0, "levelset", progress=False)
    assert q.height == 64 * 125 and not q["failure"].any()
    q, _ = explore(SyntheticTask(shape=(1,), p_fail=0.0, p_base=0.0, seed=0), 4096, 64, 0, "levelset", progress=False)
    assert q.height == 4096
    # every cell settled beyond double precision (P(rate > τ) = 0.5^2001 underflows): the draws spread evenly
    from failfade.explore.baselines import LevelSetSearcher

    s = LevelSetSearcher(5, 0)
    cells = np.repeat(np.arange(5), 2000)
    s.observe(None, cells, None, np.zeros(len(cells), bool))
    assert not s.levels.uncertainty().any()
    draws = np.bincount(s.act(np.zeros((5000, 1)), None), minlength=5)
    assert draws.min() > 850, draws  # 1,000 expected each


@pytest.mark.parametrize(("algorithm", "params", "key"), [("ppo", {"bonus": "uncertanity"}, "explore.ppo.bonus"),
                                                          ("ppo", {"uniform_mix": 1.5}, "explore.ppo.uniform_mix"),
                                                          ("dqn", {"bonus": "counts"}, "explore.dqn.bonus")])
def test_a_learner_setting_out_of_range_is_refused(algorithm, params, key):
    """The config schema checks these; the Python API did not: a misspelt bonus meant no bonus, and a
    uniform mix above 1 gave negative propensities (weights of 1e12)."""
    from failfade.explore.search import explore
    from failfade.tasks.synthetic import SyntheticTask

    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        explore(SyntheticTask(seed=0), 256, 64, 0, algorithm, params, progress=False)
