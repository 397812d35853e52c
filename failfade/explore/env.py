"""A native PufferEnv whose `num_agents` explorers each propose one concept cell per step.

Macroscopic mode (the paper's main setting): every episode is one step. An explorer observes an
embedding of a freshly sampled clean input (the contextual setting), proposes a cell, and the env
scores all explorers' proposals in ONE batched call of the model under test. Reward = failure
(0/1) plus a count-based novelty bonus `novelty_coef / sqrt(visits(cell))`, so that the learner
maps the whole landscape instead of collapsing onto the single worst cell.
"""

from __future__ import annotations

import numpy as np

from failfade.puffer import PufferEnv, box, discrete


class ConceptEnv(PufferEnv):
    def __init__(self, task, num_agents: int, seed: int, novelty_coef: float = 0.0, buf=None):
        self.task = task
        self.single_observation_space = box(task.observations.shape[1])
        self.single_action_space = discrete(task.n_cells)
        self.num_agents = num_agents
        super().__init__(buf)
        self.novelty_coef = float(novelty_coef)
        self.rng = np.random.default_rng(seed)
        self.visits = np.zeros(task.n_cells, dtype=np.int64)
        self.input_ids = np.zeros(num_agents, dtype=np.int64)
        self.last = None  # (input_ids, cells, Outcomes) of the latest step, for the query log

    def _sample_inputs(self):
        self.input_ids[:] = self.rng.integers(0, self.task.n_inputs, self.num_agents)
        self.observations[:] = self.task.observations[self.input_ids]

    def reset(self, seed=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.visits[:] = 0
        self._sample_inputs()
        return self.observations, []

    def step(self, actions):
        cells = np.asarray(actions, dtype=np.int64).reshape(self.num_agents)
        out = self.task.score(self.input_ids, cells)
        self.last = (self.input_ids.copy(), cells, out)
        np.add.at(self.visits, cells, 1)
        self.rewards[:] = out.failure.astype(np.float32)
        if self.novelty_coef:
            self.rewards[:] += self.novelty_coef / np.sqrt(self.visits[cells])
        self.terminals[:] = True  # one-step episodes; the next input is sampled at once
        self.truncations[:] = False
        self._sample_inputs()
        return self.observations, self.rewards, self.terminals, self.truncations, []

    def close(self):
        pass
