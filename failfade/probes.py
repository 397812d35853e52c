"""Off-grid probes: conditions outside the explored concept grid, scored exhaustively.

Fine-tuning can move failures out of the region that was explored: the grid looks repaired
while a condition just beside it got worse. A probe (`shift.probes` in the config) is one fixed
condition, e.g. `{name: "darkening 0.5", apply: {darken: 0.5}}` or a level beyond the grid's
range; the task family applies it to every held-out input for the model before and after
mitigation (`probe_failures`), and the change in failure rate gets a 95% interval. A probe whose
interval lies above 0 got significantly worse.

Both sides are the same inputs, and an input that fails before mostly fails after (phi 0.5-0.8 on
the digits default), so the interval is the paired one (Newcombe 1998b, method 10:
stats.paired_newcombe_interval) from each probe's paired 2x2 counts: the inputs that fail only after
(`newly_failing`) and only before (`newly_passing`) besides the failures on each side. The unpaired
interval (Newcombe 1998a), which treats the two sides as independent samples, was far too wide: a
rotation with 37 inputs newly failing and 18 newly passing of 539 (McNemar p = 0.015) read +3.5 pt
[-2.4, +9.5], "no significant change"; paired it is [+0.8, +6.2]. It is used only where the
per-input counts are missing (a probes.csv written before they were kept), and the `interval`
column says which.

The cells the feedback asked to fix are measured the same way (`targeted_spaces`): every fixed
cell on every held-out input, before and after. The landscape's targeted rate rests on the
few queries the explorations happened to spend there; this one is exhaustive on held-out data.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from failfade import FailfadeError
from failfade.concepts import Axis, ConceptSpace, range_text
from failfade.stats import newcombe_interval, paired_newcombe_interval, wilson_interval

COLUMNS = {"probe": pl.Utf8, "condition": pl.Utf8, "inputs": pl.Int64, "failures_pre": pl.Int64, "failures_post": pl.Int64,
           "newly_failing": pl.Int64, "newly_passing": pl.Int64,
           "failure_rate_pre": pl.Float64, "failure_rate_post": pl.Float64, "delta": pl.Float64, "delta_lo": pl.Float64,
           "delta_hi": pl.Float64, "significantly_worse": pl.Boolean, "significantly_better": pl.Boolean,
           "interval": pl.Utf8}
PAIRED, UNPAIRED = "paired", "unpaired (no per-input outcomes)"  # the `interval` column


def probe_space(probe: dict, transforms, key: str, ranges: dict[str, tuple[float, float]] | None = None) -> ConceptSpace:
    """One probe as a one-cell concept space: its transforms applied in the order written. A level
    must be a finite number in the transform's range (`ranges`, the family's level_ranges), as a
    concept level must: outside it a transform means nothing (a blur of -5 px left the images
    clean, so the probe silently scored clean inputs)."""
    axes = []
    for name, level in probe["apply"].items():
        if name not in transforms:
            raise FailfadeError(f"{key}.apply.{name}: unknown transform; known: {sorted(transforms)}")
        try:
            value = float(level)
        except (TypeError, ValueError):
            raise FailfadeError(f"{key}.apply.{name}: a level is a number, got {level!r}") from None
        if not np.isfinite(value):
            raise FailfadeError(f"{key}.apply.{name}: a level is a finite number, got {level!r}")
        lo, hi = (ranges or {}).get(name, (-np.inf, np.inf))
        if not lo <= value <= hi:
            raise FailfadeError(f"{key}.apply.{name}: {name} levels are {range_text(lo, hi)}, got {level!r}")
        axes.append(Axis(name, name, (value,)))
    if not axes:
        raise FailfadeError(f"{key}.apply: a probe needs at least one transform")
    return ConceptSpace(axes)


def check_probes(probes: list[dict], transforms, key: str = "shift.probes",
                 ranges: dict[str, tuple[float, float]] | None = None) -> list[ConceptSpace]:
    """Each probe's one-cell space; `transforms` are the names the experiment's task family knows,
    `ranges` its level_ranges."""
    names = [p["name"] for p in probes]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise FailfadeError(f"{key}: probe names must be unique, repeated: {dup}")
    return [probe_space(p, transforms, f"{key}[{i}]", ranges) for i, p in enumerate(probes)]


def newcombe(k1, n1, k2, n2, confidence: float = 0.95):
    """(k2/n2 − k1/n1) with Newcombe's hybrid-score interval (method 10) from two Wilson intervals."""
    l1, u1 = wilson_interval(k1, n1, confidence)
    l2, u2 = wilson_interval(k2, n2, confidence)
    return newcombe_interval(np.asarray(k1) / n1, l1, u1, np.asarray(k2) / n2, l2, u2)


