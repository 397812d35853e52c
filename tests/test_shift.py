"""Landscape shift: grid Wasserstein distance, Newcombe intervals and the before/after comparison."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy.stats import wasserstein_distance

from failfade.concepts import Axis, ConceptSpace
from failfade.shift import compare, markdown, newcombe_diff, wasserstein_grid

Z = 1.959964


def line_space(n: int) -> ConceptSpace:
    return ConceptSpace([Axis("x", "contrast", tuple(float(i) for i in range(n)))])


SPACE3 = ConceptSpace([Axis("rotation", "rotate", (0.0, 10.0, 20.0), "°"), Axis("contrast", "contrast", (1.0, 0.5, 0.2))])


# --- Wasserstein over the grid -----------------------------------------------------------------

def test_identical_distributions_are_zero():
    s = SPACE3
    p = np.array([0.3, 0.0, 0.1, 0.2, 0.0, 0.0, 0.1, 0.2, 0.1])
    assert wasserstein_grid(p, p, s.grid_distance()) == pytest.approx(0.0, abs=1e-9)
    # masses are normalised: a scaled copy is the same distribution
    assert wasserstein_grid(p, 5 * p, s.grid_distance()) == pytest.approx(0.0, abs=1e-9)


def test_point_masses_two_steps_apart():
    s = SPACE3
    p, q = np.zeros(9), np.zeros(9)
    p[0] = 1.0  # (0, 0)
    q[4] = 1.0  # (1, 1): two L1 steps away
    assert wasserstein_grid(p, q, s.grid_distance()) == pytest.approx(2.0)
    q2 = np.zeros(9)
    q2[8] = 3.0  # (2, 2): four steps, and un-normalised
    assert wasserstein_grid(p, q2, s.grid_distance()) == pytest.approx(4.0)


def test_half_mass_moves():
    s = line_space(4)
    p = np.array([1.0, 1.0, 0.0, 0.0])
    q = np.array([1.0, 0.0, 0.0, 1.0])
    # half the mass moves from position 1 to position 3: 0.5 * 2
    assert wasserstein_grid(p, q, s.grid_distance()) == pytest.approx(1.0)


def test_line_equals_cdf_difference_and_scipy():
    n = 7
    s = line_space(n)
    rng = np.random.default_rng(0)
    pos = np.arange(n, dtype=float)
    for _ in range(10):
        p = rng.random(n) * (rng.random(n) < 0.7)
        q = rng.random(n) * (rng.random(n) < 0.7)
        if p.sum() == 0 or q.sum() == 0:
            continue
        w = wasserstein_grid(p, q, s.grid_distance())
        cdf = np.abs(np.cumsum(p / p.sum()) - np.cumsum(q / q.sum()))[:-1].sum()
        assert w == pytest.approx(cdf, abs=1e-7)
        assert w == pytest.approx(wasserstein_distance(pos, pos, p, q), abs=1e-7)


def test_product_distribution_reduces_to_row_marginals():
    # p and q are uniform along contrast within each rotation row: EMD = 1-D EMD of the rows
    rows_p, rows_q = np.array([0.8, 0.1, 0.1]), np.array([1, 1, 1]) / 3
    p, q = np.repeat(rows_p, 3) / 3, np.repeat(rows_q, 3) / 3
    expected = abs(0.8 - 1 / 3) + abs(0.9 - 2 / 3)
    assert wasserstein_grid(p, q, SPACE3.grid_distance()) == pytest.approx(expected, abs=1e-7)


def test_zero_masses():
    g = SPACE3.grid_distance()
    assert wasserstein_grid(np.zeros(9), np.zeros(9), g) == 0.0
    p = np.zeros(9)
    p[3] = 0.5
    assert math.isnan(wasserstein_grid(p, np.zeros(9), g))
    assert math.isnan(wasserstein_grid(np.zeros(9), p, g))


def test_not_permutation_invariant():
    """Unlike the paper's 1-D distance between unordered rates, moving the same rates to other cells matters."""
    s = line_space(5)
    pre = np.array([0.9, 0.1, 0.1, 0.1, 0.1])
    post_near = np.array([0.1, 0.9, 0.1, 0.1, 0.1])
    post_far = np.array([0.1, 0.1, 0.1, 0.1, 0.9])  # a permutation of post_near
    # the paper's distance sees the same multiset of values
    assert wasserstein_distance(pre, post_near) == pytest.approx(wasserstein_distance(pre, post_far))
    assert wasserstein_distance(pre, post_near) == pytest.approx(0.0)
    near = wasserstein_grid(pre, post_near, s.grid_distance())
    far = wasserstein_grid(pre, post_far, s.grid_distance())
    # 0.8 / 1.3 of the mass moves 1 step, respectively 4 steps
    assert near == pytest.approx(0.8 / 1.3, abs=1e-7)
    assert far == pytest.approx(4 * 0.8 / 1.3, abs=1e-7)
    assert far > near


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
    res, per_cell = compare(SPACE3, pre, post, plan_for(TARGETED), threshold=0.5, clean_pre=0.97, clean_post=0.96)
    assert res["clean_accuracy_pre"] == 0.97 and res["clean_accuracy_post"] == 0.96
    assert res["targeted_cells"] == 3
    assert res["targeted_failure_rate_pre"] == pytest.approx(0.8)
    assert res["targeted_failure_rate_post"] == pytest.approx(0.1)
    assert res["targeted_relative_reduction"] == pytest.approx(1 - 0.1 / 0.8)
    assert res["other_failure_rate_pre"] == pytest.approx(0.1)
    assert res["other_failure_rate_post"] == pytest.approx(0.1)
    assert res["targeted_pooled"]["pre"] == {"rate": pytest.approx(0.8), "queries": 60, "failures": 48, "cells_seen": 3}
    assert res["other_pooled"]["post"]["queries"] == 120 and res["other_pooled"]["post"]["failures"] == 12
    # 16/20 has a Wilson lower bound of ~0.58 >= 0.5; 2/20 is far below
    assert wilson_by_hand(16, 20)[0] >= 0.5
    assert res["failure_cells_pre"] == 3 and res["failure_cells_post"] == 0
    assert res["new_failure_cells"] == 0 and res["new_failure_cell_list"] == []
    assert res["cells_significantly_better"] == 3 and res["cells_significantly_worse"] == 0
    # failure rates as masses: rows (0.8*3, 0.1*3, 0.1*3) -> uniform; 1-D EMD of the row marginals
    assert res["wasserstein_grid"] == pytest.approx(abs(0.8 - 1 / 3) + abs(0.9 - 2 / 3), abs=1e-6)
    assert res["queries_pre"] == 180 and res["queries_post"] == 180
    assert per_cell.height == 9
    assert per_cell["targeted"].to_list() == [c in TARGETED for c in range(9)]
    assert per_cell["delta"].to_list() == pytest.approx([-0.7] * 3 + [0.0] * 6)
    assert "87.5%" in markdown(res, "digits")


