"""Landscape shift: grid Wasserstein distance, Newcombe intervals and the before/after comparison."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy.stats import wasserstein_distance

from failfade.concepts import Axis, ConceptSpace
from failfade.landscape import cell_table
from failfade.shift import compare, grid_emd, grid_emd_shape, markdown, newcombe_diff, paper_wasserstein_1d

Z = 1.959964


def line_space(n: int) -> ConceptSpace:
    return ConceptSpace([Axis("x", "contrast", tuple(float(i) for i in range(n)))])


SPACE3 = ConceptSpace([Axis("rotation", "rotate", (0.0, 10.0, 20.0), "°"), Axis("contrast", "contrast", (1.0, 0.5, 0.2))])


# --- earth mover's distance over the grid ----------------------------------------------------------

def test_identical_distributions_are_zero():
    p = np.array([0.3, 0.0, 0.1, 0.2, 0.0, 0.0, 0.1, 0.2, 0.1])
    assert grid_emd(p, p, SPACE3) == pytest.approx(0.0, abs=1e-9)
    # the shape alone ignores the amount...
    assert grid_emd_shape(p, 5 * p, SPACE3) == pytest.approx(0.0, abs=1e-9)
    # ...the mass-aware distance does not: 4 units more mass, created at half the diameter (2) each
    assert grid_emd(p, 5 * p, SPACE3) == pytest.approx(4 * p.sum() * 2.0)


def test_point_masses_two_steps_apart():
    p, q = np.zeros(9), np.zeros(9)
    p[0] = 1.0  # (0, 0)
    q[4] = 1.0  # (1, 1): two L1 steps away
    assert grid_emd(p, q, SPACE3) == pytest.approx(2.0)
    q2 = np.zeros(9)
    q2[8] = 1.0  # (2, 2): four steps = the diameter; moving costs as much as removing and creating
    assert grid_emd(p, q2, SPACE3) == pytest.approx(4.0)


def test_half_mass_moves():
    s = line_space(4)
    p = np.array([1.0, 1.0, 0.0, 0.0])
    q = np.array([1.0, 0.0, 0.0, 1.0])
    # half the mass moves from position 1 to position 3: 1 unit * 2 steps
    assert grid_emd(p, q, s) == pytest.approx(2.0)
    assert grid_emd_shape(p, q, s) == pytest.approx(1.0)


def test_balanced_line_equals_cdf_difference_and_scipy():
    n = 7
    s = line_space(n)
    rng = np.random.default_rng(0)
    pos = np.arange(n, dtype=float)
    for _ in range(10):
        p = rng.random(n) * (rng.random(n) < 0.7)
        q = rng.random(n) * (rng.random(n) < 0.7)
        if p.sum() == 0 or q.sum() == 0:
            continue
        w = grid_emd_shape(p, q, s)
        cdf = np.abs(np.cumsum(p / p.sum()) - np.cumsum(q / q.sum()))[:-1].sum()
        assert w == pytest.approx(cdf, abs=1e-7)
        assert w == pytest.approx(wasserstein_distance(pos, pos, p, q), abs=1e-7)
        # equal totals: the unbalanced distance is the balanced one
        assert grid_emd(p / p.sum(), q / q.sum(), s) == pytest.approx(cdf, abs=1e-7)


def test_product_distribution_reduces_to_row_marginals():
    rows_p, rows_q = np.array([0.8, 0.1, 0.1]), np.array([1, 1, 1]) / 3
    p, q = np.repeat(rows_p, 3) / 3, np.repeat(rows_q, 3) / 3
    expected = abs(0.8 - 1 / 3) + abs(0.9 - 2 / 3)
    assert grid_emd(p, q, SPACE3) == pytest.approx(expected, abs=1e-7)


def test_matches_a_dense_transport_with_a_sink():
    """The min-cost flow on grid edges equals the textbook formulation: a full transport plan
    with the L1 ground metric plus a sink that absorbs or supplies mass at the creation cost."""
    from scipy.optimize import linprog

    rng = np.random.default_rng(3)
    g = SPACE3.grid_distance()
    lam = 2.0
    for _ in range(5):
        p, q = rng.random(9) * (rng.random(9) < 0.8), rng.random(9) * (rng.random(9) < 0.8)
        n = 10
        cost = np.full((n, n), lam)
        cost[:9, :9] = g
        cost[9, 9] = 0
        a = np.concatenate([p, [q.sum()]])
        b = np.concatenate([q, [p.sum()]])
        a_eq = np.zeros((2 * n, n * n))
        for i in range(n):
            a_eq[i, i * n:(i + 1) * n] = 1
            a_eq[n + i, i::n] = 1
        res = linprog(cost.ravel(), A_eq=a_eq, b_eq=np.concatenate([a, b]), bounds=(0, None), method="highs")
        assert grid_emd(p, q, SPACE3) == pytest.approx(res.fun, abs=1e-7)


@pytest.mark.parametrize("levels", [[2], [3, 1], [2, 4, 3], [5, 5, 5]])
def test_the_transport_graph_is_the_grids_neighbours(levels):
    """grid_emd builds its graph once per grid shape, vectorised: the same directed edges, in the same
    order, as ConceptSpace.neighbours cell by cell (the order fixes which optimum HiGHS returns)."""
    from failfade.shift import _edges_of_shape

    space = ConceptSpace([Axis(f"a{k}", "rotate", tuple(float(i) for i in range(n))) for k, n in enumerate(levels)])
    expected = [(c, nb) for c in range(space.n_cells) for nb in space.neighbours(c)]
    assert _edges_of_shape(tuple(space.shape)).tolist() == [list(e) for e in expected]


def test_zero_masses_are_finite():
    assert grid_emd(np.zeros(9), np.zeros(9), SPACE3) == 0.0
    p = np.zeros(9)
    p[3] = 0.5
    # all failures removed: each unit removed at half the diameter (2)
    assert grid_emd(p, np.zeros(9), SPACE3) == pytest.approx(1.0)
    assert grid_emd(np.zeros(9), p, SPACE3) == pytest.approx(1.0)
    assert grid_emd_shape(p, np.zeros(9), SPACE3) is None


def test_not_permutation_invariant_unlike_the_paper():
    """The paper's 1-D distance between unordered values cannot tell where the failures went."""
    s = line_space(5)
    pre = np.array([0.9, 0.1, 0.1, 0.1, 0.1])
    post_near = np.array([0.1, 0.9, 0.1, 0.1, 0.1])
    post_far = np.array([0.1, 0.1, 0.1, 0.1, 0.9])  # a permutation of post_near
    assert paper_wasserstein_1d(pre, post_near) == pytest.approx(0.0)
    assert paper_wasserstein_1d(pre, post_far) == pytest.approx(0.0)
    near, far = grid_emd(pre, post_near, s), grid_emd(pre, post_far, s)
    assert near == pytest.approx(0.8)  # 0.8 moves one step
    assert far == pytest.approx(3.2)  # 0.8 moves four steps (or is removed and created: the same cost)
    assert far > near
    # the paper's distance also cannot see the amount of failure: halving every rate reads 0
    assert paper_wasserstein_1d(pre, pre / 2) == pytest.approx(0.0)
    assert grid_emd(pre, pre / 2, s) > 0