def paired_counts(pre: list[np.ndarray], post: list[np.ndarray]) -> dict[str, list[int]]:
    """From each probe's per-input outcomes before and after (True: the input failed; the same
    inputs in the same order on both sides), what its paired interval needs: the failures on each
    side, and the inputs that fail only after (`newly_failing`) and only before (`newly_passing`)."""
    out = {"failures_pre": [], "failures_post": [], "newly_failing": [], "newly_passing": []}
    for a, b in zip(pre, post):
        a, b = np.asarray(a, bool), np.asarray(b, bool)
        if a.shape != b.shape:
            raise FailfadeError(f"per-input outcomes before and after differ in length: {a.shape} vs {b.shape}")
        out["failures_pre"].append(int(a.sum()))
        out["failures_post"].append(int(b.sum()))
        out["newly_failing"].append(int((b & ~a).sum()))
        out["newly_passing"].append(int((a & ~b).sum()))
    return out


def change_interval(failures_pre, failures_post, n, newly_failing=None, newly_passing=None, confidence: float = 0.95):
    """(change, lower, upper, paired) of the failure rate on the same n inputs, elementwise: the
    paired interval (stats.paired_newcombe_interval) where the discordant counts are known (not
    None / NaN), the unpaired one (`newcombe`, as if before and after were independent samples:
    far too wide when the outcomes are correlated) where not."""
    k1, k2, n = (np.asarray(v, dtype=np.float64) for v in (failures_pre, failures_post, n))
    k1, k2, n = np.broadcast_arrays(k1, k2, n)
    missing = np.full(k1.shape, np.nan)
    nf = missing if newly_failing is None else np.asarray(newly_failing, dtype=np.float64) * np.ones(k1.shape)
    npass = missing if newly_passing is None else np.asarray(newly_passing, dtype=np.float64) * np.ones(k1.shape)
    paired = np.isfinite(nf) & np.isfinite(npass)
    nf, npass = np.where(paired, nf, 0.0), np.where(paired, npass, 0.0)
    both, neither = k1 - npass, n - k1 - nf
    bad = paired & ((both < 0) | (neither < 0) | (k2 != k1 + nf - npass) | (nf < 0) | (npass < 0))
    if bad.any():
        raise FailfadeError("newly failing / passing counts do not fit the failures before and after "
                            f"(row {int(np.flatnonzero(bad)[0])})")
    with np.errstate(invalid="ignore", divide="ignore"):
        d_u, lo_u, hi_u = newcombe(k1, n, k2, n, confidence)
    d_p, lo_p, hi_p = paired_newcombe_interval(both, npass, nf, neither, confidence)
    pick = lambda p, u: np.where(paired, p, u)  # noqa: E731
    return pick(d_p, d_u), pick(lo_p, lo_u), pick(hi_p, hi_u), paired


def probe_table(probes: list[dict], spaces: list[ConceptSpace], failures_pre: list[int], failures_post: list[int],
                n: int, confidence: float = 0.95, newly_failing: list[int] | None = None,
                newly_passing: list[int] | None = None) -> pl.DataFrame:
    """One row per probe: failures of the same n held-out inputs before and after, and the change.
    With each probe's inputs that fail only after (`newly_failing`) and only before (`newly_passing`:
    paired_counts of the per-input outcomes) the change gets the paired interval; without them the
    unpaired one (the `interval` column says which)."""
    if (newly_failing is None) != (newly_passing is None):
        raise FailfadeError("probe_table: newly_failing and newly_passing go together")
    rows = []
    for i, (probe, space, k1, k2) in enumerate(zip(probes, spaces, failures_pre, failures_post)):
        nf = None if newly_failing is None else int(newly_failing[i])
        npass = None if newly_passing is None else int(newly_passing[i])
        d, lo, hi, paired = change_interval(k1, k2, n, nf, npass, confidence)
        rows.append({
            "probe": probe["name"], "condition": ", ".join(f"{a.name} {a.levels[0]:g}" for a in space.axes),
            "inputs": n, "failures_pre": int(k1), "failures_post": int(k2), "newly_failing": nf, "newly_passing": npass,
            "failure_rate_pre": k1 / n, "failure_rate_post": k2 / n, "delta": float(d), "delta_lo": float(lo),
            "delta_hi": float(hi), "significantly_worse": bool(lo > 0), "significantly_better": bool(hi < 0),
            "interval": PAIRED if bool(paired) else UNPAIRED,
        })
    return pl.DataFrame(rows, schema=COLUMNS)


