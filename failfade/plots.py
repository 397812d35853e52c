"""Figures people would rather look at than read: heat maps, learning curves, galleries, shifts."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from failfade.concepts import ConceptSpace  # noqa: E402


def _panels(space: ConceptSpace, values: np.ndarray):
    """Split a grid into 2-D panels: rows = axis 0, cols = axis 1, one panel per combination of the rest."""
    grid = values.reshape(space.shape)
    if grid.ndim == 1:
        grid = grid[:, None]
    rest = grid.shape[2:]
    combos = list(np.ndindex(*rest)) if rest else [()]
    return grid, combos


def _panel_title(space: ConceptSpace, combo) -> str:
    return ", ".join(f"{space.axes[2 + i].name}={space.axes[2 + i].label(j)}" for i, j in enumerate(combo)) or "all"


UNQUERIED = "lightgrey"  # an unqueried cell (NaN): drawn in this colour, its label in dark text


def _with_unqueried(cmap: str) -> mcolors.Colormap:
    return plt.get_cmap(cmap).with_extremes(bad=UNQUERIED)


def _text_colour(v: float, vmin: float, vmax: float) -> str:
    return "black" if np.isnan(v) or v >= (vmin + vmax) / 2 else "white"


MAX_PANELS = 25  # beyond this (e.g. 6 axes x 5 levels: 625 panels), one panel per pair of axes


def _pairs(space: ConceptSpace) -> list[tuple[int, int]]:
    return [(i, j) for i in range(len(space.axes)) for j in range(i + 1, len(space.axes))]


def _too_many(space: ConceptSpace) -> bool:
    return len(space.shape) > 2 and int(np.prod(space.shape[2:])) > MAX_PANELS


TEXT_LEVELS = 10  # a panel with more levels than this on an axis shows colours only (its numbers: cells.csv)
MAX_TICKS = 13  # tick labels per panel axis at most: every k-th level beyond that


def _panel_levels(space: ConceptSpace) -> tuple[int, int]:
    """(levels down, levels across) of the largest panel."""
    if _too_many(space):
        return max(space.shape), max(space.shape)
    return space.shape[0], space.shape[1] if len(space.shape) > 1 else 1


def _cell_text(space: ConceptSpace) -> bool:
    return max(_panel_levels(space)) <= TEXT_LEVELS


def heatmap_size(space: ConceptSpace) -> tuple[float, float]:
    """Figure inches: a 3 x 2.9 in panel per combination of the other axes (5 to a row); past
    TEXT_LEVELS levels an axis, grown to 0.18 in a level."""
    n = len(_pairs(space)) if _too_many(space) else int(np.prod(space.shape[2:])) if len(space.shape) > 2 else 1
    cols = min(n, 5)
    down, across = _panel_levels(space)
    w, h = (3.0, 2.9) if _cell_text(space) else (max(3.0, 0.18 * across + 0.6), max(2.9, 0.18 * down + 0.5))
    return w * cols + 0.8, h * int(np.ceil(n / cols)) + 0.6


def _border(mask: np.ndarray) -> list[list[tuple[float, float]]]:
    """The edges between marked cells and unmarked ones (or the grid's edge), as line segments in
    imshow's coordinates (cell (i, j) spans j ± 0.5 across, i ± 0.5 down)."""
    padded = np.pad(mask, 1)
    segs = []
    for i, j in zip(*np.nonzero(mask)):
        if not padded[i, j + 1]:  # below (origin lower: row i − 1)
            segs.append([(j - 0.5, i - 0.5), (j + 0.5, i - 0.5)])
        if not padded[i + 2, j + 1]:
            segs.append([(j - 0.5, i + 0.5), (j + 0.5, i + 0.5)])
        if not padded[i + 1, j]:
            segs.append([(j - 0.5, i - 0.5), (j - 0.5, i + 0.5)])
        if not padded[i + 1, j + 2]:
            segs.append([(j + 0.5, i - 0.5), (j + 0.5, i + 0.5)])
    return segs


def _label_axis(ax, which: str, axis) -> None:
    """Tick labels for one panel axis: at most MAX_TICKS of them (every k-th level, the first kept)."""
    n = len(axis.levels)
    keep = list(range(0, n, int(np.ceil(n / MAX_TICKS))))
    (ax.set_yticks if which == "y" else ax.set_xticks)(keep, [axis.label(i) for i in keep], fontsize=7)


def _slant_crowded_labels(fig, axes) -> None:
    """Slant the x tick labels of the panels where, laid out, two neighbours overlap or nearly touch
    (less than 0.05 in apart: they read as one)."""
    fig.figure.draw_without_rendering()  # lays out the whole (root) figure: the labels' real extents
    renderer = fig.figure.canvas.get_renderer()
    for ax in axes:
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        if any(a.x1 + 0.05 * fig.figure.dpi > b.x0 for a, b in zip(boxes, boxes[1:])):
            ax.tick_params(axis="x", labelrotation=45)
            for t in ax.get_xticklabels():
                t.set_ha("right")


def heatmaps(space: ConceptSpace, cells: pl.DataFrame, path: Path | None, title: str, column: str = "failure_rate",
             cmap: str = "magma", vmin: float = 0.0, vmax: float = 1.0, outline: str | None = "is_failure",
             outline_label: str = "failure cell", fig=None) -> None:
    """Failure-rate panels over the grid; saved to `path`, or drawn into `fig` (e.g. a subfigure).
    A grid with more than MAX_PANELS panels gets one panel per pair of axes instead: the mean over
    the other axes' levels (each cell weighing the same). Past TEXT_LEVELS levels an axis the cells
    are colours only and the `outline` cells get one border around their region."""
    values = cells[column].to_numpy().astype(float)
    if _too_many(space):
        return _pair_heatmaps(space, values, path, title, column, cmap, vmin, vmax, fig)
    grid, combos = _panels(space, values)
    counts, _ = _panels(space, cells["queries"].to_numpy().astype(float)) if "queries" in cells.columns else (None, None)
    marks, _ = _panels(space, cells[outline].to_numpy()) if outline and outline in cells.columns else (None, None)
    n = len(combos)
    cols = min(n, 5)
    rows = int(np.ceil(n / cols))
    own = fig is None
    if own:
        fig = plt.figure(figsize=heatmap_size(space))
    axes = fig.subplots(rows, cols, squeeze=False)
    a0, a1 = space.axes[0], space.axes[1] if len(space.axes) > 1 else None
    text = _cell_text(space)
    im = None
    for p, (ax, combo) in enumerate(zip(axes.flat, combos)):
        sl = (slice(None), slice(None)) + tuple(combo)
        img = grid[sl]
        im = ax.imshow(img, cmap=_with_unqueried(cmap), vmin=vmin, vmax=vmax, origin="lower", aspect="auto")
        for (i, j), v in np.ndenumerate(img) if text else ():
            txt = "·" if np.isnan(v) else f"{v:.2f}"
            if counts is not None:
                txt += f"\nn={int(counts[sl][i, j])}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=6, color=_text_colour(v, vmin, vmax))
            if marks is not None and marks[sl][i, j]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="cyan", lw=1.5))
        if not text and marks is not None:  # small cells: the marked region's border, not every cell's
            ax.add_collection(LineCollection(_border(np.asarray(marks[sl], dtype=bool)), colors="cyan", linewidths=1.2,
                                         clip_on=False))  # not halved where it runs along the frame
        _label_axis(ax, "y", a0)
        if p % cols == 0:
            ax.set_ylabel(a0.name, fontsize=8)
        if a1 is not None:
            _label_axis(ax, "x", a1)
            ax.set_xlabel(a1.name, fontsize=8)
        else:  # one axis: the panel is a single column, with nothing to mark across it
            ax.set_xticks([])
        ax.set_title(_panel_title(space, combo), fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label=column)
    notes = ([f"cyan outline: {outline_label}"] if marks is not None else []) + \
        ([] if text else [f"more than {TEXT_LEVELS} levels: colours only, numbers in the cell table"])
    fig.suptitle(title + (f"  ({'; '.join(notes)})" if notes else ""), fontsize=10)
    if a1 is not None and not text:  # small cells, many labels
        _slant_crowded_labels(fig, list(axes.flat)[:n])
    if own:
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)


