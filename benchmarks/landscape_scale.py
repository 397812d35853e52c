"""Landscape at scale: 10 million queries over 15,625 cells (6 axes x 5 levels), from Parquet shards.

    .venv/bin/python benchmarks/landscape_scale.py [--queries 10000000] [--shards 10] [--threads 2] [--repeats 2]
        [--no-baseline]

Synthetic query shards (written once under benchmarks/out/landscape-scale/) come from a
failure-seeking contextual searcher on a grid with three planted failing conjunctions (the test
suite's: `x0 >= 30 & x1 <= 10`, `x3 = 40`, `10 <= x2 <= 20 & x4 >= 30 & x5 = 0`), with each
query's propensity and the policy's marginal logged, as failfade's searchers log them. Each
measurement runs in a fresh process, which reports its own peak RSS (ru_maxrss):
  failfade      DuckDB aggregates the shards where they lie (per-cell weight sums), the slices are
                found level by level in SQL, then the landscape database is written (the queries
                copied into it by DuckDB)
  in-memory     the previous path: every shard read into one polars table, cells from numpy
Writes the "landscape-scale" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, command, write_section  # noqa: E402

HERE = Path(__file__).resolve()
PLANTED = [[(0, 3, 4), (1, 0, 1)], [(3, 4, 4)], [(2, 1, 2), (4, 3, 4), (5, 0, 0)]]


def space():
    from failfade.concepts import Axis, ConceptSpace

    return ConceptSpace([Axis(f"x{j}", "rotate", tuple(float(10 * i) for i in range(5))) for j in range(6)])


def planted_mask(sp) -> np.ndarray:
    coords = sp.all_coords()
    inside = np.zeros(sp.n_cells, dtype=bool)
    for terms in PLANTED:
        m = np.ones(sp.n_cells, dtype=bool)
        for j, lo, hi in terms:
            m &= (coords[:, j] >= lo) & (coords[:, j] <= hi)
        inside |= m
    return inside


def planted_selectors(sp) -> set[frozenset]:
    return {_conditions(" & ".join(sp.axes[j].range_condition(lo, hi) for j, lo, hi in t)) for t in PLANTED}


def generate(folder: Path, n: int, shards: int, seed: int = 0) -> list[Path]:
    """Shards of a contextual searcher's queries (written once per size; a stamp file says which)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / "stamp.json"
    want = json.dumps({"n": n, "shards": shards, "seed": seed, "planted": PLANTED})
    paths = [folder / f"queries-{k:02d}.parquet" for k in range(shards)]
    if stamp.is_file() and stamp.read_text() == want and all(p.is_file() for p in paths):
        return paths
    sp = space()
    inside = planted_mask(sp)
    planted = np.flatnonzero(inside)
    hard = np.linspace(0.0, 1.0, 1000)  # 1,000 held-out inputs, easy to hard
    base = np.where(inside, 0.6, 0.05)
    q = 0.2 + 0.6 * hard  # share of a query's picks aimed at the failing region, by input
    per = n // shards
    for k, path in enumerate(paths):
        rng = np.random.default_rng(np.random.SeedSequence([seed, k]))
        m = per if k < shards - 1 else n - per * (shards - 1)
        writer = None
        for start in range(0, m, 1_000_000):
            c = min(1_000_000, m - start)
            x = rng.integers(0, len(hard), c)
            aimed = rng.random(c) < q[x]
            cell = np.where(aimed, planted[rng.integers(0, len(planted), c)], rng.integers(0, sp.n_cells, c))
            pi = q[x] * inside[cell] / len(planted) + (1 - q[x]) / sp.n_cells
            marginal = q.mean() * inside[cell] / len(planted) + (1 - q.mean()) / sp.n_cells
            p_fail = np.clip(base[cell] * (0.4 + 1.2 * hard[x]), 0, 1)
            fail = rng.random(c) < p_fail
            table = pa.table({"input_id": x.astype(np.int32), "cell": cell.astype(np.int32), "failure": fail,
                              "delta": (fail + 0.1 * rng.random(c)).astype(np.float32),
                              "propensity": pi, "marginal": marginal,
                              "step": np.arange(start, start + c, dtype=np.int64)})
            writer = writer or pq.ParquetWriter(str(path), table.schema)
            writer.write_table(table)
        writer.close()
    stamp.write_text(want)
    return paths


