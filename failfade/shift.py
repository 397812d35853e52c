"""Measure the landscape shift between the model before and after mitigation, on held-out inputs only.

Targeted cells are the plan's `fix` cells; every other cell is `other`. Rates are per-cell
failure rates averaged over cells (each cell counts once, wherever the explorer spent its
queries); pooled counts are reported too. The Wasserstein distance is an earth mover's distance
between the two failure distributions *over the grid*, with the grid's own ground metric (L1 in
level steps), not the paper's 1-D distance between unordered probability values.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.optimize import linprog

from failfade.concepts import ConceptSpace
from failfade.landscape import cell_table


def wasserstein_grid(p: np.ndarray, q: np.ndarray, ground: np.ndarray) -> float:
    """Exact EMD between two non-negative masses over the same cells (normalized to 1 each)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    if p.sum() == 0 and q.sum() == 0:
        return 0.0
    if p.sum() == 0 or q.sum() == 0:
        return float("nan")  # one side has no failures at all: no distribution to move
    p, q = p / p.sum(), q / q.sum()
    src, dst = np.flatnonzero(p > 0), np.flatnonzero(q > 0)
    cost = ground[np.ix_(src, dst)].ravel()
    ns, nd = len(src), len(dst)
    a_eq = np.zeros((ns + nd, ns * nd))
    for i in range(ns):
        a_eq[i, i * nd : (i + 1) * nd] = 1
    for j in range(nd):
        a_eq[ns + j, j::nd] = 1
    res = linprog(cost, A_eq=a_eq, b_eq=np.concatenate([p[src], q[dst]]), bounds=(0, None), method="highs")
    if not res.success:
        raise RuntimeError(f"transport problem failed: {res.message}")
    return float(res.fun)


def newcombe_diff(pre: pl.DataFrame, post: pl.DataFrame):
    """post − pre per cell with Newcombe's hybrid-score 95% interval from the two Wilson intervals."""
    p1, l1, u1 = (pre[c].to_numpy() for c in ("failure_rate", "rate_lo", "rate_hi"))
    p2, l2, u2 = (post[c].to_numpy() for c in ("failure_rate", "rate_lo", "rate_hi"))
    d = p2 - p1
    lo = d - np.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    hi = d + np.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return d, lo, hi


def _rates(cells: pl.DataFrame, mask: np.ndarray) -> dict:
    n, k = cells["queries"].to_numpy()[mask], cells["failures"].to_numpy()[mask]
    seen = n > 0
    return {
        "rate": float(np.mean(k[seen] / n[seen])) if seen.any() else float("nan"),
        "queries": int(n.sum()), "failures": int(k.sum()), "cells_seen": int(seen.sum()),
    }


def compare(space: ConceptSpace, pre_queries: pl.DataFrame, post_queries: pl.DataFrame, plan: dict,
            threshold: float, clean_pre: float, clean_post: float, confidence: float = 0.95):
    pre = cell_table(space, pre_queries, threshold, confidence)
    post = cell_table(space, post_queries, threshold, confidence)
    targeted = np.zeros(space.n_cells, dtype=bool)
    targeted[[f["cell"] for f in plan["fix"]]] = True
    d, lo, hi = newcombe_diff(pre, post)
    per_cell = pl.DataFrame({"cell": pre["cell"]}).with_columns(
        [pre[a.name] for a in space.axes]
        + [pl.Series("targeted", targeted)]
        + [pre[c].alias(f"{c}_pre") for c in ("queries", "failures", "failure_rate", "rate_lo", "rate_hi", "is_failure")]
        + [post[c].alias(f"{c}_post") for c in ("queries", "failures", "failure_rate", "rate_lo", "rate_hi", "is_failure")]
        + [pl.Series("delta", d), pl.Series("delta_lo", lo), pl.Series("delta_hi", hi)]
    )
    new_fail = np.flatnonzero(post["is_failure"].to_numpy() & ~pre["is_failure"].to_numpy())
    t_pre, t_post = _rates(pre, targeted), _rates(post, targeted)
    o_pre, o_post = _rates(pre, ~targeted), _rates(post, ~targeted)
    mass = lambda c: np.nan_to_num(c["failure_rate"].to_numpy(), nan=0.0)  # noqa: E731
    result = {
        "clean_accuracy_pre": clean_pre,
        "clean_accuracy_post": clean_post,
        "targeted_cells": int(targeted.sum()),
        "targeted_failure_rate_pre": t_pre["rate"],
        "targeted_failure_rate_post": t_post["rate"],
        "targeted_relative_reduction": (1 - t_post["rate"] / t_pre["rate"]) if t_pre["rate"] else float("nan"),
        "other_failure_rate_pre": o_pre["rate"],
        "other_failure_rate_post": o_post["rate"],
        "targeted_pooled": {"pre": t_pre, "post": t_post},
        "other_pooled": {"pre": o_pre, "post": o_post},
        "failure_cells_pre": int(pre["is_failure"].sum()),
        "failure_cells_post": int(post["is_failure"].sum()),
        "new_failure_cells": int(len(new_fail)),
        "new_failure_cell_list": [space.describe_cell(int(c)) for c in new_fail],
        "cells_significantly_better": int((hi < 0).sum()),
        "cells_significantly_worse": int((lo > 0).sum()),
        "wasserstein_grid": wasserstein_grid(mass(pre), mass(post), space.grid_distance()),
        "queries_pre": pre_queries.height,
        "queries_post": post_queries.height,
    }
    return result, per_cell


def markdown(result: dict, experiment: str) -> str:
    pct = lambda x: "n/a" if x != x else f"{100 * x:.1f}%"  # noqa: E731
    lines = [
        f"# Landscape shift — {experiment}",
        "",
        "All numbers are on held-out inputs that neither training nor fine-tuning saw.",
        "",
        "| | before | after |",
        "|---|---|---|",
        f"| clean accuracy | {pct(result['clean_accuracy_pre'])} | {pct(result['clean_accuracy_post'])} |",
        f"| targeted failure rate ({result['targeted_cells']} cells) | {pct(result['targeted_failure_rate_pre'])} | {pct(result['targeted_failure_rate_post'])} |",
        f"| other failure rate | {pct(result['other_failure_rate_pre'])} | {pct(result['other_failure_rate_post'])} |",
        f"| failure cells | {result['failure_cells_pre']} | {result['failure_cells_post']} |",
        "",
        f"- Targeted failure rate reduced by **{pct(result['targeted_relative_reduction'])}** (relative).",
        f"- Cells that became failure cells: **{result['new_failure_cells']}**"
        + (": " + "; ".join(result["new_failure_cell_list"]) if result["new_failure_cell_list"] else "."),
        f"- Cells significantly better / worse (95% Newcombe interval excludes 0): "
        f"{result['cells_significantly_better']} / {result['cells_significantly_worse']}.",
        f"- Wasserstein distance over the grid (L1 ground metric, level steps): {result['wasserstein_grid']:.3f}.",
        "",
    ]
    return "\n".join(lines)