def test_compare_counts_new_failure_cell():
    pre = build_queries({c: (20, 16) if c in TARGETED else (20, 2) for c in range(9)})
    post_counts = {c: (20, 2) for c in range(9)}
    post_counts[8] = (20, 18)  # (rotation 20°, contrast 0.2) becomes a failure cell
    post = build_queries(post_counts)
    res, per_cell = compare(SPACE3, pre, post, plan_for(TARGETED), threshold=0.5, clean_pre=0.9, clean_post=0.8)
    assert res["new_failure_cells"] == 1
    assert res["new_failure_cell_list"] == ["rotation=20°, contrast=0.2"]
    assert res["failure_cells_post"] == 1
    assert res["other_failure_rate_post"] == pytest.approx((5 * 0.1 + 0.9) / 6)
    assert res["cells_significantly_worse"] == 1
    assert per_cell.filter(pl.col("is_failure_post"))["cell"].to_list() == [8]


def test_compare_rates_average_over_cells_not_queries():
    # targeted cell 0 seen 100 times at 50%, cell 1 seen 10 times at 100%: per-cell mean is 75%
    pre = build_queries({0: (100, 50), 1: (10, 10), 4: (10, 1)})
    post = build_queries({0: (100, 25), 1: (10, 0), 4: (10, 1)})
    res, _ = compare(SPACE3, pre, post, plan_for([0, 1]), threshold=0.5, clean_pre=1.0, clean_post=1.0)
    assert res["targeted_failure_rate_pre"] == pytest.approx(0.75)
    assert res["targeted_failure_rate_post"] == pytest.approx(0.125)
    assert res["targeted_pooled"]["pre"]["failures"] == 60
    assert res["other_failure_rate_pre"] == pytest.approx(0.1)  # unvisited cells do not count
    assert res["other_pooled"]["pre"]["cells_seen"] == 1
