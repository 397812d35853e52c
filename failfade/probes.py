"""Off-grid probes: conditions outside the explored concept grid, scored exhaustively.

Fine-tuning can move failures out of the region that was explored: the grid looks repaired
while a condition just beside it got worse. A probe (`shift.probes` in the config) is one fixed
condition, e.g. `{name: "darkening 0.5", apply: {darken: 0.5}}` or a level beyond the grid's
range; it is applied to every held-out input for the model before and after mitigation, and the
change in failure rate gets Newcombe's 95% interval. A probe whose interval lies above 0 got
significantly worse.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from failfade import FailfadeError
from failfade.concepts import IMAGE_TRANSFORMS, Axis, ConceptSpace
from failfade.data import ImageSet
from failfade.models import ModelUnderTest
from failfade.stats import newcombe_interval, wilson_interval

COLUMNS = {"probe": pl.Utf8, "condition": pl.Utf8, "inputs": pl.Int64, "failures_pre": pl.Int64, "failures_post": pl.Int64,
           "failure_rate_pre": pl.Float64, "failure_rate_post": pl.Float64, "delta": pl.Float64, "delta_lo": pl.Float64,
           "delta_hi": pl.Float64, "significantly_worse": pl.Boolean, "significantly_better": pl.Boolean}


def probe_space(probe: dict, key: str) -> ConceptSpace:
    """One probe as a one-cell concept space: its transforms applied in the order written."""
    axes = []
    for name, level in probe["apply"].items():
        if name not in IMAGE_TRANSFORMS:
            raise FailfadeError(f"{key}.apply.{name}: unknown transform; known: {sorted(IMAGE_TRANSFORMS)}")
        axes.append(Axis(name, name, (float(level),)))
    if not axes:
        raise FailfadeError(f"{key}.apply: a probe needs at least one transform")
    return ConceptSpace(axes)


def check_probes(probes: list[dict], key: str = "shift.probes") -> list[ConceptSpace]:
    names = [p["name"] for p in probes]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise FailfadeError(f"{key}: probe names must be unique, repeated: {dup}")
    return [probe_space(p, f"{key}[{i}]") for i, p in enumerate(probes)]


@torch.no_grad()
def failures(mut: ModelUnderTest, inputs: ImageSet, space: ConceptSpace, batch_size: int = 512) -> int:
    """How many inputs the model gets wrong under the probe's (single) condition."""
    labels = inputs.labels.numpy()
    wrong = 0
    for s in range(0, len(inputs), batch_size):
        x = inputs.images[s : s + batch_size]
        x = space.apply(x, np.zeros(len(x), dtype=np.int64))
        wrong += int((mut.logits(x).argmax(1).cpu().numpy() != labels[s : s + batch_size]).sum())
    return wrong


def newcombe(k1, n1, k2, n2, confidence: float = 0.95):
    """(k2/n2 − k1/n1) with Newcombe's hybrid-score interval (method 10) from two Wilson intervals."""
    l1, u1 = wilson_interval(k1, n1, confidence)
    l2, u2 = wilson_interval(k2, n2, confidence)
    return newcombe_interval(np.asarray(k1) / n1, l1, u1, np.asarray(k2) / n2, l2, u2)


def score_probes(probes: list[dict], pre: ModelUnderTest, post: ModelUnderTest, inputs: ImageSet,
                 confidence: float = 0.95) -> pl.DataFrame:
    spaces = check_probes(probes)
    rows = []
    n = len(inputs)
    for probe, space in zip(probes, spaces):
        k1, k2 = failures(pre, inputs, space), failures(post, inputs, space)
        d, lo, hi = newcombe(k1, n, k2, n, confidence)
        rows.append({
            "probe": probe["name"], "condition": ", ".join(f"{a.name} {a.levels[0]:g}" for a in space.axes),
            "inputs": n, "failures_pre": k1, "failures_post": k2, "failure_rate_pre": k1 / n, "failure_rate_post": k2 / n,
            "delta": float(d), "delta_lo": float(lo), "delta_hi": float(hi),
            "significantly_worse": bool(lo > 0), "significantly_better": bool(hi < 0),
        })
    return pl.DataFrame(rows, schema=COLUMNS)
