"""The shipped builtin text-to-image model (`builtin:digits`) and the command that regenerates it.

The model is trained once, here, with RECIPE (training.py), and shipped under
resources/builtin/digits-diffusion/ in the Stable Diffusion folder layout with fp16 safetensors
and a card (builtin.json) holding the recipe, the training time and every file's sha256.
Regenerate it bit for bit (same torch version and thread count as in the card) with

    python -m failfade.tasks.generation.builtin --out resources/builtin/digits-diffusion --threads 2

The model stage refuses a builtin whose files do not match the card.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from failfade import FailfadeError
from failfade.numerics import keeps_denormals
from failfade.tasks.storage import read_card_json, sha256_file

ROOT = Path(__file__).resolve().parents[3] / "resources" / "builtin"
FOLDERS = {"digits": "digits-diffusion"}
CARD = "builtin.json"

# The builtin's training recipe (training.py). The planted bias: "thin" is drawn 4% of the time for
# the digits 0, 6, 8 and 9 (a third of the time otherwise), the under-represented group that the
# loop should find and fade.
RECIPE = {"seed": 0, "width": 16, "steps": 3000, "batch_size": 64, "lr": 0.002, "ema_decay": 0.995,
          "empty_prompt": 0.1, "thin_bias": {"0": 0.04, "6": 0.04, "8": 0.04, "9": 0.04}}


def folder(name: str) -> Path:
    return ROOT / FOLDERS[name]


def check(path: Path) -> dict:
    """The builtin's card, after checking every shipped file against it."""
    card_path = Path(path) / CARD
    if not card_path.is_file():
        raise FailfadeError(f"{card_path}: missing: the builtin text-to-image model is not in this checkout "
                            "(regenerate it: python -m failfade.tasks.generation.builtin --out " f"{path})")
    card = read_card_json(card_path, "the builtin pipeline's files and their sha256", ("files",))
    for rel, want in card["files"].items():
        if not (Path(path) / rel).is_file():
            raise FailfadeError(f"{Path(path) / rel}: missing (pinned by {card_path}; regenerate the builtin: "
                                f"python -m failfade.tasks.generation.builtin --out {path})")
        got = sha256_file(Path(path) / rel)
        if got != want:
            raise FailfadeError(f"{Path(path) / rel}: sha256 {got[:12]}… does not match {card_path}'s {want[:12]}…")
    return card


def pinned(folder: Path) -> dict[str, str]:
    """The sha256 of every file of a builtin folder (weights, configs, tokenizer), but its card."""
    from failfade.tasks.generation.models import pin_folder

    return {rel: d for rel, d in pin_folder(folder, "").items() if rel != CARD}


@keeps_denormals
def regenerate(out: Path, threads: int, recipe: dict = RECIPE) -> dict:
    """Train the builtin with `recipe` and write it (fp16 safetensors) with its card."""
    import numpy as np
    import torch

    from failfade.tasks.generation import digits as D
    from failfade.tasks.generation import training as T
    from failfade.tasks.generation.pipeline import save_components

    torch.set_num_threads(int(threads))
    imgs, labels = D.load_digits_images()
    train, _ = D.split(len(imgs))
    c = T.build(recipe["seed"], recipe["width"])
    t0 = time.perf_counter()
    history = T.train(c, imgs[train], labels[train], recipe["steps"], recipe["seed"], recipe["batch_size"], recipe["lr"],
                      recipe["ema_decay"], recipe["empty_prompt"], {int(k): v for k, v in recipe["thin_bias"].items()})
    seconds = time.perf_counter() - t0
    c.unet.half()
    c.text_encoder.half()
    out = Path(out)
    save_components(c, out)
    card = {"name": "digits", "recipe": recipe, "train_seconds": round(seconds, 1),
            "final_loss": float(np.mean([h["loss"] for h in history[-50:]])),
            "unet_parameters": sum(p.numel() for p in c.unet.parameters()),
            "written_with": {"torch": torch.__version__, "torch_threads": torch.get_num_threads()},
            "files": pinned(out)}
    (out / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return card


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Train the builtin text-to-image model (builtin:digits) from its recipe.")
    p.add_argument("--out", type=Path, default=folder("digits"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=RECIPE["steps"], help="training steps (the shipped model: the recipe's)")
    a = p.parse_args(argv)
    card = regenerate(a.out, a.threads, dict(RECIPE, steps=a.steps))
    print(json.dumps({k: card[k] for k in ("train_seconds", "final_loss", "files")}, indent=2))


if __name__ == "__main__":
    main()
