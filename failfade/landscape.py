"""Summarize: the failure landscape, owned by one DuckDB file.

Tables in landscape.duckdb:
  queries        every model query of the exploration (copied from the query shards by DuckDB)
  cells          one row per cell: levels, queries, failures, effective_queries, failure_rate,
                 rate_lo, rate_hi, rate_var, mean_delta, is_failure, mode (the first mode that holds it)
  failure_modes  one row per mode, best first: a slice (failfade.slices), its rate with interval,
                 size, coverage, words and selector
  mode_cells     (mode, cell) for every mode: a cell may belong to several
  components     the connected components of failure cells (the older view; see components())

A *failure cell* is a cell whose whole 95% Wilson interval lies at or above the failure-rate
threshold τ (`landscape.failure_rate_threshold`): we are confident that at least a fraction τ of
inputs fail there. A *failure mode* is a slice: a conjunction of at most `landscape.max_terms`
level-range predicates whose rate is confidently ≥ τ (failfade.slices).

The per-cell statistics are aggregated by DuckDB straight from the query shards (Parquet), so a
landscape of millions of queries is never held in memory: only per-cell sums come back.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from failfade import FailfadeError
from failfade.concepts import ConceptSpace
from failfade.slices import cells_of, cells_text, one_thread
from failfade.stats import (cell_counts, rates_from_sums, stabilized_propensity, variance_from_sums, weight_sums,
                            wilson_interval)


def propensities(queries: pl.DataFrame) -> np.ndarray | None:
    """What each query's importance weight divides by (see stats.weighted_cell_rates): its
    propensity π(cell | input), over the cell's marginal at that step (over the step's other inputs:
    stats.others_marginal) where the table records it
    (stabilized weights; tables written before the `marginal` column use π alone). None when no
    query has one."""
    if "propensity" not in queries.columns:
        return None
    p = queries["propensity"].to_numpy().astype(np.float64)
    if not np.isfinite(p).any():
        return None
    return stabilized_propensity(p, queries["marginal"].to_numpy() if "marginal" in queries.columns else None)


def cell_table(space: ConceptSpace, queries: pl.DataFrame, threshold: float, confidence: float = 0.95) -> pl.DataFrame:
    """Per-cell statistics of an in-memory query table (see cell_table_from_sums)."""
    cells, fails = queries["cell"].to_numpy(), queries["failure"].to_numpy()
    n, k, mean_delta = cell_counts(cells, fails, queries["delta"].to_numpy(), space.n_cells)
    sums = weight_sums(cells, fails, propensities(queries), space.n_cells)
    return cell_table_from_sums(space, {"n": n, "k": k, "mean_delta": mean_delta, **sums}, threshold, confidence)


def cell_table_from_sums(space: ConceptSpace, sums: dict, threshold: float, confidence: float = 0.95) -> pl.DataFrame:
    """Per-cell statistics from per-cell sums (n, k, mean_delta, sw, sw2, swf, sw2f). `failure_rate`
    estimates the rate over the input distribution (importance-weighted when a contextual searcher
    chose the cells; see stats.weighted_cell_rates); its Wilson interval uses the effective sample
    size `effective_queries` (stats.rates_from_sums: Kish's, or less where the weights depend on
    the outcome), `rate_var` is its variance (stats.variance_from_sums). `queries`/`failures` are raw counts."""
    n, k = np.asarray(sums["n"], dtype=np.int64), np.asarray(sums["k"], dtype=np.int64)
    rate, n_eff, k_eff = rates_from_sums(sums["sw"], sums["sw2"], sums["swf"], sums["sw2f"])
    lo, hi = wilson_interval(k_eff, n_eff, confidence)
    coords = space.all_coords()
    return pl.DataFrame(
        {"cell": np.arange(space.n_cells, dtype=np.int32)}
        # a word axis shows its words (its `levels` are only their positions)
        | {a.name: np.asarray(a.words if a.words else a.levels)[coords[:, j]] for j, a in enumerate(space.axes)}
        | {
            "queries": n, "failures": k, "effective_queries": n_eff, "failure_rate": rate, "rate_lo": lo, "rate_hi": hi,
            "rate_var": variance_from_sums(sums["sw"], sums["sw2"], sums["swf"], sums["sw2f"]),
            "mean_delta": np.asarray(sums["mean_delta"], dtype=np.float64), "is_failure": (n > 0) & (lo >= threshold),
        }
    )


QUERY_COLUMNS = ("cell", "failure", "delta")  # what cell_sums_sql needs of every query file


def _parquet_columns(con, paths: list[str]) -> set[str]:
    """The query files' columns, all of them together, after checking that every file has
    QUERY_COLUMNS: read together by name (union_by_name), a shard lacking `failure` was read as
    NULLs, which count(*) counted as queries and sum() skipped, so its failures silently became
    passes; the check on the union of the columns did not see it."""
    cols = set()
    for path in paths:
        own = {r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [path]).fetchall()}
        missing = [c for c in QUERY_COLUMNS if c not in own]
        if missing:
            raise FailfadeError(f"{path}: the query file lacks column(s) {missing}; "
                                f"rebuild it with `failfade run --forcerun {path}`")
        cols |= own
    return cols


def _bad_shard(con, paths: list[str], n_cells: int) -> FailfadeError:
    """The error for the first query file with a query without a cell or a failure outcome (a NULL:
    the sums would skip it and count it as a pass) or with a cell outside the concept space."""
    row = con.execute("""
        SELECT filename, count(*) FILTER (WHERE cell IS NULL), count(*) FILTER (WHERE failure IS NULL),
               count(*) FILTER (WHERE cell::BIGINT < 0 OR cell::BIGINT >= ?) AS outside
        FROM read_parquet(?, union_by_name = true, filename = true)
        GROUP BY filename HAVING count(*) FILTER (WHERE cell IS NULL OR failure IS NULL) + outside > 0
        ORDER BY list_position(?, filename) LIMIT 1""", [n_cells, paths, paths]).fetchone()
    if row is None:  # not reached: the sums saw one of these
        return FailfadeError(f"the query files {', '.join(paths)} hold queries without a cell or failure outcome")
    name, no_cell, no_failure, outside = row
    said = [f"{k} queries without {what}" for k, what in ((no_cell, "a cell"), (no_failure, "a failure outcome")) if k]
    if outside:
        said.append(f"{outside} queries with a cell outside 0..{n_cells - 1} (it belongs to another concept space)")
    return FailfadeError(f"{name}: the query file has {' and '.join(said)}; rebuild it with `failfade run --forcerun {name}`")


def cell_sums_sql(con: duckdb.DuckDBPyConnection, paths: list[str], n_cells: int) -> dict:
    """The per-cell sums of cell_table_from_sums, aggregated by DuckDB from the query files (the
    same weights as propensities() and stats.query_weights: 1/(π/π̄) where the marginal π̄ is
    recorded, 1/π where only π is, 1 where neither). Only n_cells rows come back."""
    cols = _parquet_columns(con, paths)  # every file has the columns needed
    p = "propensity" if "propensity" in cols else "NULL::DOUBLE"
    if "marginal" in cols:
        p = f"CASE WHEN isfinite(marginal) AND marginal > 0 THEN {p} / marginal ELSE {p} END"
    # one thread adds the rows in file order: the same query files, the same failure table
    with one_thread(con):
        rows = con.execute(f"""
            WITH q AS (
                SELECT cell::BIGINT AS cell, failure::DOUBLE AS f, delta::DOUBLE AS delta, ({p})::DOUBLE AS p
                FROM read_parquet(?, union_by_name = true)),
            w AS (SELECT cell, f, delta, CASE WHEN p IS NULL OR NOT isfinite(p) THEN 1.0 ELSE 1.0 / greatest(p, 1e-12) END AS w FROM q)
            SELECT cell, count(*) AS n, sum(f) AS k, sum(delta) AS sd, sum(w) AS sw, sum(w * w) AS sw2, sum(w * f) AS swf,
                   sum(w * w * f) AS sw2f, count(*) - count(f) AS no_failure
            FROM w GROUP BY cell ORDER BY cell""", [paths]).fetchnumpy()
    cell = np.asarray(rows["cell"], dtype=np.int64)
    if np.ma.getmaskarray(rows["cell"]).any() or np.asarray(rows["no_failure"]).any() or (
            len(cell) and (cell.min() < 0 or cell.max() >= n_cells)):
        raise _bad_shard(con, paths, n_cells)  # found again, by file: only on this error path
    out = {}
    for key in ("n", "k", "sd", "sw", "sw2", "swf", "sw2f"):
        full = np.zeros(n_cells)
        full[cell] = np.asarray(rows[key], dtype=np.float64)
        out[key] = full
    with np.errstate(invalid="ignore", divide="ignore"):
        out["mean_delta"] = np.where(out["n"] > 0, out.pop("sd") / np.maximum(out["n"], 1), np.nan)
    return out


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


def components(space: ConceptSpace, cells: pl.DataFrame) -> pl.DataFrame:
    """The connected components of failure cells, largest (by failures) first: where the failure
    region touches itself. A secondary view: one component may need a union of boxes to say."""
    comps = connected_modes(space, cells["is_failure"].to_numpy())
    k = cells["failures"].to_numpy()
    comps.sort(key=lambda c: (-int(k[c].sum()), c[0]))
    # an exact box cover tries every box of the grid: fine on a few axes, not on 15^6 boxes
    boxes = int(np.prod([n * (n + 1) // 2 for n in space.shape], dtype=np.float64))
    return pl.DataFrame({"component": np.arange(1, len(comps) + 1, dtype=np.int32),
                         "n_cells": [len(c) for c in comps], "failures": [int(k[c].sum()) for c in comps],
                         "selector": [selector_for(space, c) if boxes <= 20_000 else "" for c in comps],
                         "cells": [cells_text(c) for c in comps]},
                        schema={"component": pl.Int32, "n_cells": pl.Int64, "failures": pl.Int64, "selector": pl.Utf8,
                                "cells": pl.Utf8})


def _query_paths(queries) -> list[str] | None:
    if isinstance(queries, (str, Path)):
        return [str(queries)]
    if isinstance(queries, (list, tuple)):
        return [str(q) for q in queries]
    return None


def summarize(space: ConceptSpace, queries, threshold: float, confidence: float = 0.95, ls: dict | None = None,
              con: duckdb.DuckDBPyConnection | None = None) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Return (cells, modes, search): the cell table (with each cell's first mode) and the failure
    modes as slices (failfade.slices; `ls` is the config's `landscape` section, defaults otherwise).
    `queries` is a query table in memory or the query files (Parquet), which DuckDB aggregates
    without loading them."""
    from failfade.slices import SliceParams, find_slices

    paths = _query_paths(queries)
    own = con is None
    con = con or duckdb.connect()
    try:
        if paths is None:
            cells = cell_table(space, queries, threshold, confidence)
        else:
            cells = cell_table_from_sums(space, cell_sums_sql(con, paths, space.n_cells), threshold, confidence)
        params = SliceParams.from_config({**(ls or {}), "failure_rate_threshold": threshold, "confidence": confidence})
        modes, search = find_slices(space, cells, params, con)
    finally:
        if own:
            con.close()
    return cells.with_columns(pl.Series("mode", mode_of_cells(space.n_cells, modes))), modes, search