def table_interval(table: pl.DataFrame, confidence: float = 0.95):
    """(change, lower, upper, paired) of each row of a probes.csv or targeted.csv table at
    `confidence` (the guard's family-wise level): paired where the row has its discordant counts."""
    if not table.height:
        return (np.zeros(0),) * 3 + (np.zeros(0, bool),)
    col = lambda c: table[c].cast(pl.Float64).fill_null(np.nan).to_numpy() if c in table.columns else None  # noqa: E731
    return change_interval(col("failures_pre"), col("failures_post"), col("inputs"), col("newly_failing"),
                           col("newly_passing"), confidence)


def read_table(path) -> pl.DataFrame:
    """A probes.csv or targeted.csv as COLUMNS; one written before the discordant counts were kept
    gets them as nulls and its `interval` as UNPAIRED (what its verdicts were computed with)."""
    names = pl.read_csv(path, n_rows=0).columns
    fill = {"newly_failing": pl.lit(None, pl.Int64), "newly_passing": pl.lit(None, pl.Int64), "interval": pl.lit(UNPAIRED)}
    wrong = sorted(set(names) - set(COLUMNS)) + sorted(set(COLUMNS) - set(names) - set(fill))
    if wrong:
        raise FailfadeError(f"{path}: not a probes table (columns {wrong} unexpected or missing)")
    table = pl.read_csv(path, schema_overrides={c: COLUMNS[c] for c in names})
    return table.with_columns([v.alias(c) for c, v in fill.items() if c not in names]).select(
        [pl.col(c).cast(t) for c, t in COLUMNS.items()])


def targeted_spaces(space: ConceptSpace, plan: dict) -> list[ConceptSpace]:
    """Each fixed cell of the plan as a one-cell space (the grid's axes, in the grid's order)."""
    out = []
    for f in plan["fix"]:
        (coords,) = space.coords([int(f["cell"])])
        out.append(ConceptSpace([Axis(a.name, a.transform, (0,), a.unit, (a.words[i],)) if a.words
                                 else Axis(a.name, a.transform, (a.levels[i],)) for a, i in zip(space.axes, coords)]))
    return out


def targeted_table(space: ConceptSpace, plan: dict, failures_pre: list[int], failures_post: list[int], n: int,
                   confidence: float = 0.95, newly_failing: list[int] | None = None,
                   newly_passing: list[int] | None = None) -> pl.DataFrame:
    """One row per fixed cell, as probe_table (the probe's name is the cell's description)."""
    probes = [{"name": space.describe_cell(int(f["cell"]))} for f in plan["fix"]]
    return probe_table(probes, targeted_spaces(space, plan), failures_pre, failures_post, n, confidence,
                       newly_failing, newly_passing)


INPUT_COLUMNS = {"input": pl.Int64, "failures_pre": pl.Int64, "failures_post": pl.Int64}


def input_table(pre: list[np.ndarray], post: list[np.ndarray]) -> pl.DataFrame:
    """Per held-out input, in how many of the fixed cells it failed before and after: what the
    pooled change's interval needs (a hard input tends to fail in every cell, before and after)."""
    n = len(pre[0]) if pre else 0
    k1 = np.sum(pre, axis=0).astype(np.int64) if pre else np.zeros(0, np.int64)
    k2 = np.sum(post, axis=0).astype(np.int64) if post else np.zeros(0, np.int64)
    return pl.DataFrame({"input": np.arange(n, dtype=np.int64), "failures_pre": k1, "failures_post": k2},
                        schema=INPUT_COLUMNS)


