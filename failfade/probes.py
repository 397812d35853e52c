"""Off-grid probes: conditions outside the explored concept grid, scored exhaustively.

Fine-tuning can move failures out of the region that was explored: the grid looks repaired
while a condition just beside it got worse. A probe (`shift.probes` in the config) is one fixed
condition, e.g. `{name: "darkening 0.5", apply: {darken: 0.5}}` or a level beyond the grid's
range; the task family applies it to every held-out input for the model before and after
mitigation (`probe_failures`), and the change in failure rate gets Newcombe's 95% interval. A
probe whose interval lies above 0 got significantly worse.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from failfade import FailfadeError
from failfade.concepts import Axis, ConceptSpace
from failfade.stats import newcombe_interval, wilson_interval

COLUMNS = {"probe": pl.Utf8, "condition": pl.Utf8, "inputs": pl.Int64, "failures_pre": pl.Int64, "failures_post": pl.Int64,
           "failure_rate_pre": pl.Float64, "failure_rate_post": pl.Float64, "delta": pl.Float64, "delta_lo": pl.Float64,
           "delta_hi": pl.Float64, "significantly_worse": pl.Boolean, "significantly_better": pl.Boolean}


def probe_space(probe: dict, transforms, key: str) -> ConceptSpace:
    """One probe as a one-cell concept space: its transforms applied in the order written."""
    axes = []
    for name, level in probe["apply"].items():
        if name not in transforms:
            raise FailfadeError(f"{key}.apply.{name}: unknown transform; known: {sorted(transforms)}")
        axes.append(Axis(name, name, (float(level),)))
    if not axes:
        raise FailfadeError(f"{key}.apply: a probe needs at least one transform")
    return ConceptSpace(axes)


def check_probes(probes: list[dict], transforms, key: str = "shift.probes") -> list[ConceptSpace]:
    """Each probe's one-cell space; `transforms` are the names the experiment's task family knows."""
    names = [p["name"] for p in probes]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise FailfadeError(f"{key}: probe names must be unique, repeated: {dup}")
    return [probe_space(p, transforms, f"{key}[{i}]") for i, p in enumerate(probes)]


def newcombe(k1, n1, k2, n2, confidence: float = 0.95):
    """(k2/n2 − k1/n1) with Newcombe's hybrid-score interval (method 10) from two Wilson intervals."""
    l1, u1 = wilson_interval(k1, n1, confidence)
    l2, u2 = wilson_interval(k2, n2, confidence)
    return newcombe_interval(np.asarray(k1) / n1, l1, u1, np.asarray(k2) / n2, l2, u2)


def probe_table(probes: list[dict], spaces: list[ConceptSpace], failures_pre: list[int], failures_post: list[int],
                n: int, confidence: float = 0.95) -> pl.DataFrame:
    """One row per probe: failures of the same n held-out inputs before and after, and the change."""
    rows = []
    for probe, space, k1, k2 in zip(probes, spaces, failures_pre, failures_post):
        d, lo, hi = newcombe(k1, n, k2, n, confidence)
        rows.append({
            "probe": probe["name"], "condition": ", ".join(f"{a.name} {a.levels[0]:g}" for a in space.axes),
            "inputs": n, "failures_pre": int(k1), "failures_post": int(k2), "failure_rate_pre": k1 / n,
            "failure_rate_post": k2 / n, "delta": float(d), "delta_lo": float(lo), "delta_hi": float(hi),
            "significantly_worse": bool(lo > 0), "significantly_better": bool(hi < 0),
        })
    return pl.DataFrame(rows, schema=COLUMNS)
