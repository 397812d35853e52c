"""Human feedback: a CSV saying which failure modes matter, turned into a mitigation plan.

Columns: `selector` and `decision` are required; `weight`, `note`, `mode` and `description` are
optional (`mode`/`description` are only there for the reader: rows are matched by selector, so
they stay valid when cluster ids change).

Selector grammar (over the concept space's axes and levels):
    selector    := "*" | conjunction ( "|" conjunction )*
    conjunction := condition ( "&" condition )*
    condition   := axis op level        op ∈ {=, ==, !=, <, <=, >, >=}
`level` must be one of the axis's levels. Decision is `fix` or `accept`; 0 < weight <= 1e6 (default 1).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from failfade import FailfadeError
from failfade.concepts import ConceptSpace
from failfade.textfile import NotUtf8, utf8_text

REQUIRED = ("selector", "decision")
OPTIONAL = ("mode", "description", "weight", "note")
# weights are relative sampling weights; past this their sums overflow in the mitigation's sampler
# (1e308 twice is inf: numpy refused the probabilities, torch.multinomial drew one cell only)
MAX_WEIGHT = 1e6
DECISIONS = ("fix", "accept")
_COND = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=|<=|>=|=|<|>)\s*(-?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|[A-Za-z_][A-Za-z0-9_'-]*)\s*$")
_OPS = {
    "=": np.equal, "==": np.equal, "!=": np.not_equal,
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
}


SHOWN = 20  # problems printed in full; the rest are counted by kind


class FeedbackError(FailfadeError):
    def __init__(self, path, problems: list[str]):
        self.problems = problems
        shown = problems[:SHOWN]
        rest = problems[SHOWN:]
        if rest:
            kinds: dict[str, int] = {}
            for p in rest:  # "line 9: duplicate of line 2 (...)" -> "duplicate of line 2 (...)"
                kind = p.split(": ", 1)[-1].split(" (")[0]
                kinds[kind] = kinds.get(kind, 0) + 1
            top = sorted(kinds.items(), key=lambda kv: -kv[1])[:5]
            shown = shown + [f"... and {len(rest)} more: " + "; ".join(f"{n} × {k}" for k, n in top)
                             + ("; ..." if len(kinds) > 5 else "")]
        if len(problems) == 1:
            super().__init__(f"{path}: invalid feedback: {problems[0]}")
        else:
            super().__init__(f"{path}: invalid feedback ({len(problems)} problem(s)):\n  " + "\n  ".join(shown))


def parse_selector(text: str, space: ConceptSpace) -> np.ndarray:
    """Cells matched by a selector, as a sorted array; raises ValueError with the reason."""
    text = (text or "").strip()
    if not text:
        raise ValueError("empty selector")
    if text == "*":
        return np.arange(space.n_cells)
    coords = space.all_coords()
    matched = np.zeros(space.n_cells, dtype=bool)
    for conj in text.split("|"):
        keep = np.ones(space.n_cells, dtype=bool)
        for cond in conj.split("&"):
            m = _COND.match(cond)
            if not m:
                raise ValueError(f"cannot read condition {cond.strip()!r} (expected e.g. rotation>=30)")
            name, op, text = m.group(1), m.group(2), m.group(3)
            try:
                k = [a.name for a in space.axes].index(name)
            except ValueError:
                raise ValueError(f"unknown axis {name!r}; axes are {[a.name for a in space.axes]}") from None
            axis = space.axes[k]
            levels = np.asarray(axis.levels)
            if axis.words:  # word levels: named by their word, compared by their listed order
                if text not in axis.words:
                    raise ValueError(f"unknown level {text!r} for axis {name!r}; levels are {list(axis.words)}")
                hits = np.array([axis.words.index(text)])
            else:
                try:
                    value = float(text)
                except ValueError:
                    raise ValueError(f"unknown level {text!r} for axis {name!r}; levels are {[axis.text(v) for v in levels]}") from None
                # the nearest level, if it is this value as written (selectors print levels with 6
                # significant digits, or all of them where two levels would read alike: Axis.text):
                # never the first of several levels within tolerance
                near = int(np.argmin(np.abs(levels - value)))
                hits = np.array([near]) if np.isclose(levels[near], value, rtol=1e-5, atol=0.0) else np.array([], int)
                if len(hits) == 0:
                    raise ValueError(f"unknown level {value:g} for axis {name!r}; levels are {[axis.text(v) for v in levels]}")
            keep &= _OPS[op](levels[coords[:, k]], levels[hits[0]])  # compare values, whatever the level order
        matched |= keep
    return np.flatnonzero(matched)


@dataclass
class Row:
    line: int
    selector: str
    decision: str
    weight: float
    note: str
    cells: np.ndarray
    overlaps: list = field(default_factory=list)  # partial overlaps with rows that decide the other way


class CsvLines:
    """A CSV text's lines as csv reads them (newline="": quoted line breaks stay in their field and
    only \r, \n end a line, not U+2028 or a form feed), counting the lines it hands out, so that a
    record is named by the line where it starts: after a quoted line break, csv's line_num is its
    last line, and after blank lines (which DictReader skips) the line after the previous record
    is not where the next one starts."""

    def __init__(self, text: str):
        self._lines = io.StringIO(text, newline="")
        self.count = 0  # lines handed out so far
        self._since: list[str] = []  # those since the current record began

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.count += 1
        self._since.append(line)
        return line

    def begin(self) -> None:
        self._since = []

    def start(self) -> int:
        """The line where the record read since begin() starts: its first line that is not blank."""
        first = self.count - len(self._since) + 1
        for i, line in enumerate(self._since):
            if line.strip("\r\n"):
                return first + i
        return max(first, 1)


def csv_records(text: str, path: Path) -> tuple[csv.DictReader, Iterator[tuple[int, dict]]]:
    """A strict DictReader over `text` and its records as (line where the record starts, record);
    a CSV syntax error (an unclosed quote, a field over the csv module's size limit) is a
    FeedbackError naming the line where its record starts."""
    lines = CsvLines(text)
    reader = csv.DictReader(lines, strict=True)

    def records():
        while True:
            lines.begin()
            try:
                raw = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                hint = ("a field this long is not a feedback row's: is this the right file?" if "field limit" in str(e)
                        else "a quoted field must close its quote")
                raise FeedbackError(path, [f"line {lines.start()}: not readable as CSV ({e}); {hint}"]) from None
            yield lines.start(), raw

    return reader, records()


def read_feedback(path: Path, space: ConceptSpace, explored_cells) -> list[Row]:
    """Validate every row; collect all problems, then raise one FeedbackError naming file and lines."""
    path = Path(path)
    if not path.is_file():
        raise FeedbackError(path, ["file not found"])
    try:
        data = path.read_bytes()
    except OSError as e:  # unreadable (permissions, a broken mount): named, not a traceback
        raise FeedbackError(path, [f"cannot be read ({e.strerror or type(e).__name__})"]) from None
    try:
        text = utf8_text(data)
    except NotUtf8 as e:
        raise FeedbackError(path, [f"line {e.line}: not UTF-8 text (byte 0x{e.byte:02x}); save the file as "
                                   "UTF-8 CSV (a spreadsheet's 'CSV UTF-8' format)"]) from None
    if not text.strip():
        raise FeedbackError(path, ["line 1: empty file: expected a header line with columns selector,decision[,weight,note]"])
    # strict: an unclosed quote is an error, not a field that swallows the rows after it; newline="":
    # quoted line breaks stay in their field and only \r, \n end a line (not U+2028 or a form feed)
    reader, records = csv_records(text, path)
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
    except csv.Error as e:
        raise FeedbackError(path, [f"line 1: not readable as CSV ({e})"]) from None
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise FeedbackError(path, [f"line 1: column(s) {repeated} appear more than once"])
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"line 1: header lacks column(s) {missing}")
        if unknown:
            problems.append(f"line 1: unknown column(s) {unknown}; allowed: {list(REQUIRED + OPTIONAL)}")
        sep = next((c for c in ";\t|" if len(header) == 1 and c in header[0]), None)
        if sep:  # a spreadsheet's regional setting (';') or a TSV: the whole header read as one column
            problems.append(f"line 1: the header is one column holding {sep!r}: the file is separated by {sep!r}, "
                            "not commas; save it as comma-separated CSV")
        raise FeedbackError(path, problems)
    explored = set(int(c) for c in explored_cells)
    problems, rows, parsed = [], [], {}
    for line, raw in records:
        if None in raw:  # csv puts surplus fields under the key None
            problems.append(f"line {line}: more fields than header columns")
            continue
        if None in raw.values():  # ... and fills missing ones with None
            problems.append(f"line {line}: fewer fields than header columns")
            continue
        raw = {k.strip(): v.strip() for k, v in raw.items()}
        if not any(raw.values()):
            continue  # blank line
        decision = raw.get("decision", "").lower()
        if decision not in DECISIONS:
            problems.append(f"line {line}: decision {raw.get('decision', '')!r} is not one of {list(DECISIONS)}")
            continue
        weight = 1.0
        if raw.get("weight"):
            try:  # a plain decimal: Python's float also reads "1_000" as 1000, which a spreadsheet never means
                weight = float(raw["weight"]) if "_" not in raw["weight"] else float("nan")
            except ValueError:
                weight = float("nan")
            if not np.isfinite(weight) or weight <= 0 or weight > MAX_WEIGHT:
                problems.append(f"line {line}: weight {raw['weight']!r} must be a positive number, at most {MAX_WEIGHT:g}")
                continue
        try:
            text = raw.get("selector", "")
            if text not in parsed:  # a long file repeats selectors: parse each once
                parsed[text] = parse_selector(text, space)
            cells = parsed[text]
        except ValueError as e:
            problems.append(f"line {line}: selector {raw.get('selector', '')!r}: {e}")
            continue
        if len(cells) == 0:
            problems.append(f"line {line}: selector {raw['selector']!r} matches no cell of the concept space")
            continue
        if not explored.intersection(cells.tolist()):
            problems.append(f"line {line}: selector {raw['selector']!r} matches no explored cell")
            continue
        rows.append(Row(line, raw["selector"], decision, weight, raw.get("note", ""), cells))
    last_line = reader.line_num
    if not rows and not problems:
        problems.append("line 1: no feedback rows after the header")
    seen: dict[tuple, int] = {}
    for r in rows:
        key = tuple(r.cells.tolist())
        if key in seen:
            problems.append(f"line {r.line}: duplicate of line {seen[key]} (selects the same cells)")
        else:
            seen[key] = r.line
    # Overlapping rows that decide differently. Failure modes are slices and may share cells, so
    # "fix mode 1, accept mode 2" is a normal file: on the cells both select, fix wins (the plan
    # lists each overlap). One row inside the other ("rotation>=30 fix, rotation=40 accept") is an
    # exception that a flat list cannot express: that is an error, as is the same cell set twice.
    overlaps = []
    unique, seen_sets = [], set()  # a repeated cell set is already a duplicate: check each set once
    for r in rows:
        k = tuple(r.cells.tolist())
        if k not in seen_sets:
            seen_sets.add(k)
            unique.append(r)
    by_cell: dict[str, dict[int, list[int]]] = {d: {} for d in DECISIONS}
    for i, r in enumerate(unique):
        for c in r.cells.tolist():
            by_cell[r.decision].setdefault(c, []).append(i)
    shared_count: dict[tuple[int, int], int] = {}  # (earlier row, later row) deciding differently -> shared cells
    first_shared: dict[tuple[int, int], int] = {}
    for c, fixers in by_cell["fix"].items():
        for a in fixers:
            for b in by_cell["accept"].get(c, ()):
                pair = (min(a, b), max(a, b))
                shared_count[pair] = shared_count.get(pair, 0) + 1
                first_shared.setdefault(pair, c)
    reported = set()
    for (i, j), n in sorted(shared_count.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        a, b = unique[i], unique[j]
        if n == len(a.cells) or n == len(b.cells):
            if j not in reported:  # one problem per later line, against the first line it contradicts
                reported.add(j)
                problems.append(
                    f"line {b.line}: contradicts line {a.line}: both select {space.describe_cell(first_shared[(i, j)])}"
                    f" ({n} shared cell(s)) and one lies inside the other, but they decide {b.decision!r} vs "
                    f"{a.decision!r}; to fix all but a part, list the parts to fix"
                )
            continue
        fix_line, accept_line = (a.line, b.line) if a.decision == "fix" else (b.line, a.line)
        overlaps.append({"fix_line": fix_line, "accept_line": accept_line, "cells": n})
    for r in rows:
        r.overlaps = [o for o in overlaps if r.line in (o["fix_line"], o["accept_line"])]
    if rows and not problems and not any(r.decision == "fix" for r in rows):
        problems.append(f"line {last_line}: no row says `fix` (lines 2-{last_line} all accept): there is nothing to mitigate")
    if problems:
        raise FeedbackError(path, problems)
    return rows


def mitigation_plan(rows: list[Row], space: ConceptSpace, explored_cells, source: str) -> dict:
    """Cells to fade (only explored ones: a row's cells that the exploration never visited are left
    out, and counted in its `cells_not_explored`) with weights; overlapping fix rows keep the largest
    weight; a cell shared by a fix row and an accept row (a partial overlap) is fixed, listed in
    `overlaps`."""
    explored = set(int(c) for c in explored_cells)
    weights: dict[int, float] = {}
    accept: set[int] = set()
    for r in rows:
        for c in r.cells.tolist():
            if c not in explored:
                continue
            if r.decision == "fix":
                weights[c] = max(weights.get(c, 0.0), r.weight)
            else:
                accept.add(c)
    accept -= set(weights)  # on cells that a fix row and an accept row share, fix wins
    overlaps = {(o["fix_line"], o["accept_line"]): o for r in rows for o in getattr(r, "overlaps", [])}
    return {
        "feedback": source,
        "overlaps": [{**o, "resolved": "fix"} for o in overlaps.values()],
        "fix": [
            {"cell": c, "weight": w, "levels": {a.name: a.levels[i] for a, i in zip(space.axes, space.coords([c])[0])},
             "description": space.describe_cell(c)}
            for c, w in sorted(weights.items())
        ],
        "accept": sorted(accept),
        "rows": [{"line": r.line, "selector": r.selector, "decision": r.decision, "weight": r.weight, "note": r.note,
                  "n_cells": int(len(r.cells)),
                  # matched but never explored: left out of the plan (no evidence they fail), said here
                  "cells_not_explored": int(sum(int(c) not in explored for c in r.cells.tolist()))} for r in rows],
    }


def write_plan(plan: dict, path: Path) -> None:
    Path(path).write_text(json.dumps(plan, indent=2) + "\n")


def read_plan(path: Path) -> dict:
    from failfade import unreadable

    try:
        plan = json.loads(Path(path).read_text())
        if not isinstance(plan, dict) or "fix" not in plan:
            raise ValueError("no 'fix' list")
        # the feedback stage never writes an empty one (a plan must fix something): an edited file
        if not isinstance(plan["fix"], list) or not plan["fix"] or not all(
                isinstance(f, dict) and isinstance(f.get("cell"), int) for f in plan["fix"]):
            raise ValueError("'fix' is not a non-empty list of cells")
        return plan
    except (ValueError, UnicodeDecodeError) as e:
        raise unreadable(path, e, "a mitigation plan (JSON)") from None
