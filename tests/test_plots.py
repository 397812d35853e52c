"""The heat maps (failfade.plots): what an unqueried cell and a one-axis grid look like, read off the Axes."""

from __future__ import annotations

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest

from failfade.concepts import Axis, ConceptSpace
from failfade.plots import heatmaps


def cells_of(space: ConceptSpace, unqueried) -> pl.DataFrame:
    n = np.full(space.n_cells, 40)
    n[list(unqueried)] = 0
    rate = np.where(n > 0, np.linspace(0.1, 0.9, space.n_cells), np.nan)
    return pl.DataFrame({"failure_rate": rate, "queries": n, "is_failure": np.nan_to_num(rate) >= 0.5})


def visible_and_dark(colour) -> tuple[bool, bool]:
    r, g, b, a = mcolors.to_rgba(colour)
    return a > 0.5 and (r, g, b) != (1.0, 1.0, 1.0), 0.299 * r + 0.587 * g + 0.114 * b < 0.5


@pytest.mark.parametrize("cmap", ["magma", "coolwarm"])
def test_an_unqueried_cell_is_drawn_grey_with_a_dark_label_and_one_axis_gets_no_x_ticks(cmap):
    space = ConceptSpace([Axis("rotation", "rotate", (0.0, 10.0, 20.0))])
    fig = plt.figure()
    heatmaps(space, cells_of(space, [1]), None, "t", cmap=cmap, vmin=0.0 if cmap == "magma" else -1.0, fig=fig)
    ax = fig.axes[0]
    bad = ax.images[0].cmap.get_bad()
    assert visible_and_dark(bad)[0], bad  # not transparent, not white
    label = next(t for t in ax.texts if t.get_text().endswith("n=0"))
    assert label.get_text() == "·\nn=0" and visible_and_dark(label.get_color())[1], label.get_color()
    assert list(ax.get_xticks()) == [] and ax.get_xlabel() == ""
    assert len(ax.get_yticks()) == 3
    plt.close(fig)


def test_the_pair_panels_draw_an_unqueried_pair_grey_with_a_dark_label():
    levels = tuple(float(10 * i) for i in range(6))
    space = ConceptSpace([Axis(f"x{j}", "rotate", levels) for j in range(4)])  # 36 panels: one per pair of axes
    coords = space.all_coords()
    fig = plt.figure()
    heatmaps(space, cells_of(space, np.flatnonzero((coords[:, 0] == 0) & (coords[:, 1] == 0))), None, "t", fig=fig)
    ax = fig.axes[0]  # the (x0, x1) panel
    assert visible_and_dark(ax.images[0].cmap.get_bad())[0]
    dots = [t for t in ax.texts if t.get_text() == "·"]
    assert len(dots) == 1 and visible_and_dark(dots[0].get_color())[1]
    plt.close(fig)
