"""A native PufferEnv whose `num_agents` explorers each propose one concept cell per step.

Macroscopic mode (the paper's main setting): every episode is one step. An explorer observes an
embedding of a freshly sampled clean input (the contextual setting), proposes a cell, and the env
scores all explorers' proposals in ONE batched call of the model under test. Reward = failure
(0/1) plus an exploration bonus (see `exploration_bonus`), so that the learner maps the whole
landscape instead of collapsing onto the single worst cell.
"""

from __future__ import annotations

import numpy as np
from scipy.special import betainc

from failfade.puffer import PufferEnv, box, discrete

BONUSES = ("uncertainty", "count", "none")
# the confirm searcher settles a failure cell at 1 - (1 - confidence) / this (a 95% landscape: 99%)
CONFIRM_SETTLE_STRICTNESS = 5


def exploration_bonus(kind: str, n: np.ndarray, k: np.ndarray, tau: float) -> np.ndarray:
    """Per-cell bonus after the cell's n queries with k failures.

    uncertainty: min(P(rate ≥ τ), P(rate < τ)) under a Beta(k+1, n−k+1) posterior — the chance
                 that the cell sits on the other side of the failure threshold than it seems. It is
                 large only where the cell's classification is still open (level-set estimation),
                 so queries go where they change the map, not to cells already known to fail.
    count:       1/sqrt(n), classic count-based novelty.
    """
    if kind == "uncertainty":
        p_below = betainc(k + 1.0, n - k + 1.0, tau)
        # the upper tail directly (I_x(a, b) = 1 - I_1-x(b, a)): 1 - p_below rounds to exactly 0 once a
        # cell has ~53 clean queries, which left the levelset searcher with all-zero weights
        p_above = betainc(n - k + 1.0, k + 1.0, 1.0 - tau)
        return np.minimum(p_below, p_above)
    if kind == "count":
        return 1.0 / np.sqrt(np.maximum(n, 1))
    return np.zeros_like(n, dtype=np.float64)


