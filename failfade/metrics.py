"""How well a search recovered the landscape, against the exhaustive ground truth.

A cell is a *true failure cell* when its exhaustive failure rate (every held-out input) is at
least τ. A search *reports* a cell as failing by one of two rules, both reported and labelled:
  interval rule (`recall`, `precision`): the cell is a failure cell of the landscape, i.e. the
      lower bound of its Wilson interval (effective counts, `confidence`) is ≥ τ. This is what the
      user sees: the landscape, the failure modes and the feedback template use this rule.
  point rule (`recall_point`, `precision_point`): its estimated failure rate (importance-weighted
      for contextual searchers, as in the landscape) is ≥ τ. Looser: it counts borderline cells
      that the landscape does not yet call failing.
Over the first b queries of a search (in the order they were made):
  recall     = reported ∩ true / true
  precision  = reported ∩ true / reported
  mae        = mean over all cells of |estimate − true rate|, estimate = (k + 1) / (n + 2) with
               effective counts (the Laplace estimate: 0.5 for a cell never queried)
  coverage   = fraction of cells queried at least once
A true failure cell whose rate is close to τ needs many queries before its interval clears τ, so
`oracle_recall` states what the interval rule allows at a budget: the recall of an oracle that
knows every cell's true rate, spends the fewest queries that make each cell's Wilson lower bound
clear τ (observed rate = true rate, at most one query per held-out input and cell), cheapest
cells first.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from failfade.stats import cell_counts, weighted_cell_rates, wilson_interval


def scores_of(n_cells: int, queries: pl.DataFrame, truth: np.ndarray, tau: float, confidence: float = 0.95) -> dict:
    cells, fails, prop = _arrays(queries)
    return scores(n_cells, cells, fails, truth, tau, prop, confidence)


def true_rates(n_cells: int, exhaustive: pl.DataFrame) -> np.ndarray:
    n, k, _ = cell_counts(exhaustive["cell"].to_numpy(), exhaustive["failure"].to_numpy(),
                          exhaustive["delta"].to_numpy(), n_cells)
    if (n == 0).any():
        raise ValueError("the exhaustive table does not cover every cell")
    return k / n


def scores(n_cells: int, cells: np.ndarray, failures: np.ndarray, truth: np.ndarray, tau: float,
           propensity: np.ndarray | None = None, confidence: float = 0.95) -> dict:
    rate, n_eff, k_eff = weighted_cell_rates(cells, failures, propensity, n_cells)
    lo, _ = wilson_interval(k_eff, n_eff, confidence)
    true_fail = truth >= tau
    by_interval = (n_eff > 0) & (lo >= tau)  # the landscape's failure cells
    by_point = (n_eff > 0) & (np.nan_to_num(rate, nan=-1.0) >= tau)
    out = {}
    for suffix, reported in (("", by_interval), ("_point", by_point)):
        hit = int((reported & true_fail).sum())
        out[f"recall{suffix}"] = hit / true_fail.sum() if true_fail.any() else float("nan")
        out[f"precision{suffix}"] = hit / reported.sum() if reported.any() else float("nan")
    return out | {"mae": float(np.abs((k_eff + 1) / (n_eff + 2) - truth).mean()), "coverage": float((n_eff > 0).mean())}


def _arrays(queries: pl.DataFrame):
    from failfade.landscape import propensities

    return queries["cell"].to_numpy(), queries["failure"].to_numpy(), propensities(queries)


def discovery_curve(n_cells: int, queries: pl.DataFrame, truth: np.ndarray, tau: float, points: int = 40,
                    confidence: float = 0.95) -> pl.DataFrame:
    cells, fails, prop = _arrays(queries)
    marks = np.unique(np.linspace(0, len(cells), points + 1).astype(int)[1:])
    return pl.DataFrame([{"queries": int(b), **scores(n_cells, cells[:b], fails[:b], truth, tau,
                                                       None if prop is None else prop[:b], confidence)}
                         for b in marks])


def queries_to_recall(n_cells: int, queries: pl.DataFrame, truth: np.ndarray, tau: float, target: float = 0.9,
                      step: int = 64, rule: str = "interval", confidence: float = 0.95) -> int | None:
    """The first prefix length (a multiple of `step`) from which recall (by `rule`: interval or
    point) stays at or above `target` for the rest of the search; None if it never settles there.
    (A single crossing is not enough: with one or two queries per cell, recall can touch the
    target by chance and fall back.)"""
    key = {"interval": "recall", "point": "recall_point"}[rule]
    cells, fails, prop = _arrays(queries)
    marks = sorted({min(b, len(cells)) for b in range(step, len(cells) + step, step)})
    ok = [scores(n_cells, cells[:b], fails[:b], truth, tau, None if prop is None else prop[:b], confidence)[key] >= target
          for b in marks]
    if not ok or not ok[-1]:
        return None
    first = len(ok) - 1
    while first > 0 and ok[first - 1]:
        first -= 1
    return marks[first]


def queries_to_confirm(p: float, tau: float, max_n: int, confidence: float = 0.95) -> int | None:
    """The fewest queries n ≤ max_n whose Wilson lower bound, at observed rate p, is ≥ τ."""
    if p <= tau:
        return None
    n = np.arange(1, max_n + 1)
    lo, _ = wilson_interval(p * n, n.astype(float), confidence)
    ok = np.flatnonzero(lo >= tau)
    return int(n[ok[0]]) if len(ok) else None


def oracle_recall(truth: np.ndarray, tau: float, budget: int, max_per_cell: int, confidence: float = 0.95) -> float:
    """The interval-rule recall that the cheapest allocation of `budget` queries reaches when every
    observed rate equals its true rate (see the module docstring)."""
    true_fail = truth >= tau
    if not true_fail.any():
        return float("nan")
    costs = sorted(c for c in (queries_to_confirm(float(p), tau, max_per_cell, confidence) for p in truth[true_fail])
                   if c is not None)
    spent = np.cumsum(costs) if costs else np.array([])
    return float((spent <= budget).sum() / true_fail.sum())
