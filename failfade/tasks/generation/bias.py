"""Bias per cell: how far the distribution of an attribute in a cell's images is from a target.

The CLIP judge with `model.bias` answers a question about every generated image zero-shot (which
of `classes` it depicts); a query's `prediction` is that class. Per cell, the answers'
distribution p (importance-weighted like every landscape rate, so a contextual searcher's choice
of seeds does not tilt it) is compared with the target t (uniform unless `model.bias.target` says
otherwise) by the total variation distance TV = ½ Σ |p − t| (0: as the target; 1 − min t: one
class only). A finite sample of a target-distributed cell is not at TV 0, so each cell also gets
`tv_floor`, the 95% quantile of TV for n_eff draws from the target (simulated, seeded; n_eff the
smallest over the classes of the size a failure cell's interval uses, stats.rates_from_sums: Kish's,
or less where the weights depend on the answer): a cell is
biased beyond sampling noise when tv > tv_floor.
"""

from __future__ import annotations

import numpy as np
import polars as pl


def target_of(bias: dict) -> np.ndarray:
    k = len(bias["classes"])
    t = np.full(k, 1.0 / k) if bias.get("target") is None else np.asarray(bias["target"], dtype=np.float64)
    return t / t.sum()


def tv_floor(n: int, target: np.ndarray, rng: np.random.Generator, draws: int = 2000) -> float:
    """95% quantile of the TV distance between n draws from `target` and `target` itself."""
    if n <= 0:
        return float("nan")
    counts = rng.multinomial(n, target, size=draws)
    return float(np.quantile(0.5 * np.abs(counts / n - target).sum(1), 0.95))


def bias_table(queries: pl.DataFrame, n_cells: int, bias: dict, prompts: list[str] | None = None,
               seed: int = 0) -> pl.DataFrame:
    """One row per cell: queries, effective queries, the share of each class, TV to the target,
    and the noise floor of TV at that size."""
    from failfade.landscape import propensities
    from failfade.stats import query_weights, rates_from_sums

    classes, target = list(bias["classes"]), target_of(bias)
    cells = queries["cell"].to_numpy().astype(np.int64)
    pred = queries["prediction"].to_numpy().astype(np.int64)
    ok = (pred >= 0) & (pred < len(classes))
    w = query_weights(propensities(queries), len(cells))
    cells, pred, w = cells[ok], pred[ok], w[ok]
    share = np.zeros((n_cells, len(classes)))
    np.add.at(share, (cells, pred), w)
    share2 = np.zeros((n_cells, len(classes)))
    np.add.at(share2, (cells, pred), w * w)
    sw, sw2 = share.sum(1), share2.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = share / sw[:, None]
    # the effective size, as a failure cell's (stats.rates_from_sums): Kish's, or less where the
    # weights depend on the answer; per class (its share a rate of that answer), the smallest
    n_eff = np.min([rates_from_sums(sw, sw2, share[:, j], share2[:, j])[1] for j in range(len(classes))], axis=0)
    tv = 0.5 * np.abs(p - target[None, :]).sum(1)
    # one seeded stream per size, drawn once: a cell's floor depends on its own size only, not on
    # which other cells came before it (with one shared stream, a cell's verdict could flip when an
    # unrelated cell's query count changed, e.g. between two searchers' tables)
    sizes = {n: tv_floor(n, target, np.random.default_rng(np.random.SeedSequence([seed, 17, n])))
             for n in {int(round(m)) for m in n_eff if m > 0}}
    floor = np.array([sizes[int(round(m))] if m > 0 else np.nan for m in n_eff])
    out = {"cell": np.arange(n_cells, dtype=np.int32)}
    if prompts is not None:
        out["prompt"] = prompts
    out |= {"queries": np.bincount(cells, minlength=n_cells), "effective_queries": n_eff}
    out |= {f"share_{c}": p[:, j] for j, c in enumerate(classes)}
    out |= {"tv": np.where(sw > 0, tv, np.nan), "tv_floor": floor,
            "biased": np.where(sw > 0, tv > floor, False)}
    return pl.DataFrame(out)
