"""The modes' audit: each failure mode's rate measured again on fresh, uniformly drawn queries.

The landscape's rates come from the exploration, which chose its queries by looking at the
outcomes: PPO's prior stops spending on a cell once the cell's interval clears τ, so a cell that
read high early keeps its high reading, and the modes are then chosen as the best of many slices.
Both push a mode's rate up while its interval narrows: on the digits default (10 exploration seeds,
36 modes, against every cell scored on every held-out input) the modes read 2.9 points high and
their 95% intervals held the exhaustive rate 21 times in 36; the audit's, at 512 pairs a mode, read
+0.4 points and held it 35 times in 36 (benchmarks/mode_audit.py). The audit draws (held-out input, cell) pairs of each
mode uniformly at random, without replacement, independently of every outcome, and scores them: the
share that fails is an unbiased estimate of the mode's rate with each cell weighing the same (as
the landscape weighs them), and its Wilson interval means what it says. A mode whose pairs number
no more than the audit's size is scored whole: its rate is then exact.

Outcomes come through the outcome cache, so pairs the exploration already scored cost nothing;
that is safe because which pairs the audit draws does not depend on their outcomes.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from failfade.progress import progress
from failfade.slices import cells_of
from failfade.stats import clustered_wilson

COLUMNS = {
    "mode": pl.Int64, "selector": pl.Utf8, "description": pl.Utf8, "n_cells": pl.Int64, "pairs": pl.Int64,
    "explored_rate": pl.Float64, "explored_lo": pl.Float64, "explored_hi": pl.Float64,
    "audit_queries": pl.Int64, "audit_failures": pl.Int64, "audit_rate": pl.Float64, "audit_lo": pl.Float64,
    "audit_hi": pl.Float64, "exact": pl.Boolean, "confirmed": pl.Boolean,
}


def draw_pairs(n_inputs: int, cells: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
    """`size` distinct (input, cell) pairs drawn uniformly from cells × inputs, or all of them when
    there are no more than `size`. Returns (input_ids, cells, exact)."""
    population = len(cells) * n_inputs
    if population <= size:
        idx = np.arange(population)
    else:
        idx = np.sort(rng.choice(population, size=size, replace=False))
    return idx % n_inputs, cells[idx // n_inputs], population <= size


def audit_modes(task, modes: pl.DataFrame, per_mode: int, seed: int, threshold: float, confidence: float = 0.95,
                show_progress: bool = True, chunk: int = 256) -> pl.DataFrame:
    """Score `per_mode` (input, cell) pairs of every mode (failure_modes' rows), drawn afresh and
    independently of every outcome, on `task` (in chunks of `chunk` pairs: a text-to-image model
    holds a chunk's images at once).

    `confirmed`: the audit's lower bound is at or above the threshold τ, as the landscape asks of a
    mode, now on pairs that played no part in choosing the mode (they may include pairs the
    exploration also scored: which are drawn does not depend on their outcomes). `exact`: every pair
    of the mode was scored, so the rate is the mode's rate on the held-out inputs with no sampling
    error from the draw; its interval still counts the held-out inputs as a sample of inputs, as
    every held-out measurement here does. Every interval allows for pairs that share an input
    (stats.clustered_wilson): a hard input fails in every cell of a mode, and Wilson over the pairs
    as if independent covered 65% at 95% in a review's simulation of a whole 8-cell mode. `explored_*` repeat the landscape's rate and interval (the
    mean of the mode's visited cells' rates) for comparison; the audit's covers every cell of the
    mode, visited or not."""
    if per_mode < 1:
        raise ValueError(f"audit: per_mode must be at least 1, got {per_mode}")
    rng = np.random.default_rng(seed)
    rows = []
    total = sum(min(per_mode, len(cells_of(t)) * task.n_inputs) for t in modes["cells"].to_list())
    bar = progress(total=total, desc="audit", unit="query", disable=not show_progress)
    for r in modes.iter_rows(named=True):
        cells = cells_of(r["cells"])
        ids, cs, exact = draw_pairs(task.n_inputs, cells, per_mode, rng)
        fails = []
        for s in range(0, len(ids), chunk):
            out = task.score(ids[s:s + chunk], cs[s:s + chunk])
            fails.append(np.asarray(out.failure, dtype=bool))
            bar.update(len(ids[s:s + chunk]))
        fails = np.concatenate(fails) if fails else np.zeros(0, bool)
        n, failed = len(ids), int(fails.sum())
        rate = failed / n
        _, lo, hi = clustered_wilson(ids, fails, confidence)  # pairs of one input move together
        rows.append({
            "mode": r["mode"], "selector": r["selector"], "description": r["description"], "n_cells": len(cells),
            "pairs": len(cells) * task.n_inputs, "explored_rate": r["failure_rate"], "explored_lo": r["rate_lo"],
            "explored_hi": r["rate_hi"], "audit_queries": n, "audit_failures": failed, "audit_rate": rate,
            "audit_lo": lo, "audit_hi": hi, "exact": exact, "confirmed": lo >= threshold,
        })
    bar.close()
    return pl.DataFrame(rows, schema=COLUMNS)


# --- the cells nobody targeted, before and after mitigation ---------------------------------------

# region_cells, region_pairs: the region's size (its cells, × every held-out input), the same on every row
PAIR_COLUMNS = {"input": pl.Int64, "cell": pl.Int64, "failure_pre": pl.Boolean, "failure_post": pl.Boolean,
                "region_cells": pl.Int64, "region_pairs": pl.Int64}


def paired_sample(task_pre, task_post, cells: np.ndarray, size: int, seed: int, chunk: int = 256) -> pl.DataFrame:
    """`size` (input, cell) pairs drawn uniformly from `cells` × inputs (all of them when there are
    no more), each scored for the model before (`task_pre`) and after (`task_post`) mitigation: the
    same pairs on both sides, `chunk` pairs at a time. The draw depends on the seed alone, not on
    any outcome."""
    ids, cs, _ = draw_pairs(task_pre.n_inputs, np.asarray(cells, dtype=np.int64), size, np.random.default_rng(seed))
    fail = [np.concatenate([np.asarray(t.score(ids[s:s + chunk], cs[s:s + chunk]).failure, dtype=bool)
                            for s in range(0, len(ids), chunk)] or [np.zeros(0, bool)]) for t in (task_pre, task_post)]
    return pl.DataFrame({"input": ids, "cell": cs, "failure_pre": fail[0], "failure_post": fail[1],
                         "region_cells": np.full(len(ids), len(cells)),
                         "region_pairs": np.full(len(ids), len(cells) * task_pre.n_inputs)}, schema=PAIR_COLUMNS)


def paired_sample_change(pairs: pl.DataFrame, confidence: float = 0.95) -> dict:
    """The failure rate of a region (its cells × every held-out input: `region_pairs`) before and
    after, from a uniform sample of its pairs scored on both sides (paired_sample): rates with Wilson
    intervals, the change with Newcombe's paired interval (stats.paired_newcombe_interval: the pair
    is the unit of a simple random sample), and the relative change p2/p1 − 1 with a Wald interval
    on log(p2/p1) for paired proportions, var = (b + c) / ((a + b)(a + c)) from the pairs failing on
    both sides (a), only before (b) and only after (c), each count + ½ (without it the interval
    collapsed to a point when no pair changed: 88% coverage at 95% in tests/test_audit.py's
    simulation, and dividing the change's interval by p1 held it only 66-71% of the time where
    failures rose from a low base; with the ½ it held it 0.94-0.96 in 32 of 36 settings of rates
    0.02-0.66, rises and drops, n 256-2,048 and weak to strong pairing, and 0.98-1.0 in the other 4,
    at n = 256 with pairs that rarely change). That interval is centred on the smoothed ratio, not
    the raw p2/p1 reported, so it is widened to hold the point: with no pair failing after, the point
    is −100% and the smoothed interval alone stopped short of it (e.g. [−99.9%, −73.6%]). `exact`:
    the sample is the whole region (every held-out pair): no error from the draw, but the intervals
    still count the held-out inputs as a sample of inputs, as every held-out measurement here does.
    Pairs that share an input move together (a hard input fails in many cells, before and after),
    so every interval counts the pairs at their effective number (stats.cluster_shrink, the
    between-input variance: the rates by clustered_wilson, the change and its ratio with the 2x2
    table scaled by their own shrinks, of b − a and of b/p2 − a/p1): on the digits default's 2,048 other-cell pairs over
    529 inputs the change's design effect was 2.4, so intervals over the pairs as if independent
    were about 1.5x too narrow. The intervals leave out the finite-population correction
    (conservative when the sample is a large share)."""
    from scipy import stats as st

    from failfade.stats import cluster_shrink, clustered_wilson, paired_newcombe_interval

    a, b = pairs["failure_pre"].to_numpy().astype(bool), pairs["failure_post"].to_numpy().astype(bool)
    n = len(a)
    population = int(pairs["region_pairs"][0]) if n else 0
    out = {"cells": int(pairs["region_cells"][0]) if n else 0, "pairs": population, "queries": n,
           "exact": bool(n) and n == population, "failures": {"pre": int(a.sum()), "post": int(b.sum())},
           "newly_failing": int((b & ~a).sum()), "newly_passing": int((a & ~b).sum())}
    if n == 0:
        return out
    p1, p2 = a.mean(), b.mean()
    both, only_pre, only_post = int((a & b).sum()), int((a & ~b).sum()), int((b & ~a).sum())
    ids = pairs["input"].to_numpy()
    (_, l1, u1), (_, l2, u2) = (clustered_wilson(ids, x, confidence) for x in (a, b))
    f = cluster_shrink(ids, b.astype(np.float64) - a.astype(np.float64))  # the change's n_eff / n
    _, lo, hi = paired_newcombe_interval(both * f, only_pre * f, only_post * f, (n - both - only_pre - only_post) * f,
                                         confidence)
    shared = f"; {n * f:.0f} effective pairs: pairs of one input move together" if f < 1 else ""
    out |= {"pre": float(p1), "post": float(p2), "change": float(p2 - p1), "pre_ci": [l1, u1], "post_ci": [l2, u2],
            "change_ci": [float(lo), float(hi)], "effective_pairs": float(n * f),
            "interval": (f"paired, over all {n} pairs of the region (the held-out inputs as a sample{shared})"
                         if out["exact"] else f"paired, over {n} of the region's {population} pairs drawn at random{shared}")}
    if p1 > 0:
        out["relative_change"] = float(p2 / p1 - 1)
        # log(p2/p1) moves with b/p2 - a/p1 per pair (its influence): its own shrink, which sees the
        # clustering of the base rate too (the change's missed it: 50-67% coverage in a review's simulation)
        fr = cluster_shrink(ids, b / p2 - a / p1) if p2 > 0 else f
        x, y, z = both * fr + 0.5, only_pre * fr + 0.5, only_post * fr + 0.5
        ratio = (x + z) / (x + y)
        half = float(st.norm.ppf(0.5 + confidence / 2)) * np.sqrt((y + z) / ((x + y) * (x + z)))
        lo, hi = float(ratio * np.exp(-half) - 1), float(ratio * np.exp(half) - 1)
        out["relative_change_ci"] = [min(lo, out["relative_change"]), max(hi, out["relative_change"])]
    return out
