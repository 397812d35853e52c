"""Wilson intervals, cell tables, failure modes and the landscape database."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from failfade.concepts import Axis, ConceptSpace
from failfade.feedback import parse_selector
from failfade.landscape import (
    cell_table,
    components,
    connected_modes,
    feedback_template,
    read_table,
    selector_for,
    summarize,
    write_database,
)
from failfade.stats import cell_counts, wilson_interval

Z = 1.959964


def wilson_by_hand(k: int, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson score interval written out from its textbook form."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = (z / (1 + z * z / n)) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# --- Wilson -----------------------------------------------------------------------------------

def test_wilson_zero_of_ten():
    lo, hi = wilson_interval(0, 10)
    assert float(lo) == pytest.approx(0.0, abs=1e-12)
    # k = 0: upper bound z^2 / (n + z^2)
    assert float(hi) == pytest.approx(Z**2 / (10 + Z**2), abs=1e-6)
    assert float(hi) == pytest.approx(0.2775, abs=1e-4)


def test_wilson_five_of_ten():
    lo, hi = wilson_interval(5, 10)
    assert float(lo) == pytest.approx(0.2366, abs=1e-4)
    assert float(hi) == pytest.approx(0.7634, abs=1e-4)
    assert float(lo) + float(hi) == pytest.approx(1.0, abs=1e-12)  # symmetric around 1/2


def test_wilson_ten_of_ten():
    lo, hi = wilson_interval(10, 10)
    assert float(lo) == pytest.approx(10 / (10 + Z**2), abs=1e-6)
    assert float(lo) == pytest.approx(0.7225, abs=1e-4)
    assert float(hi) == pytest.approx(1.0, abs=1e-12)


def test_wilson_no_queries_is_whole_interval():
    lo, hi = wilson_interval(np.array([0, 3]), np.array([0, 10]))
    assert lo[0] == 0.0 and hi[0] == 1.0
    assert (lo[1], hi[1]) == pytest.approx(wilson_by_hand(3, 10), abs=1e-6)


def test_wilson_vectorised_matches_hand_formula():
    ks = np.array([1, 7, 18, 38, 50])
    ns = np.array([3, 20, 20, 40, 100])
    lo, hi = wilson_interval(ks, ns)
    for k, n, a, b in zip(ks, ns, lo, hi):
        assert (a, b) == pytest.approx(wilson_by_hand(int(k), int(n)), abs=1e-6)


def test_wilson_confidence_widens_interval():
    lo95, hi95 = wilson_interval(7, 20, 0.95)
    lo99, hi99 = wilson_interval(7, 20, 0.99)
    assert lo99 < lo95 and hi99 > hi95
    assert (float(lo99), float(hi99)) == pytest.approx(wilson_by_hand(7, 20, z=2.5758293), abs=1e-6)


def test_cell_counts():
    cells = np.array([0, 0, 2, 2, 2])
    fail = np.array([True, False, True, True, False])
    delta = np.array([1.0, 3.0, 0.5, 0.5, 2.0], dtype=np.float32)
    n, k, d = cell_counts(cells, fail, delta, 4)
    assert n.tolist() == [2, 0, 3, 0]
    assert k.tolist() == [1, 0, 2, 0]
    assert d[0] == pytest.approx(2.0) and d[2] == pytest.approx(1.0)
    assert np.isnan(d[1]) and np.isnan(d[3])


# --- a hand-built 3 x 3 landscape ---------------------------------------------------------------
#
#   cell = 3 * i + j      i: rotation (0, 10, 20)°     j: contrast (1, 0.5, 0.2)
#
#   (n, k) per cell:        j=0        j=1        j=2
#        i=0             (20,18)*   (20,18)*   (20, 2)
#        i=1             (20,12)    (20, 2)    (40,38)*
#        i=2             (30,27)*   ( 0, 0)    (20, 0)
#
#   * failure cells at tau = 0.5 (Wilson lower bound >= 0.5). (20,12) has rate 0.6 but its lower
#   bound is ~0.39. Cells 1 and 5 touch only diagonally: three modes {5}, {0, 1}, {6} ranked by
#   failures 38 > 36 > 27.

SPACE3 = ConceptSpace([Axis("rotation", "rotate", (0.0, 10.0, 20.0), "°"), Axis("contrast", "contrast", (1.0, 0.5, 0.2))])
COUNTS3 = {0: (20, 18), 1: (20, 18), 2: (20, 2), 3: (20, 12), 4: (20, 2), 5: (40, 38), 6: (30, 27), 7: (0, 0), 8: (20, 0)}


def build_queries(counts: dict[int, tuple[int, int]], seed: int = 0) -> pl.DataFrame:
    """n queries per cell, k of them failures; delta = 0.01 * cell + failure (shuffled rows)."""
    cells, fails = [], []
    for c, (n, k) in counts.items():
        cells += [c] * n
        fails += [True] * k + [False] * (n - k)
    cells, fails = np.array(cells, dtype=np.int32), np.array(fails, dtype=bool)
    perm = np.random.default_rng(seed).permutation(len(cells))
    cells, fails = cells[perm], fails[perm]
    delta = (0.01 * cells + fails).astype(np.float32)
    return pl.DataFrame({
        "input": np.arange(len(cells), dtype=np.int32),
        "cell": pl.Series(cells, dtype=pl.Int32),
        "failure": fails,
        "delta": pl.Series(delta, dtype=pl.Float32),
    })


def test_cell_table_counts_rates_and_failure_cells():
    t = cell_table(SPACE3, build_queries(COUNTS3), threshold=0.5)
    assert t.height == 9
    assert t["cell"].to_list() == list(range(9))
    assert t["rotation"].to_list() == [0, 0, 0, 10, 10, 10, 20, 20, 20]
    assert t["contrast"].to_list() == [1, 0.5, 0.2] * 3
    assert t["queries"].to_list() == [COUNTS3[c][0] for c in range(9)]
    assert t["failures"].to_list() == [COUNTS3[c][1] for c in range(9)]
    for c in range(9):
        n, k = COUNTS3[c]
        row = t.row(c, named=True)
        if n == 0:
            assert math.isnan(row["failure_rate"]) and math.isnan(row["mean_delta"])
            assert (row["rate_lo"], row["rate_hi"]) == (0.0, 1.0)
            assert row["is_failure"] is False
            continue
        assert row["failure_rate"] == pytest.approx(k / n)
        lo, hi = wilson_by_hand(k, n)
        assert row["rate_lo"] == pytest.approx(lo, abs=1e-6)
        assert row["rate_hi"] == pytest.approx(hi, abs=1e-6)
        assert row["is_failure"] == (lo >= 0.5)
        assert row["mean_delta"] == pytest.approx(0.01 * c + k / n, rel=1e-5)
    assert np.flatnonzero(t["is_failure"].to_numpy()).tolist() == [0, 1, 5, 6]


def test_failure_needs_lower_bound_not_rate():
    t = cell_table(SPACE3, build_queries(COUNTS3), threshold=0.5)
    row = t.row(3, named=True)
    assert row["failure_rate"] > 0.5 and not row["is_failure"]
    # the comparison is "lower bound >= tau": at tau equal to that bound the cell is a failure cell
    t2 = cell_table(SPACE3, build_queries(COUNTS3), threshold=float(row["rate_lo"]))
    assert t2.row(3, named=True)["is_failure"]


def test_connected_modes_diagonal_is_separate():
    failing = np.zeros(9, dtype=bool)
    failing[[0, 1, 5, 6]] = True
    modes = sorted(connected_modes(SPACE3, failing))
    assert modes == [[0, 1], [5], [6]]
    failing[2] = True  # (0,2) links (0,1) and (1,2)
    assert sorted(connected_modes(SPACE3, failing)) == [[0, 1, 2, 5], [6]]


def test_summarize_modes_are_slices_ranked_by_score():
    cells, modes, search = summarize(SPACE3, build_queries(COUNTS3), threshold=0.5)
    # "contrast = 1" (cells 0, 3, 6 failing 90%, 60%, 90%) says in one predicate what the lone cell
    # 6 would; "rotation = 0°" alone (cells 0-2, rate 0.63) is confidently above τ too, but the cell
    # it adds to the modes above it fails 10% of the time: not a mode
    assert modes["cells"].to_list() == ["5", "0 1", "0 3 6"]
    assert modes["mode"].to_list() == [1, 2, 3]
    assert modes["terms"].to_list() == [2, 2, 1]
    assert modes["failures"].to_list() == [38, 36, 57]
    assert modes["queries"].to_list() == [40, 40, 70]
    assert modes["n_cells"].to_list() == [1, 2, 3]
    assert modes["failing_cells"].to_list() == [1, 2, 2]
    # a slice's rate weighs its cells equally; its interval is the wider of the normal one from the
    # cells' variances and Wilson's at the effective size vis² / Σ 1/n_eff (here 2² / (2/20) = 40)
    assert modes["failure_rate"].to_list() == pytest.approx([38 / 40, (18 / 20 + 18 / 20) / 2, (18 / 20 + 12 / 20 + 27 / 30) / 3])
    var = [0.9 * 0.1 / 20, 0.9 * 0.1 / 20]  # each cell: the larger of the sandwich and shrunk binomial variances
    shrunk = (18 + 0.5) / 21
    var = [max(v, shrunk * (1 - shrunk) / 20) for v in var]
    half = Z * math.sqrt(sum(var)) / 2
    (wl,), (wh,) = wilson_interval(np.array([36.0]), np.array([40.0]))
    assert modes.row(1, named=True)["rate_lo"] == pytest.approx(min(0.9 - half, wl), abs=1e-6)
    assert modes.row(1, named=True)["rate_hi"] == pytest.approx(min(max(0.9 + half, wh), 1.0), abs=1e-6)
    assert wl < 0.9 - half  # Wilson's is the wider here
    assert (modes["rate_lo"] >= 0.5).all()
    # mean delta of mode 2 weighs its cells the same: (0.00 + 0.9) and (0.01 + 0.9)
    assert modes.row(1, named=True)["mean_delta"] == pytest.approx(0.905, rel=1e-5)
    assert cells["mode"].to_list() == [2, 2, 0, 3, 0, 1, 3, 0, 0]
    assert modes["description"].to_list() == [
        "rotation = 10° and contrast = 0.2",
        "rotation = 0° and contrast ≥ 0.5",
        "contrast = 1",
    ]
    assert modes["cum_failing_cells"].to_list() == pytest.approx([0.25, 0.75, 1.0])
    assert modes["cum_failures"].to_list() == pytest.approx([38 / 117, 74 / 117, 113 / 117])
    assert search["evaluated"][0] == len(__import__("failfade.slices").slices.predicates(SPACE3)) == 10


def test_mode_selectors_are_one_box_and_select_exactly_the_mode_cells():
    _, modes, _ = summarize(SPACE3, build_queries(COUNTS3), threshold=0.5)
    for sel, cells in zip(modes["selector"], modes["cells"]):
        assert "|" not in sel
        assert parse_selector(sel, SPACE3).tolist() == [int(c) for c in cells.split()]


def test_connected_components_stay_as_a_secondary_view():
    cells, _, _ = summarize(SPACE3, build_queries(COUNTS3), threshold=0.5)
    comps = components(SPACE3, cells)
    assert comps["cells"].to_list() == ["5", "0 1", "6"]  # by failures: 38 > 36 > 27
    assert comps["failures"].to_list() == [38, 36, 27]


# --- a 4 x 4 x 2 landscape with an L-shaped mode ------------------------------------------------

SPACE442 = ConceptSpace([
    Axis("rotation", "rotate", (0.0, 10.0, 20.0, 30.0), "°"),
    Axis("blur", "gaussian_blur", (0.0, 1.0, 2.0, 3.0), "px"),
    Axis("contrast", "contrast", (1.0, 0.2)),
])


def idx442(i, j, k):
    return 8 * i + 2 * j + k


def test_l_shaped_region_is_two_overlapping_slices_and_a_lone_cell():
    # L: rotation 30° (all blur, contrast 0.2) plus blur 3 px (all rotation, contrast 0.2): one
    # connected component, two statements that share their corner cell
    arm_rot = [idx442(3, j, 1) for j in range(4)]
    arm_blur = [idx442(i, 3, 1) for i in range(4)]
    lone = idx442(0, 0, 0)
    counts = {c: (10, 0) for c in range(SPACE442.n_cells)}
    for c in arm_rot + arm_blur:
        counts[c] = (10, 10)
    counts[arm_rot[0]] = (30, 30)
    counts[lone] = (25, 25)
    cells, modes, _ = summarize(SPACE442, build_queries(counts, seed=3), threshold=0.5)
    assert sorted(modes["selector"].to_list()) == sorted(["rotation=30 & contrast=0.2", "blur=3 & contrast=0.2",
                                                          "rotation=0 & blur=0 & contrast=1"])
    by_sel = {r["selector"]: r for r in modes.iter_rows(named=True)}
    assert by_sel["rotation=30 & contrast=0.2"]["cells"] == " ".join(map(str, sorted(arm_rot)))
    assert by_sel["blur=3 & contrast=0.2"]["cells"] == " ".join(map(str, sorted(arm_blur)))
    assert by_sel["rotation=0 & blur=0 & contrast=1"]["cells"] == str(lone)
    assert by_sel["rotation=30 & contrast=0.2"]["failures"] == 60
    # every query there fails, so delta = 0.01 * cell + 1; the mode's mean weighs each cell the same
    # (as its failure rate does), though the corner cell has 30 queries and the others 10
    expected = np.mean([0.01 * c + 1 for c in arm_rot])
    assert by_sel["rotation=30 & contrast=0.2"]["mean_delta"] == pytest.approx(expected, rel=1e-5)
    assert modes["cum_failing_cells"][-1] == 1.0
    for sel, text in zip(modes["selector"], modes["cells"]):
        assert parse_selector(sel, SPACE442).tolist() == [int(c) for c in text.split()]
    # the shared corner belongs to both; cells' `mode` names the better one
    assert cells["mode"][idx442(3, 3, 1)] in set(modes["mode"].to_list())


def test_selector_for_random_sets_round_trip():
    rng = np.random.default_rng(11)
    for _ in range(20):
        cells = np.flatnonzero(rng.random(SPACE442.n_cells) < rng.uniform(0.05, 0.6)).tolist() or [5]
        assert parse_selector(selector_for(SPACE442, cells), SPACE442).tolist() == cells
    assert selector_for(SPACE442, list(range(SPACE442.n_cells))) == "*"


def test_no_failures_gives_no_modes():
    counts = {c: (10, 1) for c in range(9)}
    cells, modes, _ = summarize(SPACE3, build_queries(counts), threshold=0.5)
    assert modes.height == 0
    assert cells["mode"].to_list() == [0] * 9
    assert feedback_template(modes).height == 0


# --- database and template --------------------------------------------------------------------

def test_database_round_trip(tmp_path):
    queries = build_queries(COUNTS3)
    qpath = tmp_path / "queries.parquet"
    queries.write_parquet(qpath)
    cells, modes, _ = summarize(SPACE3, queries, threshold=0.5)
    db = tmp_path / "landscape.duckdb"
    write_database(db, qpath, cells, modes, components(SPACE3, cells))
    q = read_table(db, "queries")
    c = read_table(db, "cells")
    m = read_table(db, "failure_modes")
    assert q.height == sum(n for n, _ in COUNTS3.values()) == 190
    assert c.height == 9 and m.height == 3
    assert q["cell"].to_list() == queries["cell"].to_list()
    assert q["failure"].to_list() == queries["failure"].to_list()
    assert c["failures"].to_list() == cells["failures"].to_list()
    assert c["is_failure"].to_list() == cells["is_failure"].to_list()
    assert c["mode"].to_list() == cells["mode"].to_list()
    assert m["selector"].to_list() == modes["selector"].to_list()
    assert m["failures"].to_list() == [38, 36, 57]
    assert read_table(db, "mode_cells").sort("mode", "cell").rows() == [(1, 5), (2, 0), (2, 1), (3, 0), (3, 3), (3, 6)]
    assert read_table(db, "components")["cells"].to_list() == ["5", "0 1", "6"]
    # rebuilding replaces the old database rather than appending to it
    write_database(db, qpath, cells, modes)
    assert read_table(db, "cells").height == 9
    with pytest.raises(ValueError):
        read_table(db, "queries; DROP TABLE cells")


def test_feedback_template_one_row_per_mode(tmp_path):
    _, modes, _ = summarize(SPACE3, build_queries(COUNTS3), threshold=0.5)
    tpl = feedback_template(modes)
    assert tpl.height == modes.height == 3
    assert tpl["decision"].to_list() == ["", "", ""]
    assert tpl["mode"].to_list() == [1, 2, 3]
    assert tpl["selector"].to_list() == modes["selector"].to_list()
    assert tpl["weight"].to_list() == [1.0, 1.0, 1.0]
    assert tpl["note"][1].startswith("failure rate 90% [") and "over 2 cells" in tpl["note"][1]
    # a mode with unexplored cells says that its rate is over the explored ones
    partial = modes.with_columns(pl.Series("visited_cells", [1, 1, 3]))
    assert feedback_template(partial)["note"][1].endswith("over the 1 explored of its 2 cells")
    # once a person fills in the decisions it is a valid feedback file
    from failfade.feedback import read_feedback

    path = tmp_path / "feedback.csv"
    tpl.with_columns(pl.Series("decision", ["fix", "fix", "accept"])).write_csv(path)
    rows = read_feedback(path, SPACE3, range(9))
    assert [r.cells.tolist() for r in rows] == [[5], [0, 1], [0, 3, 6]]


def test_sql_cell_sums_are_the_same_every_run(tmp_path):
    """DuckDB's parallel sums added the rows in the order its threads finished: the same four query
    files gave sums differing in their last bits in 19 of 19 reruns (a failure table that was not
    the same for the same seed). Aggregated on one thread, they are bit-identical, and the
    connection's own thread setting is put back."""
    import duckdb

    from failfade.landscape import cell_sums_sql

    rng = np.random.default_rng(0)
    paths = []
    for s in range(4):
        n = 200_000
        pl.DataFrame({"cell": rng.integers(0, 125, n), "failure": rng.random(n) < 0.3, "delta": rng.random(n),
                      "propensity": rng.uniform(0.001, 1, n), "marginal": rng.uniform(0.001, 1, n)}
                     ).write_parquet(tmp_path / f"s{s}.parquet", row_group_size=25_000)
        paths.append(str(tmp_path / f"s{s}.parquet"))
    runs = []
    for _ in range(8):
        with duckdb.connect() as con:
            con.execute("SET threads = 2")
            sums = cell_sums_sql(con, paths, 125)
            assert con.execute("SELECT current_setting('threads')").fetchone()[0] == 2
        runs.append(np.concatenate([sums[k] for k in ("sw", "sw2", "swf", "sw2f")]))
    assert all(np.array_equal(r, runs[0]) for r in runs[1:])


