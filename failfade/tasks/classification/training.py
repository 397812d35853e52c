"""One supervised training loop, used to train the builtin model and to fine-tune (mitigate)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from failfade.progress import progress
from failfade.tasks.classification.data import ImageSet, batch_rows
from failfade.tasks.classification.models import ModelUnderTest, main_logits


def fit(
    mut: ModelUnderTest,
    data: ImageSet,
    params: list[torch.nn.Parameter],
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    weight_decay: float = 0.0,
    desc: str = "train",
    teacher: torch.nn.Module | None = None,
    distill: float = 0.0,
    after_epoch: Callable[[int], dict] | None = None,
) -> list[dict]:
    """Adam on `params` only (the rest stays frozen); returns per-epoch loss and accuracy.

    With a `teacher` and `distill` > 0, the loss adds distill * KL(teacher ‖ model) on the *clean*
    version of each batch (learning without forgetting): the model learns the augmented inputs
    while keeping its clean-input predictions.
    `after_epoch(epoch)` runs after each epoch with the model in eval mode and no gradients; the
    dict it returns joins that epoch's history row (e.g. validation metrics for early stopping).
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    wanted = {id(p) for p in params}
    for p in mut.module.parameters():
        p.requires_grad_(id(p) in wanted)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    history = []
    partial = len(wanted) < sum(1 for _ in mut.module.parameters())

    def train_mode():
        mut.module.train()
        # Frozen BatchNorm layers keep their running statistics when only the head is tuned.
        if partial:
            for m in mut.module.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not any(id(p) in wanted for p in m.parameters()):
                    m.eval()

    n = len(data)
    for epoch in progress(range(epochs), desc=desc, unit="epoch", leave=False):
        train_mode()
        order = torch.randperm(n, generator=g)
        total, correct, loss_sum = 0, 0, 0.0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            clean, y = data.images[idx], data.labels[idx].to(mut.device)
            x = augment(clean, g) if augment is not None else clean
            logits = main_logits(mut.module(mut.preprocess(x)))
            loss = F.cross_entropy(logits, y)
            if teacher is not None and distill > 0:
                xc = mut.preprocess(clean)
                with torch.no_grad():
                    target = F.log_softmax(teacher(xc), dim=1)
                loss = loss + distill * F.kl_div(F.log_softmax(main_logits(mut.module(xc)), dim=1), target, log_target=True,
                                                 reduction="batchmean")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            total += len(idx)
        row = {"epoch": epoch, "loss": loss_sum / total, "accuracy": correct / total}
        if after_epoch is not None:
            mut.module.eval()
            with torch.no_grad():
                row.update(after_epoch(epoch))
        history.append(row)
    mut.module.eval()
    for p in mut.module.parameters():
        p.requires_grad_(False)
    return history


@torch.no_grad()
def accuracy(mut: ModelUnderTest, data: ImageSet, batch_size: int = 512) -> float:
    correct = 0
    batch_size = batch_rows(data.images, batch_size)
    for start in range(0, len(data), batch_size):
        logits = mut.logits(data.images[start : start + batch_size])
        correct += int((logits.argmax(1).cpu() == data.labels[start : start + batch_size]).sum())
    return correct / max(len(data), 1)
