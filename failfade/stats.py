"""Per-cell failure statistics with uncertainty."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm


def wilson_interval(k, n, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for k failures in n queries; n = 0 gives [0, 1]."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = norm.ppf(0.5 + confidence / 2)
    safe = np.maximum(n, 1)
    p = k / safe
    denom = 1 + z**2 / safe
    centre = (p + z**2 / (2 * safe)) / denom
    half = z * np.sqrt(p * (1 - p) / safe + z**2 / (4 * safe**2)) / denom
    lo = np.where(n > 0, np.clip(centre - half, 0, 1), 0.0)
    hi = np.where(n > 0, np.clip(centre + half, 0, 1), 1.0)
    return lo, hi


def cell_counts(cells: np.ndarray, failures: np.ndarray, deltas: np.ndarray, n_cells: int):
    """Queries, failures and mean Δ per cell (NaN Δ for unvisited cells)."""
    n = np.bincount(cells, minlength=n_cells)
    k = np.bincount(cells, weights=failures.astype(np.float64), minlength=n_cells)
    d = np.bincount(cells, weights=deltas.astype(np.float64), minlength=n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_delta = np.where(n > 0, d / np.maximum(n, 1), np.nan)
    return n.astype(np.int64), k.astype(np.int64), mean_delta