def pooled_change(table: pl.DataFrame, confidence: float = 0.95, per_input: pl.DataFrame | None = None) -> dict:
    """The fixed cells pooled (every cell has the same inputs, so the pooled rate is the mean of the
    cell rates): rates before and after, the change and the relative change, with intervals.

    The cells share their inputs and a hard input tends to fail in every cell, before and after,
    so the K x inputs outcomes are not independent: Newcombe's interval on all of them covered 65-72%
    in a review's simulation (8 cells, 200 inputs, input difficulty shared across cells), where an
    earlier docstring claimed the before/after pairing offset it. With `per_input` (each input's
    failures over the K cells before and after: input_table), the change and its ratio get intervals
    over the inputs, which carry that dependence (t interval of the per-input change; the ratio's
    log by the delta method with the per-input covariance). Without it, every interval counts the
    pooled rate as measured on `inputs_per_cell` inputs: conservative, exact when the cells agree on
    every input. The paired intervals fall back to the conservative ones where their standard error
    is 0 (no input's failure count changed, or every input's changed alike; for the ratio, every
    input's after-count proportional to its before-count): a sample that showed no spread is no
    proof of none, and the zero-width interval claimed certainty; `interval` says so. The rates
    before and after always use the conservative scale (Wilson). The relative change's interval is
    centred on a smoothed ratio (Haldane's ½ when no failure is left), so it is widened to hold the
    reported point: with nothing failing after, the point is −100% and the interval reaches it."""
    from scipy import stats

    n = int(table["inputs"].sum())
    k1, k2 = int(table["failures_pre"].sum()), int(table["failures_post"].sum())
    out = {"cells": table.height, "inputs_per_cell": int(table["inputs"][0]) if table.height else 0, "queries": n,
           "failures": {"pre": k1, "post": k2}}
    if n == 0:
        return out
    m, cells = out["inputs_per_cell"], table.height
    a1, a2 = k1 * m / n, k2 * m / n  # the pooled failures on the scale of m inputs
    (l1, u1), (l2, u2) = (tuple(map(float, wilson_interval(a, m, confidence))) for a in (a1, a2))
    out |= {"pre": k1 / n, "pre_ci": [l1, u1], "post": k2 / n, "post_ci": [l2, u2], "change": k2 / n - k1 / n}
    paired = per_input is not None and per_input.height == m and m > 1
    if paired:
        a = per_input["failures_pre"].to_numpy() / cells
        b = per_input["failures_post"].to_numpy() / cells
        t = float(stats.t.ppf(0.5 + confidence / 2, m - 1))
        se = float(np.std(b - a, ddof=1)) / np.sqrt(m)
    if paired and se > 1e-12:  # 0 but for rounding: no spread
        out["change_ci"] = [float(out["change"] - t * se), float(out["change"] + t * se)]
        out["interval"] = f"over the {m} inputs (paired)"
    else:
        _, lo, hi = newcombe(a1, m, a2, m, confidence)
        out["change_ci"] = [float(lo), float(hi)]
        out["interval"] = (f"conservative: the pooled rates as measured on {m} inputs"
                           + (" (the paired interval had no spread to go on)" if paired else ""))
    if k1 > 0:
        out["relative_change"] = k2 / k1 - 1
        var_log = 0.0
        if paired and k2 > 0:
            ma, mb = a.mean(), b.mean()
            cov = np.cov(a, b, ddof=1)
            var_log = (cov[1, 1] / mb**2 + cov[0, 0] / ma**2 - 2 * cov[0, 1] / (ma * mb)) / m
        if var_log > 1e-12:
            half = t * np.sqrt(var_log)
            ratio = mb / ma
        else:  # Katz's log interval on the m-input scale (Haldane's correction when no failure is left)
            x, y = a1 + 0.5 * (k2 == 0), a2 + 0.5 * (k2 == 0)
            ratio = y / x
            half = stats.norm.ppf(0.5 + confidence / 2) * np.sqrt(max(1 / x - 1 / m + 1 / y - 1 / m, 0.0))
            if paired and k2 > 0 and se > 1e-12:
                out["interval"] += "; the relative change's interval conservative (the paired one had no spread to go on)"
        lo, hi = float(ratio * np.exp(-half) - 1), float(ratio * np.exp(half) - 1)
        point = out["relative_change"]
        out["relative_change_ci"] = [min(lo, point), max(hi, point)]
    return out
