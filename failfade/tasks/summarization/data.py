"""Documents with reference summaries, in train / validation / held-out splits (as for images:
the held-out split depends only on the source, its fraction and the seed).

Sources (`data.source`):
  builtin:reports     the seeded synthetic event reports (corpus.py), `data.n_documents` of them
  jsonl:<file>        one JSON object per line with `document` and `summary`
  csv:<file>          a header row with `document` and `summary` columns
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from failfade import FailfadeError
from failfade.textfile import NotUtf8, utf8_text
from failfade.tasks.summarization.corpus import Report, make_corpus

CSV_FIELD_LIMIT = 1 << 30  # characters in one CSV field (Python's csv default is 128 KiB)


@dataclass
class Splits:
    train: list[Report]
    heldout: list[Report]
    validation: list[Report]


def digest(reports: list[Report]) -> str:
    """What these documents are, for the outcome cache's key: their text, references and facts, so
    that a jsonl/csv file edited under the same path is scored anew rather than read from the cache."""
    h = hashlib.sha256()
    for r in reports:
        h.update(json.dumps([r.document, r.reference, r.facts], sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def _from_pairs(pairs: list[tuple[str, str]], path: Path | None = None) -> list[Report]:
    """Reports of (document, summary) pairs, a document given twice kept once (the first): a repeat
    could land in the training split and the held-out one at once, and the fine-tuned model would
    be scored on a document it was trained on. How many were dropped is logged."""
    seen: set[str] = set()
    out = []
    for doc, ref in pairs:
        doc = doc.strip()
        if doc not in seen:
            seen.add(doc)
            out.append(Report(doc, "", (), ref.strip(), {}))
    if len(out) < len(pairs):
        logging.getLogger("failfade").warning(
            "%s: %d repeated document(s) dropped (the first of each kept), %d left", path, len(pairs) - len(out), len(out))
    return out


def _decoded(path: Path) -> str:
    """The file's text (UTF-8, a byte-order mark allowed); another encoding is named by line and byte."""
    raw = path.read_bytes()
    try:
        return utf8_text(raw)
    except NotUtf8 as e:
        raise FailfadeError(f"{path}:{e.line}: not UTF-8 (byte {e.offset}: {bytes([e.byte])!r}); "
                            "save the file as UTF-8") from None


def _no_repeated_keys(path: Path, n: int):
    def pairs(items):
        keys = [k for k, _ in items]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise FailfadeError(f"{path}:{n}: repeated field(s) {dup}")
        return dict(items)
    return pairs


def read_pairs(path: Path, kind: str, key: str) -> list[Report]:
    if not path.is_file():
        raise FailfadeError(f"{key}: {path} does not exist")
    text = _decoded(path)
    pairs = []
    if kind == "jsonl":
        # split on newlines only: str.splitlines also breaks at U+2028, U+0085, ... which JSON strings may hold
        for n, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line, object_pairs_hook=_no_repeated_keys(path, n))
            except json.JSONDecodeError as e:
                raise FailfadeError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("document"), str) or not isinstance(row.get("summary"), str):
                raise FailfadeError(f"{path}:{n}: needs string fields 'document' and 'summary'")
            if not row["document"].strip() or not row["summary"].strip():
                raise FailfadeError(f"{path}:{n}: empty document or summary")
            for field in ("document", "summary"):
                try:  # JSON's \ud800 escapes decode to lone surrogates, which no tokenizer takes
                    row[field].encode("utf-8")
                except UnicodeEncodeError as e:
                    raise FailfadeError(f"{path}:{n}: {field} is not valid Unicode (a lone surrogate escape at "
                                        f"character {e.start})") from None
            pairs.append((row["document"], row["summary"]))
    else:
        # strict: an unclosed quote is an error, not a field that swallows every row after it
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        limit = csv.field_size_limit()
        csv.field_size_limit(CSV_FIELD_LIMIT)  # a long article is one field: the default 128 KiB is too small
        end = 0
        try:
            header = next(reader, None) or []
            missing = {"document", "summary"} - set(header)
            if missing:
                raise FailfadeError(f"{path}:1: missing column(s) {sorted(missing)}; need 'document' and 'summary'")
            named = [h for h in header if h.strip()]
            dup = sorted({h for h in named if named.count(h) > 1})
            if dup:
                raise FailfadeError(f"{path}:1: repeated column(s) {dup}; each column name once")
            di, si = header.index("document"), header.index("summary")
            end = reader.line_num
            for row in reader:
                start, end = end + 1, reader.line_num  # a quoted field may span lines: name the record's first
                if not row:
                    continue
                if len(row) != len(header):  # an unquoted comma would move the summary into the document
                    raise FailfadeError(f"{path}:{start}: {len(row)} fields where the header has {len(header)}; "
                                        "a field with a comma must be quoted (\"...\")")
                doc, ref = row[di], row[si]
                if not doc.strip() or not ref.strip():
                    raise FailfadeError(f"{path}:{start}: empty document or summary")
                pairs.append((doc, ref))
        except csv.Error as e:  # named by the line where the record starts (an unclosed quote runs to the end)
            raise FailfadeError(f"{path}:{end + 1}: not a valid CSV record ({e}); a quoted field must close "
                                "its quote") from None
        finally:
            csv.field_size_limit(limit)
    reports = _from_pairs(pairs, path)
    if len(reports) < 3:
        raise FailfadeError(f"{key}: {path} has {len(reports)} distinct document(s); at least 3 are needed to split")
    return reports


def check_source(source: str, key: str = "data.source") -> None:
    """The data source's form (whether its file exists is found when it is read)."""
    kind, _, rest = source.partition(":")
    if not (source == "builtin:reports" or (kind in ("jsonl", "csv") and rest.strip())):
        raise FailfadeError(f"{key}: unknown data source {source!r}; use builtin:reports, jsonl:<file> or csv:<file>")


def load_splits(data: dict, seed: int, key: str = "data.source") -> Splits:
    source = data["source"]
    check_source(source, key)
    if source == "builtin:reports":
        reports = make_corpus(data["n_documents"], seed)
    else:
        kind, rest = source.split(":", 1)
        reports = read_pairs(Path(rest), kind, key)
    order = np.random.default_rng(seed).permutation(len(reports))
    n_held = int(round(len(reports) * data["heldout_fraction"]))
    n_val = int(round(len(reports) * data.get("validation_fraction", 0.0)))
    if n_held < 1 or n_held + n_val >= len(reports):
        raise FailfadeError(f"data: the fractions leave no held-out or no training documents ({len(reports)} in all)")
    pick = lambda idx: [reports[i] for i in np.sort(idx)]  # noqa: E731
    return Splits(pick(order[n_held + n_val:]), pick(order[:n_held]), pick(order[n_held:n_held + n_val]))
