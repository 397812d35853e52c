"""Simple searchers over cells, sharing the PPO/DQN interface, budget and failure rule.

Interface (every searcher):
  act(obs, input_ids) -> cells        one proposal per explorer
  observe(obs, cells, rewards, failures, next_obs, dones) -> dict | None   learn; return a log row after an update
  choose_inputs(rng, n) -> ids | None optional: which inputs to probe next (threshold baseline)
"""

from __future__ import annotations

import numpy as np

from failfade.explore.env import CONFIRM_SETTLE_STRICTNESS, LevelSet


class RandomSearcher:
    """Uniform over cells: the baseline every learner must beat at the same budget."""

    name = "random"

    def __init__(self, n_cells: int, seed: int, **_):
        self.n_cells = n_cells
        self.rng = np.random.default_rng(seed)

    def act(self, obs, input_ids):
        return self.rng.integers(0, self.n_cells, len(obs))

    def observe(self, obs, cells, rewards, failures, next_obs=None, dones=None):
        return None


class EpsilonGreedySearcher:
    """A real ε-greedy over per-cell failure-rate estimates (not the paper's input re-weighting)."""

    name = "epsilon_greedy"

    def __init__(self, n_cells: int, seed: int, epsilon: float = 0.2, **_):
        self.rng = np.random.default_rng(seed)
        self.n_cells, self.epsilon = n_cells, epsilon
        self.n = np.zeros(n_cells)
        self.k = np.zeros(n_cells)

    def act(self, obs, input_ids):
        b = len(obs)
        est = (self.k + 1) / (self.n + 2)  # Laplace estimate: untried cells look like 0.5
        greedy = np.flatnonzero(est == est.max())
        cells = self.rng.choice(greedy, b)
        explore = self.rng.random(b) < self.epsilon
        cells[explore] = self.rng.integers(0, self.n_cells, int(explore.sum()))
        return cells

    def observe(self, obs, cells, rewards, failures, next_obs=None, dones=None):
        np.add.at(self.n, cells, 1)
        np.add.at(self.k, cells, failures.astype(float))
        return None


class ThompsonSearcher:
    """Thompson sampling with a Beta(1, 1) prior per cell: the contextual-bandit baseline."""

    name = "bandit"

    def __init__(self, n_cells: int, seed: int, **_):
        self.rng = np.random.default_rng(seed)
        self.a = np.ones(n_cells)
        self.b = np.ones(n_cells)

    def act(self, obs, input_ids):
        draws = self.rng.beta(self.a[None, :], self.b[None, :], size=(len(obs), len(self.a)))
        return draws.argmax(1)

    def observe(self, obs, cells, rewards, failures, next_obs=None, dones=None):
        f = failures.astype(float)
        np.add.at(self.a, cells, f)
        np.add.at(self.b, cells, 1 - f)
        return None


class LevelSetSearcher:
    """Level-set sampling: each explorer draws a cell with probability proportional to the chance
    that the cell's failure rate lies on the other side of τ than its current estimate says (the
    `uncertainty` exploration bonus, from a Beta(k+1, n−k+1) posterior). Queries go where they can
    still change the map; a cell at exactly τ keeps its share but cannot absorb the budget. The
    mapping baseline: it ignores the input, so its per-cell rates need no importance weights."""

    name = "levelset"

    def __init__(self, n_cells: int, seed: int, tau: float = 0.5, confidence: float = 0.95, **_):
        self.rng = np.random.default_rng(seed)
        self.levels = LevelSet(n_cells, tau, confidence)

    def act(self, obs, input_ids):
        p = self.levels.uncertainty()
        total = p.sum()
        if not total > 0:  # every cell settled beyond double precision (thousands of queries each): spread evenly
            return self.rng.integers(0, len(p), len(obs))
        return self.rng.choice(len(p), len(obs), p=p / total)

    def observe(self, obs, cells, rewards, failures, next_obs=None, dones=None):
        self.levels.update(cells, failures)
        return None


class ConfirmSearcher(LevelSetSearcher):
    """The confirm allocation (`LevelSet.confirm`): each explorer draws a cell with probability equal
    to its share of Thompson draws in which it is the open cell cheapest to confirm as failing. The
    prior of the default PPO on its own; it ignores the input, so no importance weights."""

    name = "confirm"

    def __init__(self, n_cells: int, seed: int, tau: float = 0.5, confidence: float = 0.95,
                 settle_strictness: float = CONFIRM_SETTLE_STRICTNESS, **_):
        super().__init__(n_cells, seed, tau, confidence)
        if settle_strictness < 1:
            raise ValueError(f"confirm: settle_strictness must be at least 1, got {settle_strictness}")
        # a cell stops getting queries only once a stricter bound than the landscape's clears τ: stopping
        # at the landscape's own is optional stopping (true rate 0.48: 6.8% called failing, 2.5% nominal)
        self.settle = 1 - (1 - confidence) / settle_strictness

    def act(self, obs, input_ids):
        p = self.levels.confirm(self.rng, settle=self.settle)
        return self.rng.choice(len(p), len(obs), p=p / p.sum())


class ThresholdSearcher:
    """The paper's threshold baseline: random cells, but each explorer keeps probing the same
    input until it has produced `successes` non-failures, then moves to a new input."""

    name = "threshold"

    def __init__(self, n_cells: int, seed: int, num_agents: int, n_inputs: int, successes: int = 5, **_):
        self.rng = np.random.default_rng(seed)
        self.n_cells, self.n_inputs, self.successes = n_cells, n_inputs, successes
        self.current = self.rng.integers(0, n_inputs, num_agents)
        self.ok = np.zeros(num_agents, dtype=np.int64)

    def choose_inputs(self, rng, n):
        return self.current.copy()

    def act(self, obs, input_ids):
        return self.rng.integers(0, self.n_cells, len(obs))

    def observe(self, obs, cells, rewards, failures, next_obs=None, dones=None):
        self.ok += ~failures
        done = self.ok >= self.successes
        self.current[done] = self.rng.integers(0, self.n_inputs, int(done.sum()))
        self.ok[done] = 0
        return None


class WeightedInputSearcher:
    """The paper's "ε-greedy" baseline, which is not ε-greedy in the RL sense: uniformly random
    cells, with each explorer's input drawn by weights that start at 1, rise by ε after a failure on
    that input and fall by ε after a success, never below `floor` (its classification script:
    ε = 0.1, floor 0.01)."""

    name = "weighted_inputs"

    def __init__(self, n_cells: int, seed: int, num_agents: int, n_inputs: int, epsilon: float = 0.1,
                 floor: float = 0.01, **_):
        self.rng = np.random.default_rng(seed)
        self.n_cells, self.epsilon, self.floor = n_cells, epsilon, floor
        self.weights = np.ones(n_inputs)
        self.inputs = np.zeros(num_agents, dtype=np.int64)

    def choose_inputs(self, rng, n):
        return self.rng.choice(len(self.weights), n, p=self.weights / self.weights.sum())

    def act(self, obs, input_ids):
        self.inputs = np.asarray(input_ids).copy()
        return self.rng.integers(0, self.n_cells, len(obs))

    def observe(self, obs, cells, rewards, failures, next_obs=None, dones=None):
        np.add.at(self.weights, self.inputs, np.where(failures, self.epsilon, -self.epsilon))
        np.maximum(self.weights, self.floor, out=self.weights)
        return None