def _two_shards(tmp_path, second: pl.DataFrame | None = None) -> list[str]:
    rng = np.random.default_rng(0)
    n = 400
    q = pl.DataFrame({"cell": rng.integers(0, 9, n), "failure": rng.random(n) < 0.5, "delta": rng.random(n)})
    q.write_parquet(tmp_path / "s0.parquet")
    (q if second is None else second).write_parquet(tmp_path / "s1.parquet")
    return [str(tmp_path / "s0.parquet"), str(tmp_path / "s1.parquet")]


@pytest.mark.parametrize("lacks", ["failure", "cell"])
def test_a_shard_lacking_a_column_is_named_not_read_as_passes(tmp_path, lacks):
    """The shards are read together by column name: the column check ran on the union of their
    columns, so a shard without `failure` was read as NULLs, counted as queries and summed as no
    failures (its queries silently became passes). Each file is checked, and the one lacking it named."""
    import duckdb

    from failfade import FailfadeError
    from failfade.landscape import cell_sums_sql

    paths = _two_shards(tmp_path)
    bad = pl.read_parquet(paths[1]).drop(lacks)
    bad.write_parquet(paths[1])
    with duckdb.connect() as con, pytest.raises(FailfadeError) as ei:
        cell_sums_sql(con, paths, SPACE3.n_cells)
    msg = str(ei.value)
    assert msg.startswith(f"{paths[1]}: the query file lacks column(s) ['{lacks}']") and paths[0] not in msg, msg
    assert f"--forcerun {paths[1]}`" in msg
    with pytest.raises(FailfadeError, match="lacks column"):
        summarize(SPACE3, paths, threshold=0.5)


