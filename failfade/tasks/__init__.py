"""A *task* tells exploration how to score a model under test on (input, cell) pairs.

Every task exposes the same small surface, so every searcher, the env and the landscape work
unchanged across tasks:
  n_inputs, n_cells, space          sizes and the concept space
  labels                             (n_inputs,) reference label per input (or -1)
  observations                       (n_inputs, d) float32: the explorer's view of each clean input
  score(input_ids, cells) -> Outcomes  one batched evaluation of the model under test
  model_sha256                       (tasks built by a family) the model's weights digest; the outcome
                                     cache's key holds the digest of every model file that can change
                                     an outcome (storage.outcome_digest; this one where that has none)
  data_digest                        (optional) a digest of the held-out inputs' content, which keys
                                     it too: a data file edited under the same path is scored anew

Task families (tasks/family.py) build tasks from an experiment's config: one folder each
(tasks/classification/, ...), registered by name in `FAMILIES`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Outcomes:
    prediction: np.ndarray  # (B,) int: what the model said (class index; -1 where not applicable)
    delta: np.ndarray  # (B,) float: the discrepancy Δ
    failure: np.ndarray  # (B,) bool: Δ crossed the task's threshold ε


def standardize(features: np.ndarray) -> np.ndarray:
    mu = features.mean(0, keepdims=True)
    sd = features.std(0, keepdims=True) + 1e-6
    return ((features - mu) / sd).astype(np.float32)
