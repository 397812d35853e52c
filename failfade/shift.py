"""Measure the landscape shift between the model before and after mitigation, on held-out inputs only.

What `shift.json` reports, and what each number means:

- **Region rates.** Targeted cells are the plan's `fix` cells; every other cell is `other`. A region's
  failure rate is the mean over its cells of the landscape's per-cell rate (importance-weighted, as
  in the landscape), i.e. the share of (held-out input, cell) pairs in the region that fail, each
  cell counting once wherever the explorer spent its queries. Its 95% interval sums the cells'
  variances (importance-weighted, stats.weighted_rate_variance); changes get the interval of a
  difference of two independent explorations, and the relative reduction Katz's log interval on the
  effective counts the variances imply (`_relative_interval`). With no cell explored on both sides,
  the distances below are undefined (None), not 0.
- **Failure mass.** The same rate over the whole grid: the share of all (input, cell) pairs that
  fail. Its change is signed (negative = fewer failures) with an interval, and relative to before.
- **Grid EMD.** The least work that turns the pre landscape into the post one, with failure mass
  (rate / number of cells) moved along the grid at 1 per level step (the L1 ground metric) and
  created or removed at half the grid's diameter per unit: an unbalanced earth mover's distance,
  so halving every rate, or making the model worse everywhere, is not a zero move. Its 95%
  interval (the basic bootstrap interval, reflected about the estimate, because resampled distances
  sit above the true one; approximate: 51-54 in 60 on a test grid) and its *noise floor* (what two
  explorations of the *same* landscape read, from the explorations' own resampling) come from a
  Poisson bootstrap of the query logs (the floor is rough where cells have only 1-2 queries: see
  bootstrap_rates). Region rates (targeted, other, mass)
  are over the region's cells explored both before and after, so both sides average the same cells.
  `grid_emd_shape` is the balanced EMD of the normalised shapes (where the failures sit, whatever
  their amount); it is undefined (null) when one side has no failures.
- `paper_wasserstein_1d` is the paper's metric, for comparison only: scipy's 1-D Wasserstein
  between the two per-cell probability vectors taken as unordered samples. It ignores which cell
  carries which value (permuting the cells leaves it unchanged), so it is not used for any claim.
"""

from __future__ import annotations

import functools

import math

import numpy as np
import polars as pl
from scipy.optimize import linprog
from scipy.sparse import coo_matrix
from scipy.stats import norm, wasserstein_distance

from failfade.concepts import ConceptSpace
from failfade.landscape import cell_table, propensities
from failfade.stats import newcombe_interval, weighted_rate_variance


# --- earth mover's distance over the grid --------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _edges_of_shape(shape: tuple[int, ...]) -> np.ndarray:
    coords = np.stack(np.unravel_index(np.arange(int(np.prod(shape))), shape), axis=-1)
    pairs, order = [], []  # per cell: axis by axis, one level down then one up (ConceptSpace.neighbours' order)
    for k, n in enumerate(shape):
        for d in (-1, 1):
            ok = (coords[:, k] + d >= 0) & (coords[:, k] + d < n)
            nb = coords[ok].copy()
            nb[:, k] += d
            pairs.append(np.stack([np.flatnonzero(ok), np.ravel_multi_index(tuple(nb.T), shape)], axis=-1))
            order.append(np.full(int(ok.sum()), len(order)))
    edges, order = np.concatenate(pairs).astype(np.int64), np.concatenate(order)
    return edges[np.lexsort((order, edges[:, 0]))]


@functools.lru_cache(maxsize=8)
def _transport_problem(shape: tuple[int, ...], creation_cost: float):
    """grid_emd's constraint matrix and costs, which depend on the grid's shape alone (the
    shift's bootstrap solves hundreds of problems on one grid)."""
    n = int(np.prod(shape))
    edges = _edges_of_shape(shape)
    m = len(edges)
    # variables: flow on each directed edge (m), removal at each cell (n), creation at each cell (n)
    # balance at cell c: out − in + removed − created = p_c − q_c
    rows = np.concatenate([edges[:, 0], edges[:, 1], np.arange(n), np.arange(n)])
    cols = np.concatenate([np.arange(m), np.arange(m), m + np.arange(n), m + n + np.arange(n)])
    vals = np.concatenate([np.ones(m), -np.ones(m), np.ones(n), -np.ones(n)])
    a_eq = coo_matrix((vals, (rows, cols)), shape=(n, m + 2 * n)).tocsr()
    cost = np.concatenate([np.ones(m), np.full(2 * n, float(creation_cost))])
    return a_eq, cost