@pytest.mark.parametrize("column", ["failure", "cell"])
def test_a_shard_with_null_outcomes_is_named(tmp_path, column):
    """A NULL failure was summed as none (a pass), a NULL cell made a cell of its own: refused, by file."""
    import duckdb

    from failfade import FailfadeError
    from failfade.landscape import cell_sums_sql

    paths = _two_shards(tmp_path)
    q = pl.read_parquet(paths[1])
    q.with_columns(pl.when(pl.int_range(pl.len()) % 10 == 0).then(None).otherwise(pl.col(column)).alias(column)
                   ).write_parquet(paths[1])
    with duckdb.connect() as con, pytest.raises(FailfadeError) as ei:
        cell_sums_sql(con, paths, SPACE3.n_cells)
    what = "a failure outcome" if column == "failure" else "a cell"
    assert str(ei.value).startswith(f"{paths[1]}: the query file has 40 queries without {what}"), str(ei.value)


def test_a_shard_that_does_not_decode_is_named_alone(tmp_path):
    """The pipeline's error for shards DuckDB could not read together named "<first> (and N more
    shards)", pasted into a --forcerun command that rebuilt nothing: it names the shard that fails
    on its own, and where none does, every shard as a path of its own."""
    import duckdb

    from failfade import FailfadeError
    from failfade.landscape import cell_sums_sql
    from failfade.pipeline import _unreadable_shard

    paths = _two_shards(tmp_path)
    pl.read_parquet(paths[0]).write_parquet(paths[1], compression="zstd")
    raw = bytearray(open(paths[1], "rb").read())
    raw[40:400] = bytes(np.random.default_rng(1).integers(0, 256, 360, dtype=np.uint8))  # a data page, not the footer
    open(paths[1], "wb").write(bytes(raw))
    with duckdb.connect() as con, pytest.raises(duckdb.Error) as ei:
        cell_sums_sql(con, paths, SPACE3.n_cells)
    err = _unreadable_shard(paths, ei.value)
    assert isinstance(err, FailfadeError) and str(err).startswith(f"{paths[1]}: cannot be read as a query log"), str(err)
    assert str(err).endswith(f"`failfade run --forcerun {paths[1]}`") and "more shards" not in str(err)
    both = str(_unreadable_shard(_two_shards(tmp_path), ValueError("boom")))
    assert "more shards" not in both and both.endswith(f"`failfade run --forcerun {paths[0]} {paths[1]}`"), both