# --- Newcombe --------------------------------------------------------------------------------

def wilson_by_hand(k: int, n: int, z: float = Z) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = (z / (1 + z * z / n)) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_frame(pairs) -> pl.DataFrame:
    rows = []
    for k, n in pairs:
        lo, hi = wilson_by_hand(k, n)
        rows.append({"failure_rate": k / n, "rate_lo": lo, "rate_hi": hi})
    return pl.DataFrame(rows)


def test_newcombe_published_example():
    # Newcombe (1998), Stat Med 17:873, example 56/70 vs 48/80, method 10: 0.0524 to 0.3339
    d, lo, hi = newcombe_diff(rate_frame([(48, 80)]), rate_frame([(56, 70)]))
    assert d[0] == pytest.approx(0.2)
    assert lo[0] == pytest.approx(0.0524, abs=1e-4)
    assert hi[0] == pytest.approx(0.3339, abs=1e-4)


def test_newcombe_contains_point_difference():
    pre = [(16, 20), (2, 20), (0, 10), (10, 10), (5, 9), (30, 100)]
    post = [(2, 20), (2, 20), (10, 10), (0, 10), (1, 30), (31, 90)]
    d, lo, hi = newcombe_diff(rate_frame(pre), rate_frame(post))
    expected = np.array([b[0] / b[1] - a[0] / a[1] for a, b in zip(pre, post)])
    assert d == pytest.approx(expected)
    assert np.all(lo <= d) and np.all(d <= hi)
    assert np.all(lo >= -1 - 1e-12) and np.all(hi <= 1 + 1e-12)
    assert hi[0] < 0  # 80% -> 10% is significant
    assert lo[1] < 0 < hi[1]  # no change


# --- compare ---------------------------------------------------------------------------------

TARGETED = [0, 1, 2]  # rotation 0°, every contrast


def build_queries(counts: dict[int, tuple[int, int]]) -> pl.DataFrame:
    cells, fails = [], []
    for c, (n, k) in counts.items():
        cells += [c] * n
        fails += [True] * k + [False] * (n - k)
    return pl.DataFrame({
        "cell": pl.Series(np.array(cells, dtype=np.int32)),
        "failure": np.array(fails, dtype=bool),
        "delta": pl.Series(np.array(fails, dtype=np.float32)),
    })


def plan_for(cells) -> dict:
    return {"fix": [{"cell": c, "weight": 1.0} for c in cells], "accept": []}


