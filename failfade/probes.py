"""Off-grid probes: conditions outside the explored concept grid, scored exhaustively.

Fine-tuning can move failures out of the region that was explored: the grid looks repaired
while a condition just beside it got worse. A probe (`shift.probes` in the config) is one fixed
condition, e.g. `{name: "darkening 0.5", apply: {darken: 0.5}}` or a level beyond the grid's
range; the task family applies it to every held-out input for the model before and after
mitigation (`probe_failures`), and the change in failure rate gets Newcombe's 95% interval. A
probe whose interval lies above 0 got significantly worse.

The cells the feedback asked to fix are measured the same way (`targeted_spaces`): every fixed
cell on every held-out input, before and after. The landscape's targeted rate rests on the
few queries the explorations happened to spend there; this one is exhaustive on held-out data.
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


def targeted_spaces(space: ConceptSpace, plan: dict) -> list[ConceptSpace]:
    """Each fixed cell of the plan as a one-cell space (the grid's axes, in the grid's order)."""
    out = []
    for f in plan["fix"]:
        (coords,) = space.coords([int(f["cell"])])
        out.append(ConceptSpace([Axis(a.name, a.transform, (0,), a.unit, (a.words[i],)) if a.words
                                 else Axis(a.name, a.transform, (a.levels[i],)) for a, i in zip(space.axes, coords)]))
    return out


def targeted_table(space: ConceptSpace, plan: dict, failures_pre: list[int], failures_post: list[int], n: int,
                   confidence: float = 0.95) -> pl.DataFrame:
    """One row per fixed cell, as probe_table (the probe's name is the cell's description)."""
    probes = [{"name": space.describe_cell(int(f["cell"]))} for f in plan["fix"]]
    return probe_table(probes, targeted_spaces(space, plan), failures_pre, failures_post, n, confidence)


def pooled_change(table: pl.DataFrame, confidence: float = 0.95) -> dict:
    """The fixed cells pooled (every cell has the same inputs, so the pooled rate is the mean of the
    cell rates): rates before and after with Wilson intervals, the change with Newcombe's, and the
    relative change with the Katz log interval of a ratio of two proportions.

    The cells share their inputs and a hard input tends to fail in every cell, so the K x inputs
    outcomes are not independent: Wilson on all of them covered 66% in a simulation with shared input
    difficulty. The before and after intervals therefore count the pooled rate as measured on
    `inputs_per_cell` inputs (conservative: exact when the cells agree on every input). The change and
    its ratio keep all outcomes: before and after share their inputs too, which offsets it (95.7%,
    93.2% in the same simulation)."""
    from scipy import stats

    n = int(table["inputs"].sum())
    k1, k2 = int(table["failures_pre"].sum()), int(table["failures_post"].sum())
    out = {"cells": table.height, "inputs_per_cell": int(table["inputs"][0]) if table.height else 0, "queries": n,
           "failures": {"pre": k1, "post": k2}}
    if n == 0:
        return out
    m = out["inputs_per_cell"]
    (l1, u1), (l2, u2) = (tuple(map(float, wilson_interval(k * m / n, m, confidence))) for k in (k1, k2))
    d, lo, hi = newcombe(k1, n, k2, n, confidence)
    out |= {"pre": k1 / n, "pre_ci": [l1, u1], "post": k2 / n, "post_ci": [l2, u2], "change": float(d),
            "change_ci": [float(lo), float(hi)]}
    if k1 > 0:
        a, b = k1 + 0.5 * (k2 == 0), k2 + 0.5 * (k2 == 0)  # Haldane's correction when no failure is left
        log_ratio = np.log((b / n) / (a / n))
        half = stats.norm.ppf(0.5 + confidence / 2) * np.sqrt(1 / a - 1 / n + 1 / b - 1 / n)
        out |= {"relative_change": k2 / k1 - 1, "relative_change_ci": [float(np.exp(log_ratio - half) - 1),
                                                                       float(np.exp(log_ratio + half) - 1)]}
    return out