def grid_emd(p: np.ndarray, q: np.ndarray, space: ConceptSpace, creation_cost: float | None = None) -> float:
    """Unbalanced EMD between non-negative masses p and q over the cells (not normalised).

    Mass moves between neighbouring cells at cost 1 per step (so moving it costs its L1 distance
    in level steps) and is created or removed at `creation_cost` per unit (default: half the
    grid's diameter, so that removing one unit and creating it elsewhere never beats moving it:
    with equal totals this is the ordinary, balanced EMD). Solved exactly as a min-cost flow.
    """
    p, q = np.asarray(p, float), np.asarray(q, float)
    if creation_cost is None:
        creation_cost = max(sum(n - 1 for n in space.shape), 1) / 2
    a_eq, cost = _transport_problem(tuple(int(n) for n in space.shape), float(creation_cost))
    res = linprog(cost, A_eq=a_eq, b_eq=p - q, bounds=(0, None), method="highs")
    if not res.success:
        raise RuntimeError(f"transport problem failed: {res.message}")
    return max(float(res.fun), 0.0)


def grid_emd_shape(p: np.ndarray, q: np.ndarray, space: ConceptSpace) -> float | None:
    """Balanced EMD between the normalised shapes of p and q; None when either has no mass."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    if p.sum() <= 0 or q.sum() <= 0:
        return None
    return grid_emd(p / p.sum(), q / q.sum(), space)


def paper_wasserstein_1d(pre_rates: np.ndarray, post_rates: np.ndarray) -> float:
    """The paper's shift metric, as its code computed it: scipy's 1-D Wasserstein between the two
    per-cell probability vectors passed as unweighted samples (permutation-invariant)."""
    def prob(v):
        v = np.nan_to_num(np.asarray(v, float))
        return v / v.sum() if v.sum() > 0 else v

    return float(wasserstein_distance(prob(pre_rates), prob(post_rates)))


# --- rates with intervals -------------------------------------------------------------------------

def newcombe_diff(pre: pl.DataFrame, post: pl.DataFrame):
    """post − pre per cell with Newcombe's hybrid-score 95% interval from the two Wilson intervals."""
    cols = ("failure_rate", "rate_lo", "rate_hi")
    return newcombe_interval(*(pre[c].to_numpy() for c in cols), *(post[c].to_numpy() for c in cols))


def region_rate(cells: pl.DataFrame, variance: np.ndarray, mask: np.ndarray) -> dict:
    """Mean per-cell failure rate over the region's explored cells, with its variance.

    Each cell's rate is the landscape's importance-weighted estimate and `variance` its variance
    (stats.weighted_rate_variance); cells are explored independently, so the mean's variance is
    their sum over m².
    """
    rate = cells["failure_rate"].to_numpy()
    n_eff = cells["effective_queries"].to_numpy()
    seen = mask & (n_eff > 0)
    m = int(seen.sum())
    if m == 0:
        return {"rate": float("nan"), "var": float("nan"), "cells_seen": 0, "cells": int(mask.sum()),
                "queries": 0, "failures": 0, "effective_queries": 0.0}
    return {"rate": float(rate[seen].mean()), "var": float(variance[seen].sum() / m**2), "cells_seen": m,
            "cells": int(mask.sum()), "queries": int(cells["queries"].to_numpy()[seen].sum()),
            "failures": int(cells["failures"].to_numpy()[seen].sum()), "effective_queries": float(n_eff[seen].sum())}


def _z(confidence: float) -> float:
    return float(norm.ppf(0.5 + confidence / 2))


