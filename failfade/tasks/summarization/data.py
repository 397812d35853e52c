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
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from failfade import FailfadeError
from failfade.tasks.summarization.corpus import Report, make_corpus


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


def _from_pairs(pairs: list[tuple[str, str]]) -> list[Report]:
    return [Report(doc.strip(), "", (), ref.strip(), {}) for doc, ref in pairs]


def read_pairs(path: Path, kind: str, key: str) -> list[Report]:
    if not path.is_file():
        raise FailfadeError(f"{key}: {path} does not exist")
    pairs = []
    if kind == "jsonl":
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise FailfadeError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("document"), str) or not isinstance(row.get("summary"), str):
                raise FailfadeError(f"{path}:{n}: needs string fields 'document' and 'summary'")
            pairs.append((row["document"], row["summary"]))
    else:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = {"document", "summary"} - set(reader.fieldnames or [])
            if missing:
                raise FailfadeError(f"{path}:1: missing column(s) {sorted(missing)}; need 'document' and 'summary'")
            for n, row in enumerate(reader, start=2):
                if not (row["document"] or "").strip() or not (row["summary"] or "").strip():
                    raise FailfadeError(f"{path}:{n}: empty document or summary")
                pairs.append((row["document"], row["summary"]))
    if len(pairs) < 3:
        raise FailfadeError(f"{key}: {path} has {len(pairs)} document(s); at least 3 are needed to split")
    return _from_pairs(pairs)


def load_splits(data: dict, seed: int, key: str = "data.source") -> Splits:
    source = data["source"]
    if source == "builtin:reports":
        reports = make_corpus(data["n_documents"], seed)
    elif source.startswith(("jsonl:", "csv:")):
        kind, rest = source.split(":", 1)
        reports = read_pairs(Path(rest), kind, key)
    else:
        raise FailfadeError(f"{key}: unknown data source {source!r}; use builtin:reports, jsonl:<file> or csv:<file>")
    order = np.random.default_rng(seed).permutation(len(reports))
    n_held = int(round(len(reports) * data["heldout_fraction"]))
    n_val = int(round(len(reports) * data.get("validation_fraction", 0.0)))
    if n_held < 1 or n_held + n_val >= len(reports):
        raise FailfadeError(f"data: the fractions leave no held-out or no training documents ({len(reports)} in all)")
    pick = lambda idx: [reports[i] for i in np.sort(idx)]  # noqa: E731
    return Splits(pick(order[n_held + n_val:]), pick(order[:n_held]), pick(order[n_held:n_held + n_val]))
