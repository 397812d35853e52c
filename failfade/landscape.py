"""Summarize: the failure landscape, owned by one DuckDB file.

Tables in landscape.duckdb:
  queries        every model query of the exploration (from queries.parquet)
  cells          one row per cell: levels, queries, failures, failure_rate, rate_lo, rate_hi,
                 mean_delta, is_failure, mode
  failure_modes  one row per mode: its cells, counts, rate, description and selector

A *failure cell* is a cell whose whole 95% Wilson interval lies at or above the failure-rate
threshold τ (`landscape.failure_rate_threshold`): we are confident that at least a fraction τ of
inputs fail there. A *failure mode* is a connected component of failure cells on the grid, where
two cells are adjacent when they differ by one level along exactly one axis.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from failfade.concepts import ConceptSpace
from failfade.stats import cell_counts, weighted_cell_rates, wilson_interval


def propensities(queries: pl.DataFrame) -> np.ndarray | None:
    """What each query's importance weight divides by (see stats.weighted_cell_rates): its
    propensity π(cell | input), over the cell's marginal at that step where the table records it
    (stabilized weights; tables written before the `marginal` column use π alone). None when no
    query has one."""
    if "propensity" not in queries.columns:
        return None
    p = queries["propensity"].to_numpy().astype(np.float64)
    if not np.isfinite(p).any():
        return None
    if "marginal" in queries.columns:
        m = queries["marginal"].to_numpy().astype(np.float64)
        p = np.where(np.isfinite(m) & (m > 0), p / np.where(m > 0, m, 1.0), p)
    return p


def cell_table(space: ConceptSpace, queries: pl.DataFrame, threshold: float, confidence: float = 0.95) -> pl.DataFrame:
    """Per-cell statistics. `failure_rate` estimates the rate over the input distribution
    (importance-weighted when a contextual searcher chose the cells; see stats.weighted_cell_rates);
    its Wilson interval uses the effective sample size. `queries`/`failures` are raw counts."""
    cells, fails = queries["cell"].to_numpy(), queries["failure"].to_numpy()
    n, k, mean_delta = cell_counts(cells, fails, queries["delta"].to_numpy(), space.n_cells)
    rate, n_eff, k_eff = weighted_cell_rates(cells, fails, propensities(queries), space.n_cells)
    lo, hi = wilson_interval(k_eff, n_eff, confidence)
    coords = space.all_coords()
    return pl.DataFrame(
        {"cell": np.arange(space.n_cells, dtype=np.int32)}
        | {a.name: np.asarray(a.levels)[coords[:, j]] for j, a in enumerate(space.axes)}
        | {
            "queries": n, "failures": k, "effective_queries": n_eff, "failure_rate": rate, "rate_lo": lo, "rate_hi": hi,
            "mean_delta": mean_delta, "is_failure": (n > 0) & (lo >= threshold),
        }
    )


def connected_modes(space: ConceptSpace, failing: np.ndarray) -> list[list[int]]:
    """Connected components of failing cells (one-level steps along one axis)."""
    failing_set = set(np.flatnonzero(failing).tolist())
    seen, modes = set(), []
    for start in sorted(failing_set):
        if start in seen:
            continue
        comp, stack = [], [start]
        seen.add(start)
        while stack:
            c = stack.pop()
            comp.append(c)
            for nb in space.neighbours(c):
                if nb in failing_set and nb not in seen:
                    seen.add(nb)
                    stack.append(nb)
        modes.append(sorted(comp))
    return modes


def selector_for(space: ConceptSpace, cells: list[int]) -> str:
    """A feedback selector that matches exactly these cells: a union of boxes."""
    return " | ".join(
        " & ".join(p for p in (a.range_condition(int(lo[j]), int(hi[j])) for j, a in enumerate(space.axes)) if p) or "*"
        for lo, hi in space.box_cover(cells)
    )


def summarize(space: ConceptSpace, queries: pl.DataFrame, threshold: float, confidence: float = 0.95):
    """Return (cells, modes) tables; mode ids rank modes by total failures, largest first."""
    cells = cell_table(space, queries, threshold, confidence)
    comps = connected_modes(space, cells["is_failure"].to_numpy())
    n, k = cells["queries"].to_numpy(), cells["failures"].to_numpy()
    n_eff = cells["effective_queries"].to_numpy()
    k_eff = np.nan_to_num(cells["failure_rate"].to_numpy()) * n_eff
    dl = cells["mean_delta"].to_numpy()
    comps.sort(key=lambda c: (-int(k[c].sum()), c[0]))
    rows, mode_of = [], np.zeros(space.n_cells, dtype=np.int32)
    for i, comp in enumerate(comps, start=1):
        mode_of[comp] = i
        # pooled over the mode's cells with effective counts (unbiased under a contextual searcher)
        lo, hi = wilson_interval(k_eff[comp].sum(), n_eff[comp].sum(), confidence)
        rows.append({
            "mode": i, "n_cells": len(comp), "queries": int(n[comp].sum()), "failures": int(k[comp].sum()),
            "failure_rate": float(k_eff[comp].sum() / n_eff[comp].sum()), "rate_lo": float(lo), "rate_hi": float(hi),
            "mean_delta": float(np.average(dl[comp], weights=n[comp])),
            "description": space.describe_cells(comp), "selector": selector_for(space, comp),
            "cells": " ".join(str(c) for c in comp),
        })
    schema = {"mode": pl.Int32, "n_cells": pl.Int64, "queries": pl.Int64, "failures": pl.Int64, "failure_rate": pl.Float64,
              "rate_lo": pl.Float64, "rate_hi": pl.Float64, "mean_delta": pl.Float64, "description": pl.Utf8,
              "selector": pl.Utf8, "cells": pl.Utf8}
    modes = pl.DataFrame(rows, schema=schema)
    return cells.with_columns(pl.Series("mode", mode_of)), modes


def write_database(db_path: Path, queries: pl.DataFrame | Path, cells: pl.DataFrame, modes: pl.DataFrame) -> None:
    """(Re)build the landscape database from the (merged) query log, the cells and the modes."""
    db_path = Path(db_path)
    db_path.unlink(missing_ok=True)
    with duckdb.connect(str(db_path)) as con:
        if isinstance(queries, pl.DataFrame):
            con.register("queries_df", queries.to_arrow())
            con.execute("CREATE TABLE queries AS SELECT * FROM queries_df")
        else:
            con.execute("CREATE TABLE queries AS SELECT * FROM read_parquet(?)", [str(queries)])
        con.register("cells_df", cells.to_arrow())
        con.register("modes_df", modes.to_arrow())
        con.execute("CREATE TABLE cells AS SELECT * FROM cells_df")
        con.execute("CREATE TABLE failure_modes AS SELECT * FROM modes_df")


def read_table(db_path: Path, table: str) -> pl.DataFrame:
    if table not in {"queries", "cells", "failure_modes"}:
        raise ValueError(f"unknown landscape table {table!r}")
    from failfade import unreadable

    if not Path(db_path).is_file():
        raise FileNotFoundError(db_path)
    try:
        with duckdb.connect(str(db_path), read_only=True) as con:
            # the table name is checked against a fixed set above; no user text reaches the SQL
            return pl.DataFrame(con.execute(f"SELECT * FROM {table}").fetchnumpy())
    except duckdb.Error as e:
        raise unreadable(db_path, e, "a landscape database") from None


def feedback_template(modes: pl.DataFrame) -> pl.DataFrame:
    """One row per mode for a person to fill in: decision `fix` or `accept`, optional weight and note."""
    return pl.DataFrame({
        "mode": modes["mode"], "description": modes["description"], "selector": modes["selector"],
        "decision": [""] * modes.height, "weight": [1.0] * modes.height,
        "note": [f"failure rate {r:.0%} over {n} queries" for r, n in zip(modes["failure_rate"], modes["queries"])],
    })
