"""How every family stores a model under test: its weights as safetensors (WEIGHTS) beside a JSON
card (CARD) that records the weights' sha256, so a tampered or truncated file is refused by name."""

from __future__ import annotations

import hashlib
import json
import re
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


def folder_files(folder: Path) -> list[Path]:
    """Every regular file under `folder`, sorted; hidden files and folders (a download's .cache)
    left out. What a folder of model files holds, for pinning and for the workflow's inputs."""
    folder = Path(folder)
    return sorted(f for f in folder.rglob("*") if f.is_file()
                  and not any(part.startswith(".") for part in f.relative_to(folder).parts))


def missing_files(model_dir: Path) -> list[Path]:
    """The files a model folder's card pins that are not there (existence only, no hashing: the
    workflow asks it of every card when it plans). The weights are not rule outputs (a family's
    layout varies), so a deleted weights file leaves its card looking done. [] when the card is
    missing or unreadable (the stage that reads it names that)."""
    model_dir = Path(model_dir)
    try:
        card = json.loads((model_dir / CARD).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(card, dict):
        return []
    if isinstance(card.get("files"), dict):  # text-to-image: every pinned file, wherever it lives
        from failfade.tasks.generation.models import resolve

        try:
            paths = [resolve(model_dir, card, str(rel)) for rel in card["files"]]
        except FailfadeError:  # a hand-edited card: the stage that reads it names the key
            return []
    else:
        paths = [model_dir / str(card.get("weights", WEIGHTS))]
    return [p for p in paths if not p.is_file()]


# what a model folder holds that decides no outcome: the card (its clean-check figures and
# timings are rewritten on every run) and the training log (wall times)
NOT_OUTCOME = (CARD, "training.csv")


def outcome_digest(model_dir: Path) -> str | None:
    """One sha256 over every file of a model folder that can change an outcome, names included, in
    name order: the weights and everything beside them (config.json, generation_config.json,
    tokenizer files; a text-to-image pipeline's scheduler, tokenizer and component configs, wherever
    the card's `pipeline` lives; an adapter's files; a CLIP judge's pinned files). The card's sha256
    covers the weights only, so an edited generation_config.json or scheduler_config.json reused
    outcomes computed under another one. Files the card pins take the card's digest (the family's
    loader has checked them against it: call this after loading); the rest are hashed here. None
    when the folder has no readable card (the task's own model_sha256 then stands)."""
    model_dir = Path(model_dir)
    try:
        card = json.loads((model_dir / CARD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(card, dict):
        return None
    folders = {"": model_dir}
    if isinstance(card.get("files"), dict):  # text-to-image: every pinned file, the pipeline maybe elsewhere
        from failfade.tasks.generation.models import pipeline_dir

        digests = {str(k): str(v) for k, v in card["files"].items()}
        if card.get("pipeline"):
            folders["pipeline/"] = pipeline_dir(model_dir, card)
    else:
        digests = {str(card.get("weights", WEIGHTS)): card["sha256"]} if card.get("sha256") else {}
    for prefix, folder in folders.items():
        for f in folder_files(folder):
            rel = prefix + f.relative_to(folder).as_posix()
            if rel not in digests and rel not in NOT_OUTCOME:
                digests[rel] = sha256_file(f)
    h = hashlib.sha256()
    for name, d in sorted(digests.items()):
        h.update(f"{name}:{d}\n".encode())
    return h.hexdigest()


def write_card(card: dict, out_dir: Path) -> dict:
    """Write the card for the weights already saved in out_dir, with their digest."""
    import torch

    out_dir = Path(out_dir)
    # float reductions (hence trained weights) depend on torch's thread count, which follows the
    # rule's threads (`--cores`): the same config, seed, machine and thread count give the same bytes
    card = dict(card, sha256=sha256_file(out_dir / WEIGHTS), weights=WEIGHTS,
                written_with={"torch": torch.__version__, "torch_threads": torch.get_num_threads()})
    (out_dir / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return card


def read_card_json(card_path: Path, holds: str, required: tuple[str, ...] = ()) -> dict:
    """A model card's JSON object, with the `required` keys; every problem names the file."""
    card_path = Path(card_path)
    if not card_path.is_file():
        raise FailfadeError(f"{card_path}: missing (a failfade model folder holds {holds})")
    try:
        card = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FailfadeError(f"{card_path}: not valid JSON ({e})") from None
    if not isinstance(card, dict):
        raise FailfadeError(f"{card_path}: a model card is a JSON object, got {type(card).__name__}")
    missing = [k for k in required if k not in card]
    if missing:
        raise FailfadeError(f"{card_path}: missing key(s) {missing} (a failfade model card has {list(required)})")
    for key, (kind, what) in CARD_TYPES.items():  # a hand-edited card: named here, not as a TypeError later
        if key in card and not (isinstance(card[key], kind) and not isinstance(card[key], bool)):
            raise FailfadeError(f"{card_path}: {key} must be {what}, got {card[key]!r:.80}")
    bad = [k for k, v in card.get("files", {}).items() if not (isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v))]
    if bad:
        raise FailfadeError(f"{card_path}: files: the sha256 of {bad[0]!r} is not 64 hex digits")
    return card


# the types of the card keys that the families read without checks of their own (a classifier's
# `arch` and `input` have theirs: classification.models.check_card_input)
CARD_TYPES = {"sha256": (str, "a sha256 (64 hex digits)"), "files": (dict, "an object of file: sha256"),
              "pipeline": (str, "a folder"), "classes": (list, "a list of class names"), "judge": (dict, "an object")}


def pinned_sha256(card: dict, card_path: Path, what: str) -> str:
    """The card's `sha256`, which must be a digest: a card without one (or with an empty one) was
    read as pinning nothing, and any weights beside it loaded."""
    want = card.get("sha256")
    if not (isinstance(want, str) and re.fullmatch(r"[0-9a-f]{64}", want)):
        raise FailfadeError(f"{card_path}: sha256 must be {what} (64 hex digits), got {want!r:.80}")
    return want


def read_checked_card(model_dir: Path, holds: str, required: tuple[str, ...] = ()) -> dict:
    """The card of a model folder, after checking that both files exist, that the card has the
    `required` keys, and that the weights match it."""
    model_dir = Path(model_dir)
    card_path, weights = model_dir / CARD, model_dir / WEIGHTS
    if not weights.is_file() and card_path.is_file():
        raise FailfadeError(f"{weights}: missing (a failfade model folder holds {holds})")
    card = read_card_json(card_path, holds, required)
    pinned_sha256(card, card_path, f"the sha256 of {WEIGHTS}")
    digest = sha256_file(weights)
    if card["sha256"] != digest:
        raise FailfadeError(f"{weights}: corrupt checkpoint, sha256 {digest[:12]}… does not match the card's {card['sha256'][:12]}…")
    return card


HF_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt"]  # configs, weights, tokenizer files; no .bin or Flax copies
# what a hub snapshot leaves out even when it matches HF_PATTERNS: a Stable Diffusion repository's
# fp16 and non-EMA copies of the weights and its safety checker (unused here: gigabytes)
HF_IGNORE = ["*.fp16.*", "*non_ema*", "safety_checker/*"]


def hub_repo(rest: str, text: str, key: str) -> tuple[str, str | None]:
    """(repo, revision) of an `hf:` source's `<owner>/<name>[@revision]`; `@` with no revision is
    refused (it read as the latest: a pin that pins nothing)."""
    repo, sep, rev = rest.partition("@")
    owner, _, name = repo.partition("/")
    if not owner or not name or "/" in name or (sep and not rev.strip()):
        raise FailfadeError(f"{key}: expected hf:<owner>/<name>[@revision], got {text!r}")
    return repo, rev or None


def parse_source(text: str, key: str, builtins: tuple[str, ...], what: str) -> tuple[str, str, str | None]:
    """(kind, target, revision) of `builtin:<name>` (one of `builtins`), `hf:<owner>/<name>[@rev]` or
    `path:<dir>`; anything else is a one-line error naming `key`. `what` names the model kind."""
    if not isinstance(text, str) or ":" not in text:
        raise FailfadeError(f"{key}: {text!r} is not a model source; expected "
                            f"{', '.join('builtin:' + b for b in builtins)}, hf:<owner>/<name> or path:<dir>")
    kind, rest = text.split(":", 1)
    if kind == "builtin":
        if rest not in builtins:
            raise FailfadeError(f"{key}: unknown builtin {what} {rest!r}; known: {', '.join(builtins)}")
        return kind, rest, None
    if kind == "hf":
        return (kind, *hub_repo(rest, text, key))
    if kind == "path":
        if not rest:
            raise FailfadeError(f"{key}: path: needs a folder written by save_pretrained")
        return kind, rest, None
    raise FailfadeError(f"{key}: unknown model source kind {kind!r} in {text!r}; use builtin, hf or path")


def download(repo: str, revision: str | None, resources: Path, key: str) -> Path:
    """A hub snapshot (HF_PATTERNS only) under resources/hf; no network is a one-line error naming
    the key after a bounded wait."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=repo, revision=revision, cache_dir=str(Path(resources) / "hf"),
                                      allow_patterns=HF_PATTERNS, ignore_patterns=HF_IGNORE,
                                      etag_timeout=10))
    except Exception as e:
        raise FailfadeError(f"{key}: cannot download hf:{repo} ({type(e).__name__}: {str(e)[:200]})") from e
