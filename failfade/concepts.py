"""Concept spaces: named axes with discrete levels; a *cell* is one point of the grid.

A cell is addressed either by its flat index (row-major over the axes, like the paper's
25*i + 5*j + k) or by its level-index coordinates. This module is the grid only; what an axis's
`transform` *does* to an input belongs to the task family (e.g. image kernels in
tasks/classification/transforms.py), which also says which transform names exist.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np

from failfade import FailfadeError


WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_'-]*$")  # a word level: what a selector can name


@dataclass(frozen=True)
class Axis:
    name: str
    transform: str
    levels: tuple[float, ...]
    unit: str = ""
    words: tuple[str, ...] = ()  # word levels (e.g. a prompt slot's words); `levels` are then their positions

    def text(self, value: float) -> str:
        """A level's value as labels and selectors write it: 6 significant digits, or every digit
        where two of the axis's levels would read alike at 6 (1234567 and 1234568; 1 and 1.000001),
        so that a selector read back names the cells it was written for."""
        short = {f"{v:g}" for v in self.levels}
        return f"{value:g}" if len(short) == len(self.levels) else repr(float(value))

    def label(self, level_index: int) -> str:
        if self.words:
            return self.words[level_index]
        value = self.levels[level_index]
        text = self.text(value)
        return f"{text}{self.unit}" if self.unit in ("°", "%") else f"{text} {self.unit}".strip()


    def range_condition(self, lo: int, hi: int, pretty: bool = False) -> str:
        """Condition on level *values* selecting exactly level positions lo..hi ('' = the whole axis).

        Levels are monotonic (checked in ConceptSpace), so a contiguous run of positions is an
        interval of values: `rotation >= 30`, `contrast <= 0.3`, `10 <= rotation <= 20`.
        """
        if lo == 0 and hi == len(self.levels) - 1:
            return ""
        vals = self.levels[lo : hi + 1]
        vmin, vmax = min(vals), max(vals)
        outside = self.levels[:lo] + self.levels[hi + 1 :]
        below = any(v < vmin for v in outside)
        above = any(v > vmax for v in outside)
        ge, le = ("≥", "≤") if pretty else (">=", "<=")
        fmt = (lambda v: self.label(self.levels.index(v))) if (pretty or self.words) else self.text
        sep = " " if pretty else ""
        if vmin == vmax:
            return f"{self.name}{sep}={sep}{fmt(vmin)}"
        if below and above:
            return f"{fmt(vmin)} ≤ {self.name} ≤ {fmt(vmax)}" if pretty else f"{self.name}>={fmt(vmin)} & {self.name}<={fmt(vmax)}"
        return f"{self.name}{sep}{ge}{sep}{fmt(vmin)}" if below else f"{self.name}{sep}{le}{sep}{fmt(vmax)}"


_YAML_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def yaml_number_hint(values) -> str:
    """A hint for numbers that YAML read as text: PyYAML (YAML 1.1) takes `2e-3` for a string, as
    the exponent needs a decimal point (`2.0e-3`); '' when no value looks like one."""
    shown = [v for v in values if isinstance(v, str) and _YAML_FLOAT.fullmatch(v.strip())]
    if not shown:
        return ""
    v = shown[0].strip()
    dotted = v if "." in v else re.sub(r"[eE]", ".0e", v, count=1)
    return f" (YAML reads {v} as text, not a number: write {dotted} or {float(v)!r})"


def range_text(lo: float, hi: float) -> str:
    """A transform's level range in words, for errors: 'from 0 to 1', 'at least 0', 'at most 1'."""
    if np.isfinite(lo) and np.isfinite(hi):
        return f"from {lo:g} to {hi:g}"
    return f"at least {lo:g}" if np.isfinite(lo) else f"at most {hi:g}"