def test_compare_targeted_cells_fade():
    pre = build_queries({c: (20, 16) if c in TARGETED else (20, 2) for c in range(9)})
    post = build_queries({c: (20, 2) for c in range(9)})
    res, per_cell = compare(SPACE3, pre, post, plan_for(TARGETED), threshold=0.5, clean_pre=0.97, clean_post=0.96,
                            bootstrap=50)
    assert res["clean_accuracy_pre"] == 0.97 and res["clean_accuracy_post"] == 0.96
    assert res["clean_accuracy_change"] == pytest.approx(-0.01)
    assert res["targeted_cells"] == 3
    assert res["targeted_failure_rate_pre"] == pytest.approx(0.8)
    assert res["targeted_failure_rate_post"] == pytest.approx(0.1)
    assert res["targeted_relative_reduction"] == pytest.approx(1 - 0.1 / 0.8)
    lo, hi = res["targeted_relative_reduction_ci"]
    assert 0 < lo < 1 - 0.1 / 0.8 < hi <= 2
    assert res["other_failure_rate_pre"] == pytest.approx(0.1)
    assert res["other_failure_rate_post"] == pytest.approx(0.1)
    t = res["targeted"]
    assert t["queries"] == {"pre": 60, "post": 60} and t["failures"] == {"pre": 48, "post": 6}
    assert t["change"] == pytest.approx(-0.7) and t["change_ci"][1] < 0
    assert res["other"]["change_ci"][0] < 0 < res["other"]["change_ci"][1]
    # 16/20 has a Wilson lower bound of ~0.58 >= 0.5; 2/20 is far below
    assert wilson_by_hand(16, 20)[0] >= 0.5
    assert res["failure_cells_pre"] == 3 and res["failure_cells_post"] == 0
    assert res["new_failure_cells"] == 0 and res["new_failure_cell_list"] == []
    assert res["cells_significantly_better"] == 3 and res["cells_significantly_worse"] == 0
    # mass over the grid: (3 * 0.8 + 6 * 0.1) / 9 -> 0.1
    assert res["failure_mass"]["pre"] == pytest.approx(3.0 / 9) and res["failure_mass"]["post"] == pytest.approx(0.1)
    assert res["failure_mass_change"] == pytest.approx(0.1 - 3.0 / 9)
    # shapes: rows (0.8*3, 0.1*3, 0.1*3) -> uniform; 1-D EMD of the row marginals
    assert res["grid_emd_shape"] == pytest.approx(abs(0.8 - 1 / 3) + abs(0.9 - 2 / 3), abs=1e-6)
    assert res["grid_emd"] > res["grid_emd_noise_floor"] > 0
    assert res["grid_emd_ci"][0] <= res["grid_emd"] <= res["grid_emd_ci"][1]
    assert res["queries_pre"] == 180 and res["queries_post"] == 180
    assert per_cell.height == 9
    assert per_cell["targeted"].to_list() == [c in TARGETED for c in range(9)]
    assert per_cell["delta"].to_list() == pytest.approx([-0.7] * 3 + [0.0] * 6)
    md = markdown(res, "digits")
    assert "87.5%" in md and "Why not the paper's distance" in md


def test_compare_counts_new_failure_cell():
    pre = build_queries({c: (20, 16) if c in TARGETED else (20, 2) for c in range(9)})
    post_counts = {c: (20, 2) for c in range(9)}
    post_counts[8] = (20, 18)  # (rotation 20°, contrast 0.2) becomes a failure cell
    post = build_queries(post_counts)
    res, per_cell = compare(SPACE3, pre, post, plan_for(TARGETED), threshold=0.5, clean_pre=0.9, clean_post=0.8,
                            bootstrap=0)
    assert res["new_failure_cells"] == 1
    assert res["new_failure_cell_list"] == ["rotation=20°, contrast=0.2"]
    assert res["failure_cells_post"] == 1
    assert res["other_failure_rate_post"] == pytest.approx((5 * 0.1 + 0.9) / 6)
    assert res["cells_significantly_worse"] == 1
    assert per_cell.filter(pl.col("is_failure_post"))["cell"].to_list() == [8]
    assert res["grid_emd_noise_floor"] is None and res["grid_emd_ci"] == [None, None]


def test_the_guard_trips_on_what_nobody_targeted():
    pre = build_queries({c: (20, 16) if c in TARGETED else (20, 2) for c in range(9)})
    fine = build_queries({c: (20, 2) for c in range(9)})
    res, _ = compare(SPACE3, pre, fine, plan_for(TARGETED), 0.5, 0.9, 0.9, bootstrap=0, guard="fail")
    assert res["guard"] == {"mode": "fail", "tripped": False, "new_failure_cells": [],
                            "untargeted_cells_significantly_worse": [], "probes_significantly_worse": [],
                            "other_cells_worse_on_fresh_pairs": []}
    assert "Guard" not in markdown(res, "x")
    worse = {c: (20, 2) for c in range(9)}
    worse[7] = (20, 12)  # rotation 20°, contrast 0.5: untargeted, significantly worse (family-wise), not a failure cell
    res, _ = compare(SPACE3, pre, build_queries(worse), plan_for(TARGETED), 0.5, 0.9, 0.9, bootstrap=0)
    g = res["guard"]
    assert g["tripped"] and g["mode"] == "warn" and g["new_failure_cells"] == []
    assert g["untargeted_cells_significantly_worse"] == ["rotation=20°, contrast=0.5"]
    assert markdown(res, "x").splitlines()[2].startswith("> **Guard (warn): the repair broke something nobody targeted.**")


