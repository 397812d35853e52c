"""How a text-to-image model under test is stored: a folder with a card that pins every weight file.

    <model dir>/
      model.json        the card: source, settings, the sha256 of every weight file, the judge's
                        accuracy, the clean check; `sha256` digests them all (it keys the outcome cache)
      pipeline/         the Stable Diffusion layout (pipeline.py), for the builtin and for a `path:`
                        or `hf:` source copied by the model stage; or the card's `pipeline` names the
                        folder of the model it was fine-tuned from (a LoRA model does not copy its base)
      adapter/          only after mitigation: the LoRA adapter (safetensors) and its card
      judge/            the attribute judge's weights (judge: attribute); a CLIP judge's files are
                        pinned where they are (card["judge"]["folder"]), under `clip-judge/` names

Loading checks every digest first, so a tampered or truncated file is refused by name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from failfade import FailfadeError
from failfade.tasks.storage import CARD, folder_files, pinned_sha256, read_card_json, sha256_file

ADAPTER = "adapter"
ADAPTER_WEIGHTS = "pytorch_lora_weights.safetensors"
JUDGE_WEIGHTS = "judge/judge.safetensors"
CLIP_JUDGE = "clip-judge/"  # card["files"] prefix of a CLIP judge's files, which stay in the judge's own folder


def digest_files(root: Path, files: list[str]) -> dict[str, str]:
    return {f: sha256_file(Path(root) / f) for f in sorted(files)}


def combined(digests: dict[str, str]) -> str:
    """One digest of several files (their names and digests, in order)."""
    h = hashlib.sha256()
    for name, d in sorted(digests.items()):
        h.update(f"{name}:{d}\n".encode())
    return h.hexdigest()


def write_card(card: dict, out_dir: Path) -> dict:
    """Write the card for the files listed in card['files'] (paths relative to card['root'], or to
    out_dir), adding their digests and the combined `sha256`."""
    import torch

    out_dir = Path(out_dir)
    files = dict(card.get("files", {}))
    card = dict(card, sha256=combined(files), written_with={"torch": torch.__version__, "torch_threads": torch.get_num_threads()})
    (out_dir / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return card


def read_card(model_dir: Path) -> dict:
    """The card of a generation model folder after checking every file it pins, that it pins every
    weight file (a card with `files: {}` pinned nothing), and that its `sha256` (the outcome cache's
    key) is the combined digest of those pins."""
    model_dir = Path(model_dir)
    path = model_dir / CARD
    card = read_card_json(path, f"{CARD}, its pipeline and judge", ("files", "pipeline"))
    sha256 = pinned_sha256(card, path, "the combined digest of its files")
    unpinned = [rel for rel in weight_files(model_dir, card) if rel not in card["files"]]
    if unpinned:
        raise FailfadeError(f"{path}: files: {unpinned[0]!r} is not pinned (every weight file needs its sha256 there)")
    if combined(card["files"]) != sha256:
        raise FailfadeError(f"{path}: sha256 {sha256[:12]}… is not the combined digest of its files "
                            f"({combined(card['files'])[:12]}…)")
    for rel, want in card["files"].items():
        f = resolve(model_dir, card, rel)
        if not f.is_file():
            raise FailfadeError(f"{f}: missing (pinned by {path})")
        got = sha256_file(f)
        if got != want:
            raise FailfadeError(f"{f}: corrupt checkpoint, sha256 {got[:12]}… does not match the card's {want[:12]}…")
    return card


def weight_files(model_dir: Path, card: dict) -> list[str]:
    """The card-relative names of the weight files (*.safetensors) a model folder loads: its own
    (judge, adapter) and its pipeline's, wherever the card's `pipeline` lives."""
    model_dir = Path(model_dir)
    own = [f.relative_to(model_dir).as_posix() for f in folder_files(model_dir) if f.suffix == ".safetensors"]
    pipe = pipeline_dir(model_dir, card)
    return sorted({rel for rel in own if not rel.startswith("pipeline/")}
                  | {f"pipeline/{f.relative_to(pipe).as_posix()}" for f in folder_files(pipe) if f.suffix == ".safetensors"})


def resolve(model_dir: Path, card: dict, rel: str) -> Path:
    """A pinned file's path: pipeline files live in the card's pipeline folder, the rest in model_dir."""
    if rel.startswith("pipeline/"):
        return pipeline_dir(model_dir, card) / rel[len("pipeline/"):]
    if rel.startswith(CLIP_JUDGE):
        folder = card.get("judge", {}).get("folder") if isinstance(card.get("judge"), dict) else None
        if not isinstance(folder, str):
            raise FailfadeError(f"{Path(model_dir) / CARD}: files: {rel!r} is a CLIP judge's file, but judge.folder "
                                f"is {'missing' if folder is None else repr(folder)}: rebuild the model folder "
                                f"(failfade run --forcerun {Path(model_dir) / CARD})")
        return Path(folder) / rel[len(CLIP_JUDGE):]
    return Path(model_dir) / rel


def pinned_elsewhere(rel: str) -> bool:
    """A pinned file that lives outside the model folder (the base pipeline, a CLIP judge): a
    derived model keeps its digest rather than copying it."""
    return rel.startswith(("pipeline/", CLIP_JUDGE))


def pin_folder(folder: Path, prefix: str) -> dict[str, str]:
    """{prefix + relative path: sha256} of every file in `folder` (hidden files and folders, such as
    a download's .cache, left out)."""
    folder = Path(folder)
    return {prefix + f.relative_to(folder).as_posix(): sha256_file(f) for f in folder_files(folder)}


def pipeline_dir(model_dir: Path, card: dict) -> Path:
    if not isinstance(card.get("pipeline"), str):
        raise FailfadeError(f"{Path(model_dir) / CARD}: pipeline must name the pipeline's folder, got "
                            f"{card.get('pipeline')!r:.80}: rebuild the model folder "
                            f"(failfade run --forcerun {Path(model_dir) / CARD})")
    p = Path(card["pipeline"])
    return p if p.is_absolute() else Path(model_dir) / p