def _finite(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def _interval(est: float, se: float, z: float, lo: float = -math.inf, hi: float = math.inf):
    if not (math.isfinite(est) and math.isfinite(se)):
        return [None, None]
    return [max(lo, est - z * se), min(hi, est + z * se)]


def _relative_interval(pre: dict, post: dict, z: float, point: float) -> list:
    """The interval of post/pre − 1: Katz's log interval with each side's count + ½, on the effective
    counts each side's variance implies (n = p̃(1 − p̃)/var, p̃ the rate shrunk by ½ a failure on the
    region's summed effective queries, x = rate·n), widened to hold the point (the smoothed ratio is its centre). The
    delta method on post/pre it replaces lost the before-rate's variance whenever the after-rate was
    0 (one failing query before and one passing after read as a significant −100%), and covered a
    zero relative change 84-91% of the time at 95% with 5-30 queries per cell
    (tests/test_shift.py's simulation)."""
    counts = []
    for side in (pre, post):
        if not (math.isfinite(side["var"]) and side["var"] > 0 and side["effective_queries"] > 0):
            return [None, None]
        e = side["effective_queries"]
        shrunk = (side["rate"] * e + 0.5) / (e + 1)
        n = shrunk * (1 - shrunk) / side["var"]
        counts.append((side["rate"] * n + 0.5, n + 0.5))
    (x1, n1), (x2, n2) = counts
    ratio = (x2 / n2) / (x1 / n1)
    half = z * math.sqrt(max(1 / x1 - 1 / n1 + 1 / x2 - 1 / n2, 0.0))
    return [max(-1.0, min(ratio * math.exp(-half) - 1, point)), max(ratio * math.exp(half) - 1, point)]


def rate_summary(pre: dict, post: dict, confidence: float) -> dict:
    """Before/after rates of one region with intervals, their difference and relative change."""
    z = _z(confidence)
    d = post["rate"] - pre["rate"]
    se_d = math.sqrt(pre["var"] + post["var"]) if math.isfinite(pre["var"] + post["var"]) else float("nan")
    out = {
        "pre": _finite(pre["rate"]), "pre_ci": _interval(pre["rate"], math.sqrt(pre["var"]), z, 0, 1),
        "post": _finite(post["rate"]), "post_ci": _interval(post["rate"], math.sqrt(post["var"]), z, 0, 1),
        "change": _finite(d), "change_ci": _interval(d, se_d, z, -1, 1),
        "relative_change": None, "relative_change_ci": [None, None],
    }
    if pre["rate"] > 0:
        out["relative_change"] = post["rate"] / pre["rate"] - 1
        out["relative_change_ci"] = _relative_interval(pre, post, z, out["relative_change"])
    out["cells"] = pre["cells"]
    out["cells_seen"] = {"pre": pre["cells_seen"], "post": post["cells_seen"]}
    out["queries"] = {"pre": pre["queries"], "post": post["queries"]}
    out["failures"] = {"pre": pre["failures"], "post": post["failures"]}
    out["effective_queries"] = {"pre": pre["effective_queries"], "post": post["effective_queries"]}
    return out


# --- bootstrap of the explorations --------------------------------------------------------------

def bootstrap_rates(space: ConceptSpace, queries: pl.DataFrame, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """(replicates, n_cells) per-cell rates from Poisson(1)-reweighted query logs (importance
    weights kept), the exploration's own resampling. Unvisited cells are NaN; a cell that a
    replicate leaves empty (chance about e^-n for n queries) counts as 0 in the failure mass. With
    that, the noise floor matched the simulated 95% quantile of two explorations of one landscape
    on a 4x4 grid within 2% at 5 and 20 queries per cell, and was off by up to 32% either way at 1
    or 2 (resampling within each cell instead was worse: 5-60% low at every count)."""
    cells = queries["cell"].to_numpy().astype(np.int64)
    fails = queries["failure"].to_numpy().astype(np.float64)
    prop = propensities(queries)
    w = np.ones(len(cells)) if prop is None else np.where(np.isfinite(prop), 1.0 / np.maximum(prop, 1e-12), 1.0)
    out = np.empty((replicates, space.n_cells))
    for b in range(replicates):
        wb = w * rng.poisson(1.0, len(cells))
        sw = np.bincount(cells, weights=wb, minlength=space.n_cells)
        swf = np.bincount(cells, weights=wb * fails, minlength=space.n_cells)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[b] = np.where(sw > 0, swf / np.maximum(sw, 1e-300), np.nan)
    return out


def _mass(rates: np.ndarray, both: np.ndarray, n_cells: int) -> np.ndarray:
    """Failure mass per cell: rate / n_cells on the cells explored in both landscapes, 0 elsewhere."""
    return np.where(both, np.nan_to_num(rates), 0.0) / n_cells


# --- the comparison ----------------------------------------------------------------------------------

def compare(space: ConceptSpace, pre_queries: pl.DataFrame, post_queries: pl.DataFrame, plan: dict,
            threshold: float, clean_pre: float, clean_post: float, confidence: float = 0.95,
            bootstrap: int = 200, seed: int = 0, probes: pl.DataFrame | None = None, quality: str = "accuracy",
            targeted_heldout: pl.DataFrame | None = None, guard: str = "warn",
            targeted_inputs: pl.DataFrame | None = None, other_heldout: pl.DataFrame | None = None):
    """Compare two explorations of the same concept space; `clean_pre/post` are the models' held-out
    clean quality (the task family's metric, named by `quality`). `other_heldout`: pairs drawn
    uniformly from the untargeted cells × held-out inputs, scored by both models
    (failfade.audit.paired_sample): an unbiased measure of what the repair did to the rest of the
    grid, which the guard also reads."""
    pre = cell_table(space, pre_queries, threshold, confidence)
    post = cell_table(space, post_queries, threshold, confidence)
    targeted = np.zeros(space.n_cells, dtype=bool)
    targeted[[f["cell"] for f in plan["fix"]]] = True
    d, lo, hi = newcombe_diff(pre, post)
    per_cell = pl.DataFrame({"cell": pre["cell"]}).with_columns(
        [pre[a.name] for a in space.axes]
        + [pl.Series("targeted", targeted)]
        + [pre[c].alias(f"{c}_pre") for c in ("queries", "effective_queries", "failures", "failure_rate", "rate_lo", "rate_hi", "is_failure")]
        + [post[c].alias(f"{c}_post") for c in ("queries", "effective_queries", "failures", "failure_rate", "rate_lo", "rate_hi", "is_failure")]
        + [pl.Series("delta", d), pl.Series("delta_lo", lo), pl.Series("delta_hi", hi)]
    )
    both = (pre["effective_queries"].to_numpy() > 0) & (post["effective_queries"].to_numpy() > 0)
    # a cell is a new failure cell when it was explored before and after and crossed into failure
    # (one never explored before was not known to pass)
    new_fail = np.flatnonzero(post["is_failure"].to_numpy() & ~pre["is_failure"].to_numpy() & both)
    # "significantly" better or worse, and the guard, are family-wise at `confidence` over the cells
    # compared (Bonferroni): each cell at 95% alone made an unchanged model look worse somewhere in
    # 40% of runs with 20 untargeted cells, and the guard tripped on it
    compared = int(both.sum())
    fw_confidence = 1 - (1 - confidence) / max(compared, 1)
    _, lo_fw, hi_fw = newcombe_diff(cell_table(space, pre_queries, threshold, fw_confidence),
                                    cell_table(space, post_queries, threshold, fw_confidence))
    worse, better = both & (lo_fw > 0), both & (hi_fw < 0)
    v_pre, v_post = (weighted_rate_variance(q["cell"].to_numpy(), q["failure"].to_numpy(), propensities(q), space.n_cells)
                     for q in (pre_queries, post_queries))

    def summary(mask):
        """Over the region's cells explored on both sides (the same cells before and after):
        `cells` is the region's size and `cells_compared` how many of them that is (`cells` once
        held the latter, so the whole grid's row read as if every cell had been compared)."""
        out = rate_summary(region_rate(pre, v_pre, mask & both), region_rate(post, v_post, mask & both), confidence)
        return out | {"cells": int(mask.sum()), "cells_compared": int((mask & both).sum())}

    targeted_s, other_s = summary(targeted), summary(~targeted)
    mass_s = summary(np.ones(space.n_cells, dtype=bool))

    r_pre, r_post = pre["failure_rate"].to_numpy(), post["failure_rate"].to_numpy()
    emd = None if compared == 0 else grid_emd(_mass(r_pre, both, space.n_cells), _mass(r_post, both, space.n_cells), space)
    shape = None if compared == 0 else grid_emd_shape(_mass(r_pre, both, space.n_cells), _mass(r_post, both, space.n_cells), space)
    emd_ci, floor = [None, None], None
    if bootstrap > 0 and compared:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 8]))
        b_pre = bootstrap_rates(space, pre_queries, bootstrap, rng)
        b_post = bootstrap_rates(space, post_queries, bootstrap, rng)
        b_pre2 = bootstrap_rates(space, pre_queries, bootstrap, rng)
        m = lambda r: _mass(r, both, space.n_cells)  # noqa: E731
        emds = np.array([grid_emd(m(a), m(b), space) for a, b in zip(b_pre, b_post)])
        nulls = np.array([grid_emd(m(a), m(b), space) for a, b in zip(b_pre, b_pre2)])
        alpha = (1 - confidence) / 2
        # the basic bootstrap interval: a distance's replicates sit above it (resampling noise adds
        # distance), so their percentiles would mostly miss the truth (8 in 60 at 20 queries per cell
        # on a 4x4 test grid); reflected about the estimate they covered it 51-54 in 60
        q_lo, q_hi = np.quantile(emds, [alpha, 1 - alpha])
        emd_ci = [max(0.0, float(2 * emd - q_hi)), max(0.0, float(2 * emd - q_lo))]
        floor = float(np.quantile(nulls, confidence))

    result = {
        "clean_quality_metric": quality,
        f"clean_{quality}_pre": clean_pre,
        f"clean_{quality}_post": clean_post,
        f"clean_{quality}_change": clean_post - clean_pre,
        "targeted_cells": int(targeted.sum()),
        "other_cells": int((~targeted).sum()),
        "targeted_failure_rate_pre": targeted_s["pre"],
        "targeted_failure_rate_post": targeted_s["post"],
        "targeted_relative_reduction": None if targeted_s["relative_change"] is None else -targeted_s["relative_change"],
        "targeted_relative_reduction_ci": [None if x is None else -x for x in targeted_s["relative_change_ci"][::-1]],
        "other_failure_rate_pre": other_s["pre"],
        "other_failure_rate_post": other_s["post"],
        "targeted": targeted_s,
        "other": other_s,
        "failure_mass": mass_s,
        "failure_mass_change": mass_s["change"],
        "failure_mass_change_ci": mass_s["change_ci"],
        "failure_mass_relative_change": mass_s["relative_change"],
        "grid_emd": emd,
        "grid_emd_ci": emd_ci,
        "grid_emd_noise_floor": floor,
        "grid_emd_shape": shape,
        # on the cells explored before and after, as every other figure here (an unexplored cell read as rate 0)
        "paper_wasserstein_1d": paper_wasserstein_1d(r_pre[both], r_post[both]) if compared else None,
        "failure_cells_pre": int(pre["is_failure"].sum()),
        "failure_cells_post": int(post["is_failure"].sum()),
        "new_failure_cells": int(len(new_fail)),
        "new_failure_cell_list": [space.describe_cell(int(c)) for c in new_fail],
        "cells_compared": compared,
        "family_wise_confidence": fw_confidence,
        "cells_significantly_better": int(better.sum()),
        "cells_significantly_worse": int(worse.sum()),
        "queries_pre": pre_queries.height,
        "queries_post": post_queries.height,
        "confidence": confidence,
        "bootstrap_replicates": bootstrap,
    }
    if probes is not None:
        result["probes"] = probes.to_dicts()
        result["probes_significantly_worse"] = int(probes["significantly_worse"].sum())
        result["probes_significantly_better"] = int(probes["significantly_better"].sum())
    # the guard: what got worse beyond chance, family-wise over the cells compared and over the probes
    # (a probe's interval is paired over its inputs where probes.csv has the discordant counts: the
    # unpaired one, as if before and after were independent samples, missed real harm)
    probes_worse = []
    if probes is not None and probes.height:
        from failfade.probes import table_interval

        p_conf = 1 - (1 - confidence) / probes.height
        _, p_lo, _, _ = table_interval(probes, p_conf)
        probes_worse = [name for name, lo_p in zip(probes["probe"], p_lo) if lo_p > 0]
    other_worse = []
    if other_heldout is not None and other_heldout.height:
        from failfade.audit import paired_sample_change

        oh = result["other_heldout"] = paired_sample_change(other_heldout, confidence)
        if oh["change_ci"][0] > 0:
            other_worse = [f"{_signed_pt(oh['change'])} [{_ci(oh['change_ci'], signed=True)}] over "
                           + (f"all {oh['queries']} pairs" if oh["exact"] else f"{oh['queries']} pairs drawn at random")]
    broken = {"new_failure_cells": [space.describe_cell(int(c)) for c in new_fail if worse[c]],
              "untargeted_cells_significantly_worse": [space.describe_cell(int(c)) for c in np.flatnonzero(worse & ~targeted)],
              "probes_significantly_worse": probes_worse, "other_cells_worse_on_fresh_pairs": other_worse}
    result["guard"] = {"mode": guard, "tripped": any(broken.values()), **broken}
    if targeted_heldout is not None and targeted_heldout.height:
        from failfade.probes import pooled_change

        result["targeted_heldout"] = pooled_change(targeted_heldout, confidence, targeted_inputs)
    return result, per_cell