def mode_of_cells(n_cells: int, modes: pl.DataFrame) -> np.ndarray:
    """Each cell's failure mode (0: none). Modes may overlap; a cell in several belongs to the first,
    best one (the cells table's `mode` column, and what the rating sheet groups by)."""
    mode_of = np.zeros(n_cells, dtype=np.int32)
    for m, text in zip(modes["mode"].to_list()[::-1], modes["cells"].to_list()[::-1]):  # the best mode wins
        mode_of[cells_of(text)] = m
    return mode_of


def write_database(db_path: Path, queries: pl.DataFrame | Path | list, cells: pl.DataFrame, modes: pl.DataFrame,
                   comps: pl.DataFrame | None = None) -> None:
    """(Re)build the landscape database from the query log (a table, or the shard files in shard
    order, which DuckDB copies without loading them: a `shard` column numbers them), the cells and
    the modes."""
    db_path = Path(db_path)
    db_path.unlink(missing_ok=True)
    with duckdb.connect(str(db_path)) as con:
        paths = _query_paths(queries)
        if paths is None:
            con.register("queries_df", queries.to_arrow())
            con.execute("CREATE TABLE queries AS SELECT * FROM queries_df")
        elif len(paths) == 1 and not isinstance(queries, (list, tuple)):
            con.execute("CREATE TABLE queries AS SELECT * FROM read_parquet(?)", [paths[0]])
        else:
            con.execute("CREATE TABLE queries AS SELECT * EXCLUDE (filename), (list_position(?, filename) - 1)::INTEGER "
                        "AS shard FROM read_parquet(?, union_by_name = true, filename = true)", [paths, paths])
        con.register("cells_df", cells.to_arrow())
        con.register("modes_df", modes.to_arrow())
        con.execute("CREATE TABLE cells AS SELECT * FROM cells_df")
        con.execute("CREATE TABLE failure_modes AS SELECT * FROM modes_df")
        pairs = [(int(m), int(c)) for m, text in zip(modes["mode"], modes["cells"]) for c in cells_of(text)]
        con.register("mode_cells_df", pl.DataFrame(pairs, schema={"mode": pl.Int32, "cell": pl.Int32}, orient="row").to_arrow())
        con.execute("CREATE TABLE mode_cells AS SELECT * FROM mode_cells_df")
        if comps is not None:
            con.register("comps_df", comps.to_arrow())
            con.execute("CREATE TABLE components AS SELECT * FROM comps_df")


def read_table(db_path: Path, table: str) -> pl.DataFrame:
    if table not in {"queries", "cells", "failure_modes", "mode_cells", "components"}:
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
    """One row per mode for a person to fill in: decision `fix` or `accept`, optional weight and note.
    The selector is the mode's own (one box), so the row can be kept as it is."""
    # the rate is over the explored cells only: say how many of the mode's cells that is
    notes = [f"failure rate {r:.0%} [{lo:.0%}, {hi:.0%}] over " + (f"{n} cells" if v == n else f"the {v} explored of its {n} cells")
             for r, lo, hi, n, v in zip(modes["failure_rate"], modes["rate_lo"], modes["rate_hi"], modes["n_cells"],
                                        modes["visited_cells"])]
    return pl.DataFrame({
        "mode": modes["mode"], "description": modes["description"], "selector": modes["selector"],
        "decision": [""] * modes.height, "weight": [1.0] * modes.height, "note": notes,
    }, schema={"mode": pl.Int32, "description": pl.Utf8, "selector": pl.Utf8, "decision": pl.Utf8, "weight": pl.Float64,
               "note": pl.Utf8})
