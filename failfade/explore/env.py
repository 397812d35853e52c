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
        return np.minimum(p_below, 1.0 - p_below)
    if kind == "count":
        return 1.0 / np.sqrt(np.maximum(n, 1))
    return np.zeros_like(n, dtype=np.float64)


class LevelSet:
    """Per-cell queries n and failures k, and from them the `uncertainty` bonus of every cell: the
    level-set allocation behind the levelset searcher and PPO's prior."""

    def __init__(self, n_cells: int, tau: float):
        self.n = np.zeros(n_cells)
        self.k = np.zeros(n_cells)
        self.tau = tau

    def update(self, cells, failures) -> None:
        np.add.at(self.n, cells, 1)
        np.add.at(self.k, cells, np.asarray(failures, dtype=float))

    def uncertainty(self) -> np.ndarray:
        return exploration_bonus("uncertainty", self.n, self.k, self.tau)


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
