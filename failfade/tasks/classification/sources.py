"""A classification model's `model.source`, parsed (no torch: a config is checked with it)."""

from __future__ import annotations

from dataclasses import dataclass

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
            repo, _, rev = rest.partition("@")
            owner, _, name = repo.partition("/")
            if not owner or not name or "/" in name:
                raise FailfadeError(f"{key}: expected hf:<owner>/<name>[@revision], got {text!r}")
            return cls(kind, repo, rev or None)
        if kind == "path":
            if not rest:
                raise FailfadeError(f"{key}: path: needs a file or folder")
            return cls(kind, rest)
        raise FailfadeError(f"{key}: unknown model source kind {kind!r} in {text!r}; use builtin, torchvision, hf or path")