def _probes(paired: bool) -> pl.DataFrame:
    """Seven probes on the same 539 inputs before and after: occlusion 0.3 fails on 47 more inputs
    and passes on 6 more (250 -> 291), the others stay (100 -> 100, 5 each way)."""
    from failfade.probes import check_probes, probe_table
    from failfade.tasks.classification.transforms import TRANSFORMS

    probes = [{"name": "occlusion 0.3", "apply": {"occlude": 0.3}}] + [
        {"name": f"rotation {r}", "apply": {"rotate": r}} for r in (-30, -20, -10, 10, 20, 30)]
    counts = {"failures_pre": [250] + [100] * 6, "failures_post": [291] + [100] * 6}
    if paired:
        counts |= {"newly_failing": [47] + [5] * 6, "newly_passing": [6] + [5] * 6}
    return probe_table(probes, check_probes(probes, TRANSFORMS), n=539, **counts)


def test_the_guard_trips_on_a_probe_worse_on_the_same_inputs():
    """Occlusion 0.3: 47 inputs newly failing, 6 newly passing (of 539). Family-wise over the seven
    probes the unpaired interval's lower bound was -0.6 pt, and the guard ignored it; paired over
    the inputs it is +4.0 pt: the guard trips (shift.md's table shows the 95% intervals). A table without the counts (written before they were
    kept) still gets the unpaired interval, and shift.md says so."""
    pre = build_queries({c: (20, 16) if c in TARGETED else (20, 2) for c in range(9)})
    fine = build_queries({c: (20, 2) for c in range(9)})
    res, _ = compare(SPACE3, pre, fine, plan_for(TARGETED), 0.5, 0.9, 0.9, bootstrap=0, probes=_probes(paired=True))
    assert res["guard"]["tripped"] and res["guard"]["probes_significantly_worse"] == ["occlusion 0.3"]
    assert res["probes_significantly_worse"] == 1
    page = markdown(res, "x")
    assert "probes significantly worse: occlusion 0.3" in page.splitlines()[2]
    assert "| occlusion 0.3 | 46.4% | 54.0% | +7.6 pt [+5.0 to +10.2 pt] | 47 / 6 | **worse** |" in page
    assert "Newcombe's paired interval" in page and "unpaired one" not in page
    assert "- Probes significantly worse, each at 95% alone (the table's verdicts): **1**: occlusion 0.3." in page
    assert "- Of those, 95% family-wise over the 7 probes (what the guard counts): **1**: occlusion 0.3." in page
    res, _ = compare(SPACE3, pre, fine, plan_for(TARGETED), 0.5, 0.9, 0.9, bootstrap=0, probes=_probes(paired=False))
    assert not res["guard"]["tripped"]  # the unpaired interval is too wide to see it family-wise
    page = markdown(res, "x")
    assert "| n/a (unpaired interval) | **worse** |" in page and "Rows without the counts" in page
    # the table's verdict (95% alone) and the guard's count (family-wise) differ here: the page says both
    assert "(the table's verdicts): **1**: occlusion 0.3." in page and "(what the guard counts): **0**." in page
    # no probe at all (text-to-image has none): said in a line, not as an empty table "over the 0 probes"
    res, _ = compare(SPACE3, pre, fine, plan_for(TARGETED), 0.5, 0.9, 0.9, bootstrap=0, probes=_probes(paired=True).head(0))
    assert res["probes"] == [] and not res["guard"]["tripped"]
    page = markdown(res, "x")
    assert "## Off-grid probes\n\nNone: `shift.probes` lists no condition" in page and "| probe |" not in page


SPACE5 = ConceptSpace([Axis("rotation", "rotate", (0.0, 10.0, 20.0, 30.0, 40.0), "°"),
                       Axis("contrast", "contrast", (1.0, 0.8, 0.6, 0.4, 0.2))])


