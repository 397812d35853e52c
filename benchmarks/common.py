"""Shared helpers for the benchmarks: the default experiment's model, and RESULTS.md sections."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def default_experiment() -> dict:
    from failfade.config import load

    return load(ROOT / "config" / "config.yaml")["experiments"]["digits"]


def digits_model(exp: dict) -> Path:
    """Train (once) the default experiment's model under benchmarks/out/, exactly as the workflow does."""
    return model_dir("digits", exp)


def model_dir(name: str, exp: dict) -> Path:
    """Obtain (once) experiment `name`'s model under benchmarks/out/<name>-model, as the workflow's
    model rule does (pipeline.stage_model); obtained again when the experiment's seed, data or
    model config, the package's code or the thread count changes: the model rule trains with 2
    threads, and float reductions (hence the weights) depend on it."""
    import hashlib

    import torch

    from failfade.pipeline import stage_model

    out = OUT / f"{name}-model"
    stamp = out / "benchmark-stamp.json"
    code = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((ROOT / "failfade").rglob("*.py")))).hexdigest()
    want = json.dumps({**{k: exp[k] for k in ("seed", "data", "model")}, "code": code,
                       "threads": torch.get_num_threads()}, sort_keys=True)
    if not (stamp.is_file() and stamp.read_text() == want and (out / "model.json").is_file()):
        stage_model(exp, out, ROOT / "resources")
        stamp.write_text(want)
    return out


def write_section(name: str, text: str) -> None:
    """Replace (or append) the section between <!-- name:start --> and <!-- name:end -->."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = RESULTS.read_text() if RESULTS.is_file() else "# Benchmark results\n\nRegenerate with the commands in the README.\n"
    block = f"<!-- {name}:start -->\n{text.rstrip()}\n<!-- {name}:end -->"
    pattern = re.compile(rf"<!-- {name}:start -->.*?<!-- {name}:end -->", re.S)
    doc = pattern.sub(lambda _: block, doc) if pattern.search(doc) else doc.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(doc)


def command(script: str, ap: argparse.ArgumentParser, args: argparse.Namespace, keep: tuple[str, ...] = ()) -> str:
    """The command line that reruns this benchmark as it ran: `script` (its `__file__`) and every
    option whose value differs from its default, after the options named in `keep` (their `dest`:
    defaults that depend on the machine, such as throughput's --device), which are always given;
    positional arguments are left out. A section's `Command:` is built from it, so it names every
    flag that shaped the numbers and reruns into the same section."""
    parts = [".venv/bin/python", f"benchmarks/{Path(script).name}"]
    actions = [a for a in ap._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    for action in sorted(actions, key=lambda a: a.dest not in keep):  # stable: keep first, then as defined
        value = getattr(args, action.dest)
        if value == action.default and action.dest not in keep:
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if value != action.default:  # a flag states a change; at its default there is nothing to write
                parts.append(flag)
        elif isinstance(action, argparse._AppendAction):
            parts += [x for item in value for x in (flag, shlex.quote(str(item)))]
        elif isinstance(value, (list, tuple)):
            parts += [flag, *(shlex.quote(str(v)) for v in value)]
        else:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)
