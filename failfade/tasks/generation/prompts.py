"""Text-to-image prompts without the models: the sources' forms, each cell's prompt, whether a
prompt fits the tokenizer, and the words the builtin attribute judge knows.

Reading a config checks all of these; this module imports neither torch nor diffusers, so that
`snakemake -n` and `failfade run` validate a config without them (the tokenizer check, for a
pipeline on this machine, needs transformers' tokenizer alone).
"""

from __future__ import annotations

import re
from pathlib import Path

from failfade import FailfadeError
from failfade.concepts import ConceptSpace
from failfade.tasks import storage

BUILTINS = ("digits",)  # model.source builtin:<name>

# what the builtin attribute judge reads in a prompt (failfade/tasks/generation/digits.py)
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
THICKNESS = ("thin", "normal", "thick")
SIZES = ("small", "medium", "large")
HEADS = (DIGITS, THICKNESS, SIZES)


def parse_source(text: str, key: str) -> tuple[str, str, str | None]:
    return storage.parse_source(text, key, BUILTINS, "text-to-image model")


def prompt_of(space: ConceptSpace, template: str, cell: int) -> str:
    """The cell's prompt: every axis's word in its `{axis}` slot of the template."""
    coords = space.coords([cell])[0]
    return template.format(**{a.name: a.words[i] if a.words else a.label(i) for a, i in zip(space.axes, coords)})


def requested(prompt_text: str) -> tuple[int, int, int]:
    """The (digit, thickness, size) a prompt asks for, as indices; −1 where it names none."""
    words = re.findall(r"[a-z]+", prompt_text.lower())  # "a thin small zero." names zero too
    return tuple(next((vocab.index(w) for w in words if w in vocab), -1) for vocab in HEADS)


def check_prompt_lengths(tokenizer, prompts: list[str], key: str, where: str) -> None:
    """Refuse prompts longer than the tokenizer's model_max_length (special tokens included): the
    sampler truncates there, so the text encoder would read a shorter prompt than the judge and the
    LoRA do (the builtin keeps 8 tokens: "a photo of a thin small eight" reached it as "a photo").
    `key` names the config key (data.template), `where` the tokenizer."""
    limit = int(tokenizer.model_max_length)
    prompts = list(dict.fromkeys(prompts))
    if not prompts:
        return
    ids = tokenizer(prompts, truncation=False, verbose=False).input_ids
    over = [(p, i) for p, i in zip(prompts, ids) if len(i) > limit]
    if over:
        p, i = max(over, key=lambda pi: len(pi[1]))
        kept = tokenizer(p, truncation=True, max_length=limit).input_ids  # what Sampler.encode keeps
        reads = tokenizer.decode(kept, skip_special_tokens=True).strip()
        raise FailfadeError(f"{key}: {len(over)} of {len(prompts)} prompt(s) are longer than the text-to-image "
                            f"tokenizer's model_max_length of {limit} tokens ({where}), e.g. {p!r}: {len(i)} tokens, "
                            f"of which the text encoder would read only {reads!r} while the judge reads the whole "
                            "prompt; shorten the template or the axes' words")


def tokenizer_folder(source: str) -> Path | None:
    """The tokenizer folder of a text-to-image source that is on this machine before the model stage
    runs (the builtin, a `path:` folder); None for an `hf:` source (the model stage checks it) or
    a source that is not one (the model stage names it)."""
    try:
        kind, target, _ = parse_source(source, "model.source")
    except FailfadeError:
        return None
    if kind == "builtin":
        from failfade.tasks.generation.builtin import folder

        return folder(target) / "tokenizer"
    return Path(target) / "tokenizer" if kind == "path" else None