def test_the_guard_stays_quiet_on_an_unchanged_model():
    """Two explorations of one landscape (5 fixed cells, 20 untargeted at a true rate of 0.75, 20
    queries per cell): with each cell tested alone at 95%, and a cell that merely crossed τ counted
    as a new failure cell, the guard tripped in 75% of such runs (a review's simulation). Now it
    is family-wise: it may trip in at most about 5% (plus the threshold crossings it no longer counts)."""
    rng = np.random.default_rng(0)
    fix = [0, 1, 2, 3, 4]
    tripped, worse = 0, 0
    runs = 60
    for _ in range(runs):
        pre, post = ({c: (20, int(rng.binomial(20, 0.75))) for c in range(25)} for _ in range(2))
        res, _ = compare(SPACE5, build_queries(pre), build_queries(post), plan_for(fix), 0.5, 0.9, 0.9, bootstrap=0)
        tripped += res["guard"]["tripped"]
        worse += res["cells_significantly_worse"] > 0
    assert tripped / runs <= 0.1 and worse / runs <= 0.1, (tripped, worse)


def test_a_cell_unexplored_before_is_not_a_new_failure_cell():
    pre = build_queries({c: (20, 2) for c in range(8)})  # cell 8 never explored before
    post = build_queries({**{c: (20, 2) for c in range(8)}, 8: (20, 20)})
    res, _ = compare(SPACE3, pre, post, plan_for(TARGETED), 0.5, 0.9, 0.9, bootstrap=0)
    assert res["new_failure_cells"] == 0 and not res["guard"]["tripped"]
    assert res["failure_cells_post"] == 1


def test_the_papers_distance_and_the_targeted_row_use_the_cells_explored_on_both_sides():
    rates = {c: (20, 10) for c in range(9)}
    post = {c: v for c, v in rates.items() if c not in (1, 8)}  # a targeted and an other cell left out after
    res, _ = compare(SPACE3, build_queries(rates), build_queries(post), plan_for(TARGETED), 0.5, 0.9, 0.9, bootstrap=0)
    assert res["paper_wasserstein_1d"] == 0.0 and res["grid_emd"] == 0.0  # the same rates where both looked
    md = markdown(res, "x")
    assert "| targeted failure rate (2 of 3 cells explored before and after) |" in md
    assert "| other failure rate (5 of 6 cells explored before and after) |" in md


def test_the_failure_mass_says_it_is_over_the_cells_explored_on_both_sides():
    """The failure mass is over the cells explored before and after, as the targeted and other rows
    are, but its row read "whole grid" and every region's `cells` was the count compared, not the
    region's size: with cells left unexplored after mitigation, shift.md claimed the whole grid."""
    rates = {c: (20, 10) for c in range(9)}
    post = {c: v for c, v in rates.items() if c not in (1, 8)}  # a targeted and an other cell left out after
    res, _ = compare(SPACE3, build_queries(rates), build_queries(post), plan_for(TARGETED), 0.5, 0.9, 0.9, bootstrap=0)
    for key, cells, compared in (("targeted", 3, 2), ("other", 6, 5), ("failure_mass", 9, 7)):
        assert (res[key]["cells"], res[key]["cells_compared"]) == (cells, compared), key
    md = markdown(res, "x")
    assert "| failure mass (7 of 9 cells explored before and after) |" in md
    assert "- Failure mass over the 7 of 9 cells explored before and after changed by" in md
    assert "whole grid" not in md
    full, _ = compare(SPACE3, build_queries(rates), build_queries(rates), plan_for(TARGETED), 0.5, 0.9, 0.9, bootstrap=0)
    assert (full["failure_mass"]["cells"], full["failure_mass"]["cells_compared"]) == (9, 9)
    assert "| failure mass (whole grid) |" in markdown(full, "x")


def test_compare_rates_average_over_cells_not_queries():
    # targeted cell 0 seen 100 times at 50%, cell 1 seen 10 times at 100%: per-cell mean is 75%
    pre = build_queries({0: (100, 50), 1: (10, 10), 4: (10, 1)})
    post = build_queries({0: (100, 25), 1: (10, 0), 4: (10, 1)})
    res, _ = compare(SPACE3, pre, post, plan_for([0, 1]), threshold=0.5, clean_pre=1.0, clean_post=1.0, bootstrap=0)
    assert res["targeted_failure_rate_pre"] == pytest.approx(0.75)
    assert res["targeted_failure_rate_post"] == pytest.approx(0.125)
    assert res["targeted"]["failures"]["pre"] == 60
    assert res["other_failure_rate_pre"] == pytest.approx(0.1)  # unvisited cells do not count
    assert res["other"]["cells_seen"] == {"pre": 1, "post": 1}


# --- the shift as failure mass: direction and scale ------------------------------------------------

def grid_queries(rates: np.ndarray, n: int = 400) -> pl.DataFrame:
    return build_queries({c: (n, int(round(r * n))) for c, r in enumerate(rates)})


PRE_RATES = np.array([0.8, 0.6, 0.4, 0.3, 0.2, 0.5, 0.6, 0.7, 0.4])