def _pair_heatmaps(space: ConceptSpace, values: np.ndarray, path, title: str, column: str, cmap: str, vmin: float,
                   vmax: float, fig=None) -> None:
    grid = values.reshape(space.shape)
    pairs = _pairs(space)
    cols = min(len(pairs), 5)
    own = fig is None
    if own:
        fig = plt.figure(figsize=heatmap_size(space))
    axes = fig.subplots(int(np.ceil(len(pairs) / cols)), cols, squeeze=False)
    text = _cell_text(space)
    im = None
    for ax, (i, j) in zip(axes.flat, pairs):
        other = tuple(k for k in range(grid.ndim) if k not in (i, j))
        with warnings.catch_warnings():  # an all-unvisited pair of levels is NaN, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            img = np.nanmean(grid, axis=other)
        im = ax.imshow(img, cmap=_with_unqueried(cmap), vmin=vmin, vmax=vmax, origin="lower", aspect="auto")
        for (r, c), v in np.ndenumerate(img) if text else ():
            ax.text(c, r, "·" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=6,
                    color=_text_colour(v, vmin, vmax))
        ai, aj = space.axes[i], space.axes[j]
        _label_axis(ax, "y", ai)
        _label_axis(ax, "x", aj)
        ax.set_ylabel(ai.name, fontsize=8)
        ax.set_xlabel(aj.name, fontsize=8)
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label=f"{column}, mean over the other axes")
    fig.suptitle(title + f"  ({space.n_cells} cells: one panel per pair of axes"
                 + ("" if text else f"; more than {TEXT_LEVELS} levels: colours only") + ")", fontsize=10)
    if not text:
        _slant_crowded_labels(fig, list(axes.flat)[:len(pairs)])
    if own:
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)


