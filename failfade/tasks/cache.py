"""An outcome cache: an (input, cell) pair already scored in an experiment is never scored again,
by any searcher, in any stage, or on rerun (it persists next to the experiment's resources).

It wraps a task and keeps the task's interface, so searchers and envs do not know it is there.
The cache is keyed by a fingerprint of everything that determines an outcome: the model's
weights (sha256), the data split (its config and, through the task's `data_digest`, its content), the
concept space, and the code that scores (`scoring_code_digest`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from failfade.tasks import Outcomes


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def scoring_code_digest(family) -> str:
    """sha256 of the code that turns an (input, cell) pair into an outcome: every module of the
    task family's package (its transforms, model loading and scoring), the concept space and the
    shared numerics. In the outcome cache's key: after a fix to a transform or to scoring,
    `--forcerun` must score afresh, not replay outcomes the old code computed. Any edit there (a
    comment too) starts a new cache: the safe side."""
    import failfade

    root = Path(failfade.__file__).parent
    package = Path(sys.modules[type(family).__module__].__file__).parent
    files = [(f"{package.name}/{f.name}", f) for f in sorted(package.glob("*.py"))]
    files += [(name, root / name) for name in ("concepts.py", "numerics.py", "tasks/__init__.py")]
    h = hashlib.sha256()
    for name, f in files:
        h.update(name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


class CachedTask:
    def __init__(self, task, path: Path | None = None):
        self.task = task
        self.space, self.n_inputs, self.n_cells = task.space, task.n_inputs, task.n_cells
        self.labels = task.labels  # observations and anything else task-specific: __getattr__, on first use
        shape = (task.n_inputs, task.n_cells)
        self.known = np.zeros(shape, dtype=bool)
        self.prediction = np.zeros(shape, dtype=np.int64)
        self.delta = np.zeros(shape, dtype=np.float32)
        self.failure = np.zeros(shape, dtype=bool)
        self.hits = self.misses = 0
        self.path = Path(path) if path else None
        if self.path and self.path.is_file():
            try:
                with np.load(self.path) as z:
                    if z["known"].shape == shape:
                        for k in ("known", "prediction", "delta", "failure"):
                            getattr(self, k)[:] = z[k]
            except Exception as e:  # truncated or foreign file: it is only a cache, so start afresh
                for k in ("known", "prediction", "delta", "failure"):
                    getattr(self, k)[:] = 0
                msg = f"failfade: discarding the unreadable outcome cache {self.path} ({type(e).__name__}); it is rebuilt"
                logging.getLogger("failfade").warning(msg)
                sys.__stderr__.write(msg + "\n")
                self.path.unlink(missing_ok=True)

    def __getattr__(self, name):  # render() and anything else task-specific
        return getattr(self.task, name)

    def score(self, input_ids, cells) -> Outcomes:
        input_ids, cells = np.asarray(input_ids), np.asarray(cells)
        miss = ~self.known[input_ids, cells]
        if miss.any():
            # score each distinct missing pair once, in one batch
            pairs = np.unique(np.stack([input_ids[miss], cells[miss]], 1), axis=0)
            out = self.task.score(pairs[:, 0], pairs[:, 1])
            i, c = pairs[:, 0], pairs[:, 1]
            self.prediction[i, c], self.delta[i, c], self.failure[i, c] = out.prediction, out.delta, out.failure
            self.known[i, c] = True
            self.misses += len(pairs)
        self.hits += int(len(input_ids) - miss.sum())
        return Outcomes(self.prediction[input_ids, cells], self.delta[input_ids, cells], self.failure[input_ids, cells])

    def fill(self, input_ids, cells, prediction, delta, failure) -> "CachedTask":
        """Take outcomes already scored elsewhere (e.g. an exhaustive truth table) as known."""
        i, c = np.asarray(input_ids), np.asarray(cells)
        self.prediction[i, c], self.delta[i, c], self.failure[i, c] = prediction, delta, failure
        self.known[i, c] = True
        return self

    def save(self) -> None:
        if not self.path:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, known=self.known, prediction=self.prediction, delta=self.delta, failure=self.failure)
        os.replace(tmp, self.path)
