"""The default experiment on several seeds, end to end through the workflow.

    .venv/bin/python benchmarks/seeds.py [--seeds 0 1 2] [--set KEY=VALUE ...] [--label default] [--cores 2]

For each seed, runs `snakemake` on config/config.yaml with only `seed` changed (results under
benchmarks/out/seeds/<label>/seed<k>/), then collects per seed: held-out clean accuracy change, the
targeted reduction with its interval, the other cells' change, the failure-mass change, the grid
EMD against its noise floor, every off-grid probe's change (and whether it is significantly
worse), and recall by both rules. Writes the "seeds-<label>" section of benchmarks/RESULTS.md and
benchmarks/out/seeds-<label>.json. `--set KEY=VALUE` changes experiment keys (e.g. the previous
defaults, for a comparison measured the same way).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import yaml

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import OUT, ROOT, command, write_section  # noqa: E402


def apply_override(exp: dict, text: str) -> None:
    """`mitigate.epochs=10` sets exp["mitigate"]["epochs"] = 10 (the value parsed as YAML)."""
    key, value = text.split("=", 1)
    *path, last = key.split(".")
    node = exp
    for part in path:
        node = node.setdefault(part, {})
    node[last] = yaml.safe_load(value)


def run_seed(seed: int, cores: int, overrides: list[str], label: str, experiment: str = "digits") -> dict:
    base = OUT / "seeds" / label / f"seed{seed}"
    base.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["results"] = str(base / "results")
    cfg["run"] = [experiment]
    exp = cfg["experiments"][experiment]
    exp["seed"] = seed
    for o in overrides:
        apply_override(exp, o)
    cfg_path = base / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(cores), "--configfile", str(cfg_path), "--quiet"],
                   cwd=ROOT, check=True)
    results = base / "results" / experiment
    return {"seed": seed, "seconds": time.perf_counter() - t0,
            "shift": json.loads((results / "shift" / "shift.json").read_text()),
            "discovery": json.loads((results / "groundtruth" / "discovery.json").read_text())}


def pt(x) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override an experiment key, e.g. --set data.validation_fraction=0 (repeatable)")
    ap.add_argument("--label", default="default", help="name of this configuration (its RESULTS.md section and out/ folder)")
    args = ap.parse_args(argv)
    runs = [run_seed(s, args.cores, args.overrides, args.label) for s in args.seeds]
    (OUT / f"seeds-{args.label}.json").write_text(json.dumps(runs, indent=2) + "\n")
    lines = [
        f"## {args.label}: the default experiment on seeds " + ", ".join(map(str, args.seeds)),
        "",
        f"Command: `{command(__file__, ap, args)}` (the whole workflow, "
        f"`config/config.yaml` with only `seed`{' and the keys set' if args.overrides else ''} changed; the seed sets the data split, the model's training, exploration "
        "and fine-tuning). Every number is on the held-out split; intervals are 95%. *Targeted reduction* is the relative "
        "drop of the failure rate on the cells the feedback marks `fix`, measured on every held-out input "
        "(shift.json's `targeted_heldout`, interval paired over the inputs); *landscapes' estimate* is the same from "
        "the two explorations (it carries the explorer's stopping bias: README, \"Unbiased landscapes\"); *mass* is the failure rate over the whole grid; "
        "*EMD* is the grid earth mover's distance between the landscapes (failure mass × level steps) beside its noise "
        "floor (what two explorations of the same landscape read); *other cells, fresh pairs* is shift.json's `other_heldout`: "
        "the untargeted cells on `shift.other_pairs` pairs drawn at random (2,048 by default), scored by both models (95% paired interval; pairs newly "
        "failing / newly passing); recall is of the true failure cells, by the "
        "landscape's rule (Wilson lower bound ≥ τ) and, in brackets, by the point estimate.",
        "",
        "| seed | clean accuracy before → after (pt) | targeted rate before → after | targeted reduction | "
        "landscapes' estimate | other cells (pt) | other cells, fresh pairs (pt) | failure mass (pt) | EMD (noise floor) | "
        "new failure cells | probes significantly worse | recall (point) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    def fresh(s):  # the untargeted cells on fresh pairs (shift.json's other_heldout), where the run has them
        oh = s.get("other_heldout")
        if not oh or "change" not in oh:
            return "n/a"
        return f"{pt(oh['change'])} ({pt(oh['change_ci'][0])} to {pt(oh['change_ci'][1])}; {oh['newly_failing']} / {oh['newly_passing']})"

    for r in runs:
        s, d, th = r["shift"], r["discovery"], r["shift"]["targeted_heldout"]
        lo, hi = s["targeted_relative_reduction_ci"]
        hlo, hhi = th["relative_change_ci"]
        lines.append(
            f"| {r['seed']} | {100 * s['clean_accuracy_pre']:.2f}% → {100 * s['clean_accuracy_post']:.2f}% "
            f"({pt(s['clean_accuracy_change'])}) | {100 * th['pre']:.1f}% → {100 * th['post']:.1f}% | "
            f"**−{-100 * th['relative_change']:.1f}%** ({-100 * hhi:.1f} to {-100 * hlo:.1f}%) | "
            f"{100 * s['targeted_failure_rate_pre']:.1f}% → {100 * s['targeted_failure_rate_post']:.1f}%: "
            f"−{100 * s['targeted_relative_reduction']:.1f}% ({100 * lo:.1f} to {100 * hi:.1f}%) | {pt(s['other']['change'])} | {fresh(s)} | {pt(s['failure_mass_change'])} | "
            f"{s['grid_emd']:.3f} ({s['grid_emd_noise_floor']:.3f}) | {s['new_failure_cells']} | "
            f"{s['probes_significantly_worse']} | {d['recall']:.3f} ({d['recall_point']:.3f}) |")
    probe_names = [p["probe"] for p in runs[0]["shift"]["probes"]]
    lines += ["", "Off-grid probes: failure rate before → after on every held-out input (change in points, 95% Newcombe "
              "interval, paired over the inputs (1998b) where the run kept the per-input counts; **bold** = "
              "significantly worse).", "",
              "| probe | " + " | ".join(f"seed {r['seed']}" for r in runs) + " |",
              "|---|" + "---|" * len(runs)]
    for name in probe_names:
        cells = []
        for r in runs:
            p = next(p for p in r["shift"]["probes"] if p["probe"] == name)
            text = (f"{100 * p['failure_rate_pre']:.1f}% → {100 * p['failure_rate_post']:.1f}% ({pt(p['delta'])}; "
                    f"{pt(p['delta_lo'])} to {pt(p['delta_hi'])})")
            cells.append(f"**{text}**" if p["significantly_worse"] else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    write_section(f"seeds-{args.label}", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