class LevelSet:
    """Per-cell queries n and failures k, and from them the allocations behind the levelset and
    confirm searchers and PPO's prior: `uncertainty` and `confirm`.

    With importance weights (a contextual policy's π̄/π, see stats.weighted_cell_rates), n and k
    are the effective counts n_eff and k_eff = rate·n_eff of stats.rates_from_sums, the very numbers
    the landscape's interval will use, so a cell counts as settled here exactly when it will show as
    settled there. Without weights they are the plain counts."""

    def __init__(self, n_cells: int, tau: float, confidence: float = 0.95):
        self.confidence = confidence  # the landscape's interval level: `confirm` settles cells by it
        self.sw = np.zeros(n_cells)
        self.sw2 = np.zeros(n_cells)
        self.swf = np.zeros(n_cells)
        self.sw2f = np.zeros(n_cells)
        self.n = np.zeros(n_cells)
        self.k = np.zeros(n_cells)
        self.tau = tau

    def update(self, cells, failures, weights=None) -> None:
        w = np.ones(len(cells)) if weights is None else np.asarray(weights, dtype=float)
        np.add.at(self.sw, cells, w)
        np.add.at(self.sw2, cells, w * w)
        f = np.asarray(failures, dtype=float)
        np.add.at(self.swf, cells, w * f)
        np.add.at(self.sw2f, cells, w * w * f)
        if weights is None:
            self.n, self.k = self.sw, self.swf  # plain counts, exactly
            return
        from failfade.stats import rates_from_sums

        _, self.n, self.k = rates_from_sums(self.sw, self.sw2, self.swf, self.sw2f)

    def uncertainty(self) -> np.ndarray:
        return exploration_bonus("uncertainty", self.n, self.k, self.tau)

    def confirm(self, rng: np.random.Generator, draws: int = 256, confidence: float | None = None,
                max_samples: int = 2 ** 18, settle: float | None = None) -> np.ndarray:
        """The confirm allocation: each cell's share of `draws` Thompson draws in which it is the
        open cell that is cheapest to confirm as a failure cell.

        The landscape shows a cell as failing when the lower bound of its interval clears τ, and
        how many queries that takes depends on how far the cell's rate is from τ. The cost counted
        here is the Wald count z²·p(1−p)/(p−τ)² (92 at p = 0.6, thousands at p = 0.52), less the
        cell's queries so far, floored at 1. Near p = 1 it undercounts what the landscape's Wilson
        bound needs (0.16 at p = 0.99 and 2.2 at p = 0.9, where Wilson needs 4 and 7), so cells that
        are nearly sure to fail all cost the floor and are drawn among themselves at random; the
        score-test count z²·τ(1−τ)/(p−τ)² would track Wilson there. It changes little: on the
        discovery benchmark's digits task (20% budget, 20 seeds paired) recall moved by +0.004
        (−0.012, +0.020) for PPO and −0.003 (−0.017, +0.011) for the confirm searcher with it, and on
        the planted model by −0.005 and 0 (2026-12-07); the tables keep the Wald count. Per draw, every
        cell's rate is sampled from its Beta(k+1, n−k+1) posterior and the cell with the fewest
        further queries to confirm wins, among cells not yet settled either way (interval entirely
        above or below τ). So queries go to cells that are likely failures and cheap to confirm,
        a cell near τ that no budget can settle stops absorbing queries, and posterior sampling
        keeps trying cells whose estimate is still vague. Draws in which no open cell samples above
        τ are spread over the open cells. Shares have a floor of 1e-6 (usable as log-weights).

        Cost is draws × open cells posterior samples per call (every env step for PPO's prior): past
        `max_samples` (1,024 open cells at 256 draws) the draws shrink to fit, to no fewer than 16
        (still one posterior draw per few explorers), so a 15,625-cell grid costs about 25 ms per
        step here instead of 0.46 s at 256 draws; the default grids (≤ 125 cells) are unchanged.

        `settle`: the level at which a cell counts as confirmed failing and stops getting queries
        (default: `confidence`, the landscape's), and to which its cost is counted. Stopping a cell
        the moment the landscape's own bound clears τ is optional stopping, which its fixed-sample
        interval does not allow for: the `confirm` searcher settles at 99% for a 95% landscape
        (CONFIRM_SETTLE_STRICTNESS); PPO's prior keeps the landscape's level, its uniform
        proposals going on sampling settled cells (see the README's discovery section).
        """
        from statistics import NormalDist

        from failfade.stats import wilson_interval

        n_cells, tau = len(self.n), self.tau
        confidence = self.confidence if confidence is None else confidence
        _, hi = wilson_interval(self.k, self.n, confidence)
        confidence = confidence if settle is None else settle
        lo, _ = wilson_interval(self.k, self.n, confidence)
        open_ = np.flatnonzero(~((self.n > 0) & ((lo >= tau) | (hi < tau))))
        share = np.zeros(n_cells)
        if len(open_) == 0:  # every cell settled: spread evenly
            return np.full(n_cells, 1.0 / n_cells)
        draws = max(16, min(draws, max_samples // len(open_)))
        n, k = self.n[open_], self.k[open_]
        p = rng.beta(k + 1.0, n - k + 1.0, size=(draws, len(open_)))  # settled cells need no draws
        z2 = NormalDist().inv_cdf(0.5 + confidence / 2) ** 2
        with np.errstate(divide="ignore"):
            cost = z2 * p * (1.0 - p) / (p - tau) ** 2 - n
        cost = np.where(p > tau, np.maximum(cost, 1.0), np.inf)
        cost += rng.random(cost.shape) * 1e-3  # ties (every cell at one query) broken at random
        best = cost.argmin(1)
        hit = np.isfinite(cost.min(1))
        share[open_] = np.bincount(best[hit], minlength=len(open_)) + (~hit).sum() / len(open_)
        return np.maximum(share / draws, 1e-6)


class ConceptEnv(PufferEnv):
    def __init__(self, task, num_agents: int, seed: int, novelty_coef: float = 0.0, bonus: str = "uncertainty",
                 tau: float = 0.5, buf=None):
        self.task = task
        self.single_observation_space = box(task.observations.shape[1])
        self.single_action_space = discrete(task.n_cells)
        self.num_agents = num_agents
        super().__init__(buf)
        self.novelty_coef = float(novelty_coef)
        self.rng = np.random.default_rng(seed)
        self.visits = np.zeros(task.n_cells, dtype=np.int64)
        self.fails = np.zeros(task.n_cells, dtype=np.int64)
        self.bonus, self.tau = bonus, tau
        self.input_ids = np.zeros(num_agents, dtype=np.int64)
        self.last = None  # (input_ids, cells, Outcomes) of the latest step, for the query log
        self.input_chooser = None  # optional searcher hook (rng, n) -> input ids, e.g. the threshold baseline

    def sample_inputs(self):
        """Draw the next clean input of every explorer (through `input_chooser` when a searcher set
        one: the threshold baseline asks again after it has seen a step's outcomes)."""
        if self.input_chooser is not None:
            self.input_ids[:] = self.input_chooser(self.rng, self.num_agents)
        else:
            self.input_ids[:] = self.rng.integers(0, self.task.n_inputs, self.num_agents)
        self.observations[:] = self.task.observations[self.input_ids]

    def reset(self, seed=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.visits[:] = 0
        self.fails[:] = 0
        self.sample_inputs()
        return self.observations, []

    def step(self, actions):
        cells = np.asarray(actions, dtype=np.int64).reshape(self.num_agents)
        out = self.task.score(self.input_ids, cells)
        self.last = (self.input_ids.copy(), cells, out)
        np.add.at(self.visits, cells, 1)
        np.add.at(self.fails, cells, out.failure.astype(np.int64))
        self.rewards[:] = out.failure.astype(np.float32)
        if self.novelty_coef:
            self.rewards[:] += self.novelty_coef * exploration_bonus(self.bonus, self.visits[cells], self.fails[cells], self.tau)
        self.terminals[:] = True  # one-step episodes; the next input is sampled at once
        self.truncations[:] = False
        self.sample_inputs()
        return self.observations, self.rewards, self.terminals, self.truncations, []

    def close(self):
        pass
