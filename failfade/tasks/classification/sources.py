"""A classification model's `model.source`, parsed (no torch: a config is checked with it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from failfade import FailfadeError


@dataclass
class ModelSource:
    kind: str
    target: str
    detail: str | None = None

    @classmethod
    def parse(cls, text: str, key: str = "model.source") -> "ModelSource":
        if not isinstance(text, str) or ":" not in text:
            raise FailfadeError(f"{key}: {text!r} is not a model source; expected builtin:, torchvision:, hf: or path:")
        kind, rest = text.split(":", 1)
        if kind == "builtin":
            if rest != "digits-cnn":
                raise FailfadeError(f"{key}: unknown builtin model {rest!r}; known: digits-cnn")
            return cls(kind, rest)
        if kind == "torchvision":
            parts = rest.split(":")
            if len(parts) != 2 or not all(parts):
                raise FailfadeError(f"{key}: expected torchvision:<arch>:<weights-enum>, got {text!r}")
            return cls(kind, parts[0], parts[1])
        if kind == "hf":
            from failfade.tasks.storage import hub_repo

            return cls(kind, *hub_repo(rest, text, key))
        if kind == "path":
            if not rest:
                raise FailfadeError(f"{key}: path: needs a file or folder")
            return cls(kind, rest)
        raise FailfadeError(f"{key}: unknown model source kind {kind!r} in {text!r}; use builtin, torchvision, hf or path")


def torchvision_form(source: str, key: str) -> tuple[Path, str]:
    """(root, split) of a torchvision:ImageNet:<root>[:val|train] source; a source of another form
    is refused by `key` (checked with the config, before any job runs)."""
    parts = source.split(":")
    if len(parts) not in (3, 4) or parts[1] != "ImageNet" or not parts[2]:
        raise FailfadeError(f"{key}: expected torchvision:ImageNet:<root>[:val|train], got {source!r}")
    root, split = Path(parts[2]), (parts[3] if len(parts) == 4 else "val")
    if split not in ("val", "train"):
        raise FailfadeError(f"{key}: ImageNet split {split!r} is not val or train")
    return root, split