def child_failfade(paths: list[str], threads: int, db: str) -> dict:
    import duckdb

    from failfade.landscape import components, summarize, write_database
    from failfade.slices import coverage

    sp = space()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # after the imports
    t0 = time.perf_counter()
    with duckdb.connect() as con:
        con.execute(f"SET threads = {int(threads)}")
        cells, modes, search = summarize(sp, paths, 0.5, 0.95, {"max_terms": 3, "top_k": 8}, con=con)
    t_slices = time.perf_counter() - t0
    t1 = time.perf_counter()
    Path(db).unlink(missing_ok=True)
    write_database(db, paths, cells, modes, components(sp, cells))
    t_db = time.perf_counter() - t1
    got = {_conditions(s) for s in modes["selector"]}
    want = planted_selectors(sp)
    cov = coverage(cells, modes)
    return {"seconds_cells_and_slices": t_slices, "seconds_database": t_db, "queries": int(cells["queries"].sum()),
            "slices": modes["selector"].to_list(), "rates": modes["failure_rate"].round(3).to_list(),
            "precision": len(got & want) / max(len(got), 1), "recall": len(got & want) / len(want),
            "evaluated": search["evaluated"], "failing_cell_share": cov["failing_cell_share"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "imports_rss_mb": rss0}


def _conditions(selector: str) -> frozenset:
    """A selector's conditions ("10 <= x2 <= 20" is written `x2>=10 & x2<=20`: two)."""
    return frozenset(t.strip() for t in selector.split("&"))


def child_memory(paths: list[str]) -> dict:
    from failfade.landscape import cell_table
    from failfade.pipeline import read_queries

    sp = space()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    queries = read_queries(paths)
    cells = cell_table(sp, queries, 0.5)
    return {"seconds_cells": time.perf_counter() - t0, "queries": int(cells["queries"].sum()),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "imports_rss_mb": rss0}


def run_child(kind: str, paths, threads: int, db: Path) -> dict:
    cmd = [sys.executable, str(HERE), "--child", kind, "--threads", str(threads), "--db", str(db), *map(str, paths)]
    env = {"OMP_NUM_THREADS": str(threads), "POLARS_MAX_THREADS": str(threads)}
    import os

    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=10_000_000)
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-baseline", action="store_true", help="skip the in-memory baseline")
    ap.add_argument("--child", default=None)
    ap.add_argument("--db", default=str(OUT / "landscape-scale" / "landscape.duckdb"))
    ap.add_argument("paths", nargs="*")
    a = ap.parse_args()
    if a.child == "failfade":
        print(json.dumps(child_failfade(a.paths, a.threads, a.db)))
        return
    if a.child == "memory":
        print(json.dumps(child_memory(a.paths)))
        return
    folder = OUT / "landscape-scale"
    t0 = time.perf_counter()
    paths = generate(folder, a.queries, a.shards)
    print(f"shards ready ({time.perf_counter() - t0:.0f} s): {sum(p.stat().st_size for p in paths) / 1e6:.0f} MB", flush=True)
    runs = []
    for r in range(a.repeats):
        runs.append(run_child("failfade", paths, a.threads, Path(a.db)))
        print(f"failfade run {r + 1}:", runs[-1], flush=True)
    base = None if a.no_baseline else run_child("memory", paths, a.threads, Path(a.db))
    if base:
        print("in-memory:", base, flush=True)
    db_mb = Path(a.db).stat().st_size / 1e6
    rows = ["| run | cells + slices (s) | database (s) | peak RSS (MB; after imports) | slices (rate) | planted recovered (precision / recall) | slices evaluated per level |",
            "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(runs, 1):
        sl = "; ".join(f"`{s}` ({x:.2f})" for s, x in zip(r["slices"], r["rates"]))
        rows.append(f"| failfade {i} | {r['seconds_cells_and_slices']:.1f} | {r['seconds_database']:.1f} | {r['peak_rss_mb']:.0f} ({r['imports_rss_mb']:.0f}) | "
                    f"{sl} | {r['precision']:.2f} / {r['recall']:.2f} | {r['evaluated']} |")
    if base:
        rows.append(f"| in-memory (previous path, cells only) | {base['seconds_cells']:.1f} | - | {base['peak_rss_mb']:.0f} ({base['imports_rss_mb']:.0f}) | - | - | - |")
    text = (f"## Landscape at scale: {a.queries:,} queries over 15,625 cells ({platform.machine()}, {a.threads} threads)\n\n"
            f"Command: `{command(__file__, ap, a)}`: "
            f"{a.shards} Parquet shards ({sum(p.stat().st_size for p in paths) / 1e6:.0f} MB) of a failure-seeking contextual "
            "searcher's queries (propensities and marginals logged) on a 6-axis x 5-level grid with three planted failing "
            "conjunctions. Each row is a fresh process; peak RSS is its own ru_maxrss. \"cells + slices\": DuckDB aggregates "
            "the shards where they lie and the slices are searched (max_terms 3); \"database\": landscape.duckdb written "
            f"with every query copied into it by DuckDB ({db_mb:.0f} MB).\n\n" + "\n".join(rows) + "\n")
    write_section("landscape-scale", text)
    print(text)


if __name__ == "__main__":
    main()