def learning_curve(log: pl.DataFrame, path: Path, title: str) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    q = log["queries"].to_numpy()
    axes[0].plot(q, log["failure_rate"].to_numpy(), marker=".")
    axes[0].set(xlabel="model queries", ylabel="failure rate of proposals", title="Failures found per rollout")
    axes[1].plot(q, log["distinct_cells"].to_numpy(), marker=".")
    axes[1].set(xlabel="model queries", ylabel="cells visited", title="Coverage")
    if "entropy" in log.columns:
        axes[2].plot(q, log["entropy"].to_numpy(), marker=".", label="policy entropy")
        axes[2].plot(q, log["policy_loss"].to_numpy(), marker=".", label="policy loss")
        axes[2].plot(q, log["value_loss"].to_numpy(), marker=".", label="value loss")
        axes[2].legend(fontsize=7)
        axes[2].set(xlabel="model queries", title=f"Learner ({int(log['n_updates'][-1])} updates)")
    else:
        axes[2].axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gallery(images_by_mode: list[tuple[str, np.ndarray, list[str]]], path: Path, title: str) -> None:
    """images_by_mode: (row title, (k, H, W[, C]) images in [0,1], captions)."""
    rows = max(len(images_by_mode), 1)
    cols = max([len(imgs) for _, imgs, _ in images_by_mode] + [1])
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 0.4, 1.6 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (name, imgs, captions) in enumerate(images_by_mode):
        for c, (img, cap) in enumerate(zip(imgs, captions)):
            axes[r, c].imshow(img, cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_title(cap, fontsize=6)
        axes[r, 0].text(-0.1, 0.5, name, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=7)
    if not images_by_mode:
        axes[0, 0].text(0.5, 0.5, "no failure modes found", ha="center", va="center")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def before_after(space: ConceptSpace, per_cell: pl.DataFrame, path: Path) -> None:
    """One figure: before, after, and the change, with the targeted cells outlined."""
    w, h = heatmap_size(space)
    fig = plt.figure(figsize=(w, 3 * h))
    for sub, (col, n_col, title, cmap, lo, hi) in zip(fig.subfigures(3, 1), (
        ("failure_rate_pre", "queries_pre", "Before mitigation: failure rate", "magma", 0, 1),
        ("failure_rate_post", "queries_post", "After mitigation: failure rate", "magma", 0, 1),
        ("delta", "queries_pre", "Change in failure rate (after − before)", "coolwarm", -1, 1),
    )):
        heatmaps(space, per_cell.rename({n_col: "queries"}), None, title, column=col, cmap=cmap, vmin=lo, vmax=hi,
                 outline="targeted", outline_label="cell targeted by the feedback", fig=sub)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def text_gallery(rows: list[tuple[str, list[str]]], path: Path, title: str, width: int = 110) -> None:
    """rows: (row title, lines of text); long lines are wrapped. For tasks whose inputs are text."""
    import textwrap

    blocks = []
    for name, lines in rows:
        wrapped = [w for line in lines for w in textwrap.wrap(line, width) or [""]]
        blocks.append((textwrap.wrap(name, int(width * 0.9)) or [""], wrapped))
    n_lines = sum(len(n) + len(b) + 1 for n, b in blocks) or 2
    fig = plt.figure(figsize=(width * 0.075, 0.6 + 0.2 * n_lines))
    y = 1.0
    step = 1.0 / (n_lines + 1)
    fig.text(0.01, y - step / 2, title, fontsize=10, weight="bold", va="top")
    y -= 1.5 * step
    if not blocks:
        fig.text(0.01, y, "no failure modes found", fontsize=8, va="top")
    for names, lines in blocks:
        for name in names:
            fig.text(0.01, y, name, fontsize=8, weight="bold", va="top")
            y -= step
        for line in lines:
            fig.text(0.03, y, line, fontsize=7, va="top", family="monospace")
            y -= step
        y -= step
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sample_sheet(panels: dict[tuple[str, str], tuple[np.ndarray, str, bool]], rows: list[str], cols: list[str],
                 path: Path, title: str) -> None:
    """One panel per (row, col) cell: an image (H, W[, C]) in [0, 1], a caption, and whether to
    outline it in red (a failure cell)."""
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.15 * len(cols) + 1.0, 1.3 * len(rows) + 0.8), squeeze=False)
    for r, row in enumerate(rows):
        for c, col in enumerate(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if (row, col) not in panels:
                ax.axis("off")
                continue
            img, cap, flag = panels[(row, col)]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_xlabel(cap, fontsize=5.5, labelpad=1)
            for s in ax.spines.values():
                s.set_edgecolor("red" if flag else "0.7")
                s.set_linewidth(2.0 if flag else 0.5)
            if r == 0:
                ax.set_title(col, fontsize=6.5)
            if c == 0:
                ax.set_ylabel(row, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
