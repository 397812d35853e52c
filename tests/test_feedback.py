"""Human feedback CSVs: selectors, mitigation plans and every way a file can be wrong."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from failfade import FailfadeError
from failfade.concepts import ConceptSpace
from failfade.feedback import FeedbackError, mitigation_plan, parse_selector, read_feedback
from failfade.tasks.classification.transforms import TRANSFORMS

REPO = Path(__file__).resolve().parents[1]

ROT = [0, 10, 20, 30, 40]
BLUR = [0, 1, 1.5, 2, 2.5]
CON = [1, 0.6, 0.4, 0.3, 0.2]


@pytest.fixture
def space() -> ConceptSpace:
    return ConceptSpace.from_config([
        {"name": "rotation", "transform": "rotate", "levels": ROT, "unit": "°"},
        {"name": "blur", "transform": "gaussian_blur", "levels": BLUR, "unit": "px"},
        {"name": "contrast", "transform": "contrast", "levels": CON},
    ], TRANSFORMS)


ALL = list(range(125))


def cells_where(pred) -> list[int]:
    """Cells (25*i + 5*j + k) whose level values satisfy pred(rotation, blur, contrast)."""
    return [25 * i + 5 * j + k for i in range(5) for j in range(5) for k in range(5) if pred(ROT[i], BLUR[j], CON[k])]


def write(tmp_path: Path, text: str, name: str = "feedback.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# --- selectors --------------------------------------------------------------------------------

def test_selector_star_is_everything(space):
    assert parse_selector("*", space).tolist() == ALL


@pytest.mark.parametrize(
    "text,pred",
    [
        ("rotation>=30", lambda r, b, c: r >= 30),
        ("rotation > 20", lambda r, b, c: r > 20),
        ("rotation<10", lambda r, b, c: r < 10),
        ("rotation=20", lambda r, b, c: r == 20),
        ("rotation==20", lambda r, b, c: r == 20),
        ("rotation!=20", lambda r, b, c: r != 20),
        ("blur<=1.5", lambda r, b, c: b <= 1.5),
        ("contrast<=0.3", lambda r, b, c: c <= 0.3),
        ("contrast>0.4", lambda r, b, c: c > 0.4),
        ("rotation>=30 & contrast<=0.3", lambda r, b, c: r >= 30 and c <= 0.3),
        ("rotation>=30 | contrast=0.2", lambda r, b, c: r >= 30 or c == 0.2),
        ("rotation<=10 & blur>=2 | contrast=1", lambda r, b, c: (r <= 10 and b >= 2) or c == 1),
    ],
)
def test_selector_semantics(space, text, pred):
    assert parse_selector(text, space).tolist() == cells_where(pred)


def test_selector_compares_values_on_descending_axis(space):
    cells = parse_selector("contrast<=0.3", space)
    assert len(cells) == 50
    # contrast positions 3 and 4 hold 0.3 and 0.2
    assert set(space.coords(cells)[:, 2].tolist()) == {3, 4}
    # "<" on values, not positions: contrast < 0.6 is 0.4, 0.3, 0.2 (positions 2..4)
    assert set(space.coords(parse_selector("contrast<0.6", space))[:, 2].tolist()) == {2, 3, 4}


@pytest.mark.parametrize(
    "text,reason",
    [
        ("", "empty selector"),
        ("angle>=30", "unknown axis 'angle'"),
        ("rotation>=35", "unknown level 35"),
        ("rotation=>30", "cannot read condition"),
        ("rotation>=thirty", "unknown level 'thirty' for axis 'rotation'; levels are"),
        ("rotation>=30 &", "cannot read condition"),
    ],
)
def test_bad_selectors_raise_value_error(space, text, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_selector(text, space)


# --- a valid file -----------------------------------------------------------------------------

VALID = (
    "selector,decision,weight,note\n"
    "rotation>=30,fix,2,tilted scans\n"
    "rotation=40 | blur=2.5 & contrast=1,fix,3,\n"
    "rotation<=20 & contrast=0.2,accept,,too faint\n"
)


def test_valid_file_rows(space, tmp_path):
    rows = read_feedback(write(tmp_path, VALID), space, ALL)
    assert [r.line for r in rows] == [2, 3, 4]
    assert [r.decision for r in rows] == ["fix", "fix", "accept"]
    assert [r.weight for r in rows] == [2.0, 3.0, 1.0]  # empty weight -> default 1
    assert rows[0].note == "tilted scans"
    assert rows[0].cells.tolist() == cells_where(lambda r, b, c: r >= 30)
    assert rows[1].cells.tolist() == cells_where(lambda r, b, c: r == 40 or (b == 2.5 and c == 1))
    assert rows[2].cells.tolist() == cells_where(lambda r, b, c: r <= 20 and c == 0.2)


def test_mitigation_plan(space, tmp_path):
    rows = read_feedback(write(tmp_path, VALID), space, ALL)
    plan = mitigation_plan(rows, space, ALL, "feedback.csv")
    fix = {f["cell"]: f["weight"] for f in plan["fix"]}
    rot30 = set(cells_where(lambda r, b, c: r >= 30))
    row2 = set(cells_where(lambda r, b, c: r == 40 or (b == 2.5 and c == 1)))
    assert set(fix) == rot30 | row2
    for c in fix:
        # overlapping fix rows keep the largest weight
        assert fix[c] == (3.0 if c in row2 else 2.0)
    assert plan["accept"] == cells_where(lambda r, b, c: r <= 20 and c == 0.2)
    assert [f["cell"] for f in plan["fix"]] == sorted(fix)
    first = plan["fix"][0]
    i, j, k = np.unravel_index(first["cell"], (5, 5, 5))
    assert first["levels"] == {"rotation": ROT[i], "blur": BLUR[j], "contrast": CON[k]}
    assert plan["feedback"] == "feedback.csv"
    assert [r["n_cells"] for r in plan["rows"]] == [50, len(row2), 15]


def test_mitigation_plan_only_explored_cells(space, tmp_path):
    explored = cells_where(lambda r, b, c: b == 0)  # 25 cells
    rows = read_feedback(write(tmp_path, VALID), space, explored)
    plan = mitigation_plan(rows, space, explored, "f")
    assert [f["cell"] for f in plan["fix"]] == cells_where(lambda r, b, c: b == 0 and r >= 30)
    assert [f["weight"] for f in plan["fix"]] == [2.0 if ROT[f["cell"] // 25] == 30 else 3.0 for f in plan["fix"]]
    assert {f["weight"] for f in plan["fix"]} == {2.0, 3.0}
    assert plan["accept"] == cells_where(lambda r, b, c: b == 0 and r <= 20 and c == 0.2)
    # the rows say how many of their cells were left out as never explored
    assert [r["cells_not_explored"] for r in plan["rows"]] == [r["n_cells"] - n for r, n in
                                                                zip(plan["rows"], (10, 5, 3))]


def test_overlapping_fix_rows_keep_largest_weight_whatever_the_order(space, tmp_path):
    text = "selector,decision,weight\nrotation=40,fix,5\nrotation>=30,fix,2\nrotation>=20 & blur=0,fix,0.5\n"
    rows = read_feedback(write(tmp_path, text), space, ALL)
    fix = {f["cell"]: f["weight"] for f in mitigation_plan(rows, space, ALL, "f")["fix"]}
    expected = {c: (5.0 if ROT[c // 25] == 40 else 2.0 if ROT[c // 25] == 30 else 0.5)
                for c in cells_where(lambda r, b, c: r >= 30 or (r >= 20 and b == 0))}
    assert fix == expected


def test_decision_is_case_insensitive_and_optional_columns(space, tmp_path):
    text = "mode,description,selector,decision\n1,tilted,rotation>=30,FIX\n"
    rows = read_feedback(write(tmp_path, text), space, ALL)
    assert rows[0].decision == "fix" and rows[0].weight == 1.0


def test_blank_lines_skipped_and_line_numbers_kept(space, tmp_path):
    # a line of empty fields counts as blank too
    assert len(read_feedback(write(tmp_path, "selector,decision,note\n,,\nrotation>=30,fix,\n ,,\n"), space, ALL)) == 1
    text = "selector,decision\n\nrotation>=30,fix\n\nrotation=0,maybe\n"
    with pytest.raises(FeedbackError, match=r"line 5: decision 'maybe'"):
        read_feedback(write(tmp_path, text), space, ALL)


def test_shipped_digits_feedback_is_valid():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    exp = cfg["experiments"]["digits"]
    space = ConceptSpace.from_config(exp["concepts"], TRANSFORMS)
    path = REPO / exp["feedback"]
    rows = read_feedback(path, space, range(space.n_cells))
    assert any(r.decision == "fix" for r in rows)
    plan = mitigation_plan(rows, space, range(space.n_cells), str(path))
    assert len(plan["fix"]) > 0
    assert not set(f["cell"] for f in plan["fix"]) & set(plan["accept"])


# --- every bad case -------------------------------------------------------------------------

BAD = {
    "missing_column": ("selector,weight\nrotation>=30,1\n", 1, "header lacks column(s) ['decision']"),
    "unknown_column": ("selector,decision,colour\nrotation>=30,fix,red\n", 1, "unknown column(s) ['colour']"),
    "unknown_axis": ("selector,decision\nangle>=30,fix\n", 2, "unknown axis 'angle'"),
    "unknown_level": ("selector,decision\nrotation>=35,fix\n", 2, "unknown level 35"),
    "malformed_condition": ("selector,decision\nrotation=>30,fix\n", 2, "cannot read condition"),
    "empty_selector": ("selector,decision\n,fix\n", 2, "empty selector"),
    "unknown_decision": ("selector,decision\nrotation>=30,maybe\n", 2, "decision 'maybe' is not one of"),
    "zero_weight": ("selector,decision,weight\nrotation>=30,fix,0\n", 2, "weight '0' must be a positive number"),
    "negative_weight": ("selector,decision,weight\nrotation>=30,fix,-2\n", 2, "weight '-2' must be a positive number"),
    "non_numeric_weight": ("selector,decision,weight\nrotation>=30,fix,heavy\n", 2, "weight 'heavy' must be a positive number"),
    "underscored_weight": ("selector,decision,weight\nrotation>=30,fix,1_000\n", 2, "weight '1_000' must be a positive number"),
    "nan_weight": ("selector,decision,weight\nrotation>=30,fix,nan\n", 2, "weight 'nan' must be a positive number"),
    # 1e308 twice overflowed the mitigation sampler's sums (numpy refused; torch drew one cell only)
    "huge_weight": ("selector,decision,weight\nrotation>=30,fix,1e308\n", 2, "weight '1e308' must be a positive number, at most 1e+06"),
    "duplicate": (
        "selector,decision\nrotation>=30,fix\nrotation>20,fix\n", 3, "duplicate of line 2 (selects the same cells)"
    ),
    "contradiction": (
        "selector,decision\nrotation>=30,fix\nrotation=40 & contrast<=0.2,accept\n", 3, "contradicts line 2"
    ),
    "too_many_fields": ("selector,decision\nrotation>=30,fix,extra\n", 2, "more fields than header columns"),
    "matches_no_cell": ("selector,decision\nrotation>40,fix\n", 2, "matches no cell of the concept space"),
    # an unclosed quote used to swallow every row after it into one note
    "unclosed_quote": ('selector,decision,note\nrotation>=30,fix,"tilted\nrotation=0 & blur=2.5,accept,ok\n'
                       'blur>=2,fix,x\n', 2, "not readable as CSV"),
    "repeated_column": ("selector,decision,decision\nrotation>=30,accept,fix\n", 1,
                        "column(s) ['decision'] appear more than once"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_file_names_path_line_and_reason(space, tmp_path, case):
    text, line, reason = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(FeedbackError) as ei:
        read_feedback(path, space, ALL)
    msg = str(ei.value)
    assert str(path) in msg
    assert f"line {line}:" in msg
    assert reason in msg
    assert isinstance(ei.value, FailfadeError)


def test_a_bad_byte_after_a_byte_order_mark_is_named_by_its_own_line_and_value(space, tmp_path):
    """Decoded as utf-8-sig, the error's offset counted from after the BOM: the wrong byte (0x74 for
    0xe9), and line 1 for a byte on line 2."""
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfselector,decision,note\n\xe9rotation>=30,fix,x\n")
    with pytest.raises(FeedbackError, match=r"line 2: not UTF-8 text \(byte 0xe9\)"):
        read_feedback(path, space, ALL)


def test_quoted_line_breaks_and_unusual_separators_stay_in_the_note(space, tmp_path):
    path = write(tmp_path, 'selector,decision,note\nrotation>=30,fix,"two\nlines"\nblur=2.5 & rotation=0,accept,a\u2028b\fc\n')
    rows = read_feedback(path, space, ALL)
    assert [r.note for r in rows] == ["two\nlines", "a\u2028b\fc"] and [r.line for r in rows] == [2, 4]


def test_rows_are_named_by_the_line_where_they_start_after_blank_lines(space, tmp_path):
    """DictReader skips blank lines: counting from the line after the previous record named the
    blank line instead of the row (and a quoted line break's row by its last line)."""
    path = write(tmp_path, 'selector,decision,note\nrotation>=30,fix,"two\nlines"\n\n\nrotation>=30,maybe,x\n')
    with pytest.raises(FeedbackError) as ei:
        read_feedback(path, space, ALL)
    assert "line 6: decision 'maybe'" in str(ei.value)
    path = write(tmp_path, 'selector,decision,note\nrotation>=30,fix,x\n\n\nblur>=2,fix,"open\n')
    with pytest.raises(FeedbackError, match="line 5: not readable as CSV"):
        read_feedback(path, space, ALL)


def test_a_field_over_the_csv_limit_names_its_line(space, tmp_path):
    """Named by its line, and not blamed on a quote (the field has none)."""
    path = write(tmp_path, "selector,decision,note\nrotation>=30,fix,ok\nblur=2.5,accept," + "x" * 200_000 + "\n")
    with pytest.raises(FeedbackError, match="line 3: not readable as CSV") as ei:
        read_feedback(path, space, ALL)
    assert "quote" not in str(ei.value) and "is this the right file?" in str(ei.value)


@pytest.mark.parametrize("sep", [";", "\t"])
def test_a_file_separated_by_semicolons_or_tabs_is_named_as_such(space, tmp_path, sep):
    """A spreadsheet with a ';' regional setting (or a TSV) read as one column per line: the header
    problem says which separator it found, for decisions and for a t2i ratings file alike (its
    image_id column is not seen, so it is read as decisions)."""
    for header in (f"selector{sep}decision", f"image_id{sep}cell{sep}bias{sep}quality{sep}rater"):
        path = write(tmp_path, f"{header}\nrotation>=30{sep}fix\n")
        with pytest.raises(FeedbackError, match=re.escape(f"separated by {sep!r}, not commas")):
            read_feedback(path, space, ALL)


def test_a_level_is_matched_to_the_nearest_not_the_first_close_one():
    """np.isclose's default tolerance took the first level within 1e-8 (absolute) or 1e-5 (relative)."""
    tiny = ConceptSpace.from_config([{"name": "noise", "transform": "contrast", "levels": [1e-9, 2e-9, 5e-9]}], TRANSFORMS)
    assert parse_selector("noise=5e-9", tiny).tolist() == [2] and parse_selector("noise=2e-09", tiny).tolist() == [1]
    big = ConceptSpace.from_config([{"name": "big", "transform": "contrast", "levels": [1000000, 1000005, 1000010]}],
                                   TRANSFORMS)
    assert parse_selector("big=1000010", big).tolist() == [2]
    with pytest.raises(ValueError, match="unknown level"):
        parse_selector("big=1000100", big)
    third = ConceptSpace.from_config([{"name": "t", "transform": "contrast", "levels": [1 / 3, 2 / 3, 1.0]}], TRANSFORMS)
    assert parse_selector(f"t={2 / 3:g}", third).tolist() == [1]  # as selectors print it: 6 significant digits


def test_contradiction_message_names_a_shared_cell(space, tmp_path):
    path = write(tmp_path, "selector,decision\nrotation>=30,fix\nrotation>=30 & contrast<=0.2,accept\n")
    with pytest.raises(FeedbackError) as ei:
        read_feedback(path, space, ALL)
    # the accept row lies inside the fix row: 2 * 5 * 1 = 10 cells
    assert "(10 shared cell(s))" in str(ei.value) and "one lies inside the other" in str(ei.value)
    assert "'accept' vs 'fix'" in str(ei.value)


def test_non_overlapping_fix_and_accept_are_fine(space, tmp_path):
    path = write(tmp_path, "selector,decision\nrotation>=30,fix\nrotation<=20 & contrast<=0.2,accept\n")
    assert len(read_feedback(path, space, ALL)) == 2


def test_selector_matching_no_explored_cell(space, tmp_path):
    path = write(tmp_path, "selector,decision\nrotation>=30,fix\nrotation=0 & blur=2.5,fix\n")
    explored = [c for c in ALL if c not in cells_where(lambda r, b, c: r == 0 and b == 2.5)]
    with pytest.raises(FeedbackError) as ei:
        read_feedback(path, space, explored)
    msg = str(ei.value)
    assert str(path) in msg
    assert "line 3:" in msg and "matches no explored cell" in msg
    assert ei.value.problems == [p for p in ei.value.problems if p.startswith("line 3:")]
    # with every cell explored the same file is valid
    assert len(read_feedback(path, space, ALL)) == 2


FILE_LEVEL = {
    "empty_file": ("", "empty file"),
    "whitespace_only": ("  \n\n", "empty file"),
    "header_only": ("selector,decision,weight,note\n", "no feedback rows after the header"),
    "only_accept": ("selector,decision\nrotation>=30,accept\ncontrast=0.2 & rotation<=20,accept\n", "no row says `fix`"),
}


@pytest.mark.parametrize("case", sorted(FILE_LEVEL))
def test_file_level_problem_names_path_and_reason(space, tmp_path, case):
    text, reason = FILE_LEVEL[case]
    path = write(tmp_path, text)
    with pytest.raises(FeedbackError) as ei:
        read_feedback(path, space, ALL)
    assert str(path) in str(ei.value)
    assert reason in str(ei.value)


@pytest.mark.parametrize("case", sorted(FILE_LEVEL))
def test_file_level_problem_names_a_line(space, tmp_path, case):
    text, _ = FILE_LEVEL[case]
    path = write(tmp_path, text)
    with pytest.raises(FeedbackError) as ei:
        read_feedback(path, space, ALL)
    assert re.search(r"\bline \d+", str(ei.value))


def test_missing_file(space, tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(FeedbackError) as ei:
        read_feedback(path, space, ALL)
    assert str(path) in str(ei.value)
    assert "file not found" in str(ei.value)


def test_row_with_too_few_fields(space, tmp_path):
    path = write(tmp_path, "selector,decision\nrotation>=30,fix\nrotation=0\n")
    with pytest.raises(FeedbackError) as ei:
        read_feedback(path, space, ALL)
    assert str(path) in str(ei.value) and "line 3:" in str(ei.value)


def test_several_problems_reported_together(space, tmp_path):
    text = (
        "selector,decision,weight\n"
        "rotation>=30,fix,1\n"       # 2: fine
        "angle>=30,fix,1\n"          # 3: unknown axis
        "rotation>=10,perhaps,1\n"   # 4: unknown decision
        "blur=2,fix,-1\n"            # 5: bad weight
        "rotation=>3,fix,\n"         # 6: malformed condition
        "rotation>20,fix,2\n"        # 7: duplicate of line 2
        "rotation=40 & contrast=0.2,accept,\n"  # 8: inside line 2, deciding the other way
        "rotation=15,fix,\n"         # 9: unknown level
    )
    path = write(tmp_path, text)
    with pytest.raises(FeedbackError) as ei:
        read_feedback(path, space, ALL)
    problems = ei.value.problems
    lines = sorted(int(re.match(r"line (\d+):", p).group(1)) for p in problems)
    assert lines == [3, 4, 5, 6, 7, 8, 9]
    msg = str(ei.value)
    assert str(path) in msg and "7 problem(s)" in msg
    for reason in ("unknown axis", "is not one of", "positive number", "cannot read condition",
                   "duplicate of line 2", "contradicts line 2", "unknown level 15"):
        assert reason in msg


def test_header_with_missing_and_unknown_columns_reports_both(space, tmp_path):
    path = write(tmp_path, "selector,verdict\nrotation>=30,fix\n")
    with pytest.raises(FeedbackError) as ei:
        read_feedback(path, space, ALL)
    assert len(ei.value.problems) == 2
    assert all(p.startswith("line 1:") for p in ei.value.problems)
    assert "['decision']" in str(ei.value) and "['verdict']" in str(ei.value)


def test_partly_overlapping_fix_and_accept_rows_fix_the_shared_cells(space, tmp_path):
    # failure modes are slices and may share cells: fix one, accept the other
    path = tmp_path / "feedback.csv"
    path.write_text("selector,decision\nrotation>=30,fix\ncontrast<=0.2,accept\n")
    rows = read_feedback(path, space, ALL)
    plan = mitigation_plan(rows, space, ALL, str(path))
    fixed = {f["cell"] for f in plan["fix"]}
    shared = set(rows[0].cells.tolist()) & set(rows[1].cells.tolist())
    assert shared and shared <= fixed and not shared & set(plan["accept"])
    assert fixed == set(rows[0].cells.tolist())
    assert set(plan["accept"]) == set(rows[1].cells.tolist()) - shared
    assert plan["overlaps"] == [{"fix_line": 2, "accept_line": 3, "cells": len(shared), "resolved": "fix"}]


@pytest.mark.parametrize("levels", [(1234567.0, 1234568.0, 2e6), (1.0, 1.000001, 2.0)])
def test_a_selector_names_its_cells_when_levels_agree_to_six_digits(levels):
    """Levels that read alike at 6 significant digits are written in full: `size=1.23457e+06` named
    the other level's cell, and `scale=1` the wrong one of 1 and 1.000001."""
    from failfade.concepts import Axis, ConceptSpace

    space = ConceptSpace([Axis("size", "darken", levels), Axis("b", "darken", (0.0, 0.5))])
    a = space.axes[0]
    for lo, hi in ((0, 0), (1, 1), (0, 1), (1, 2)):
        text = a.range_condition(lo, hi)
        want = [c for c in range(space.n_cells) if lo <= space.coords([c])[0][0] <= hi]
        assert parse_selector(text, space).tolist() == want, text
    assert len({a.label(i) for i in range(3)}) == 3


def test_an_unreadable_feedback_file_is_named(tmp_path, monkeypatch):
    """A file that exists but cannot be read (permissions, a broken mount) was a traceback."""
    from pathlib import Path

    from failfade.feedback import FeedbackError, read_feedback

    f = tmp_path / "fb.csv"
    f.write_text("selector,decision\nrotation>=30,fix\n")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(FeedbackError, match=r"fb.csv.*cannot be read \(Permission denied\)"):
        read_feedback(f, None, [])
