"""Failure modes as slices: conjunctions of range predicates that a person can read and act on.

Anchor: SliceLine (Sagadeeva & Boehm, SIGMOD 2021). A *slice* is a conjunction of at most
`max_terms` predicates, one per axis: a level range on an ordered (numeric) axis, `rotation >= 30`,
`0.2 <= contrast <= 0.4`, or one word on a word axis, `digit = eight`. Every slice is therefore one
box of the grid, and its selector is what the feedback CSV accepts, unchanged.

The data are the landscape's cells (a grid, not a table of queries): each cell has its estimated
failure rate e_c (importance-weighted, the rate the heat map shows) and that estimate's variance.
A slice's failure rate is the mean of e_c over its visited cells: every cell of the slice weighs the
same, as the grid does (the rate over the slice's inputs and perturbation levels, whatever the
explorer's sampling); its interval is the wider of the normal one from the cells' variances and
Wilson's at the slice's effective size (`slice_interval`; for one cell, the cell's own). The score is
SliceLine's, with cells as rows:

    score(S) = α (e_S / ē − 1) − (1 − α) (M / |S| − 1),

with ē the mean rate over all M visited cells and |S| the slice's visited cells: error against size.

Search, level by level in SQL (DuckDB): level 1 evaluates every single predicate; level l + 1
extends the surviving level-l slices by one predicate on a later axis, and only when *every* parent
(the slice less one predicate) survived. A slice survives when it has at least `min_cells` cells and
could still lead to a failure mode: the largest cell rate inside it reaches τ (a child's rate cannot
exceed it) and SliceLine's upper bound on its children's score reaches the pool's current cut.
Each level's statistics are one join of the candidate boxes with the cells' marginal table over the
candidate's axes (at most ∏ levels rows), so the lattice is never enumerated in full.

A slice is a *failure mode* candidate when the lower end of its rate's interval is at or above
τ (`landscape.failure_rate_threshold`, the rule failure cells follow) and its rate beats every
parent's (the slice less one predicate) by `landscape.slice_margin` (else the parent says it
already). The whole grid is level 0: every one-term slice's parent, so a one-term slice must beat
the grid's rate too, and itself a candidate of no term (`*`, "every cell") when its rate is
confidently at or above τ. The modes are then chosen greedily by score: a candidate is kept when
the cells it adds to the modes kept so far fail at a rate of at least τ and each of its ranges ends
on a level that was explored inside it and fails there at ≥ τ; a kept slice that a later, larger
one contains is replaced by it (the whole grid, kept, replaces them all). Up to `landscape.top_k`
modes; a cell may belong to several. A mode's mean delta, like its rate, weighs each visited cell
the same.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl
from scipy.stats import norm

from failfade.concepts import ConceptSpace
from failfade.stats import wilson_interval


def cells_text(cells) -> str:
    """Cell ids as a `cells` column holds them (failure modes, components): space-separated."""
    return " ".join(str(int(c)) for c in cells)


def cells_of(text) -> np.ndarray:
    """The cell ids of one `cells` entry (cells_text's inverse)."""
    return np.asarray([int(c) for c in str(text).split()], dtype=np.int64)


@dataclass(frozen=True)
class SliceParams:
    threshold: float = 0.5  # τ
    confidence: float = 0.95
    max_terms: int = 3
    top_k: int = 8
    alpha: float = 0.99
    min_cells: int = 1
    margin: float = 0.05
    pool: int = 200  # candidates kept for the greedy choice (SliceLine's K, before redundancy)
    prune: bool = True  # off: every slice of the lattice up to max_terms (tests: pruning changes nothing)

    @classmethod
    def from_config(cls, ls: dict) -> "SliceParams":
        return cls(ls["failure_rate_threshold"], ls["confidence"], ls.get("max_terms", 3), ls.get("top_k", 8),
                   ls.get("slice_alpha", 0.99), ls.get("min_cells", 1), ls.get("slice_margin", 0.05),
                   max(ls.get("top_k", 8) * 25, 100))


def slice_interval(rate, var_sum, inv_n_sum, vis, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Slices' intervals (arrays, one entry per slice with visited cells): the wider of the normal
    one from the cells' variances (heterogeneity and weights) and Wilson's at the effective size
    vis² / Σ 1/n_eff (the size at which a binomial mean of the cells' rates has their sampling
    variance). Wilson's keeps a slice of few queries from clearing τ on a normal interval that the
    failure-cell rule would not accept: for one cell it is exactly the cell's own interval."""
    rate, var_sum, inv_n_sum, vis = (np.asarray(v, dtype=np.float64) for v in (rate, var_sum, inv_n_sum, vis))
    half = float(norm.ppf(0.5 + confidence / 2)) * np.sqrt(np.maximum(var_sum, 0.0)) / vis
    lo, hi = np.maximum(rate - half, 0.0), np.minimum(rate + half, 1.0)
    wilson = inv_n_sum > 0
    n = np.where(wilson, vis * vis / np.where(wilson, inv_n_sum, 1.0), 0.0)
    wl, wh = wilson_interval(rate * n, n, confidence)
    # one cell: its own interval exactly (the normal one could be wider, so that a failure cell's
    # one-cell mode missed τ: k=3 of n=10 at τ=0.1 had Wilson's lower bound 0.108, the mode's 0.011)
    lo = np.where(wilson, np.where(vis == 1, wl, np.minimum(lo, wl)), lo)
    hi = np.where(wilson, np.where(vis == 1, wh, np.maximum(hi, wh)), hi)
    return lo, hi


def predicates(space: ConceptSpace) -> list[tuple[int, int, int]]:
    """(axis, lo, hi) level-position ranges: every contiguous range short of the whole axis on a
    numeric axis, one level on a word axis."""
    out = []
    for j, a in enumerate(space.axes):
        n = len(a.levels)
        if a.words:
            out += [(j, i, i) for i in range(n)] if n > 1 else []
        else:
            out += [(j, lo, hi) for lo in range(n) for hi in range(lo, n) if (lo, hi) != (0, n - 1)]
    return out


def _cells_table(con, space: ConceptSpace, cells: pl.DataFrame) -> None:
    coords = space.all_coords()
    rate = cells["failure_rate"].to_numpy().astype(np.float64)
    var = cells["rate_var"].to_numpy().astype(np.float64)
    n_eff = cells["effective_queries"].to_numpy().astype(np.float64)
    with np.errstate(divide="ignore"):
        inv = np.where(np.isfinite(rate) & (n_eff > 0), 1.0 / n_eff, np.nan)  # for the slice's effective size
    frame = pl.DataFrame(
        {"cell": np.arange(space.n_cells, dtype=np.int64)}
        | {f"a{j}": coords[:, j].astype(np.int32) for j in range(len(space.axes))}
        | {"e": pl.Series(rate).fill_nan(None), "v": pl.Series(var).fill_nan(None), "ninv": pl.Series(inv).fill_nan(None),
           "fail": cells["is_failure"].to_numpy().astype(np.int32), "k": cells["failures"].to_numpy().astype(np.int64)}
    )
    con.register("cells_in", frame.to_arrow())
    con.execute("CREATE OR REPLACE TEMP TABLE sl_cells AS SELECT * FROM cells_in")
    con.unregister("cells_in")


@contextmanager
def one_thread(con: duckdb.DuckDBPyConnection):
    """DuckDB on one thread for the block, its setting put back after. Its parallel sums add rows in
    whatever order its threads finish, so the same rows gave sums that differed in their last bits
    from run to run: a failure table or a slice's statistics that were not the same for the same
    seed (at 2 threads, from about 120,000 rows: DuckDB's row group)."""
    threads = int(con.execute("SELECT current_setting('threads')").fetchone()[0])
    con.execute("SET threads = 1")
    try:
        yield con
    finally:
        con.execute(f"SET threads = {threads}")


def _stats_sql(axes: tuple[int, ...]) -> str:
    """Statistics of every candidate box on `axes` (table sl_cand: sid, lo{j}, hi{j}), from the
    cells' marginal over those axes. Column names come from axis positions, never from user text."""
    cols = ", ".join(f"a{j}" for j in axes)
    on = " AND ".join(f"m.a{j} BETWEEN c.lo{j} AND c.hi{j}" for j in axes)
    return f"""
        WITH m AS (SELECT {cols}, count(*) AS size, count(e) AS vis, sum(e) AS se, max(e) AS me, sum(v) AS sv,
                          sum(ninv) AS sinv, sum(fail) AS nf, sum(k) AS kq
                   FROM sl_cells GROUP BY {cols})
        SELECT c.sid, sum(m.size)::BIGINT AS size, sum(m.vis)::BIGINT AS vis, coalesce(sum(m.se), 0) AS se,
               max(m.me) AS me, coalesce(sum(m.sv), 0) AS sv, coalesce(sum(m.sinv), 0) AS sinv,
               sum(m.nf)::BIGINT AS nf, sum(m.kq)::BIGINT AS kq
        FROM sl_cand c JOIN m ON {on} GROUP BY c.sid"""


def find_slices(space: ConceptSpace, cells: pl.DataFrame, params: SliceParams,
                con: duckdb.DuckDBPyConnection | None = None) -> tuple[pl.DataFrame, dict]:
    """The failure modes as slices (see the module docstring) and the search's own counts.

    `cells` is the landscape's cell table (failure_rate, rate_var, is_failure, failures).
    Returns (modes, search) where modes has one row per slice, best first."""
    own = con is None
    con = con or duckdb.connect()
    try:
        with one_thread(con):
            return _find(con, space, cells, params)
    finally:
        if own:
            con.close()


def _find(con, space: ConceptSpace, cells: pl.DataFrame, p: SliceParams):
    d = len(space.axes)
    shape = space.shape
    _cells_table(con, space, cells)
    rate = cells["failure_rate"].to_numpy().astype(np.float64)
    visited = np.isfinite(rate)
    M = int(visited.sum())
    ebar = float(np.nanmean(rate)) if M else 0.0
    search = {"visited_cells": M, "mean_rate": ebar, "evaluated": [], "kept": []}
    if M == 0 or ebar <= 0:
        return _modes_frame([], space), search

    preds = predicates(space)
    evaluated: dict[tuple, dict] = {}  # box (tuple of (lo, hi) per axis) -> stats
    survivors: list[set] = [set()]  # per level: boxes that may be extended

    def box_of(terms):
        b = [(0, n - 1) for n in shape]
        for j, lo, hi in terms:
            b[j] = (lo, hi)
        return tuple(b)

    def terms_of(box):
        return [(j, lo, hi) for j, (lo, hi) in enumerate(box) if (lo, hi) != (0, shape[j] - 1)]

    def ub_score(s):
        """SliceLine's bound on the score of any sub-slice with at least min_cells visited cells."""
        if s["vis"] < max(p.min_cells, 1) or s["me"] is None or s["me"] <= 0:
            return -np.inf
        sizes = np.unique(np.clip([p.min_cells, s["vis"], s["se"] / max(s["me"], 1e-12)], max(p.min_cells, 1), s["vis"]))
        best = -np.inf
        for n in sizes:
            e = min(s["se"], n * s["me"]) / n
            best = max(best, p.alpha * (e / ebar - 1) - (1 - p.alpha) * (M / n - 1))
        return best

    # level 0: the whole grid, every one-term slice's parent; itself a mode (`*`, every cell) when
    # it fails confidently at or above τ and the greedy choice finds its cells failing
    grid = box_of([])
    size, vis, se, me, sv, sinv = con.execute(
        "SELECT count(*), count(e), sum(e), max(e), coalesce(sum(v), 0), coalesce(sum(ninv), 0) FROM sl_cells").fetchall()[0]
    whole = {"size": int(size), "vis": int(vis), "se": float(se), "me": float(me), "sv": float(sv), "sinv": float(sinv),
             "terms": 0, "rate": se / vis, "score": 0.0}  # the score of the mean rate at size M
    (lo,), (hi,) = slice_interval([whole["rate"]], [sv], [sinv], [vis], p.confidence)
    whole |= {"rate_lo": float(lo), "rate_hi": float(hi)}
    whole["candidate"] = bool(vis >= p.min_cells and whole["rate_lo"] >= p.threshold)
    evaluated[grid] = whole

    cut = -np.inf
    for level in range(1, min(p.max_terms, d) + 1):
        if level == 1:
            cands = [box_of([t]) for t in preds]
        else:
            prev = survivors[level - 1]
            singles = [t for t in preds if box_of([t]) in survivors[1]]
            cands = set()
            for box in prev:
                last = max(j for j, _, _ in terms_of(box))
                for j, lo, hi in singles:
                    if j <= last:
                        continue
                    child = list(box)
                    child[j] = (lo, hi)
                    child = tuple(child)
                    parents = [box_of([t for t in terms_of(child) if t[0] != drop]) for drop, _, _ in terms_of(child)]
                    if all(q in prev for q in parents):
                        cands.add(child)
            cands = sorted(cands)
        search["evaluated"].append(len(cands))
        by_axes: dict[tuple, list] = {}
        for box in cands:
            by_axes.setdefault(tuple(j for j, _, _ in terms_of(box)), []).append(box)
        for axes, boxes in by_axes.items():
            frame = pl.DataFrame({"sid": np.arange(len(boxes), dtype=np.int64)}
                                 | {f"lo{j}": [b[j][0] for b in boxes] for j in axes}
                                 | {f"hi{j}": [b[j][1] for b in boxes] for j in axes})
            con.register("cand_in", frame.to_arrow())
            con.execute("CREATE OR REPLACE TEMP TABLE sl_cand AS SELECT * FROM cand_in")
            con.unregister("cand_in")
            cur = con.execute(_stats_sql(axes))
            names = [c[0] for c in cur.description]
            rows = [dict(zip(names, row)) for row in cur.fetchall()]
            # every slice's interval at once (one call per batch, not per slice: 57,904 slices at scale)
            seen = [s for s in rows if s["vis"]]
            los, his = slice_interval([s["se"] / s["vis"] for s in seen], [s["sv"] for s in seen],
                                      [s["sinv"] for s in seen], [s["vis"] for s in seen], p.confidence)
            for s, lo, hi in zip(seen, los, his):
                s["rate_lo"], s["rate_hi"] = float(lo), float(hi)
            for s in rows:
                box = boxes[int(s.pop("sid"))]
                s["terms"] = level
                if s["vis"]:
                    s["rate"] = s["se"] / s["vis"]
                    s["score"] = p.alpha * (s["rate"] / ebar - 1) - (1 - p.alpha) * (M / s["vis"] - 1)
                else:
                    s["rate"] = s["rate_lo"] = np.nan
                    s["rate_hi"], s["score"] = np.nan, -np.inf
                # at level 1 the one parent is the whole grid: a one-term slice must beat it too
                parents = [box_of([t for t in terms_of(box) if t[0] != drop]) for drop, _, _ in terms_of(box)]
                beats = all(s["rate"] >= evaluated[q]["rate"] + p.margin for q in parents if q in evaluated)
                s["candidate"] = bool(s["vis"] >= p.min_cells and s["rate_lo"] >= p.threshold and beats)
                evaluated[box] = s
        # the pool's cut: the pool-th best candidate's score so far
        scores = sorted((s["score"] for s in evaluated.values() if s["candidate"]), reverse=True)
        cut = scores[p.pool - 1] if len(scores) >= p.pool else -np.inf
        keep = {box for box in cands if not p.prune or (evaluated[box]["vis"] >= p.min_cells
                and (evaluated[box]["me"] or 0) >= p.threshold and ub_score(evaluated[box]) >= cut)}
        survivors.append(keep)
        search["kept"].append(len(keep))

    chosen = _choose(space, rate, [(b, s) for b, s in evaluated.items() if s["candidate"]], p, terms_of)
    search["candidates"] = int(sum(s["candidate"] for s in evaluated.values()))
    return _modes_frame([(b, evaluated[b], terms_of(b)) for b in chosen], space, cells), search


def box_mask(space: ConceptSpace, box) -> np.ndarray:
    coords = space.all_coords()
    return np.all([(coords[:, j] >= lo) & (coords[:, j] <= hi) for j, (lo, hi) in enumerate(box)], axis=0)


def _choose(space: ConceptSpace, rate: np.ndarray, cands, p: SliceParams, terms_of) -> list:
    """Greedy by score: keep a candidate when the visited cells it adds fail at ≥ τ on average; a
    kept slice inside a later one is replaced by it. The whole grid (no term) is weighed in its
    place even past top_k: kept, it replaces every mode, so no cut may hide it."""
    # ties (the same visited cells and rates) go to fewer terms, then to the smaller box
    # every candidate in score order until top_k modes stand: cut at the pool, a strong region's many
    # sub-slices (which add no cell once it is chosen) filled it and a separate mode below went unseen
    cands = sorted(cands, key=lambda bs: (-bs[1]["score"], len(terms_of(bs[0])), bs[1]["size"], bs[0]))
    chosen: list = []
    masks: dict = {}
    covered = np.zeros(space.n_cells, dtype=bool)
    for box, s in cands:
        if len(chosen) >= p.top_k and terms_of(box):
            continue
        m = masks.setdefault(box, box_mask(space, box))
        new = m & ~covered & np.isfinite(rate)
        if not new.any() or np.nanmean(rate[new]) < p.threshold or not _tight(space, rate, box, m, p.threshold, terms_of):
            continue
        chosen = [b for b in chosen if not (masks[b] <= m).all()] + [box]
        covered = np.any([masks[b] for b in chosen], axis=0)
    return chosen


def _tight(space: ConceptSpace, rate: np.ndarray, box, mask: np.ndarray, threshold: float, terms_of) -> bool:
    """Each range's end levels were explored and fail at ≥ τ inside the slice: "x4 >= 20" is not
    said when only x4 >= 30 fails (its x4 = 20 slab would ride along on the others' rate), nor when
    no cell of its x4 = 20 slab was queried (x4 = 30 has the same evidence, and a `fix` of x4 >= 20
    would fine-tune on cells nobody looked at)."""
    coords = space.all_coords()
    for j, lo, hi in terms_of(box):
        if lo == hi:
            continue
        for end in (lo, hi):
            slab = mask & (coords[:, j] == end) & np.isfinite(rate)
            if not slab.any() or rate[slab].mean() < threshold:
                return False
    return True


MODE_SCHEMA = {"mode": pl.Int32, "terms": pl.Int32, "n_cells": pl.Int64, "visited_cells": pl.Int64,
               "failing_cells": pl.Int64, "queries": pl.Int64, "failures": pl.Int64, "failure_rate": pl.Float64,
               "rate_lo": pl.Float64, "rate_hi": pl.Float64, "mean_delta": pl.Float64, "score": pl.Float64,
               "cum_failing_cells": pl.Float64, "cum_failures": pl.Float64, "description": pl.Utf8,
               "selector": pl.Utf8, "cells": pl.Utf8}


def _modes_frame(found, space: ConceptSpace, cells: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per slice, ranked by score. cum_failing_cells / cum_failures: the share of the
    landscape's failure cells / failing queries that this slice and those above it cover."""
    if not found:
        return pl.DataFrame([], schema=MODE_SCHEMA)
    n, k = cells["queries"].to_numpy(), cells["failures"].to_numpy()
    failing = cells["is_failure"].to_numpy()
    dl = cells["mean_delta"].to_numpy()
    # a mode pools many cells' evidence, so it can stand where no single cell is a failure cell: then
    # its share of them is undefined (NaN), not 0%
    total_fail_cells, total_failures = int(failing.sum()), int(k.sum())
    share = lambda part, total: float(part / total) if total else float("nan")  # noqa: E731
    covered = np.zeros(space.n_cells, dtype=bool)
    rows = []
    for i, (box, s, terms) in enumerate(sorted(found, key=lambda f: -f[1]["score"]), start=1):
        m = box_mask(space, box)
        covered |= m
        idx = np.flatnonzero(m)
        seen = idx[n[idx] > 0]
        words = [space.axes[j].range_condition(lo, hi, pretty=True) for j, lo, hi in terms]
        rows.append({
            "mode": i, "terms": len(terms), "n_cells": int(m.sum()), "visited_cells": int(s["vis"]),
            "failing_cells": int(failing[m].sum()), "queries": int(n[m].sum()), "failures": int(k[m].sum()),
            "failure_rate": float(s["rate"]), "rate_lo": float(s["rate_lo"]), "rate_hi": float(s["rate_hi"]),
            # each visited cell weighs the same, as in the failure rate (not the explorer's query counts)
            "mean_delta": float(np.mean(dl[seen])) if len(seen) else float("nan"),
            "score": float(s["score"]),
            "cum_failing_cells": share(failing[covered].sum(), total_fail_cells),
            "cum_failures": share(k[covered].sum(), total_failures),
            # no term: the whole grid, which the feedback's `*` selects
            "description": " and ".join(words) or "every cell",
            "selector": " & ".join(space.axes[j].range_condition(lo, hi) for j, lo, hi in terms) or "*",
            "cells": cells_text(idx),
        })
    return pl.DataFrame(rows, schema=MODE_SCHEMA)


def coverage(cells: pl.DataFrame, modes: pl.DataFrame) -> dict:
    """What the modes leave out: the share of failure cells and of failing queries inside them."""
    failing = cells["is_failure"].to_numpy().astype(bool)
    k = cells["failures"].to_numpy()
    inside = np.zeros(cells.height, dtype=bool)
    for text in modes["cells"]:
        inside[cells_of(text)] = True
    return {
        "modes": modes.height, "failing_cells": int(failing.sum()), "failing_cells_covered": int((failing & inside).sum()),
        "failing_cell_share": float((failing & inside).sum() / failing.sum()) if failing.any() else float("nan"),
        "failures": int(k.sum()), "failures_covered": int(k[inside].sum()),
        "failure_share": float(k[inside].sum() / k.sum()) if k.sum() else float("nan"),
        "cells_covered": int(inside.sum()), "cells_covered_not_failing": int((inside & ~failing).sum()),
    }
