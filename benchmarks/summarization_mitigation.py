"""The summarization default's mitigation recipe, measured on the VALIDATION split only.

    .venv/bin/python benchmarks/summarization_mitigation.py [--seed 0] [--set key=value ...]

The default `reports` experiment's model is obtained as the workflow obtains it (under
benchmarks/out/reports-model; 2 threads, as the model rule trains it), the shipped feedback becomes
a plan over every cell, and each setting (`mitigate` with the `--set` changes, each a JSON value)
fine-tunes a copy as the mitigate stage does (`fine_tune`). Every validation document is then
scored on every fixed cell and on every other cell, before and after: failure rates, the change on
the fixed cells with a 95% interval paired over the documents, and the fine-tuning's seconds. The
held-out split is never touched (it is kept for the numbers the workflow reports). Appends to
benchmarks/out/summarization_mitigation.jsonl, prints its line and writes every line of that file
as the "summarization-mitigation" table of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, ROOT, model_dir, write_section  # noqa: E402

from failfade import FailfadeError  # noqa: E402
from failfade.config import read_yaml, validate  # noqa: E402
from failfade.feedback import mitigation_plan, read_feedback  # noqa: E402
from failfade.pipeline import family_of  # noqa: E402
from failfade.probes import input_table, pooled_change  # noqa: E402


def failures(fam, exp: dict, folder: Path, reports, cells) -> np.ndarray:
    """(documents × cells) booleans: each validation document scored on each cell."""
    from failfade.tasks.summarization.task import SummarizationTask

    summarizer, _ = fam.load(exp, folder)
    task = SummarizationTask(summarizer, reports, fam.space(exp), exp["seed"], exp["model"]["epsilon"])
    n = len(reports)
    return np.stack([np.asarray(task.score(np.arange(n), np.full(n, c)).failure, bool) for c in cells], 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a mitigate setting (JSON value), e.g. freeze_position_bias=false; repeatable")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    changes = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    raw = read_yaml(ROOT / "config" / "config.yaml")
    raw["experiments"]["reports"]["seed"] = args.seed
    raw["experiments"]["reports"].setdefault("mitigate", {}).update(changes)
    try:  # the schema's check: a misspelt key or a wrong type would measure the default under another name
        exp = validate(raw, "config/config.yaml with --set")["experiments"]["reports"]
    except FailfadeError as e:
        ap.error(str(e))
    base = model_dir("reports" if args.seed == 0 else f"reports-seed{args.seed}", exp)
    fam = family_of(exp)
    space, val = fam.space(exp), fam.splits(exp).validation
    every = list(range(space.n_cells))
    plan = mitigation_plan(read_feedback(ROOT / exp["feedback"], space, every), space, every, exp["feedback"])
    fix = sorted(int(f["cell"]) for f in plan["fix"])
    other = sorted(set(every) - set(fix))
    tag = hashlib.sha256(json.dumps(changes, sort_keys=True).encode()).hexdigest()[:8]  # one folder per setting
    out = OUT / "summarization_mitigation" / f"seed{args.seed}-{tag}"
    t0 = time.perf_counter()
    fam.fine_tune(exp, base, plan, out)
    seconds = time.perf_counter() - t0
    before, after = failures(fam, exp, base, val, every), failures(fam, exp, out, val, every)  # one load per model
    before_fix, after_fix, before_other, after_other = before[:, fix], after[:, fix], before[:, other], after[:, other]
    table = pl.DataFrame({"inputs": [len(val)] * len(fix), "failures_pre": before_fix.sum(0).tolist(),
                          "failures_post": after_fix.sum(0).tolist()})
    pooled = pooled_change(table, per_input=input_table(list(before_fix.T), list(after_fix.T)))
    lo, hi = pooled["relative_change_ci"]
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    row = {"seed": args.seed, "changes": changes, "commit": commit, "fine_tune_seconds": round(seconds, 1), "fixed_cells": len(fix),
           "documents": len(val), "fixed_before": before_fix.mean(), "fixed_after": after_fix.mean(),
           "fixed_change": pooled["relative_change"], "fixed_change_95": [lo, hi],
           "other_before": before_other.mean(), "other_after": after_other.mean()}
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "summarization_mitigation.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(f"seed {args.seed} {changes or 'default'}: fixed cells {row['fixed_before']:.3f} -> {row['fixed_after']:.3f} "
          f"({100 * row['fixed_change']:+.1f}%, 95% {100 * lo:+.1f} to {100 * hi:+.1f}%), other cells "
          f"{row['other_before']:.3f} -> {row['other_after']:.3f}, fine-tuning {seconds:.0f} s")

    write_table()


def write_table() -> None:
    """Every line of benchmarks/out/summarization_mitigation.jsonl as RESULTS.md's table."""
    rows = [json.loads(line) for line in open(OUT / "summarization_mitigation.jsonl")]
    lines = ["Command: `.venv/bin/python benchmarks/summarization_mitigation.py --seed S [--set KEY=VALUE ...]` "
             "(each row: its seed, its `--set` and the commit it ran on; rows from every run so far, "
             "benchmarks/out/summarization_mitigation.jsonl). The default `reports` experiment's plan over every "
             "cell; every validation document scored on every cell before and after fine-tuning. *change*: on the "
             "fixed cells, with its 95% interval paired over the documents; *seconds*: the fine-tuning (shared "
             "machine time included).", "",
             "| seed | mitigate changes | commit | fixed cells before → after | change (95%) | other cells before → after | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["fixed_change_95"]
        lines.append(f"| {r['seed']} | {json.dumps(r['changes']) if r['changes'] else 'none (the default)'} | "
                     f"{r.get('commit', 'not recorded')} | "
                     f"{r['fixed_before']:.3f} → {r['fixed_after']:.3f} | {100 * r['fixed_change']:+.1f}% "
                     f"({100 * lo:+.1f} to {100 * hi:+.1f}%) | {r['other_before']:.3f} → {r['other_after']:.3f} | "
                     f"{r['fine_tune_seconds']:.0f} |")
    write_section("summarization-mitigation", "\n".join(lines))


if __name__ == "__main__":
    main()
