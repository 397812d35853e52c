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


def test_a_fine_grid_shows_colours_with_thinned_slanted_ticks_and_its_failure_region_outlined():
    """25 levels an axis: 625 numbers and 25 tick labels a panel overlapped into an unreadable block.
    Past TEXT_LEVELS the cells carry no numbers, at most MAX_TICKS labels stay (the first kept), the
    x labels slant where they would collide, the panel grows, and the failure cells are outlined
    as one region (its border), not cell by cell."""
    from matplotlib.collections import LineCollection

    from failfade.plots import MAX_TICKS, TEXT_LEVELS, heatmap_size

    fine = tuple(float(x) for x in np.linspace(-30, 30, 25))
    dark = tuple(float(x) for x in np.linspace(0, 0.96, 25))  # 0, 0.04, ...: labels too wide to stand side by side
    blur = Axis("blur", "blur", (0.0, 1.0, 2.0))  # three panels side by side
    space = ConceptSpace([Axis("rotation", "rotate", fine, "°"), Axis("darkening", "darken", dark), blur])
    coarse = ConceptSpace([Axis("rotation", "rotate", fine[::5], "°"), Axis("darkening", "darken", dark[::5]), blur])
    assert heatmap_size(space)[0] > heatmap_size(coarse)[0] and heatmap_size(space)[1] > heatmap_size(coarse)[1]
    cells = cells_of(space, [0])
    mask = cells["is_failure"].to_numpy().reshape(space.shape)[:, :, 0]  # the first panel's
    fig = plt.figure(figsize=heatmap_size(space))
    heatmaps(space, cells, None, "t", fig=fig)
    ax = fig.axes[0]
    assert len(ax.texts) == 0 and f"more than {TEXT_LEVELS} levels" in fig._suptitle.get_text()
    for ticks, labels, first in ((ax.get_xticks(), ax.get_xticklabels(), "0"), (ax.get_yticks(), ax.get_yticklabels(), "-30°")):
        assert 2 <= len(ticks) <= MAX_TICKS and ticks[0] == 0 and labels[0].get_text() == first
    assert ax.get_xticklabels()[0].get_rotation() == 45 and ax.get_yticklabels()[0].get_rotation() == 0
    assert not [p for p in ax.patches if isinstance(p, plt.Rectangle) and p.get_edgecolor()[:3] == mcolors.to_rgb("cyan")]
    (border,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    # each failure cell's side that faces a passing cell or the grid's edge: counted independently
    padded = np.pad(mask, 1)
    sides = sum(int(not padded[i + 1 + di, j + 1 + dj]) for i, j in zip(*np.nonzero(mask))
                for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)))
    assert len(border.get_segments()) == sides > 0
    plt.close(fig)
    fig = plt.figure(figsize=heatmap_size(coarse))  # 5 levels: numbers in every cell, as before
    heatmaps(coarse, cells_of(coarse, [0]), None, "t", fig=fig)
    assert len(fig.axes[0].texts) == 25 and len(fig.axes[0].get_xticks()) == 5
    assert fig.axes[0].get_xticklabels()[0].get_rotation() == 0
    plt.close(fig)


def test_the_border_of_a_block_is_its_perimeter():
    from failfade.plots import _border

    mask = np.zeros((3, 4), dtype=bool)
    mask[1:3, 1:3] = True  # a 2 x 2 block touching the top edge
    segs = {tuple(map(tuple, s)) for s in _border(mask)}
    assert len(segs) == 8
    assert ((0.5, 0.5), (1.5, 0.5)) in segs  # below cell (1, 1)
    assert ((0.5, 2.5), (1.5, 2.5)) in segs  # above cell (2, 1): the grid's edge
    assert ((2.5, 0.5), (2.5, 1.5)) in segs  # right of cell (1, 2)


@pytest.mark.parametrize("shape", [(10,), (9, 3), (10, 10), (10, 10, 3), (10, 2, 2, 2, 2, 2, 2)])
def test_grids_up_to_ten_levels_keep_their_figure_size(shape):
    from failfade.plots import heatmap_size

    space = ConceptSpace([Axis(f"x{i}", "rotate", tuple(float(v) for v in range(n))) for i, n in enumerate(shape)])
    panels = 1 if len(shape) < 3 else int(np.prod(shape[2:]))
    if panels > 25:  # one panel per pair of axes
        panels = len(shape) * (len(shape) - 1) // 2
    cols = min(panels, 5)
    assert heatmap_size(space) == (3.0 * cols + 0.8, 2.9 * int(np.ceil(panels / cols)) + 0.6)
