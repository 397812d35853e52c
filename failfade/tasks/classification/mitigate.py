"""Restructure: fine-tune the model under test away from the failure modes a person chose to fix.

The paper's recipe: the chosen concepts are applied to a fraction (default 50%) of training
samples, cells drawn in proportion to the feedback weights; the rest stay clean, which keeps
clean accuracy. `distill` > 0 adds learning-without-forgetting: a KL term that keeps the
model's clean-input predictions close to the original model's. `mode`: `last` trains only the final linear layer, `full` trains every weight.
Only the train split is learned from; held-out inputs are never seen.

Early stopping (with a validation split): after each epoch the model is scored on validation
inputs, clean and under the cells to fix; the kept weights are those of the epoch with the lowest
validation failure rate on the fixed cells among the epochs whose validation clean accuracy is
within `max_clean_drop` of the original model's (or, if none is, the epoch with the best clean
accuracy).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from failfade.concepts import ConceptSpace
from failfade.tasks.classification.data import ImageSet, batch_rows
from failfade.tasks.classification.models import ModelUnderTest
from failfade.tasks.classification.training import fit
from failfade.tasks.classification.transforms import apply


def validation_scorer(mut: ModelUnderTest, validation: ImageSet, space: ConceptSpace, plan: dict, max_pairs: int,
                      seed: int):
    """A function that scores the model on validation inputs: clean accuracy and the failure rate
    on the plan's `fix` cells (every (input, cell) pair, or `max_pairs` of them drawn once)."""
    cells = np.array([f["cell"] for f in plan["fix"]], dtype=np.int64)
    ii, cc = np.meshgrid(np.arange(len(validation)), cells, indexing="ij")
    ii, cc = ii.ravel(), cc.ravel()
    if len(ii) > max_pairs:
        pick = np.sort(np.random.default_rng(np.random.SeedSequence([seed, 9])).choice(len(ii), max_pairs, replace=False))
        ii, cc = ii[pick], cc[pick]
    labels = validation.labels.numpy()

    @torch.no_grad()
    def score() -> dict:
        clean = _errors(mut, validation.images, labels, np.arange(len(validation)))
        wrong = 0
        b = batch_rows(validation.images, 512)
        for s in range(0, len(ii), b):
            x = apply(space, validation.images[torch.as_tensor(ii[s:s + b])], cc[s:s + b])
            wrong += _errors(mut, x, labels, ii[s:s + b])
        return {"val_clean_accuracy": 1 - clean / len(validation), "val_targeted_failure_rate": wrong / len(ii)}

    return score


def _errors(mut: ModelUnderTest, images: torch.Tensor, labels: np.ndarray, ids: np.ndarray) -> int:
    wrong, b = 0, batch_rows(images, 512)
    for s in range(0, len(images), b):
        pred = mut.logits(images[s:s + b]).argmax(1).cpu().numpy()
        wrong += int((pred != labels[ids[s:s + b]]).sum())
    return wrong


def pick_epoch(history: list[dict], base_accuracy: float, max_clean_drop: float) -> int:
    """The epoch to keep: lowest validation targeted failure rate among epochs within the clean-
    accuracy tolerance; the best clean accuracy when none is within it."""
    ok = [h for h in history if h["val_clean_accuracy"] >= base_accuracy - max_clean_drop - 1e-12]
    if ok:
        return min(ok, key=lambda h: (h["val_targeted_failure_rate"], -h["val_clean_accuracy"], h["epoch"]))["epoch"]
    return max(history, key=lambda h: (h["val_clean_accuracy"], -h["val_targeted_failure_rate"], -h["epoch"]))["epoch"]

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
        x[pick] = apply(space, x[pick], chosen)
        return x

    return augment


def mitigate(mut: ModelUnderTest, train: ImageSet, space: ConceptSpace, plan: dict, mode: str, epochs: int,
             lr: float, batch_size: int, fraction: float, seed: int, distill: float = 0.0,
             validation: ImageSet | None = None, early_stopping: bool = True, max_clean_drop: float = 0.005,
             validation_pairs: int = 4096) -> tuple[list[dict], dict]:
    """Fine-tune in place. Returns (per-epoch history, selection summary)."""
    if mode not in MODES:
        raise ValueError(f"mitigate.mode must be one of {MODES}, got {mode!r}")
    if not plan["fix"]:
        raise ValueError("the mitigation plan has no cells to fix")
    params = list(mut.head.parameters()) if mode == "last" else list(mut.module.parameters())
    teacher = copy.deepcopy(mut.module).eval() if distill > 0 else None
    after_epoch, base, states = None, None, {}
    if validation is not None and len(validation):
        score = validation_scorer(mut, validation, space, plan, validation_pairs, seed)
        mut.module.eval()
        base = score()

        seen: list[dict] = []

        def after_epoch(epoch: int) -> dict:
            row = {"epoch": epoch, **score()}
            seen.append(row)
            # the pick over all epochs is also the pick over the epochs up to it: keep one state only
            if early_stopping and pick_epoch(seen, base["val_clean_accuracy"], max_clean_drop) == epoch:
                states.clear()
                states[epoch] = {k: v.detach().clone() for k, v in mut.module.state_dict().items()}
            return {k: v for k, v in row.items() if k != "epoch"}

    history = fit(mut, train, params, epochs, lr, batch_size, seed, augment=concept_augmenter(space, plan, fraction),
                  desc=f"mitigate[{mode}]", teacher=teacher, distill=distill, after_epoch=after_epoch)
    summary = {"epochs_run": epochs, "kept_epoch": epochs - 1, "early_stopping": bool(early_stopping and base)}
    if base is not None:
        summary.update(val_clean_accuracy_base=base["val_clean_accuracy"],
                       val_targeted_failure_rate_base=base["val_targeted_failure_rate"], validation_inputs=len(validation))
        if early_stopping:
            keep = pick_epoch(history, base["val_clean_accuracy"], max_clean_drop)
            mut.module.load_state_dict(states[keep])
            summary["kept_epoch"] = keep
        kept = history[summary["kept_epoch"]]
        summary.update(val_clean_accuracy=kept["val_clean_accuracy"], val_targeted_failure_rate=kept["val_targeted_failure_rate"])
    return history, summary