# --- the page people read ---------------------------------------------------------------------------

def _pct(x) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}%"


def _ci(pair, pct: bool = True, signed: bool = False) -> str:
    """An interval as text: rates in %, signed changes in points, anything else as plain numbers."""
    if pair is None or pair[0] is None:
        return "n/a"
    if signed:
        return f"{100 * pair[0]:+.1f} to {100 * pair[1]:+.1f} pt"
    if pct:
        return f"{100 * pair[0]:.1f} to {100 * pair[1]:.1f}%"
    return f"{pair[0]:.4f} to {pair[1]:.4f}"


def _cells(seen: int, total: int, whole: str | None = None) -> str:
    """A region's size, and how many of its cells the rates average (those explored before and after)."""
    return (whole or f"{total} cells") if seen == total else f"{seen} of {total} cells explored before and after"


def markdown(result: dict, experiment: str) -> str:
    t, o, m = result["targeted"], result["other"], result["failure_mass"]
    q = result.get("clean_quality_metric", "accuracy")
    conf = f"{100 * result.get('confidence', 0.95):g}%"
    red = result["targeted_relative_reduction"]
    # a shift.json from before `cells_compared` counted only the compared cells in `cells`
    grid = m["cells"] if "cells_compared" in m else result["targeted_cells"] + result["other_cells"]
    mass_cells = _cells(m.get("cells_compared", m["cells"]), grid, "whole grid")
    lines = [f"# Landscape shift — {experiment}", ""]
    g = result.get("guard")
    if g and g["tripped"]:
        what = [f"{label}: {', '.join(g[k])}" for k, label in (
            ("new_failure_cells", "new failure cells"), ("untargeted_cells_significantly_worse", "untargeted cells significantly worse"),
            ("probes_significantly_worse", "probes significantly worse"),
            ("other_cells_worse_on_fresh_pairs", "the untargeted cells, on fresh pairs, significantly worse")) if g.get(k)]
        lines += [f"> **Guard ({g['mode']}): the repair broke something nobody targeted.** " + "; ".join(what) + ".", ""]
    lines += [
        "All numbers are on held-out inputs that neither training, validation nor fine-tuning saw. "
        f"Rates are the share of (input, cell) pairs that fail: from the explorations, importance-weighted as in the "
        f"landscape; on every held-out input or on fresh pairs drawn at random, plain shares. Brackets are {conf} intervals.",
        "",
        "| | before | after | change |",
        "|---|---|---|---|",
        f"| clean {q.replace('_', '-')} | {_pct(result[f'clean_{q}_pre'])} | {_pct(result[f'clean_{q}_post'])} | "
        f"{100 * result[f'clean_{q}_change']:+.2f} pt |",
        f"| targeted failure rate ({_cells(t.get('cells_compared', t['cells_seen']['pre']), result['targeted_cells'])}) | {_pct(t['pre'])} [{_ci(t['pre_ci'])}] | "
        f"{_pct(t['post'])} [{_ci(t['post_ci'])}] | {_signed_pt(t['change'])} [{_ci(t['change_ci'], signed=True)}] |",
    ]
    th = result.get("targeted_heldout")
    if th and "pre" in th:
        lines.append(f"| targeted, every held-out input ({th['cells']} cells × {th['inputs_per_cell']}) | {_pct(th['pre'])} "
                     f"[{_ci(th['pre_ci'])}] | {_pct(th['post'])} [{_ci(th['post_ci'])}] | {_signed_pt(th['change'])} "
                     f"[{_ci(th['change_ci'], signed=True)}] |")
    lines += [
        f"| other failure rate ({_cells(o.get('cells_compared', o['cells']), result.get('other_cells', o['cells']))}) | {_pct(o['pre'])} [{_ci(o['pre_ci'])}] | {_pct(o['post'])} [{_ci(o['post_ci'])}] | "
        f"{_signed_pt(o['change'])} [{_ci(o['change_ci'], signed=True)}] |",
    ]
    oh = result.get("other_heldout")
    if oh and "pre" in oh:
        lines.append(f"| other, fresh held-out pairs ({oh['cells']} cells; "
                     + (f"all {oh['queries']} pairs" if oh["exact"] else f"{oh['queries']} of {oh['pairs']} pairs at random")
                     + f") | {_pct(oh['pre'])} [{_ci(oh['pre_ci'])}] | {_pct(oh['post'])} [{_ci(oh['post_ci'])}] | "
                     f"{_signed_pt(oh['change'])} [{_ci(oh['change_ci'], signed=True)}] |")
    lines += [
        f"| failure mass ({mass_cells}) | {_pct(m['pre'])} | {_pct(m['post'])} | {_signed_pt(m['change'])} "
        f"[{_ci(m['change_ci'], signed=True)}] |",
        f"| failure cells | {result['failure_cells_pre']} | {result['failure_cells_post']} | |",
        "",
    ]
    landscape_red = (f"reduced by **{_pct(red)}** (relative; {conf} interval "
                     f"{_ci(result['targeted_relative_reduction_ci'])})")
    if th and "relative_change" in th:
        # the exhaustive measurement leads: the landscapes' estimate carries the explorer's stopping bias
        lines += [f"- Targeted failure rate, measured on every held-out input: reduced by "
                  f"**{_pct(-th['relative_change'])}** ({conf} interval "
                  f"{_ci([-th['relative_change_ci'][1], -th['relative_change_ci'][0]])}).",
                  f"- The landscapes' estimate of it: {landscape_red.replace('**', '')}. It can read a few points "
                  "off: an explorer that stops querying a cell once it is settled leaves early high readings standing."]
    else:
        lines.append(f"- Targeted failure rate {landscape_red}.")
    if oh and "pre" in oh:
        lines.append(f"- The untargeted cells on fresh held-out pairs ({oh['interval']}): "
                     f"{oh['newly_failing']} pairs newly failing, {oh['newly_passing']} newly passing; "
                     + ("significantly worse." if oh["change_ci"][0] > 0 else
                        "significantly better." if oh["change_ci"][1] < 0 else "no significant change.")
                     + " The landscapes' `other` row above rests on the explorations' own queries and can read a few points off.")
    lines += [
        f"- Failure mass over the {mass_cells} changed by {_pct(m['relative_change'])} relative "
        "(negative: fewer failures).",
        f"- Cells that became failure cells (of those explored before and after): **{result['new_failure_cells']}**"
        + (": " + "; ".join(result["new_failure_cell_list"]) if result["new_failure_cell_list"] else "."),
        f"- Cells significantly better / worse (the Newcombe interval of the change excludes 0, {conf} family-wise "
        f"over the {result.get('cells_compared', 'n/a')} cells compared, Bonferroni): "
        f"{result['cells_significantly_better']} / {result['cells_significantly_worse']}.",
    ]
    if result["grid_emd"] is None:
        lines.append("- Grid earth mover's distance: undefined, no cell was explored both before and after.")
    else:
        lines += [
            f"- Grid earth mover's distance (failure mass moved along the grid, level steps; created or removed at "
            f"half the grid's diameter): **{result['grid_emd']:.4f}** [{_ci(result['grid_emd_ci'], pct=False)}]; "
            + (f"noise floor (two explorations of the same landscape, {conf} quantile): {result['grid_emd_noise_floor']:.4f}."
               if result.get("grid_emd_noise_floor") is not None else "no noise floor (bootstrap off)."),
            "- Shape only (normalised landscapes, where the failures sit whatever their amount): "
            + ("undefined, one side has no failures." if result["grid_emd_shape"] is None else f"{result['grid_emd_shape']:.4f}."),
        ]
    if "probes" in result and not result["probes"]:
        lines += ["", "## Off-grid probes", "", "None: `shift.probes` lists no condition off the grid for this experiment."]
    elif "probes" in result:
        unpaired = any(p.get("interval") != "paired" for p in result["probes"])
        lines += ["", "## Off-grid probes", "",
                  "Conditions outside the explored grid, scored on every held-out input for both models. "
                  f"A probe is significantly worse when the {conf} interval of its change lies above 0: Newcombe's paired "
                  "interval (1998b), since both sides are the same inputs; *newly failing / passing* counts the inputs "
                  "that fail only after / only before, the evidence of the change. The guard counts a probe only when "
                  f"that holds {conf} family-wise over the {len(result['probes'])} probes."
                  + (" Rows without the counts come from results written before they were kept: their interval is "
                     "the unpaired one (Newcombe 1998a), far wider when the outcomes are correlated." if unpaired else ""),
                  "", "| probe | before | after | change | newly failing / passing | verdict |", "|---|---|---|---|---|---|"]
        for p in result["probes"]:
            verdict = "**worse**" if p["significantly_worse"] else ("better" if p["significantly_better"] else "no significant change")
            moved = (f"{p['newly_failing']} / {p['newly_passing']}" if p.get("newly_failing") is not None
                     else "n/a (unpaired interval)")
            lines.append(f"| {p['probe']} | {_pct(p['failure_rate_pre'])} | {_pct(p['failure_rate_post'])} | "
                         f"{_signed_pt(p['delta'])} [{_ci([p['delta_lo'], p['delta_hi']], signed=True)}] | {moved} | {verdict} |")
        worse = [p["probe"] for p in result["probes"] if p["significantly_worse"]]
        guarded = result.get("guard", {}).get("probes_significantly_worse", [])
        lines += ["", f"- Probes significantly worse, each at {conf} alone (the table's verdicts): **{len(worse)}**"
                  + (": " + ", ".join(worse) + "." if worse else "."),
                  f"- Of those, {conf} family-wise over the {len(result['probes'])} probes (what the guard counts): "
                  f"**{len(guarded)}**" + (": " + ", ".join(guarded) + "." if guarded else ".")]
    lines += [
        "",
        "## Why not the paper's distance",
        "",
        f"`paper_wasserstein_1d` = {'undefined' if result['paper_wasserstein_1d'] is None else format(result['paper_wasserstein_1d'], '.6f')} is the paper's metric (scipy's 1-D Wasserstein "
        "between the two per-cell probability vectors taken as unordered samples). It is kept only for comparison: "
        "it ignores which cell carries which value, so moving every failure to another concept reads 0, and it "
        "normalises away how many failures there are.",
        "",
    ]
    return "\n".join(lines)


def _signed_pt(x) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:+.1f} pt"
