"""A model with planted failure cells and a known answer, for testing searchers and learners.

Each (input, cell) pair fails with probability `p_fail` inside the planted cells and `p_base`
outside; the draw is a fixed hash of (seed, input, cell), so repeated queries agree.
"""

from __future__ import annotations

import numpy as np

from failfade.concepts import Axis, ConceptSpace
from failfade.tasks import Outcomes


class SyntheticTask:
    def __init__(self, shape=(5, 5, 5), planted=None, n_inputs=256, obs_dim=16, p_fail=0.9, p_base=0.03, seed=0):
        self.space = ConceptSpace([Axis(f"axis{k}", "contrast", tuple(float(i) for i in range(n))) for k, n in enumerate(shape)])
        self.n_cells = self.space.n_cells
        self.n_inputs = n_inputs
        rng = np.random.default_rng(seed)
        if planted is None:
            planted = rng.choice(self.n_cells, size=max(1, self.n_cells // 12), replace=False)
        self.planted = np.sort(np.asarray(planted))
        self.p = np.full(self.n_cells, p_base)
        self.p[self.planted] = p_fail
        self.labels = np.zeros(n_inputs, dtype=np.int64)
        self.observations = rng.standard_normal((n_inputs, obs_dim)).astype(np.float32)
        self._u = np.random.default_rng(seed + 1).random((n_inputs, self.n_cells))

    def true_failure_rate(self) -> np.ndarray:
        return (self._u < self.p[None, :]).mean(0)

    def score(self, input_ids, cells) -> Outcomes:
        input_ids, cells = np.asarray(input_ids), np.asarray(cells)
        u = self._u[input_ids, cells]
        fail = u < self.p[cells]
        return Outcomes(np.where(fail, 1, 0), (1.0 - u).astype(np.float32), fail)
