"""Failure modes as slices (failfade.slices) and the landscape aggregated by DuckDB from the query files."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest

from failfade.concepts import Axis, ConceptSpace
from failfade.feedback import parse_selector
from failfade.landscape import cell_sums_sql, cell_table, cell_table_from_sums, summarize
from failfade.slices import SliceParams, box_mask, coverage, find_slices, predicates

# --- a 6-axis grid (15,625 cells) with three planted failing conjunctions -------------------------

SPACE6 = ConceptSpace([Axis(f"x{j}", "rotate", tuple(float(10 * i) for i in range(5))) for j in range(6)])
# (axis, lo, hi) level positions; the failure rate is 0.9 inside any of them, 0.05 elsewhere
PLANTED = [
    [(0, 3, 4), (1, 0, 1)],            # x0 >= 30 and x1 <= 10
    [(3, 4, 4)],                       # x3 = 40
    [(2, 1, 2), (4, 3, 4), (5, 0, 0)],  # 10 <= x2 <= 20 and x4 >= 30 and x5 = 0
]


def planted_selector(terms) -> str:
    return " & ".join(SPACE6.axes[j].range_condition(lo, hi) for j, lo, hi in terms)


def planted_mask() -> np.ndarray:
    inside = np.zeros(SPACE6.n_cells, dtype=bool)
    for terms in PLANTED:
        box = [(0, 4)] * 6
        for j, lo, hi in terms:
            box[j] = (lo, hi)
        inside |= box_mask(SPACE6, box)
    return inside


def slice_terms(selector: str) -> set[str]:
    return {t.strip() for t in selector.split("&")}


def check_recovered(modes: pl.DataFrame):
    """Precision and recall of the planted conjunctions, and of their predicates."""
    want = {frozenset(slice_terms(planted_selector(t))) for t in PLANTED}
    got = {frozenset(slice_terms(s)) for s in modes["selector"]}
    hits = want & got
    pred_want = set().union(*want)
    pred_got = set().union(*got) if got else set()
    return (len(hits) / len(got), len(hits) / len(want),
            len(pred_want & pred_got) / max(len(pred_got), 1), len(pred_want & pred_got) / len(pred_want))


def uniform_queries(per_cell: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    p = np.where(planted_mask(), 0.9, 0.05)
    cells = np.repeat(np.arange(SPACE6.n_cells), per_cell)
    fail = rng.random(len(cells)) < p[cells]
    return pl.DataFrame({"cell": cells.astype(np.int32), "failure": fail, "delta": fail.astype(np.float32)})


def test_planted_conjunctions_are_recovered_exactly():
    queries = uniform_queries(16, seed=0)
    cells, modes, search = summarize(SPACE6, queries, threshold=0.5, ls={"max_terms": 3, "top_k": 8})
    assert check_recovered(modes) == (1.0, 1.0, 1.0, 1.0)
    assert modes.height == 3 and set(modes["terms"].to_list()) == {1, 2, 3}
    for r in modes.iter_rows(named=True):
        assert r["rate_lo"] <= 0.9 <= r["rate_hi"] or abs(r["failure_rate"] - 0.9) < 0.02
        assert parse_selector(r["selector"], SPACE6).tolist() == [int(c) for c in r["cells"].split()]
    cov = coverage(cells, modes)
    assert cov["failing_cell_share"] == 1.0 and modes["cum_failing_cells"][-1] == 1.0
    assert search["evaluated"][0] == len(predicates(SPACE6)) == 84


def test_pruning_changes_nothing_but_the_work():
    """Size, max-rate and score-bound pruning (SliceLine's) against the whole lattice up to 3 terms:
    the same modes, fewer slices evaluated. With three planted slices over a third of the grid most
    slices still hold a failing cell and the bounds prune little; with one small failure region
    they prune most of the lattice."""
    for queries in (uniform_queries(8, seed=4), sparse_queries()):
        cells = cell_table(SPACE6, queries, 0.5)
        pruned, s1 = find_slices(SPACE6, cells, SliceParams())
        full, s2 = find_slices(SPACE6, cells, SliceParams(prune=False))
        assert pruned.drop("score").equals(full.drop("score")) and pruned.height >= 1
        assert s2["evaluated"] == [84, 2940, 54880] and sum(s1["evaluated"]) <= sum(s2["evaluated"])
    assert sum(s1["evaluated"]) < sum(s2["evaluated"]) / 2  # the sparse landscape


def sparse_queries() -> pl.DataFrame:
    """Only x0 = 40 & x1 = 40 fails (625 cells of 15,625); 16 queries per cell."""
    coords = SPACE6.all_coords()
    p = np.where((coords[:, 0] == 4) & (coords[:, 1] == 4), 0.95, 0.02)
    rng = np.random.default_rng(6)
    cells = np.repeat(np.arange(SPACE6.n_cells), 16)
    fail = rng.random(len(cells)) < p[cells]
    return pl.DataFrame({"cell": cells.astype(np.int32), "failure": fail, "delta": fail.astype(np.float32)})


def contextual_queries(n: int, seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    """A failure-seeking contextual searcher: hard inputs go to the planted cells more often, and
    hard inputs fail more. Unweighted rates are biased; the logged propensities (and marginals)
    undo it. Returns the queries and the true per-cell rates (over the inputs)."""
    rng = np.random.default_rng(seed)
    inside = planted_mask()
    planted = np.flatnonzero(inside)
    hard = np.linspace(0.0, 1.0, 50)  # 50 inputs
    base = np.where(inside, 0.6, 0.1)
    fail_p = np.clip(base[None, :] * (0.4 + 1.2 * hard[:, None]), 0, 1)  # (input, cell)
    truth = fail_p.mean(0)
    q = 0.2 + 0.7 * hard  # share of picks aimed at the planted cells
    x = rng.integers(0, len(hard), n)
    aimed = rng.random(n) < q[x]
    cell = np.where(aimed, planted[rng.integers(0, len(planted), n)], rng.integers(0, SPACE6.n_cells, n))
    pi = q[x] * inside[cell] / len(planted) + (1 - q[x]) / SPACE6.n_cells
    marginal = q.mean() * inside[cell] / len(planted) + (1 - q.mean()) / SPACE6.n_cells
    fail = rng.random(n) < fail_p[x, cell]
    return pl.DataFrame({"input": x.astype(np.int32), "cell": cell.astype(np.int32), "failure": fail,
                         "delta": fail.astype(np.float32), "propensity": pi, "marginal": marginal}), truth


def test_planted_conjunctions_with_importance_weighted_queries():
    queries, truth = contextual_queries(400_000, seed=1)
    cells, modes, _ = summarize(SPACE6, queries, threshold=0.4, ls={"max_terms": 3})
    assert check_recovered(modes) == (1.0, 1.0, 1.0, 1.0)
    # the weighted rates are the input-average rates; the raw ones are biased upwards in the planted cells
    rate = cells["failure_rate"].to_numpy()
    inside = planted_mask()
    raw = (cells["failures"] / cells["queries"]).to_numpy()
    assert abs(np.nanmean(rate[inside]) - truth[inside].mean()) < 0.01
    assert np.nanmean(raw[inside]) - truth[inside].mean() > 0.03
    for r in modes.iter_rows(named=True):  # each slice's interval holds its true (cell-average) rate
        t = truth[[int(c) for c in r["cells"].split()]].mean()
        assert r["rate_lo"] <= t <= r["rate_hi"]


def test_sql_aggregation_matches_the_in_memory_table(tmp_path):
    queries, _ = contextual_queries(60_000, seed=2)
    queries = queries.with_columns(  # a few queries without a propensity (a searcher that ignores the input)
        pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.col("propensity")).alias("propensity"))
    a, b = queries.slice(0, 25_000), queries.slice(25_000)
    a.write_parquet(tmp_path / "s0.parquet")
    b.drop("marginal").write_parquet(tmp_path / "s1.parquet")  # an older shard without the marginal column
    import duckdb

    with duckdb.connect() as con:
        sums = cell_sums_sql(con, [str(tmp_path / "s0.parquet"), str(tmp_path / "s1.parquet")], SPACE6.n_cells)
    sql = cell_table_from_sums(SPACE6, sums, 0.5)
    mem = pl.concat([cell_table(SPACE6, a, 0.5), cell_table(SPACE6, b.drop("marginal"), 0.5)])  # per shard ...
    whole = cell_table(SPACE6, pl.concat([a, b.with_columns(pl.lit(None, dtype=pl.Float64).alias("marginal"))]), 0.5)
    assert mem.height == 2 * SPACE6.n_cells
    for col in ("queries", "failures"):
        assert sql[col].to_list() == whole[col].to_list()
    for col in ("effective_queries", "failure_rate", "rate_lo", "rate_hi", "rate_var", "mean_delta"):
        np.testing.assert_allclose(sql[col].to_numpy(), whole[col].to_numpy(), rtol=1e-9, atol=1e-12, equal_nan=True)
    assert sql["is_failure"].to_list() == whole["is_failure"].to_list()


def test_word_axes_get_one_word_predicates_and_selectors_the_feedback_reads():
    space = ConceptSpace([
        Axis("thickness", "word", (0.0, 1.0, 2.0), words=("thin", "normal", "thick")),
        Axis("size", "word", (0.0, 1.0, 2.0), words=("small", "medium", "large")),
        Axis("digit", "word", tuple(float(i) for i in range(4)), words=("zero", "one", "two", "three")),
    ])
    assert all(lo == hi for _, lo, hi in predicates(space))
    rng = np.random.default_rng(3)
    coords = space.all_coords()
    p = np.where((coords[:, 0] == 2) & (coords[:, 1] == 0), 0.8, 0.05)  # thick small: any digit
    p[space.index(np.array([[0, 2, 3]]))[0]] = 0.9  # and one cell: thin large three
    cells = np.repeat(np.arange(space.n_cells), 40)
    fail = rng.random(len(cells)) < p[cells]
    q = pl.DataFrame({"cell": cells.astype(np.int32), "failure": fail, "delta": fail.astype(np.float32)})
    _, modes, _ = summarize(space, q, threshold=0.5)
    assert sorted(modes["selector"]) == ["thickness=thick & size=small", "thickness=thin & size=large & digit=three"]
    assert sorted(modes["description"]) == ["thickness = thick and size = small",
                                            "thickness = thin and size = large and digit = three"]
    for sel, text in zip(modes["selector"], modes["cells"]):
        assert parse_selector(sel, space).tolist() == [int(c) for c in text.split()]


def test_margin_keeps_a_parent_that_already_says_it():
    # x0 >= 30 fails everywhere; adding any predicate cannot beat it, so it stays one term
    queries = uniform_queries(4, seed=5).with_columns(pl.lit(False).alias("failure"))
    coords = SPACE6.all_coords()
    fail = np.repeat(coords[:, 0] >= 3, 4)
    queries = queries.with_columns(pl.Series("failure", fail))
    _, modes, _ = summarize(SPACE6, queries, threshold=0.5)
    assert modes["selector"].to_list() == ["x0>=30"]


def test_min_cells_and_top_k_bound_the_list():
    queries = uniform_queries(16, seed=0)
    cells = cell_table(SPACE6, queries, 0.5)
    modes, _ = find_slices(SPACE6, cells, SliceParams(top_k=2))
    assert modes.height == 2
    modes, _ = find_slices(SPACE6, cells, SliceParams(min_cells=600))  # the 3-term slice has 500 cells
    assert modes.height >= 1 and (modes["n_cells"] >= 600).all(), modes
    assert "x5=0" not in " ".join(modes["selector"])


@pytest.mark.parametrize("terms", [1, 2])
def test_max_terms_caps_the_conjunctions(terms):
    queries = uniform_queries(16, seed=0)
    _, modes, _ = summarize(SPACE6, queries, threshold=0.5, ls={"max_terms": terms})
    assert modes.height >= 1 and (modes["terms"] <= terms).all()


def test_no_failure_no_modes():
    q = uniform_queries(2, seed=0).with_columns(pl.lit(False).alias("failure"))
    cells, modes, _ = summarize(SPACE6, q, threshold=0.5)
    assert modes.height == 0 and (cells["mode"] == 0).all()
    assert list(itertools.islice(modes.columns, 3)) == ["mode", "terms", "n_cells"]


def test_failfade_modes_shows_rates_coverage_and_selectors(tmp_path):
    from click.testing import CliRunner

    from failfade.cli import main
    from failfade.landscape import feedback_template

    cells, modes, _ = summarize(SPACE6, uniform_queries(16, seed=0), threshold=0.5)
    land = tmp_path / "results" / "planted" / "landscape"
    land.mkdir(parents=True)
    modes.write_csv(land / "failure_modes.csv")
    r = CliRunner().invoke(main, ["modes", "planted", "--results", str(tmp_path / "results")], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    for sel in modes["selector"]:
        assert sel in r.output
    assert "x3 = 40" in r.output and "These 3 mode(s) cover 100% of the failure cells" in r.output
    # the feedback template: one row per slice, its selector unchanged
    tpl = feedback_template(modes)
    assert tpl["selector"].to_list() == modes["selector"].to_list() and tpl.height == 3


def test_cli_refuses_a_top_below_one_and_an_out_folder_that_does_not_exist(tmp_path):
    from click.testing import CliRunner

    from failfade.cli import main

    _, modes, _ = summarize(SPACE6, uniform_queries(16, seed=0), threshold=0.5)
    land = tmp_path / "results" / "planted" / "landscape"
    land.mkdir(parents=True)
    modes.write_csv(land / "failure_modes.csv")
    for top in ("0", "-1"):
        r = CliRunner().invoke(main, ["modes", "planted", "--results", str(tmp_path / "results"), "--top", top])
        assert r.exit_code == 2 and "--top" in r.output and "No failure mode" not in r.output, r.output
    r = CliRunner().invoke(main, ["template", "planted", "--results", str(tmp_path / "results"),
                                  "--out", str(tmp_path / "nosuchdir" / "fb.csv")])
    assert r.exit_code == 2 and "the folder" in r.output and "does not exist" in r.output and "run `failfade run`" not in r.output


def test_groundtruth_compares_the_explored_slices_with_the_exhaustive_ones():
    from pathlib import Path

    from failfade.config import load
    from failfade.pipeline import slices_against_truth, space_of

    exp = load(Path(__file__).resolve().parent.parent / "config" / "config.yaml")["experiments"]["digits"]
    space = space_of(exp)
    names = [a.name for a in space.axes]
    coords = space.all_coords()
    lowest_contrast = coords[:, names.index("contrast")] == int(np.argmin(space.axis("contrast").levels))
    p = np.where(lowest_contrast, 0.95, 0.02)
    rng = np.random.default_rng(0)
    cells = np.repeat(np.arange(space.n_cells), 40)
    fail = rng.random(len(cells)) < p[cells]
    truth = pl.DataFrame({"cell": cells.astype(np.int32), "failure": fail, "delta": fail.astype(np.float32)})
    explored = truth.sample(fraction=0.25, seed=1)
    out = slices_against_truth(exp, truth, explored)
    assert [t["selector"] for t in out["truth"]] == ["contrast=0.2"] == out["explored"]
    assert out["precision"] == out["recall"] == 1.0
    assert out["truth_covers_true_failure_cells"] == out["explored_cover_true_failure_cells"] == 1.0


def test_groundtruth_coverage_counts_the_true_failure_cells_by_true_rate():
    """discovery.json's `true_failure_cells` are the cells whose exhaustive rate is >= tau; the two coverage
    keys count against that same set, not against the cells whose exhaustive Wilson lower bound clears tau."""
    from pathlib import Path

    from failfade.config import load
    from failfade.pipeline import slices_against_truth, space_of

    exp = load(Path(__file__).resolve().parent.parent / "config" / "config.yaml")["experiments"]["digits"]
    space = space_of(exp)
    names = [a.name for a in space.axes]
    coords = space.all_coords()
    lowest_contrast = coords[:, names.index("contrast")] == int(np.argmin(space.axis("contrast").levels))
    k = np.where(lowest_contrast, 38, 1)  # failures out of 40 per cell
    borderline = int(np.flatnonzero(~lowest_contrast)[0])
    k[borderline] = 22  # true rate 0.55 >= tau = 0.5, but its 95% Wilson lower bound is below 0.5
    cells = np.repeat(np.arange(space.n_cells), 40)
    fail = np.arange(len(cells)) % 40 < k[cells]
    truth = pl.DataFrame({"cell": cells.astype(np.int32), "failure": fail, "delta": fail.astype(np.float32)})
    out = slices_against_truth(exp, truth, truth)
    true_failing = int(lowest_contrast.sum()) + 1
    assert [t["selector"] for t in out["truth"]] == ["contrast=0.2"] == out["explored"]
    assert out["truth_covers_true_failure_cells"] == pytest.approx((true_failing - 1) / true_failing)
    assert out["explored_cover_true_failure_cells"] == pytest.approx((true_failing - 1) / true_failing)


# --- the whole grid, unqueried levels, the mode's mean delta -------------------------------------

SPACE5 = ConceptSpace([Axis("rotation", "rotate", (0.0, 10.0, 20.0, 30.0, 40.0), "°"),
                       Axis("blur", "gaussian_blur", (0.0, 1.0, 1.5, 2.0, 2.5), "px"),
                       Axis("contrast", "contrast", (1.0, 0.6, 0.4, 0.3, 0.2))])


def queries_from_rates(space: ConceptSpace, rates: np.ndarray, per_cell: int, seed: int = 0,
                       cells: np.ndarray | None = None) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    cell = np.repeat(np.arange(space.n_cells) if cells is None else cells, per_cell)
    fail = rng.random(len(cell)) < rates[cell]
    return pl.DataFrame({"cell": cell.astype(np.int32), "failure": fail, "delta": fail.astype(np.float32)})


def test_a_grid_that_fails_everywhere_is_one_mode_every_cell(tmp_path):
    """Every cell fails at 0.8: no one-term slice beats the whole grid by the margin, so none is a
    mode (four arbitrary overlapping halves were); the whole grid is, once, as `*`."""
    from failfade.feedback import mitigation_plan, read_feedback
    from failfade.landscape import feedback_template

    cells, modes, _ = summarize(SPACE5, queries_from_rates(SPACE5, np.full(SPACE5.n_cells, 0.8), 40), threshold=0.5)
    assert modes["selector"].to_list() == ["*"] and modes["description"].to_list() == ["every cell"]
    r = modes.row(0, named=True)
    assert r["terms"] == 0 and r["n_cells"] == r["visited_cells"] == SPACE5.n_cells
    assert r["failure_rate"] == pytest.approx(np.nanmean(cells["failure_rate"].to_numpy()))
    assert r["rate_lo"] >= 0.5 and r["cum_failing_cells"] == 1.0
    assert parse_selector(r["selector"], SPACE5).tolist() == [int(c) for c in r["cells"].split()] == list(range(SPACE5.n_cells))
    assert (cells["mode"] == 1).all()
    # the template's row is feedback the parser takes as it is
    path = tmp_path / "fb.csv"
    feedback_template(modes).with_columns(pl.lit("fix").alias("decision")).write_csv(path)
    rows = read_feedback(path, SPACE5, range(SPACE5.n_cells))
    assert len(mitigation_plan(rows, SPACE5, range(SPACE5.n_cells), str(path))["fix"]) == SPACE5.n_cells


def test_a_mode_without_a_failure_cell_covers_an_undefined_share_of_them(tmp_path):
    """Every cell failed its 3 queries: no cell's own lower bound reaches 0.5, the grid's pooled one
    does, so the mode stands with no failure cell; its share of them read 0% (0/0 as 0/1)."""
    from click.testing import CliRunner

    from failfade.cli import main

    sp = ConceptSpace([Axis("a", "contrast", (0.0, 1.0, 2.0)), Axis("b", "contrast", (0.0, 1.0))])
    q = pl.DataFrame({"cell": np.repeat(np.arange(6), 3).astype(np.int32), "failure": np.ones(18, bool),
                      "delta": np.ones(18, np.float32)})
    cells, modes, _ = summarize(sp, q, 0.5)
    assert not cells["is_failure"].any() and modes["selector"].to_list() == ["*"]
    assert math.isnan(modes["cum_failing_cells"][0]) and modes["cum_failures"][0] == 1.0
    land = tmp_path / "results" / "x" / "landscape"
    land.mkdir(parents=True)
    modes.write_csv(land / "failure_modes.csv")
    r = CliRunner().invoke(main, ["modes", "x", "--results", str(tmp_path / "results")], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    assert "n/a / 100%" in r.output and "cover 100% of the failing queries; no single cell is a failure cell" in r.output


def test_a_separate_mode_is_found_past_a_strong_regions_many_sub_slices():
    """Region A (x0 = 40, failing more the higher x1..x4) has hundreds of good sub-slices; region B
    (x1 = x2 = x5 = 0, 125 cells at 0.75) is a mode of its own. The greedy choice looked at the 200
    best candidates only: A's sub-slices filled them, adding no cell, and B was dropped with top_k
    unfilled (96% of the failure cells covered)."""
    co = SPACE6.all_coords()
    a = co[:, 0] == 4
    b = (co[:, 5] == 0) & (co[:, 1] == 0) & (co[:, 2] == 0)
    rate = np.where(a, np.minimum(0.45 + sum(0.15 * (co[:, j] >= 2) for j in (1, 2, 3, 4)), 1.0), 0.05)
    rate = np.where(b & ~a, 0.75, rate)
    n = 40
    fail = np.concatenate([np.arange(n) < k for k in np.round(rate * n).astype(int)])
    q = pl.DataFrame({"cell": np.repeat(np.arange(SPACE6.n_cells), n).astype(np.int32), "failure": fail,
                      "delta": fail.astype(np.float32)})
    cells, modes, search = summarize(SPACE6, q, 0.5)
    assert search["candidates"] > 200 and modes.height < 8
    assert "x1=0 & x2=0 & x5=0" in modes["selector"].to_list()
    assert coverage(cells, modes)["failing_cell_share"] == 1.0


def test_a_one_term_slice_must_beat_the_whole_grid_by_the_margin():
    """0.6 everywhere and 0.62 at rotation 40°: `rotation = 40°` says no more than the whole grid
    (its parent), and halves such as `blur ≤ 2 px` say less; the mode is every cell."""
    rates = np.full(SPACE5.n_cells, 0.6)
    rates[SPACE5.all_coords()[:, 0] == 4] = 0.62
    _, modes, _ = summarize(SPACE5, queries_from_rates(SPACE5, rates, 200), threshold=0.5)
    assert modes["selector"].to_list() == ["*"]
    # a slice that does beat the grid by the margin is a mode, and the grid is not when part of it passes
    rates[SPACE5.all_coords()[:, 0] == 4] = 0.9
    rates[SPACE5.all_coords()[:, 0] <= 1] = 0.05  # the grid's mean is 0.44: no longer a failure region
    _, modes, _ = summarize(SPACE5, queries_from_rates(SPACE5, rates, 200), threshold=0.5)
    assert modes["selector"].to_list() == ["rotation>=20"]


def test_top_k_does_not_hide_a_grid_that_fails_everywhere():
    """Every cell fails; rotation 0° and blur 2.5 px fail more (they beat the grid and rank above
    it). With top_k = 2 they filled the list before the grid was weighed, and the list said that
    only they fail; the grid, kept, replaces both, whatever top_k."""
    coords = SPACE5.all_coords()
    rates = np.where((coords[:, 0] == 0) | (coords[:, 1] == 4), 0.97, 0.75)
    cells = cell_table(SPACE5, queries_from_rates(SPACE5, rates, 60), 0.5)
    for top_k in (2, 8):
        modes, _ = find_slices(SPACE5, cells, SliceParams(top_k=top_k))
        assert modes["selector"].to_list() == ["*"]


def test_no_mode_every_cell_when_some_cells_do_not_fail():
    """Four fifths of the grid at 0.9, rotation 40° at 0.05: the whole grid's rate (0.73) is
    confidently above τ, but the cells it adds to `rotation ≤ 30°` do not fail."""
    rates = np.where(SPACE5.all_coords()[:, 0] <= 3, 0.9, 0.05)
    _, modes, _ = summarize(SPACE5, queries_from_rates(SPACE5, rates, 40), threshold=0.5)
    assert modes["selector"].to_list() == ["rotation<=30"]



def test_a_range_does_not_end_on_a_level_never_queried():
    """Rotation 30° is never queried and rotation 40° fails: the mode is `rotation = 40°` (25
    explored cells), not `rotation ≥ 30°`, which has the same evidence and 25 cells more that a
    `fix` would fine-tune on unexplored."""
    coords = SPACE5.all_coords()
    rates = np.where(coords[:, 0] == 4, 0.8, 0.1)
    q = queries_from_rates(SPACE5, rates, 30, cells=np.flatnonzero(coords[:, 0] != 3))
    _, modes, _ = summarize(SPACE5, q, threshold=0.5)
    assert modes["selector"].to_list() == ["rotation=40"]
    assert modes["n_cells"].to_list() == modes["visited_cells"].to_list() == [25]
    # the same with a second term: blur 1 px never queried, rotation 40° at blur ≥ 1.5 px fails
    rates = np.where((coords[:, 0] == 4) & (coords[:, 1] >= 1), 0.9, 0.05)
    q = queries_from_rates(SPACE5, rates, 30, cells=np.flatnonzero(coords[:, 1] != 1))
    _, modes, _ = summarize(SPACE5, q, threshold=0.5)
    assert modes["selector"].to_list() == ["rotation=40 & blur>=1.5"]



def test_a_modes_mean_delta_weighs_each_cell_the_same():
    """As its failure rate does: a cell the explorer queried 90 times counts as one queried 10 times."""
    coords = SPACE5.all_coords()
    inside = np.flatnonzero(coords[:, 0] == 4)
    heavy = inside[:5]
    per_cell = {c: 10 for c in range(SPACE5.n_cells)} | {c: 90 for c in heavy}
    cell = np.concatenate([np.full(n, c) for c, n in per_cell.items()]).astype(np.int32)
    fail = np.isin(cell, inside)
    delta = np.where(np.isin(cell, heavy), 0.2, np.where(fail, 1.0, 0.0)).astype(np.float32)
    q = pl.DataFrame({"cell": cell, "failure": fail, "delta": delta})
    _, modes, _ = summarize(SPACE5, q, threshold=0.5)
    assert modes["selector"].to_list() == ["rotation=40"]
    assert modes["mean_delta"][0] == pytest.approx((5 * 0.2 + 20 * 1.0) / 25, rel=1e-6)  # not (450·0.2 + 200) / 650


def test_slice_sums_are_the_same_bits_on_every_run():
    """DuckDB's parallel sums add rows in the order its threads finish: past a row group (~120,000
    rows) the same cells gave slice sums that differed in their last bits between runs. The slice
    search runs on one thread (one_thread), and the connection's setting is put back."""
    import duckdb

    from failfade.slices import one_thread

    rng = np.random.default_rng(0)
    n = 1_000_000
    frame = pl.DataFrame({"a0": rng.integers(0, 10, n).astype(np.int32), "e": rng.random(n), "v": rng.random(n) * 1e-3})
    seen = set()
    for _ in range(4):
        con = duckdb.connect()
        con.execute("SET threads = 2")
        con.register("x", frame.to_arrow())
        with one_thread(con):
            row = con.execute("WITH m AS (SELECT a0, sum(e) se, sum(v) sv FROM x GROUP BY a0) "
                              "SELECT sum(se), sum(sv) FROM m WHERE a0 BETWEEN 2 AND 5").fetchone()
        assert con.execute("SELECT current_setting('threads')").fetchone()[0] == 2
        seen.add(tuple(float(v).hex() for v in row))
        con.close()
    assert len(seen) == 1
