"""How every family stores a model under test: its weights as safetensors (WEIGHTS) beside a JSON
card (CARD) that records the weights' sha256, so a tampered or truncated file is refused by name."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from failfade import FailfadeError

WEIGHTS = "model.safetensors"
CARD = "model.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_card(card: dict, out_dir: Path) -> dict:
    """Write the card for the weights already saved in out_dir, with their digest."""
    out_dir = Path(out_dir)
    card = dict(card, sha256=sha256_file(out_dir / WEIGHTS), weights=WEIGHTS)
    (out_dir / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return card


def read_checked_card(model_dir: Path, holds: str) -> dict:
    """The card of a model folder, after checking that both files exist and the weights match it."""
    model_dir = Path(model_dir)
    card_path, weights = model_dir / CARD, model_dir / WEIGHTS
    for p in (card_path, weights):
        if not p.is_file():
            raise FailfadeError(f"{p}: missing (a failfade model folder holds {holds})")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as e:
        raise FailfadeError(f"{card_path}: not valid JSON ({e})") from e
    digest = sha256_file(weights)
    if card.get("sha256") and card["sha256"] != digest:
        raise FailfadeError(f"{weights}: corrupt checkpoint, sha256 {digest[:12]}… does not match the card's {card['sha256'][:12]}…")
    return card
