"""How far the landscape's mode rates are off, and whether the audit's hold, against the exhaustive truth.

    .venv/bin/python benchmarks/mode_audit.py [--experiment digits] [--seeds 10] [--queries 512]

For one experiment of config/config.yaml: obtains its model as the workflow does, scores every
cell on every held-out input once (the exhaustive truth), then, for each exploration seed, explores
with the experiment's own searcher and budget on that truth (the real task, its observations and
propensities; each outcome looked up instead of scored again: the same queries, cheaper), builds
the failure modes as the landscape stage does and audits them as the audit stage does
(failfade.audit). Per mode it compares the landscape's rate and 95% interval, and the audit's, with
the mode's exhaustive rate (every cell of the mode on every held-out input). Writes the
"mode-audit-<experiment>" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import ROOT, command, model_dir, write_section  # noqa: E402


def mean_ci(x: np.ndarray) -> str:
    """Mean with a normal 95% interval over the modes (in points)."""
    m, se = x.mean(), x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return f"{100 * m:+.1f} ({100 * (m - 1.96 * se):+.1f}, {100 * (m + 1.96 * se):+.1f})"


def share(held: np.ndarray) -> str:
    from failfade.stats import wilson_interval

    lo, hi = wilson_interval(held.sum(), len(held))
    return f"{int(held.sum())}/{len(held)} = {held.mean():.2f} [{float(lo):.2f}, {float(hi):.2f}]"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default="digits")
    ap.add_argument("--seeds", type=int, default=10, help="exploration seeds 0..N-1")
    ap.add_argument("--queries", type=int, default=None, help="audit pairs per mode (default: the experiment's)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    from failfade.audit import audit_modes
    from failfade.slices import cells_of
    from failfade.config import load
    from failfade.explore.search import exhaustive, explore, substream
    from failfade.landscape import summarize
    from failfade.pipeline import AUDIT_STREAM, build_task, searcher_params
    from failfade.tasks.cache import CachedTask

    exp = load(ROOT / "config" / "config.yaml")["experiments"][args.experiment]
    e, ls = exp["explore"], exp["landscape"]
    tau, conf = ls["failure_rate_threshold"], ls["confidence"]
    per_mode = args.queries or exp["audit"]["queries_per_mode"]
    task = build_task(exp, model_dir(args.experiment, exp))
    t0 = time.perf_counter()
    truth_q, _ = exhaustive(task, exp["seed"])
    truth_s = time.perf_counter() - t0
    table = CachedTask(task).fill(truth_q["input_id"].to_numpy(), truth_q["cell"].to_numpy(), truth_q["prediction"].to_numpy(),
                                  truth_q["delta"].to_numpy(), truth_q["failure"].to_numpy())
    F = np.zeros((task.n_inputs, task.n_cells))
    F[truth_q["input_id"].to_numpy(), truth_q["cell"].to_numpy()] = truth_q["failure"].to_numpy()
    rows = []
    for seed in range(args.seeds):
        q, _ = explore(table, e["budget"], e["num_agents"], seed, e["algorithm"], searcher_params(e), False,
                       mode=e.get("mode", "macroscopic"), micro=e.get("micro"), tau=tau, confidence=conf)
        _, modes, _ = summarize(task.space, q, tau, conf, ls)
        audit = audit_modes(table, modes, per_mode, substream(seed, AUDIT_STREAM), tau, conf, show_progress=False)
        for m, a in zip(modes.iter_rows(named=True), audit.iter_rows(named=True)):
            t = F[:, cells_of(m["cells"])].mean()
            rows.append({"seed": seed, "selector": m["selector"], "truth": t, "explored": a["explored_rate"],
                         "explored_lo": a["explored_lo"], "explored_hi": a["explored_hi"], "audit": a["audit_rate"],
                         "audit_lo": a["audit_lo"], "audit_hi": a["audit_hi"], "exact": a["exact"],
                         "confirmed": a["confirmed"], "n_cells": m["n_cells"]})
        print(f"seed {seed}: {modes.height} modes", flush=True)
    if not rows:
        sys.exit("no exploration found a failure mode: nothing to audit")
    col = lambda k: np.array([r[k] for r in rows], dtype=float)  # noqa: E731
    truth = col("truth")
    ex_err, au_err = col("explored") - truth, col("audit") - truth
    ex_held = (col("explored_lo") <= truth) & (truth <= col("explored_hi"))
    au_held = (col("audit_lo") <= truth) & (truth <= col("audit_hi"))
    failing = truth >= tau
    lines = [
        f"Command: `{command(__file__, ap, args)}`",
        "",
        f"`{args.experiment}`: {task.n_cells} cells x {task.n_inputs} held-out inputs scored once for the truth "
        f"({truth_s:.0f} s); {args.seeds} explorations ({e['algorithm']}, {e['budget']} queries each) on it; "
        f"{len(rows)} modes in all, audited on {per_mode} fresh pairs each "
        f"({int(col('exact').sum())} of them scored whole). Errors are rate minus the mode's exhaustive rate, "
        "in points, mean over the modes (95% interval); `holds` counts the 95% intervals that contain it.",
        "",
        "| rate | mean error (points) | mean absolute error | 95% interval holds the truth | mean width |",
        "|---|---|---|---|---|",
        f"| the landscape's (explored) | {mean_ci(ex_err)} | {100 * np.abs(ex_err).mean():.1f} | {share(ex_held)} | "
        f"{100 * (col('explored_hi') - col('explored_lo')).mean():.1f} |",
        f"| the audit's | {mean_ci(au_err)} | {100 * np.abs(au_err).mean():.1f} | {share(au_held)} | "
        f"{100 * (col('audit_hi') - col('audit_lo')).mean():.1f} |",
        "",
        f"Modes whose exhaustive rate is >= τ = {tau}: {int(failing.sum())} of {len(rows)}; the audit confirmed "
        f"{int((col('confirmed').astype(bool) & failing).sum())} of them, and "
        f"{int((col('confirmed').astype(bool) & ~failing).sum())} of the {int((~failing).sum())} others.",
    ]
    text = "\n".join(lines)
    print(text)
    write_section(f"mode-audit-{args.experiment}", text)


if __name__ == "__main__":
    main()