class ConceptSpace:
    """The Cartesian product of a few axes; cells are numbered row-major."""

    def __init__(self, axes: list[Axis]):
        if not axes:
            raise FailfadeError("a concept space needs at least one axis")
        for a in axes:
            d = np.diff(a.levels)
            if not (np.all(d > 0) or np.all(d < 0)):
                raise FailfadeError(f"concept axis {a.name!r}: levels must be strictly increasing or decreasing, got {list(a.levels)}")
        names = [a.name for a in axes]
        if len(set(names)) != len(names):
            raise FailfadeError(f"concept axis names must be unique, got {names}")
        self.axes = list(axes)
        self.shape = tuple(len(a.levels) for a in axes)
        self.n_cells = int(np.prod(self.shape))

    @classmethod
    def from_config(cls, items: list[dict], transforms, key: str = "concepts",
                    ranges: dict[str, tuple[float, float]] | None = None,
                    word_transforms=None) -> "ConceptSpace":
        """Axes from config items; `transforms` holds the transform names the task family knows,
        `ranges` the (lowest, highest) level of those that have one (a blur of -1 px means nothing),
        `word_transforms` those that take word levels (None: any; a numeric transform given words
        would see their positions 0, 1, ... as levels: `rotate: [none, strong]` rotated by 0° and 1°)."""
        axes = []
        for i, item in enumerate(items):
            transform = item.get("transform", item["name"])
            if transform not in transforms:
                raise FailfadeError(f"{key}[{i}].transform: unknown transform {transform!r}; known: {sorted(transforms)}")
            raw = list(item["levels"])
            words: tuple[str, ...] = ()
            if any(isinstance(v, str) for v in raw):
                if word_transforms is not None and transform not in word_transforms:
                    words_given = [v for v in raw if isinstance(v, str)]
                    raise FailfadeError(f"{key}[{i}].levels: {transform} takes numbers, got words {words_given}"
                                        + yaml_number_hint(words_given))
                # word levels: in their listed order, addressed by position (0, 1, ...)
                bad = [v for v in raw if not (isinstance(v, str) and WORD.match(v))]
                if bad:
                    raise FailfadeError(f"{key}[{i}].levels: word levels are single words (letters, digits, _, ', -), "
                                        f"all of them; got {bad}")
                if len(set(raw)) != len(raw):
                    raise FailfadeError(f"{key}[{i}].levels: repeated word(s) {sorted({v for v in raw if raw.count(v) > 1})}")
                words, raw = tuple(raw), list(range(len(raw)))
            levels = tuple(float(v) for v in raw)
            if not np.isfinite(levels).all():
                raise FailfadeError(f"{key}[{i}].levels: must be finite numbers, got {list(item['levels'])}")
            lo, hi = (ranges or {}).get(transform, (-np.inf, np.inf))
            if not words and not all(lo <= v <= hi for v in levels):
                raise FailfadeError(f"{key}[{i}].levels: {transform} levels are {range_text(lo, hi)}, "
                                    f"got {list(item['levels'])}")
            d = np.diff(levels)
            if not (np.all(d > 0) or np.all(d < 0)):
                raise FailfadeError(f"{key}[{i}].levels: must be strictly increasing or decreasing, got {list(item['levels'])}")
            axes.append(Axis(item["name"], transform, levels, item.get("unit", ""), words))
        return cls(axes)

    def axis(self, name: str) -> Axis:
        for a in self.axes:
            if a.name == name:
                return a
        raise KeyError(name)

    def coords(self, cells) -> np.ndarray:
        """Flat cell indices -> (n, n_axes) level indices."""
        return np.stack(np.unravel_index(np.asarray(cells, dtype=np.int64), self.shape), axis=-1)

    def index(self, coords) -> np.ndarray:
        coords = np.asarray(coords, dtype=np.int64)
        return np.ravel_multi_index(tuple(coords.T), self.shape)

    def all_coords(self) -> np.ndarray:
        return self.coords(np.arange(self.n_cells))

    def describe_cell(self, cell: int) -> str:
        return ", ".join(f"{a.name}={a.label(i)}" for a, i in zip(self.axes, self.coords([cell])[0]))

    def box_cover(self, cells) -> list[tuple[np.ndarray, np.ndarray]]:
        """Cover a set of cells exactly with few axis-aligned boxes (greedy: largest new coverage first).

        Each box is (lo, hi) level positions per axis and lies entirely inside the set.
        """
        inside = np.zeros(self.shape, dtype=bool)
        inside[tuple(self.coords(sorted(cells)).T)] = True
        ranges = [[(lo, hi) for lo in range(n) for hi in range(lo, n)] for n in self.shape]
        boxes = []
        for combo in itertools.product(*ranges):
            sl = tuple(slice(lo, hi + 1) for lo, hi in combo)
            if inside[sl].all():
                boxes.append(combo)
        uncovered = inside.copy()
        cover = []
        while uncovered.any():
            best = max(boxes, key=lambda b: (uncovered[tuple(slice(lo, hi + 1) for lo, hi in b)].sum(),
                                             -len(cover)))
            sl = tuple(slice(lo, hi + 1) for lo, hi in best)
            uncovered[sl] = False
            cover.append((np.array([lo for lo, _ in best]), np.array([hi for _, hi in best])))
        return cover

    def _box_words(self, lo, hi) -> list[str]:
        return [c for c in (a.range_condition(int(lo[k]), int(hi[k]), pretty=True) for k, a in enumerate(self.axes)) if c]

    def _join_boxes(self, boxes) -> str:
        conds = [self._box_words(lo, hi) for lo, hi in boxes]
        texts = [" and ".join(c) or "every cell" for c in conds]
        if len(texts) > 1:
            texts = [f"({t})" if len(c) > 1 else t for t, c in zip(texts, conds)]
        return " or ".join(texts)

    def describe_cells(self, cells, max_boxes: int = 3, min_purity: float = 0.75) -> str:
        """Words for a set of cells, e.g. "rotation ≥ 30° or contrast = 0.2".

        Exact when a few boxes cover the set; otherwise the few boxes that explain most of it
        (each at least `min_purity` inside the set), with how well they match stated.
        """
        exact = self.box_cover(cells)
        if len(exact) <= max_boxes:
            return self._join_boxes(exact)
        inside = np.zeros(self.shape, dtype=bool)
        inside[tuple(self.coords(sorted(cells)).T)] = True
        ranges = [[(lo, hi) for lo in range(n) for hi in range(lo, n)] for n in self.shape]
        covered = np.zeros(self.shape, dtype=bool)
        chosen = []
        for _ in range(max_boxes):
            best, best_gain = None, 0
            for combo in itertools.product(*ranges):
                sl = tuple(slice(lo, hi + 1) for lo, hi in combo)
                box_in = inside[sl]
                if box_in.mean() < min_purity:
                    continue
                gain = int((box_in & ~covered[sl]).sum()) - int((~box_in & ~covered[sl]).sum())
                if gain > best_gain:
                    best, best_gain = combo, gain
            if best is None:
                break
            covered[tuple(slice(lo, hi + 1) for lo, hi in best)] = True
            chosen.append((np.array([lo for lo, _ in best]), np.array([hi for _, hi in best])))
        if not chosen:
            return self._join_boxes(exact)
        hit, extra = int((covered & inside).sum()), int((covered & ~inside).sum())
        return f"mostly {self._join_boxes(chosen)} ({hit} of its {int(inside.sum())} cells; {extra} other cells in that region)"

    def grid_distance(self) -> np.ndarray:
        """(n_cells, n_cells) L1 distance in level steps: the grid's own ground metric."""
        c = self.all_coords()
        return np.abs(c[:, None, :] - c[None, :, :]).sum(-1).astype(np.float64)

    def neighbours(self, cell: int) -> list[int]:
        """Cells one level away along exactly one axis."""
        c = self.coords([cell])[0]
        out = []
        for k, n in enumerate(self.shape):
            for d in (-1, 1):
                if 0 <= c[k] + d < n:
                    nc = c.copy()
                    nc[k] += d
                    out.append(int(self.index(nc[None])[0]))
        return out
