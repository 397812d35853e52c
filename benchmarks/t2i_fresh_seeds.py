"""The text-to-image mitigation checked on seeds that no stage uses.

    .venv/bin/python benchmarks/t2i_fresh_seeds.py [--results results] [--experiment t2i] [--seeds 64]

The default LoRA settings (steps, which prompts to preserve) were chosen by measuring on every
held-out seed, and the workflow's shift.json reports the mitigation on those same seeds, so that
figure can be optimistic. This scores the base and the mitigated model of a finished run
(`failfade run`, results/<experiment>/) on every prompt at `--seeds` fresh seeds
(`GenerationFamily.fresh_seed_check`), and reports the fixed cells pooled (the same estimator and
intervals as shift.json's `targeted_heldout`), the judge's pass rate on the other prompts and the
failure cells by the landscape's rule, beside shift.json's held-out figures. Writes the
"t2i-fresh-seeds" section of benchmarks/RESULTS.md and benchmarks/out/t2i-fresh-seeds.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, ROOT, command, write_section  # noqa: E402

from failfade.config import load  # noqa: E402
from failfade.feedback import read_plan  # noqa: E402
from failfade.pipeline import family_of  # noqa: E402


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", default="results", help="the finished run's results folder")
    ap.add_argument("--experiment", default="t2i")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--seeds", type=int, default=64, help="fresh seeds per prompt (the default run holds out 64)")
    args = ap.parse_args(argv)
    exp = load(ROOT / args.config)["experiments"][args.experiment]
    res = ROOT / args.results / args.experiment
    need = [res / "model" / "model.json", res / "mitigate" / "model.json", res / "feedback" / "plan.json",
            res / "shift" / "shift.json"]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        sys.exit(f"t2i_fresh_seeds: no finished run of {args.experiment!r}: missing {missing} "
                 f"(run: .venv/bin/failfade run --config 'run=[\"{args.experiment}\"]')")
    plan = read_plan(res / "feedback" / "plan.json")
    t0 = time.perf_counter()
    out = family_of(exp).fresh_seed_check(exp, res / "model", res / "mitigate", plan, args.seeds)
    out["seconds"] = time.perf_counter() - t0
    heldout = json.loads((res / "shift" / "shift.json").read_text()).get("targeted_heldout", {})
    out["heldout"] = heldout
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "t2i-fresh-seeds.json").write_text(json.dumps(out, indent=2) + "\n")

    f = out["fixed"]

    def rel(d):
        r, ci = d.get("relative_change"), d.get("relative_change_ci")
        return f"{100 * r:+.1f}% ({100 * ci[0]:+.1f}% to {100 * ci[1]:+.1f}%)" if r is not None and ci else "—"

    rows = [("held-out seeds (shift.json; the settings were chosen on these)", heldout),
            (f"{args.seeds} fresh seeds (used by no stage)", f)]
    lines = [f"## Text-to-image mitigation on fresh seeds: experiment `{args.experiment}`", "",
             f"Command: `{command(__file__, ap, args)}`, on the finished run in `{args.results}/{args.experiment}/`. "
             f"Every prompt ({out['other_cells'] + f['cells']} cells) at {args.seeds} seeds that no stage uses, base and "
             f"mitigated model ({out['images_per_side']:,} images each, {out['seconds']:.0f} s); fixed cells pooled with "
             "shift.json's estimator (Wilson before/after at the seeds per cell; the relative change's interval over the "
             "seeds, paired, since every prompt shares them: " + f.get("interval", "—") + ").", "",
             "| seeds | fixed cells | images per side | failure rate before | after | relative change (95% CI) |",
             "|---|---|---|---|---|---|"]
    for name, d in rows:
        if d.get("queries"):
            lines.append(f"| {name} | {d['cells']} | {d['queries']:,} | {pct(d['pre'])} | {pct(d['post'])} | {rel(d)} |")
    new = out["new_failure_cells"]
    lines += ["", f"The other {out['other_cells']} prompts on the fresh seeds: the judge's pass rate "
              f"{pct(out['other_pass']['pre'])} → {pct(out['other_pass']['post'])}; failure cells by the landscape's rule "
              f"{len(out['failure_cells']['pre'])} → {len(out['failure_cells']['post'])}, new among the other prompts: "
              + (", ".join(new) if new else "none") + "."]
    write_section("t2i-fresh-seeds", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