def test_a_one_cell_mode_follows_the_failure_cell_rule():
    """A slice of one cell has the cell's own interval: 3 failures in 3 queries is not a failure
    cell (Wilson's lower bound 0.44 < 0.5), so it is no failure mode either (the normal interval
    from the cell's variance, [0.63, 1], made it one)."""
    from failfade.slices import slice_interval

    (lo,), (hi,) = slice_interval([1.0], [0.0365], [1 / 3], [1], 0.95)
    (wl,), (wh,) = wilson_interval(np.array([3.0]), np.array([3.0]))
    assert (lo, hi) == pytest.approx((wl, wh)) and lo < 0.5
    counts = {4: (3, 3)} | {c: (3, 0) for c in range(9) if c != 4}  # (queries, failures)
    cells, modes, _ = summarize(SPACE3, build_queries(counts), threshold=0.5)
    assert not cells["is_failure"].any() and modes.height == 0
    # ... and the other way: where the normal interval is the wider one, the mode still takes the
    # cell's (3 of 10 at τ = 0.1 is a failure cell, Wilson's lower bound 0.108; the normal one's 0.011
    # kept it from ever being a mode on its own)
    var = 0.3 * 0.7 / 10 * 4.5  # a cell whose weights inflate its variance
    (lo,), (hi,) = slice_interval([0.3], [var], [1 / 10], [1], 0.95)
    (wl,), (wh,) = wilson_interval(np.array([3.0]), np.array([10.0]))
    assert (lo, hi) == pytest.approx((wl, wh)) and lo >= 0.1


def test_a_word_axis_shows_its_words_in_the_cell_table():
    """cells.csv of a text-to-image run named its prompts' words by their positions (thickness=2.0)."""
    from failfade.concepts import ConceptSpace
    from failfade.landscape import cell_table

    space = ConceptSpace.from_config([{"name": "colour", "transform": "word", "levels": ["red", "blue"]},
                                      {"name": "size", "transform": "contrast", "levels": [1, 0.5]}], {"word", "contrast"})
    q = pl.DataFrame({"cell": [0, 3], "failure": [True, False], "delta": [1.0, 0.0]})
    t = cell_table(space, q, 0.5)
    assert t["colour"].to_list() == ["red", "red", "blue", "blue"] and t["size"].to_list() == [1.0, 0.5, 1.0, 0.5]
