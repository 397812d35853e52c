"""Text perturbations for summarization: each axis edits a report with an intensity level.

  typo         rate in [0, 1]: each editable word gets one character edit (adjacent-key swap,
               deletion, insertion or repetition) with this probability. Names, cities, days and
               numbers are protected, so the reference stays reachable; event words can break. A
               word's punctuation (`bill.`), its capitals and the text's line breaks are kept.
  distractors  count: sentences shaped like the key or count sentence but about other people,
               places and numbers ("last year , ...", "... plans to ..."), mixed in after the key.
               A document read from a jsonl/csv file has no key sentence of its own (it is all
               `key`, with no fillers): its distractors follow its *lead*, the first sentence (or
               the first LEAD_WORDS words when that sentence runs longer), so they land inside the
               input the model sees; appended after the article, truncation cut them off.
  buried       count: neutral sentences placed *before* the key sentence (before the whole document
               read from a file), about 8 words each. They move the facts later in the input, and
               out of view once they outrun `model.max_input_tokens` (the builtin's 128 tokens: 12
               leave every held-out report's facts in view, unless typos lengthen its tokens, 16
               all but 3 of 200); at 512 or 1,024 tokens, 32 of them (about 250 words) move a news
               article's lead back but leave it in view.

A perturbed document is a pure function of (report, levels, seed, input id, cell): the same query
always gives the same text.
"""

from __future__ import annotations

import difflib
import itertools
import re

import numpy as np

from failfade.concepts import ConceptSpace
from failfade.tasks.summarization.corpus import CITIES, DAYS, EVENTS, FILLERS, FIRST, LAST, ROLES, UNITS, Report

TRANSFORMS = ("typo", "distractors", "buried")
# typo is a rate; distractors and buried count sentences, so their levels are whole numbers (checked
# with the config: a level of 0.3 sentences would be cut to 0 and two cells would be the same)
MAX_SENTENCES = 1000  # a count level's most sentences: far past any document here, and a bound on the work
LEVEL_RANGES = {"typo": (0.0, 1.0), "distractors": (0.0, float(MAX_SENTENCES)), "buried": (0.0, float(MAX_SENTENCES))}
COUNTS = frozenset({"distractors", "buried"})
LEAD_WORDS = 50  # a file document's lead: its first sentence, cut at this many words
_CLOSERS = "\"'\u201d\u2019)]"
KEYBOARD = "qwertyuiop asdfghjkl zxcvbnm"


def _neighbours(c: str) -> str:
    rows = KEYBOARD.split()
    for row in rows:
        i = row.find(c)
        if i >= 0:
            return row[max(i - 1, 0):i] + row[i + 1:i + 2]
    return c


_WORD = re.compile(r"\S+")
_CORE = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)  # a word's leading punctuation, its core, its trailing punctuation


def _edit(w: str, rng: np.random.Generator) -> str:
    """One character edit of `w` (adjacent-key swap, deletion, insertion or repetition) at a
    position after its first letter, in the word's case (`NASA` stays in capitals)."""
    i = int(rng.integers(1, len(w)))
    kind = int(rng.integers(4))
    if kind == 0:  # adjacent key
        nb = _neighbours(w[i].lower())
        c = nb[int(rng.integers(len(nb)))]
        return w[:i] + (c.upper() if w[i].isupper() else c) + w[i + 1:]
    if kind == 1:  # delete
        return w[:i] + w[i + 1:]
    if kind == 2:  # insert, in capitals in a word written in capitals
        c = "abcdefghijklmnopqrstuvwxyz"[int(rng.integers(26))]
        return w[:i] + (c.upper() if w.isupper() else c) + w[i:]
    return w[:i] + w[i] + w[i:]  # repeat