def test_halving_every_rate_halves_the_mass():
    res, _ = compare(SPACE3, grid_queries(PRE_RATES), grid_queries(PRE_RATES / 2), plan_for(TARGETED), 0.5, 1.0, 1.0,
                     bootstrap=100)
    m = res["failure_mass"]
    assert m["relative_change"] == pytest.approx(-0.5, abs=0.01)
    lo, hi = m["relative_change_ci"]
    assert lo < -0.5 < hi and hi < 0  # excludes 0
    assert res["failure_mass_change"] < 0 and res["failure_mass_change_ci"][1] < 0
    # the distance sees it, well above what exploration noise alone reads
    assert res["grid_emd"] > 2 * res["grid_emd_noise_floor"]
    # the shape does not change
    assert res["grid_emd_shape"] == pytest.approx(0.0, abs=0.01)


def test_a_worse_model_has_a_positive_mass_change():
    post = np.clip(PRE_RATES + 0.3, 0, 1)
    res, _ = compare(SPACE3, grid_queries(PRE_RATES), grid_queries(post), plan_for(TARGETED), 0.5, 1.0, 1.0, bootstrap=50)
    assert res["failure_mass_change"] > 0 and res["failure_mass_change_ci"][0] > 0
    assert res["failure_mass"]["relative_change"] > 0
    assert res["targeted"]["change_ci"][0] > 0 and res["other"]["change_ci"][0] > 0
    assert res["targeted_relative_reduction"] < 0
    assert res["grid_emd"] > res["grid_emd_noise_floor"]


def test_no_cell_explored_on_both_sides_gives_no_distance_and_no_crash():
    """scipy's Wasserstein raised on two empty vectors ('Distribution can't be empty'), and the grid
    EMD over no compared cell read 0.0000 [0, 0]: 'no shift' where nothing was compared."""
    pre = build_queries({0: (2, 1), 1: (1, 1)})
    post = build_queries({2: (1, 0), 3: (1, 1)})
    res, _ = compare(SPACE3, pre, post, plan_for([0]), 0.5, 0.9, 0.9, bootstrap=10)
    assert res["cells_compared"] == 0
    for key in ("grid_emd", "grid_emd_noise_floor", "grid_emd_shape", "paper_wasserstein_1d"):
        assert res[key] is None, key
    text = markdown(res, "x")
    assert "Grid earth mover's distance: undefined, no cell was explored both before and after." in text
    assert "`paper_wasserstein_1d` = undefined" in text


def test_one_query_before_and_one_after_is_no_significant_reduction():
    """The delta method on post/pre lost the before-rate's variance when the after-rate was 0: one
    failing query before and one passing after read as a significant reduction, [−100%, −15%],
    while the change's own interval held 0."""
    res, _ = compare(SPACE3, build_queries({0: (1, 1)}), build_queries({0: (1, 0)}), plan_for([0]), 0.5, 0.9, 0.9,
                     bootstrap=0)
    t = res["targeted"]
    assert t["change_ci"][0] < 0 < t["change_ci"][1]
    assert t["relative_change"] == -1.0
    lo, hi = t["relative_change_ci"]
    assert lo == -1.0 and hi > 0


@pytest.mark.parametrize("rate, n_pre, n_post", [(0.1, 20, 20), (0.05, 30, 30), (0.05, 10, 40), (0.2, 5, 5)])
def test_the_relative_change_interval_covers_no_change(rate, n_pre, n_post):
    """Two landscapes of the same model (the same rate in both cells), explored independently: the
    relative change's interval holds 0 at least 95% of the time. The delta method covered it 84-91%
    in these settings, calling a reduction significant while the change's interval held 0 in 7-16%."""
    from failfade.shift import rate_summary, region_rate
    from failfade.stats import weighted_rate_variance

    space = ConceptSpace([Axis("a", "contrast", (0.0, 1.0))])
    rng = np.random.default_rng(1)
    covered = used = 0
    for _ in range(400):
        sides = []
        for n in (n_pre, n_post):
            cells = np.repeat(np.arange(2), n)
            fail = rng.random(2 * n) < rate
            table = cell_table(space, pl.DataFrame({"cell": cells, "failure": fail, "delta": fail.astype(float)}), 0.5)
            sides.append(region_rate(table, weighted_rate_variance(cells, fail, None, 2), np.ones(2, bool)))
        lo, hi = rate_summary(*sides, 0.95)["relative_change_ci"]
        if lo is None:
            continue  # no failure before: no relative change
        used += 1
        covered += lo <= 0 <= hi
    assert used > 250 and covered / used >= 0.94


def test_an_all_zero_post_landscape_gives_finite_numbers():
    res, _ = compare(SPACE3, grid_queries(PRE_RATES), grid_queries(np.zeros(9)), plan_for(TARGETED), 0.5, 1.0, 1.0,
                     bootstrap=50)
    for key in ("failure_mass_change", "grid_emd", "grid_emd_noise_floor", "targeted_relative_reduction",
                "paper_wasserstein_1d"):
        assert math.isfinite(res[key]), key
    assert all(math.isfinite(x) for x in res["failure_mass_change_ci"] + res["grid_emd_ci"])
    assert res["failure_mass"]["relative_change"] == pytest.approx(-1.0)
    assert res["targeted_relative_reduction"] == pytest.approx(1.0)
    assert res["grid_emd_shape"] is None
    # every unit of failure mass removed at half the diameter (2): Σ rates / 9 * 2
    assert res["grid_emd"] == pytest.approx(PRE_RATES.sum() / 9 * 2, abs=1e-3)
    json_text = __import__("json").dumps(res)  # strict JSON: no NaN
    assert "NaN" not in json_text and "Infinity" not in json_text
    markdown(res, "x")


