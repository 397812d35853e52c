"""Restructure: fine-tune the model under test away from the failure modes a person chose to fix.

The paper's recipe: the chosen concepts are applied to a fraction (default 50%) of training
samples, cells drawn in proportion to the feedback weights; the rest stay clean, which keeps
clean accuracy. `distill` > 0 adds learning-without-forgetting: a KL term that keeps the
model's clean-input predictions close to the original model's. `mode`: `last` trains only the final linear layer, `full` trains every weight.
Only the train split is used; held-out inputs are never seen.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from failfade.concepts import ConceptSpace
from failfade.data import ImageSet
from failfade.models import ModelUnderTest
from failfade.training import fit

MODES = ("last", "full")


def concept_augmenter(space: ConceptSpace, plan: dict, fraction: float):
    cells = np.array([f["cell"] for f in plan["fix"]], dtype=np.int64)
    weights = torch.tensor([f["weight"] for f in plan["fix"]], dtype=torch.float64)

    def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        pick = torch.rand(len(x), generator=g) < fraction
        if not pick.any():
            return x
        chosen = cells[torch.multinomial(weights, int(pick.sum()), replacement=True, generator=g).numpy()]
        x = x.clone()
        x[pick] = space.apply(x[pick], chosen)
        return x

    return augment


def mitigate(mut: ModelUnderTest, train: ImageSet, space: ConceptSpace, plan: dict, mode: str, epochs: int,
             lr: float, batch_size: int, fraction: float, seed: int, distill: float = 0.0) -> list[dict]:
    if mode not in MODES:
        raise ValueError(f"mitigate.mode must be one of {MODES}, got {mode!r}")
    if not plan["fix"]:
        raise ValueError("the mitigation plan has no cells to fix")
    params = list(mut.head.parameters()) if mode == "last" else list(mut.module.parameters())
    teacher = copy.deepcopy(mut.module).eval() if distill > 0 else None
    return fit(mut, train, params, epochs, lr, batch_size, seed, augment=concept_augmenter(space, plan, fraction),
               desc=f"mitigate[{mode}]", teacher=teacher, distill=distill)
