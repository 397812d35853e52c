"""Microscopic exploration: each explorer walks the grid from a start cell, one level along one
axis per step, on one input, until the model fails or a step cap is reached.

Observation: the clean input's embedding plus a one-hot of the current level on each axis.
Actions: 2 × n_axes moves (axis k up or down; a move off the grid stays put). Reward: 1 on
failure, minus the paper's step penalty α on every step, plus the same exploration bonus as the
macroscopic env (env.exploration_bonus).
"""

from __future__ import annotations

import numpy as np

from failfade.explore.env import exploration_bonus
from failfade.puffer import PufferEnv, box, discrete


class MicroEnv(PufferEnv):
    def __init__(self, task, num_agents: int, seed: int, novelty_coef: float = 0.0, step_cap: int = 8,
                 alpha: float = 0.05, start: str = "origin", bonus: str = "uncertainty", tau: float = 0.5, buf=None):
        if start not in ("origin", "random"):  # the config's schema says so; this guards the Python API
            raise ValueError(f"explore.micro.start: {start!r} is not origin or random")
        self.task = task
        self.space = task.space
        self.shape = np.array(self.space.shape)
        d = task.observations.shape[1]
        self.single_observation_space = box(d + int(self.shape.sum()))
        self.single_action_space = discrete(2 * len(self.shape))
        self.num_agents = num_agents
        super().__init__(buf)
        self.novelty_coef, self.step_cap, self.alpha, self.start = float(novelty_coef), step_cap, alpha, start
        self.rng = np.random.default_rng(seed)
        self.visits = np.zeros(task.n_cells, dtype=np.int64)
        self.fails = np.zeros(task.n_cells, dtype=np.int64)
        self.bonus, self.tau = bonus, tau
        self.input_ids = np.zeros(num_agents, dtype=np.int64)
        self.pos = np.zeros((num_agents, len(self.shape)), dtype=np.int64)
        self.t = np.zeros(num_agents, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.shape)[:-1]])
        self.last = None

    def _restart(self, mask):
        n = int(mask.sum())
        self.input_ids[mask] = self.rng.integers(0, self.task.n_inputs, n)
        if self.start == "random":
            self.pos[mask] = self.rng.integers(0, self.shape, (n, len(self.shape)))
        else:
            self.pos[mask] = 0
        self.t[mask] = 0

    def _write_obs(self):
        d = self.task.observations.shape[1]
        self.observations[:, :d] = self.task.observations[self.input_ids]
        self.observations[:, d:] = 0
        rows = np.arange(self.num_agents)[:, None]
        self.observations[rows, d + self.offsets[None, :] + self.pos] = 1.0

    def reset(self, seed=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.visits[:] = 0
        self.fails[:] = 0
        self._restart(np.ones(self.num_agents, dtype=bool))
        self._write_obs()
        return self.observations, []

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_agents)
        axis, sign = actions // 2, np.where(actions % 2 == 0, 1, -1)
        rows = np.arange(self.num_agents)
        self.pos[rows, axis] = np.clip(self.pos[rows, axis] + sign, 0, self.shape[axis] - 1)
        self.t += 1
        cells = self.space.index(self.pos)
        out = self.task.score(self.input_ids, cells)
        self.last = (self.input_ids.copy(), cells, out)
        np.add.at(self.visits, cells, 1)
        np.add.at(self.fails, cells, out.failure.astype(np.int64))
        self.rewards[:] = out.failure.astype(np.float32) - self.alpha
        if self.novelty_coef:
            self.rewards[:] += self.novelty_coef * exploration_bonus(self.bonus, self.visits[cells], self.fails[cells], self.tau)
        done = out.failure | (self.t >= self.step_cap)
        self.terminals[:] = done
        self.truncations[:] = False
        self._restart(done)
        self._write_obs()
        return self.observations, self.rewards, self.terminals, self.truncations, []

    def close(self):
        pass