def typo(text: str, rate: float, protected: set[str], rng: np.random.Generator) -> str:
    """`text` with each editable word given one character edit with probability `rate`. A word is
    a run of non-space characters; its core (less the punctuation before and after it, as in
    `bill.` or `"Senate,`) is editable when it is all letters, at least 3 of them, and not
    protected. The punctuation and the text's spacing and line breaks are kept as they were."""
    if rate <= 0:
        return text

    def one(m: re.Match) -> str:
        lead, core, trail = _CORE.match(m.group()).groups()
        if m.group() in protected or core in protected or not core.isalpha() or len(core) < 3 or rng.random() >= rate:
            return m.group()
        return lead + _edit(core, rng) + trail

    return _WORD.sub(one, text)


def distractor(rng: np.random.Generator) -> str:
    role, name = ROLES[rng.integers(len(ROLES))], f"{FIRST[rng.integers(len(FIRST))]} {LAST[rng.integers(len(LAST))]}"
    phrase = EVENTS[list(EVENTS)[rng.integers(len(EVENTS))]][rng.integers(3)]
    city, day = CITIES[rng.integers(len(CITIES))], DAYS[rng.integers(len(DAYS))]
    shape = int(rng.integers(3))
    if shape == 0:
        return f"last year , {role} {name} {phrase} in {city} on {day} ."
    if shape == 1:
        return f"{role} {name} plans to visit {city} on {day} ."
    return f"earlier reports said {int(rng.integers(12, 990))} {UNITS[rng.integers(len(UNITS))]} had been expected in {city} ."


def split_lead(text: str) -> tuple[str, str]:
    """(lead, rest) of a document: the lead is its first sentence (up to a word ending in . ! or ?,
    closing quotes or brackets allowed), or its first LEAD_WORDS words when that sentence is longer.
    Both are the document's own text (its line breaks and spacing kept), less the whitespace
    between them."""
    words = list(itertools.islice(re.finditer(r"\S+", text), LEAD_WORDS))
    cut = words[-1].end() if words else 0
    for m in words:
        if m.group().rstrip(_CLOSERS).endswith((".", "!", "?")):
            cut = m.end()
            break
    return text[:cut], text[cut:].lstrip()


def perturb(report: Report, levels: dict[str, float], rng: np.random.Generator) -> str:
    """The report's document under the given transform levels (transform name -> level)."""
    before = [FILLERS[i] for i in rng.choice(len(FILLERS), int(levels.get("buried", 0)), replace=True)]
    extra = [distractor(rng) for _ in range(int(levels.get("distractors", 0)))]
    if report.count or report.fillers:  # a builtin report: key, count, then the fillers
        after = list(report.fillers) + extra
        if extra:
            rng.shuffle(after)  # distractors mixed in among the fillers (at level 0 the document is unchanged)
        body = [report.key, report.count] + after
    elif extra:  # a file's document: the distractors follow its lead, inside the truncated input
        lead, rest = split_lead(report.key)
        body = [lead] + extra + [rest]
    else:
        body = [report.key]
    text = " ".join(t for t in before + body if t)
    rate = float(levels.get("typo", 0.0))
    if rate > 0:
        f = report.facts
        protected = set(f["name"].split()) | {f["city"], f["day"], f["number"], f["role"]} if f else set()
        text = typo(text, rate, protected, rng)
    return text


def mark_edits(clean: str, perturbed: str) -> str:
    """The perturbed text with its word-level edits against the clean text marked as in
    `git diff --word-diff`: [-removed-] and {+added+}; a changed word shows both."""
    a, b = clean.split(), perturbed.split()
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.extend(b[j1:j2])
            continue
        if i2 > i1:
            out.append("[-" + " ".join(a[i1:i2]) + "-]")
        if j2 > j1:
            out.append("{+" + " ".join(b[j1:j2]) + "+}")
    return " ".join(out)


def perturb_cell(space: ConceptSpace, report: Report, cell: int, seed: int, input_id: int) -> str:
    coords = space.coords([cell])[0]
    levels = {a.transform: a.levels[i] for a, i in zip(space.axes, coords)}
    rng = np.random.default_rng(np.random.SeedSequence([seed, int(input_id), int(cell), 47]))
    return perturb(report, levels, rng)