def test_identical_explorations_read_below_the_noise_floor():
    """Two explorations of the same model: the mass change interval covers 0 and the EMD is noise."""
    rng = np.random.default_rng(5)
    truth = PRE_RATES

    def explore_once():
        k = rng.binomial(200, truth)
        return build_queries({c: (200, int(k[c])) for c in range(9)})

    res, _ = compare(SPACE3, explore_once(), explore_once(), plan_for(TARGETED), 0.5, 1.0, 1.0, bootstrap=200)
    lo, hi = res["failure_mass_change_ci"]
    assert lo < 0 < hi
    assert res["grid_emd"] < 1.5 * res["grid_emd_noise_floor"]


# --- weighted rates against an exhaustive truth -------------------------------------------------------

class ContextGrid:
    """A planted 3 x 3 task whose failures depend on the input: input i (latent x_i) fails at a cell
    in column 0 with probability x_i·s, in column 1 with (1 − x_i)·s, in column 2 with s/2, where s
    grows along the rows. A failure-seeking contextual policy pairs each cell with the inputs that
    fail there, so unweighted rates overstate failures."""

    def __init__(self, severity=(0.3, 0.6, 0.9), n_inputs: int = 300, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.space = SPACE3
        self.n_cells, self.n_inputs = 9, n_inputs
        x = rng.random(n_inputs)
        p = np.zeros((n_inputs, 9))
        for r, s in enumerate(severity):
            p[:, 3 * r] = x * s
            p[:, 3 * r + 1] = (1 - x) * s
            p[:, 3 * r + 2] = s / 2
        self.fail = rng.random((n_inputs, 9)) < p
        self.labels = np.zeros(n_inputs, dtype=np.int64)
        self.observations = np.stack([x, 1 - x], 1).astype(np.float32)

    def score(self, input_ids, cells):
        from failfade.tasks import Outcomes

        f = self.fail[np.asarray(input_ids), np.asarray(cells)]
        return Outcomes(f.astype(np.int64), f.astype(np.float32), f)


def test_weighted_shift_rates_agree_with_the_exhaustive_truth():
    """The region rates' 95% intervals (stabilized importance weights, a failure-seeking policy)
    cover the exhaustive truth: over 10 seeds × 2 regions × (pre, post, change) = 60 intervals,
    measured 0.917 (plain 1/π weights: 0.95); at least 0.85 is required, a bar that a calibrated
    95% procedure misses with negligible probability and a biased estimator does not clear."""
    from failfade.explore.search import explore

    pre_task, post_task = ContextGrid(), ContextGrid(severity=(0.2, 0.3, 0.4), seed=1)
    params = {"prior": "none", "uniform_mix": 0.2}
    fix = [3, 4, 5, 6, 7, 8]  # rows 1 and 2
    targeted = np.zeros(9, dtype=bool)
    targeted[fix] = True
    true_pre, true_post = pre_task.fail.mean(0), post_task.fail.mean(0)
    hits = []
    for seed in range(10):
        pre_q, _ = explore(pre_task, 6000, 30, seed, "ppo", params, progress=False)
        post_q, _ = explore(post_task, 6000, 30, seed, "ppo", params, progress=False)
        assert np.isfinite(pre_q["propensity"].to_numpy()).all() and np.isfinite(pre_q["marginal"].to_numpy()).all()
        res, _ = compare(SPACE3, pre_q, post_q, plan_for(fix), 0.5, 1.0, 1.0, bootstrap=0)
        for region, mask in (("targeted", targeted), ("other", ~targeted)):
            r = res[region]
            for side, truth in (("pre", true_pre), ("post", true_post)):
                lo, hi = r[f"{side}_ci"]
                hits.append(lo <= truth[mask].mean() <= hi)
            lo, hi = r["change_ci"]
            hits.append(lo <= true_post[mask].mean() - true_pre[mask].mean() <= hi)
        if seed == 0:
            first = (pre_q, res)
    assert np.mean(hits) >= 0.85, np.mean(hits)
    pre_q, res = first
    # the unweighted per-cell mean (what shift.py reported before) is biased beyond that interval
    plain = pre_q.group_by("cell").agg(pl.col("failure").mean()).sort("cell")["failure"].to_numpy()
    assert plain[targeted].mean() > res["targeted"]["pre_ci"][1]


def test_region_rates_compare_the_same_cells_before_and_after():
    """An unchanged model whose re-exploration skipped some cells: averaging each side over the cells
    it happened to explore read a large, 'significant' drop of the other cells' rate."""
    space = ConceptSpace([Axis("dark", "darken", tuple(float(x) for x in range(10)))])
    truth = np.array([.9, .9, .8, .8, .8, .8, .05, .05, .05, .05])  # the same model before and after
    rng = np.random.default_rng(0)

    def explore(cells):
        c = np.repeat(cells, 200)
        f = rng.random(len(c)) < truth[c]
        return pl.DataFrame({"cell": c, "failure": f, "delta": f.astype(float)})

    result, _ = compare(space, explore(np.arange(10)), explore(np.array([0, 1, 6, 7, 8, 9])),
                        {"fix": [{"cell": 0}, {"cell": 1}]}, 0.5, 0.9, 0.9, bootstrap=0)
    other = result["other"]
    assert other["cells_seen"] == {"pre": 4, "post": 4}
    assert other["change_ci"][0] <= 0 <= other["change_ci"][1] and abs(other["change"]) < 0.05, other


def test_the_grid_emd_interval_covers_the_true_distance():
    """The percentile interval of a distance's bootstrap replicates sits above the truth (they add
    resampling noise to it): on this grid it covered the true EMD in about 17 of 40 explorations. The
    basic (reflected) interval covered it in 35."""
    from failfade.shift import _mass

    space = ConceptSpace([Axis("a", "darken", (0.0, 1.0, 2.0)), Axis("b", "contrast", (1.0, 0.5, 0.2))])
    n = space.n_cells
    before = np.where(np.arange(n) % 3 == 0, .8, .2)
    after = before.copy()
    after[0] -= 0.6  # the repair lowers one cell
    both = np.ones(n, dtype=bool)
    true_emd = grid_emd(_mass(before, both, n), _mass(after, both, n), space)
    rng = np.random.default_rng(1)

    def explore(t):
        c = np.repeat(np.arange(n), 20)
        f = rng.random(len(c)) < t[c]
        return pl.DataFrame({"cell": c, "failure": f, "delta": f.astype(float)})

    covered = 0
    for seed in range(40):
        result, _ = compare(space, explore(before), explore(after), {"fix": [{"cell": 0}]}, 0.5, 0.9, 0.9,
                            bootstrap=100, seed=seed)
        lo, hi = result["grid_emd_ci"]
        covered += lo <= true_emd <= hi
    assert covered >= 32, covered  # nominal 95%: 38 of 40


def test_shift_md_leads_with_the_held_out_measurement_when_there_is_one():
    """The landscapes' targeted rate carries the explorer's stopping bias (a cell that read high early
    is not queried on), so where the probes stage scored every fixed cell on every held-out input,
    shift.md's headline reduction is that exhaustive figure, and the landscapes' estimate follows it."""
    from failfade.probes import input_table, pooled_change, targeted_table

    pre = build_queries({c: (20, 16) if c in TARGETED else (20, 2) for c in range(9)})
    post = build_queries({c: (20, 2) for c in range(9)})
    plan = plan_for(TARGETED)
    res, _ = compare(SPACE3, pre, post, plan, threshold=0.5, clean_pre=0.97, clean_post=0.96, bootstrap=0)
    assert "- Targeted failure rate reduced by **87.5%**" in markdown(res, "x")  # no held-out table: the landscapes'
    rng = np.random.default_rng(0)
    before = [rng.random(50) < 0.6 for _ in TARGETED]
    after = [b & (rng.random(50) < 0.5) for b in before]
    table = targeted_table(SPACE3, plan, [int(b.sum()) for b in before], [int(a.sum()) for a in after], 50)
    res["targeted_heldout"] = pooled_change(table, 0.95, input_table(before, after))
    bullets = [line for line in markdown(res, "x").splitlines() if line.startswith("- ")]
    expected = f"{100 * -res['targeted_heldout']['relative_change']:.1f}%"
    assert bullets[0].startswith("- Targeted failure rate, measured on every held-out input: reduced by")
    assert f"**{expected}**" in bullets[0]
    assert bullets[1].startswith("- The landscapes' estimate of it: reduced by 87.5%")


@pytest.mark.parametrize("plan", [{"fix": []}, {"fix": [{"weight": 1.0}]}, {"fix": "all"}])
def test_an_edited_plan_that_fixes_nothing_is_named(tmp_path, plan):
    """The feedback stage never writes a plan without a fix cell; an edited one reached the fine-tuning
    as numpy's error (summarization, text-to-image) or a bare ValueError (classification)."""
    import json

    from failfade import FailfadeError
    from failfade.feedback import read_plan

    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    with pytest.raises(FailfadeError, match=r"plan.json: cannot be read as a mitigation plan .*'fix' is not a non-empty "
                                            r"list of cells.*--forcerun"):
        read_plan(path)

