"""Discovery benchmark: every searcher at the same query budget, against the exhaustive truth.

    .venv/bin/python benchmarks/discovery.py [--seeds 20] [--first-seed 0] [--fraction 0.2] [--synthetic-fraction 0.03]
        [--num-agents 64]

Tasks: the default experiment (digits CNN, 125 cells x 539 held-out inputs), the summarization
default (`reports`: tiny T5, 64 cells x 200 held-out documents, its own 32 explorers; its model is
trained once under benchmarks/out/, as the workflow does) and a synthetic model with planted
failure cells (known answer). The exhaustive landscape is scored once and pre-loaded
into an outcome cache, so every searcher's queries cost a lookup and the comparison is of search
quality at equal budgets. Writes the "discovery" section of benchmarks/RESULTS.md and
benchmarks/out/discovery.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import OUT, command, default_experiment, digits_model, write_section  # noqa: E402

from failfade.tasks.cache import CachedTask  # noqa: E402
from failfade.explore.search import exhaustive, explore  # noqa: E402
from failfade.metrics import discovery_curve, queries_to_recall, scores_of, true_rates  # noqa: E402
from failfade.pipeline import build_task  # noqa: E402
from failfade.tasks.synthetic import SyntheticTask  # noqa: E402

SEARCHERS = {
    "ppo": ("ppo", {}),
    "ppo (before: levelset prior, unbounded, mix 0.5)": ("ppo", {"prior": "levelset", "residual_bound": 0.0,
                                                                 "uniform_mix": 0.5}),
    "ppo (failure-seeking: prior none)": ("ppo", {"prior": "none", "ent_coef": 0.01, "uniform_mix": 0.25}),
    "dqn": ("dqn", {}),
    "dqn (untrained, as the paper)": ("dqn", {"learn": False}),
    "random": ("random", {}),
    "epsilon_greedy": ("epsilon_greedy", {"epsilon": 0.2}),
    "bandit (Thompson)": ("bandit", {}),
    "levelset": ("levelset", {}),
    "confirm (PPO's prior, settled at 99%)": ("confirm", {}),
    "threshold (paper)": ("threshold", {"successes": 5}),
}


def prefilled(task) -> tuple[CachedTask, np.ndarray]:
    cached = CachedTask(task)
    truth_q, _ = exhaustive(cached, progress=False)
    return cached, true_rates(task.n_cells, truth_q)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20, help="seeds per searcher (the recall sd of one run is ~0.02)")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run from here (a second set checks a choice made on the first)")
    ap.add_argument("--fraction", type=float, default=0.2, help="budget as a fraction of the exhaustive queries")
    ap.add_argument("--synthetic-fraction", type=float, default=0.03)
    ap.add_argument("--num-agents", type=int, default=64)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    exp = default_experiment()
    tau = exp["landscape"]["failure_rate_threshold"]
    from throughput import build_default

    tasks = {"digits (default)": build_task(exp, digits_model(exp)), "reports (summarization default)": build_default("reports", "cpu"),
             "synthetic (planted)": SyntheticTask(seed=0)}
    # the planted model is easy (10 strong cells): at 20% every searcher saturates, so it gets 3%
    fractions = {"digits (default)": args.fraction, "reports (summarization default)": args.fraction,
                 "synthetic (planted)": args.synthetic_fraction}
    agents = {"reports (summarization default)": 32}  # as its config; the others args.num_agents
    results, curves = {}, {}
    for tname, task in tasks.items():
        cached, truth = prefilled(task)
        budget = int(fractions[tname] * task.n_inputs * task.n_cells)
        print(f"{tname}: {int((truth >= tau).sum())} true failure cells of {task.n_cells}; budget {budget} queries", flush=True)
        for sname, (alg, params) in SEARCHERS.items():
            runs = []
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                t0 = time.perf_counter()
                q, log = explore(cached, budget, agents.get(tname, args.num_agents), seed, alg, params, progress=False)
                r = scores_of(task.n_cells, q, truth, tau)
                r["queries_to_90"] = queries_to_recall(task.n_cells, q, truth, tau)
                r["failures_found"] = float(q["failure"].mean())  # share of proposals that made the model fail
                r["updates"] = int(log["n_updates"].max()) if "n_updates" in log.columns else 0
                r["seconds"] = time.perf_counter() - t0
                runs.append(r)
                curves.setdefault((tname, sname), []).append(discovery_curve(task.n_cells, q, truth, tau, 30))
            results[(tname, sname)] = runs
            m = {k: np.mean([r[k] for r in runs]) for k in ("recall", "precision", "mae")}
            found = np.mean([r["failures_found"] for r in runs])
            print(f"  {sname:32s} recall {m['recall']:.3f} (point {np.mean([r['recall_point'] for r in runs]):.3f}) precision {m['precision']:.3f} mae {m['mae']:.3f} "
                  f"failures found {found:.3f}", flush=True)
    report(results, curves, args, command(__file__, ap, args))


def _fmt(vals, digits=3):
    """mean ± sd over the runs that have the value; how many, where some have none (precision of a
    run that reports no cell)."""
    kept = [v for v in vals if v is not None and v == v]
    if not kept:
        return "—"
    out = f"{np.mean(kept):.{digits}f} ± {np.std(kept, ddof=1) if len(kept) > 1 else 0:.{digits}f}"
    return out if len(kept) == len(vals) else f"{out} ({len(kept)}/{len(vals)} runs)"


def _paired(vals, base, is_base: bool = False) -> str:
    """Mean difference over seeds (seed i against random's seed i) with a t-interval; "—" for
    random itself (`is_base`; a searcher that ties random on every seed reads +0.000)."""
    from scipy import stats

    if is_base:
        return "—"
    d = np.asarray(vals) - np.asarray(base)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return f"{d.mean():+.3f} ({d.mean() - half:+.3f}, {d.mean() + half:+.3f})"


def report(results, curves, args, cmd: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        "## Discovery: searchers at an equal query budget",
        "",
        f"Budget: {args.fraction:.0%} of the exhaustive queries on digits and reports, {args.synthetic_fraction:.0%} on the planted "
        f"model (at 20% every searcher saturates there); {args.seeds} seeds ({args.first_seed}–{args.first_seed + args.seeds - 1}); {args.num_agents} explorers "
        "(reports: 32, as its config); "
        "mean ± sd. *recall* and *precision* use the rule the user sees: a cell is reported failing when the landscape "
        "calls it a failure cell, i.e. the 95% Wilson lower bound of its failure rate (importance-weighted for ppo and dqn, "
        "with effective counts) is ≥ τ = 0.5. *recall (point)* and *precision (point)* use the looser rule that its point "
        "estimate is ≥ τ, which counts borderline cells the landscape does not show as failing. Both are against the exhaustive truth; *recall − random* pairs seed i with random's seed i (the env draws the same inputs, except for the threshold baseline, which picks its own); MAE is the mean |Laplace estimate − true rate| "
        "over all cells; *queries to 90%* is where recall (interval rule) reaches 0.9 and stays (— if it never does in the budget); "
        "*failures found* is the share of a searcher's queries that made the model fail (what the paper's agents are "
        "rewarded for).",
        "",
        f"Command: `{cmd}`",
        "",
    ]
    for tname in dict.fromkeys(t for t, _ in results):
        lines += [f"### {tname}", "", "| searcher | recall | recall − random (95% CI) | precision | recall (point) | "
                  "precision (point) | MAE | failures found | queries to 90% recall (runs reaching it) | learner updates |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        base = [r["recall"] for r in results[(tname, "random")]]
        for (t, s), runs in results.items():
            if t != tname:
                continue
            q90 = [r["queries_to_90"] for r in runs]
            reached = sum(v is not None for v in q90)
            q90_text = _fmt(q90, 0)  # names the runs that reach 90% when only some do
            q90_text += "" if q90_text.endswith("runs)") else f" ({reached}/{len(runs)})"
            lines.append(f"| {s} | {_fmt([r['recall'] for r in runs])} | {_paired([r['recall'] for r in runs], base, s == 'random')} | "
                         f"{_fmt([r['precision'] for r in runs])} | {_fmt([r['recall_point'] for r in runs])} | "
                         f"{_fmt([r['precision_point'] for r in runs])} | "
                         f"{_fmt([r['mae'] for r in runs])} | {_fmt([r['failures_found'] for r in runs])} | {q90_text} | "
                         f"{int(np.mean([r['updates'] for r in runs]))} |")
        lines.append("")
    lines.append("Recall curves: `benchmarks/out/discovery.png`.")
    write_section("discovery", "\n".join(lines))
    fig, axes = plt.subplots(1, 3, figsize=(18, 4))
    for ax, tname in zip(axes, dict.fromkeys(t for t, _ in results)):
        for (t, s), cs in curves.items():
            if t != tname:
                continue
            x = cs[0]["queries"].to_numpy()
            y = np.stack([c["recall"].to_numpy() for c in cs])
            ax.plot(x, y.mean(0), label=s)
            ax.fill_between(x, y.mean(0) - y.std(0), y.mean(0) + y.std(0), alpha=0.15)
        ax.axhline(0.9, color="grey", ls=":")
        ax.set(title=tname, xlabel="model queries", ylabel="recall of true failure cells (interval rule)", ylim=(0, 1.02))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "discovery.png", dpi=110)
    raw = {f"{t} | {s}": runs for (t, s), runs in results.items()}
    (OUT / "discovery.json").write_text(json.dumps(raw, indent=2, default=float))


if __name__ == "__main__":
    main()
