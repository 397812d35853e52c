"""Per-cell failure statistics with uncertainty."""

from __future__ import annotations

import numpy as np


def wilson_interval(k, n, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for k failures in n queries; n = 0 gives [0, 1]."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    from scipy.stats import norm  # here, not at the top: reading a config imports this module (stays light)

    z = norm.ppf(0.5 + confidence / 2)
    safe = np.maximum(n, 1)
    p = k / safe
    denom = 1 + z**2 / safe
    centre = (p + z**2 / (2 * safe)) / denom
    half = z * np.sqrt(p * (1 - p) / safe + z**2 / (4 * safe**2)) / denom
    lo = np.where(n > 0, np.clip(centre - half, 0, 1), 0.0)
    hi = np.where(n > 0, np.clip(centre + half, 0, 1), 1.0)
    return lo, hi


def cluster_shrink(clusters: np.ndarray, values: np.ndarray) -> float:
    """n_eff / n for the mean of `values` over units that share clusters (inputs): 1 / the design
    effect, v_cluster / v_iid, where v_cluster is the cluster-robust (sandwich) variance of the mean,
    Σ_i (Σ_{j in i} (x_j − x̄))² / n² · m/(m−1) over the m clusters, and v_iid = s² / n (s² with
    n − 1 in its denominator, so that the two agree when every unit is its own cluster). At most
    1 (no credit for negative dependence). When the values do not vary, the variance says nothing
    and it is m/n: the clusters, as if every unit of a cluster agreed (conservative)."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        return 1.0
    _, inv = np.unique(np.asarray(clusters), return_inverse=True)
    m = int(inv.max()) + 1
    if m < 2:
        return 1.0 / n
    # for 0/1 values p(1-p)/n, the binomial variance Wilson assumes, with the same small-sample
    # factor as v_cluster's m/(m-1): with every unit its own cluster the two agree and n_eff = n
    # (with var(x)/n it read n - 1, and the audit called that clustering)
    v_iid = float(x.var(ddof=1)) / n
    if v_iid <= 0:
        return m / n
    sums = np.bincount(inv, weights=x - x.mean(), minlength=m)
    v_cluster = float(np.sum(sums ** 2)) / n ** 2 * m / (m - 1)
    return 1.0 if v_cluster <= 0 else min(1.0, v_iid / v_cluster)


def clustered_wilson(clusters: np.ndarray, failures: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(n_eff, lo, hi): a Wilson interval for the failure rate of pairs that share inputs.

    A hard input fails in every cell of a mode, so (input, cell) pairs of one input are not
    independent, and Wilson on the pairs was too narrow (a review's simulation, 8 cells x 60 inputs,
    input difficulty shared: 65% coverage at 95%). The pairs are shrunk to the effective count that
    the between-input variance allows (cluster_shrink): n_eff = n · v_iid / v_cluster, never more
    than the pairs; when nothing or everything failed it is the inputs, as if the cells agreed on
    every input (conservative)."""
    f = np.asarray(failures, dtype=np.float64)
    n = len(f)
    if n == 0:
        return 0.0, 0.0, 1.0
    n_eff = n * cluster_shrink(clusters, f)
    lo, hi = wilson_interval(f.mean() * n_eff, n_eff, confidence)
    return float(n_eff), float(lo), float(hi)


def cell_counts(cells: np.ndarray, failures: np.ndarray, deltas: np.ndarray, n_cells: int):
    """Queries, failures and mean Δ per cell (NaN Δ for unvisited cells)."""
    n = np.bincount(cells, minlength=n_cells)
    k = np.bincount(cells, weights=failures.astype(np.float64), minlength=n_cells)
    d = np.bincount(cells, weights=deltas.astype(np.float64), minlength=n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_delta = np.where(n > 0, d / np.maximum(n, 1), np.nan)
    return n.astype(np.int64), k.astype(np.int64), mean_delta


def weighted_cell_rates(cells: np.ndarray, failures: np.ndarray, propensity: np.ndarray | None, n_cells: int):
    """Per-cell failure rate over the *input distribution*, whatever policy chose the cells.

    A contextual searcher picks cells given the input, so the inputs it pairs with a cell are
    not a uniform sample: plain rates are biased (towards failures, for a failure-seeking
    policy). With each query's propensity π(cell | input), self-normalized importance weights
    w = 1/π give a consistent estimate; n_eff (Kish's (Σw)²/Σw², or less where the weights depend
    on the outcome: rates_from_sums) is the sample size it is worth.
    Stabilized weights w = π̄_t(cell)/π(cell | input), where π̄_t is the policy's marginal for
    the cell at the query's step over the step's *other* inputs (`others_marginal`), are consistent
    too (π̄_t is then independent of the query's input) and lose no effective size to a policy
    whose preference over cells changes from step to step but not with the input: pass π/π̄ as
    `propensity` (landscape.propensities does).
    Queries without a propensity (NaN: a searcher whose cell choice ignores the input) weigh 1.
    Returns (rate, n_eff, k_eff); rate is NaN for unvisited cells.
    """
    sums = weight_sums(cells, failures, propensity, n_cells)
    return rates_from_sums(sums["sw"], sums["sw2"], sums["swf"], sums["sw2f"])


def others_marginal(marginal: np.ndarray, propensity: np.ndarray) -> np.ndarray:
    """Each query's cell marginal over the step's other explorers' inputs, from the marginal over
    all N of them, π̄(a) = mean_j π(a | x_j), and the query's own π(a | x_i): (N·π̄ − π_i)/(N − 1).

    Averaged over the step's inputs including the query's own, π̄ is high exactly where the policy
    favours the cell for this very input, so the stabilized weight π̄/π leans towards the inputs the
    policy picked the cell for: a failure-seeking policy's rates come out too high by O(1/N), and at
    N = 1 every weight is 1, the plain rate. Leaving the query's input out makes π̄ independent of it.
    NaN when N = 1 (the weight falls back to 1/π)."""
    m, p = np.asarray(marginal, dtype=np.float64), np.asarray(propensity, dtype=np.float64)
    n = len(p)
    if n < 2:
        return np.full(n, np.nan)
    return np.maximum((n * m - p) / (n - 1), 0.0)


def stabilized_propensity(propensity: np.ndarray, marginal: np.ndarray | None) -> np.ndarray:
    """What a query's importance weight divides by: π/π̄ where its marginal π̄ is usable (finite,
    > 0), π where not (no marginal recorded, or a step of one explorer). The weight is
    `query_weights` of this, for the landscape (landscape.propensities) and for PPO's level set
    alike; landscape.cell_sums_sql applies the same rule in SQL."""
    p = np.asarray(propensity, dtype=np.float64)
    if marginal is None:
        return p
    m = np.asarray(marginal, dtype=np.float64)
    return np.where(np.isfinite(m) & (m > 0), p / np.where(m > 0, m, 1.0), p)


def query_weights(propensity: np.ndarray | None, n: int) -> np.ndarray:
    """Each query's importance weight 1/π (1 where a query has no propensity)."""
    if propensity is None:
        return np.ones(n)
    return np.where(np.isfinite(propensity), 1.0 / np.maximum(propensity, 1e-12), 1.0)


def weight_sums(cells: np.ndarray, failures: np.ndarray, propensity: np.ndarray | None, n_cells: int) -> dict:
    """Per cell Σw, Σw², Σw·f, Σw²·f: all that the weighted rate, its effective size and its variance
    need (the landscape computes the same sums in SQL straight from the query files)."""
    w = query_weights(propensity, len(cells))
    f = failures.astype(np.float64)
    return {"sw": np.bincount(cells, weights=w, minlength=n_cells), "sw2": np.bincount(cells, weights=w * w, minlength=n_cells),
            "swf": np.bincount(cells, weights=w * f, minlength=n_cells),
            "sw2f": np.bincount(cells, weights=w * w * f, minlength=n_cells)}


def rates_from_sums(sw, sw2, swf, sw2f):
    """(rate, n_eff, k_eff) from per-cell weight sums: the rate Σwf/Σw (NaN where a cell has no
    query), and the effective size n_eff and count k_eff = rate·n_eff that its Wilson interval uses,
    here and wherever a cell's interval is drawn (the landscape, the level set, the benchmarks).

    n_eff is Kish's (Σw)²/Σw² unless the weights depend on the outcome within the cell: Kish's size
    assumes they do not, and a searcher that picks a cell *because of its input* makes failing
    inputs carry other weights than passing ones. The cell's sandwich variance (variance_from_sums)
    then exceeds the binomial p̃(1 − p̃)/n_Kish, and n_eff is the size at which a binomial of rate p̃
    has that variance, p̃(1 − p̃)/sandwich, so never above Kish's (p̃ the rate shrunk to
    (k + ½)/(n + 1) on Kish's counts, as the variance's floor shrinks it). In a review's simulation
    of 8 cells whose failures follow input difficulty, a softmax policy over it with no uniform
    share, 800 queries a cell, 300 runs, Wilson at Kish's size covered 0.83-0.96 of the time at 95%,
    at this size 0.93-0.97 (tests/test_searchers.py checks a similar setting). Unweighted queries
    keep their count exactly (the binomial wins); weights that do not depend on the outcome keep
    Kish's size on average only, since the sandwich estimate scatters around the binomial (a
    review: median 0.92 of Kish's at 100 queries, rate 0.3, lognormal weights): wider, never
    narrower."""
    rate, n_kish, k_kish = _kish(sw, sw2, swf)
    sandwich, binom, shrunk = _variances(sw, sw2, sw2f, rate, n_kish, k_kish)
    with np.errstate(invalid="ignore", divide="ignore"):
        narrower = (n_kish > 0) & (sandwich > binom)
        n_eff = np.where(narrower, np.minimum(n_kish, shrunk * (1 - shrunk) / np.where(narrower, sandwich, 1.0)), n_kish)
    return rate, n_eff, np.nan_to_num(rate) * n_eff


def _kish(sw, sw2, swf):
    """(rate, Kish's effective size (Σw)²/Σw², rate·size) from per-cell weight sums."""
    sw, sw2, swf = (np.asarray(v, dtype=np.float64) for v in (sw, sw2, swf))
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(sw > 0, swf / np.maximum(sw, 1e-300), np.nan)
        n_eff = np.where(sw2 > 0, sw**2 / np.maximum(sw2, 1e-300), 0.0)
    return rate, n_eff, np.nan_to_num(rate) * n_eff


def _variances(sw, sw2, sw2f, rate, n_kish, k_kish):
    """(sandwich, binomial, shrunk rate) per cell: Σ(w(f − r))² / (Σw)² = (Σw²f·(1 − 2r) + r²·Σw²) /
    (Σw)² for f in {0, 1}, and p̃(1 − p̃)/n_Kish with p̃ = (k_Kish + ½)/(n_Kish + 1)."""
    sw, sw2, sw2f = (np.asarray(v, dtype=np.float64) for v in (sw, sw2, sw2f))
    r = np.nan_to_num(rate)
    with np.errstate(invalid="ignore", divide="ignore"):
        sandwich = np.maximum(sw2f * (1 - 2 * r) + r * r * sw2, 0.0) / sw**2
        shrunk = (k_kish + 0.5) / (n_kish + 1)
        binom = shrunk * (1 - shrunk) / n_kish
    return sandwich, binom, shrunk


def variance_from_sums(sw, sw2, swf, sw2f):
    """weighted_rate_variance from the per-cell sums: the larger of the sandwich and the binomial
    variance (_variances); NaN where a cell has no query."""
    rate, n_kish, k_kish = _kish(sw, sw2, swf)
    sandwich, binom, _ = _variances(sw, sw2, sw2f, rate, n_kish, k_kish)
    return np.where(n_kish > 0, np.maximum(sandwich, binom), np.nan)


def newcombe_interval(p1, l1, u1, p2, l2, u2, phi=0.0):
    """p2 − p1 with Newcombe's hybrid-score interval from the two proportions' own (Wilson)
    intervals [l, u]: for independent samples (Newcombe 1998a, method 10) with `phi` 0; for paired
    ones (Newcombe 1998b, method 10) with `phi` the correlation of the two proportions' estimates
    (paired_newcombe_interval)."""
    p1, l1, u1, p2, l2, u2, phi = (np.asarray(v, dtype=np.float64) for v in (p1, l1, u1, p2, l2, u2, phi))
    d = p2 - p1
    below = (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2
    above = (u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2
    return d, d - np.sqrt(np.maximum(below, 0.0)), d + np.sqrt(np.maximum(above, 0.0))


def paired_newcombe_interval(both, only_first, only_second, neither, confidence: float = 0.95):
    """p2 − p1 for two proportions measured on the same n units (p1 = (both + only_first)/n, p2 =
    (both + only_second)/n: e.g. the share of inputs that fail before and after a change) with
    Newcombe's hybrid score interval for paired data: R. G. Newcombe, "Improved confidence intervals
    for the difference between binomial proportions based on paired data", Statistics in Medicine
    17 (1998) 2635-2650, method 10.

    As the independent-samples interval it combines the two Wilson intervals [l1, u1], [l2, u2],
    but the squared distances are combined with the correlation of the two estimates, φ̂ = C/√(EFGH)
    (E, F, G, H the table's margins, φ̂ = 0 when one is 0), where C = AD − BC is shrunk towards 0 by
    n/2 when positive (the method's continuity correction of φ̂, against an interval too narrow when
    the discordant pairs are few; its Wilson limits stay uncorrected):
        lower = d − √((p2 − l2)² − 2φ̂(p2 − l2)(u1 − p1) + (u1 − p1)²)
        upper = d + √((u2 − p2)² − 2φ̂(u2 − p2)(p1 − l1) + (p1 − l1)²)
    With φ̂ = 0 it is the independent-samples interval, which is far too wide for strongly correlated
    outcomes (it reads the sampling noise of the concordant units into a change they do not make).
    Array arguments are taken elementwise; n = 0 gives d NaN and [−1, 1]. Returns (d, lower, upper),
    clipped to [−1, 1]."""
    a, b, c, dd = (np.asarray(v, dtype=np.float64) for v in (both, only_first, only_second, neither))
    n = a + b + c + dd
    safe = np.maximum(n, 1)
    k1, k2 = a + b, a + c
    l1, u1 = wilson_interval(k1, n, confidence)
    l2, u2 = wilson_interval(k2, n, confidence)
    margins = k1 * (n - k1) * k2 * (n - k2)
    cross = a * dd - b * c
    cross = np.where(cross > 0, np.maximum(cross - n / 2, 0.0), cross)
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = np.where(margins > 0, cross / np.sqrt(np.where(margins > 0, margins, 1.0)), 0.0)
    d, lo, hi = newcombe_interval(k1 / safe, l1, u1, k2 / safe, l2, u2, phi)
    empty = n == 0
    return (np.where(empty, np.nan, d), np.where(empty, -1.0, np.clip(lo, -1, 1)),
            np.where(empty, 1.0, np.clip(hi, -1, 1)))


def weighted_rate_variance(cells: np.ndarray, failures: np.ndarray, propensity: np.ndarray | None, n_cells: int) -> np.ndarray:
    """Per-cell variance of the (self-normalized, importance-weighted) failure-rate estimate.

    The larger of the delta-method (sandwich) variance Σw²(f − r)² / (Σw)², which holds when the
    weights correlate with failure, and the binomial p(1−p)/n_eff with p shrunk to
    (k_eff + ½)/(n_eff + 1), which keeps a cell that never (or always) failed uncertain.
    NaN for unvisited cells.
    """
    s = weight_sums(cells, failures, propensity, n_cells)
    return variance_from_sums(s["sw"], s["sw2"], s["swf"], s["sw2f"])
