"""Sharded exploration: K independent explorations (own seeds), merged by the landscape rule."""

from __future__ import annotations

import subprocess

import duckdb
import polars as pl
import pytest

from test_workflow import EXP, make_workdir, tiny_config

pytestmark = pytest.mark.slow


def start_until_landscape(workdir, repo_root, snakemake_exe, shards: int, budget: int) -> subprocess.Popen:
    cfg = tiny_config(repo_root)
    exp = cfg["experiments"][EXP]
    exp["model"]["epochs"] = 2
    exp["explore"].update(shards=shards, budget=budget, num_agents=32)
    make_workdir(workdir, repo_root, cfg)
    return subprocess.Popen(
        [str(snakemake_exe), "--snakefile", str(repo_root / "Snakefile"), "--directory", str(workdir), "--cores", "2",
         "-q", "--until", "landscape", "--set-threads", "explore=1", "explore_shard=1", "model=1"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def landscape_of(workdir, proc: subprocess.Popen):
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    with duckdb.connect(str(workdir / "results" / EXP / "landscape" / "landscape.duckdb"), read_only=True) as con:
        queries = pl.DataFrame(con.execute("SELECT * FROM queries ORDER BY shard, step, explorer").fetchnumpy())
        cells = pl.DataFrame(con.execute("SELECT * FROM cells ORDER BY cell").fetchnumpy())
    return queries, cells


def test_two_shards_are_deterministic_and_cover_more(tmp_path, repo_root, snakemake_exe):
    budget = 64  # two env steps of 32 explorers per shard: far fewer queries than the 125 cells
    # three separate working directories, run at once (each run alone mostly keeps one core busy)
    runs = {name: start_until_landscape(tmp_path / name, repo_root, snakemake_exe, k, budget)
            for name, k in (("k2a", 2), ("k2b", 2), ("k1", 1))}
    try:
        (q2a, cells2a), (q2b, cells2b), (q1, _) = (landscape_of(tmp_path / name, proc) for name, proc in runs.items())
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()

    # the landscape holds both shards' queries, each shard with the full per-shard budget
    assert sorted(q2a["shard"].unique().to_list()) == [0, 1]
    assert q2a.filter(pl.col("shard") == 0).height == budget and q2a.filter(pl.col("shard") == 1).height == budget
    # same seed, same K: the same landscape, query for query
    assert q2a.equals(q2b) and cells2a.equals(cells2b)
    # shards explore with different seeds (not two copies of one run) ...
    s0 = q2a.filter(pl.col("shard") == 0).select("input_id", "cell")
    s1 = q2a.filter(pl.col("shard") == 1).select("input_id", "cell")
    assert not s0.equals(s1)
    # ... shard 0 is the unsharded run ...
    assert s0.equals(q1.select("input_id", "cell"))
    # ... so K = 2 covers more cells than K = 1 at the same per-shard budget
    assert q2a["cell"].n_unique() > q1["cell"].n_unique()
