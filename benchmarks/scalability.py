"""Scalability: the paper's experiment (1 to 6 concept axes) done properly, and discovery on sparse landscapes.

    .venv/bin/python benchmarks/scalability.py [--seeds 10] [--models digits,alexnet] [--skip-timing] [--skip-discovery]
        [--section scalability] [--max-axes 6] [--repeats 3] [--num-agents 256] [--threads 2]

(a) Time per 1,000 model queries for 1 to 6 axes of 5 levels (5 to 15,625 cells): failfade's
    exploration (PPO, batched scoring), pure batched scoring of the same queries (the hardware's
    limit) and the paper-style loop (one input per step, PIL transforms, one forward pass and the
    paper's Q-network on the raw image), on the default digits CNN (32 px) and AlexNet (random
    weights, 224 px, the paper's model at its input size), all in one process on this machine,
    beside the paper's 47-54 s per 1,000 AlexNet episodes (one image per step, its hardware).
(b) Discovery where failures are sparse, at equal query budgets, PPO against random, levelset and
    the paper's threshold sampler, >= 10 seeds, recall paired seed by seed against random (the env
    draws the same inputs for the same seed, except for the threshold sampler, which picks its own),
    queries to 90% recall as a median over the runs that reach it:
      planted   a synthetic model failing on three conjunctions of a 6-axis grid (15,625 cells,
                6% of them failing), the exact truth known;
      digits    the default digits CNN on a 5-axis grid of mild perturbations (3,125 cells, 2.9%
                failing on its first 128 held-out digits), its truth scored exhaustively once
                (cached under benchmarks/out/).
Writes the `--section` section of benchmarks/RESULTS.md (default "scalability"; a second run: e.g.
`--section scalability-rerun`) and benchmarks/out/<section>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, command, default_experiment, digits_model, write_section  # noqa: E402
from discovery import _fmt, _paired  # noqa: E402
from throughput import failfade_explore, paper_style, pure  # noqa: E402

from failfade.concepts import ConceptSpace  # noqa: E402
from failfade.explore.search import exhaustive, explore  # noqa: E402
from failfade.metrics import queries_to_recall, scores_of, true_rates  # noqa: E402
from failfade.tasks.cache import CachedTask  # noqa: E402
from failfade.tasks.classification import models  # noqa: E402
from failfade.tasks.classification.data import ImageSet, load_splits  # noqa: E402
from failfade.tasks.classification.task import ClassificationTask  # noqa: E402
from failfade.tasks.classification.transforms import TRANSFORMS  # noqa: E402
from failfade.tasks.synthetic import SyntheticTask  # noqa: E402

PAPER_SECONDS = (47, 54)  # per 1,000 AlexNet episodes, one image each (the paper's scalability figure)

# the timing grid: the first k axes for k = 1..6 (the sixth rotates the other way: five transforms exist)
TIMING_AXES = [
    {"name": "rotation", "transform": "rotate", "levels": [0, 10, 20, 30, 40]},
    {"name": "blur", "transform": "gaussian_blur", "levels": [0, 1, 1.5, 2, 2.5]},
    {"name": "contrast", "transform": "contrast", "levels": [1, 0.6, 0.4, 0.3, 0.2]},
    {"name": "darken", "transform": "darken", "levels": [0, 0.2, 0.4, 0.6, 0.8]},
    {"name": "occlusion", "transform": "occlude", "levels": [0, 0.1, 0.2, 0.3, 0.4]},
    {"name": "tilt", "transform": "rotate", "levels": [0, -10, -20, -30, -40]},
]
# the sparse real landscape: mild levels, so that only combinations fail (2.9% of the cells)
SPARSE_AXES = [
    {"name": "rotation", "transform": "rotate", "levels": [0, 5, 10, 15, 20]},
    {"name": "blur", "transform": "gaussian_blur", "levels": [0, 0.5, 1, 1.5, 2]},
    {"name": "contrast", "transform": "contrast", "levels": [1, 0.85, 0.7, 0.6, 0.5]},
    {"name": "darken", "transform": "darken", "levels": [0, 0.1, 0.2, 0.3, 0.4]},
    {"name": "occlusion", "transform": "occlude", "levels": [0, 0.05, 0.1, 0.15, 0.2]},
]
SEARCHERS = {"ppo": ("ppo", {}), "random": ("random", {}), "levelset": ("levelset", {}),
             "threshold (paper)": ("threshold", {"successes": 5})}


def planted_cells(shape=(5,) * 6) -> tuple[np.ndarray, list[str]]:
    """Three conjunctions on a 6-axis grid (levels 0-4): their cells and their descriptions."""
    c = np.indices(shape).reshape(len(shape), -1)
    rules = {"axis0>=3 & axis1>=3 & axis2=4": (c[0] >= 3) & (c[1] >= 3) & (c[2] == 4),
             "axis3=0 & axis4=4 & axis5>=3": (c[3] == 0) & (c[4] == 4) & (c[5] >= 3),
             "axis1=0 & axis5=0 & axis2<=1": (c[1] == 0) & (c[5] == 0) & (c[2] <= 1)}
    return np.flatnonzero(np.any(list(rules.values()), axis=0)), list(rules)


def image_task(model: str, axes: list[dict], exp: dict, n_inputs: int | None = None) -> ClassificationTask:
    space = ConceptSpace.from_config(axes, TRANSFORMS)
    if model == "digits":
        mut = models.load_model(digits_model(exp), "cpu")
        size = 32
    else:
        torch.manual_seed(exp["seed"])  # random weights, the same in every run
        module, card = models.resolve_source(models.ModelSource.parse(f"torchvision:{model}:none"), Path("resources"))
        mut = models.ModelUnderTest(module, card, torch.device("cpu"))
        size = 224
    h = load_splits("builtin:digits", size, 0.3, exp["seed"]).heldout
    if n_inputs:
        h = ImageSet(h.images[:n_inputs], h.labels[:n_inputs], h.ids[:n_inputs])
    return ClassificationTask(mut, h, space, batch_size=256)


def timing(args, exp) -> list[dict]:
    rows = []
    for model in args.models.split(","):
        batch = args.num_agents
        n = args.timing_queries if model == "digits" else max(2 * batch, args.timing_queries // 8)
        n_paper = 512 if model == "digits" else 64
        for k in range(1, args.max_axes + 1):
            task = image_task(model, TIMING_AXES[:k], exp)
            run = {"failfade": lambda m: failfade_explore(task, m, batch), "pure": lambda m: pure(task, m, batch),
                   "paper-style": lambda m: paper_style(task, m)}
            size = {"failfade": n, "pure": n, "paper-style": n_paper}
            for m, f in run.items():  # warm-up
                f(2 * batch if m != "paper-style" else 8)
            reps = {m: [] for m in run}
            for _ in range(args.repeats):  # interleaved: a noisy moment hits every method alike
                for m, f in run.items():
                    reps[m].append(1000.0 / f(size[m]))
            r = {"model": model, "axes": k, "cells": task.n_cells, **{m: float(np.median(v)) for m, v in reps.items()},
                 **{f"{m}_range": (float(min(v)), float(max(v))) for m, v in reps.items()}}
            rows.append(r)
            print(f"{model} {k} axes ({task.n_cells} cells): s per 1,000 queries: failfade {r['failfade']:.2f}, "
                  f"pure {r['pure']:.2f}, paper-style {r['paper-style']:.2f}", flush=True)
    return rows


def discovery_tasks(args, exp) -> dict:
    out = {}
    planted, rules = planted_cells()
    syn = SyntheticTask(shape=(5,) * 6, planted=planted, n_inputs=256, p_fail=0.9, p_base=0.03, seed=0)
    out["planted"] = {"task": syn, "truth": syn.true_failure_rate(), "fraction": args.planted_fraction,
                      "about": f"synthetic, 6 axes x 5 levels, 256 inputs; planted: {'; '.join(rules)}"}
    if not args.quick:
        task = image_task("digits", SPARSE_AXES, exp, n_inputs=args.sparse_inputs)
        import hashlib

        weights = hashlib.sha256((digits_model(exp) / "model.safetensors").read_bytes()).hexdigest()[:12]
        # scored once: later runs read the outcome cache (keyed by the weights, the levels and the inputs)
        key = hashlib.sha256(json.dumps([weights, SPARSE_AXES, args.sparse_inputs]).encode()).hexdigest()[:16]
        cached = CachedTask(task, OUT / f"scalability-digits-{key}.npz")
        q, _ = exhaustive(cached, progress=True)
        cached.save()
        out["digits (sparse)"] = {"task": cached, "truth": true_rates(task.n_cells, q), "fraction": args.sparse_fraction,
                                  "about": "the default digits CNN, 5 mild axes x 5 levels ("
                                  + ", ".join(f"{a['name']} {a['levels'][-1]}" for a in SPARSE_AXES) + f" at most), "
                                  f"the first {args.sparse_inputs} held-out digits"}
    return out


def discovery(args, exp) -> dict:
    tau = exp["landscape"]["failure_rate_threshold"]
    results = {}
    for tname, d in discovery_tasks(args, exp).items():
        task, truth = d["task"], d["truth"]
        budget = int(d["fraction"] * task.n_inputs * task.n_cells)
        n_fail = int((truth >= tau).sum())
        print(f"{tname}: {n_fail} true failure cells of {task.n_cells} ({n_fail / task.n_cells:.1%}); budget {budget} "
              f"queries ({budget / task.n_cells:.1f} per cell)", flush=True)
        res = {"about": d["about"], "cells": task.n_cells, "failing": n_fail, "budget": budget, "runs": {}}
        for sname, (alg, params) in SEARCHERS.items():
            runs = []
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                q, _ = explore(task, budget, args.num_agents, seed, alg, params, progress=False)
                r = scores_of(task.n_cells, q, truth, tau)
                r["queries_to_90"] = queries_to_recall(task.n_cells, q, truth, tau)
                r["seconds"] = time.perf_counter() - t0
                runs.append(r)
            res["runs"][sname] = runs
            prec = [r["precision"] for r in runs if r["precision"] == r["precision"]]  # NaN: a run that reports no cell
            print(f"  {sname:20s} recall {np.mean([r['recall'] for r in runs]):.3f} precision "
                  f"{f'{np.mean(prec):.3f}' if prec else 'n/a (no cell reported)'} "
                  f"({np.mean([r['seconds'] for r in runs]):.1f} s per run)", flush=True)
        results[tname] = res
    return results


def _q90(runs) -> str:
    v = [r["queries_to_90"] for r in runs if r["queries_to_90"] is not None]
    return f"{np.median(v):,.0f} ({len(v)}/{len(runs)})" if v else f"— (0/{len(runs)})"


def report(args, rows, disc, cmd: str = ".venv/bin/python benchmarks/scalability.py") -> str:
    dev = f"{platform.processor() or platform.machine()}, {args.threads} threads"
    lines = [f"## Scalability: 5 to 15,625 cells ({dev})", "",
             f"Command: `{cmd}` ({time.strftime('%Y-%m-%d')}).", ""]
    if rows:
        lines += ["### Seconds per 1,000 model queries", "",
                  "Median of interleaved repetitions (range in brackets), one process, this machine. *failfade*: PPO "
                  f"exploration with {args.num_agents} explorers and one batched scoring call per step, learner included; *pure*: "
                  f"the same transforms and forward passes in plain batches of {args.num_agents}; *paper-style*: one input per step, PIL "
                  "transforms, one forward pass and the paper's Q-network on the raw image. The paper reports "
                  f"{PAPER_SECONDS[0]}–{PAPER_SECONDS[1]} s per 1,000 AlexNet episodes (one image each) on its own hardware.", "",
                  "| model | axes | cells | failfade | pure batched | paper-style (this machine) | paper-style / failfade | paper (reported) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            paper = f"{PAPER_SECONDS[0]}–{PAPER_SECONDS[1]}" if r["model"] == "alexnet" else "—"
            lines.append(f"| {r['model']} | {r['axes']} | {r['cells']:,} | {r['failfade']:.2f} ({r['failfade_range'][0]:.2f}–"
                         f"{r['failfade_range'][1]:.2f}) | {r['pure']:.2f} | {r['paper-style']:.2f} | "
                         f"{r['paper-style'] / r['failfade']:.1f}× | {paper} |")
        lines.append("")
    for tname, res in disc.items():
        lines += [f"### Discovery, {tname}: {res['cells']:,} cells, {res['failing']} failing "
                  f"({res['failing'] / res['cells']:.1%}), budget {res['budget']:,} queries "
                  f"({res['budget'] / res['cells']:.1f} per cell)", "", res["about"] + f"; {args.seeds} seeds; recall and "
                  "precision by the rule the user sees (95% Wilson lower bound of the cell's weighted failure rate ≥ τ), "
                  "against the exact truth; *recall − random* pairs seed i with random's seed i (mean, 95% t-interval); "
                  "*queries to 90%*: median over the runs that reach 90% recall (runs reaching it).", "",
                  "| searcher | recall | recall − random (95% CI) | precision | queries to 90% recall | s per run |",
                  "|---|---|---|---|---|---|"]
        base = [r["recall"] for r in res["runs"]["random"]]
        for sname, runs in res["runs"].items():
            rec = [r["recall"] for r in runs]
            prec = [r["precision"] for r in runs]
            lines.append(f"| {sname} | {np.mean(rec):.3f} ± {np.std(rec, ddof=1):.3f} | {_paired(rec, base, sname == 'random')} | "
                         f"{_fmt(prec)} | {_q90(runs)} | "
                         f"{np.mean([r['seconds'] for r in runs]):.1f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="digits,alexnet")
    ap.add_argument("--max-axes", type=int, default=6)
    ap.add_argument("--timing-queries", type=int, default=4096, help="per timed repetition (AlexNet: an eighth)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--num-agents", type=int, default=256, help="explorers per env step (= scoring batch)")
    ap.add_argument("--planted-fraction", type=float, default=0.01, help="budget: share of the exhaustive queries")
    ap.add_argument("--sparse-fraction", type=float, default=0.1)
    ap.add_argument("--sparse-inputs", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-discovery", action="store_true")
    ap.add_argument("--quick", action="store_true", help="the planted landscape only, nothing written (tests)")
    ap.add_argument("--section", default="scalability", help="RESULTS.md section (a second run: e.g. scalability-rerun)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    exp = default_experiment()
    rows = [] if args.skip_timing else timing(args, exp)
    disc = {} if args.skip_discovery else discovery(args, exp)
    text = report(args, rows, disc, command(__file__, ap, args))
    if not args.quick:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"{args.section}.json").write_text(json.dumps({"timing": rows, "discovery": disc}, indent=2, default=float))
        write_section(args.section, text)
    print(text)
    return rows, disc


if __name__ == "__main__":
    main()
