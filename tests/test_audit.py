"""The modes' audit (failfade/audit.py): fresh, uniformly drawn pairs of each failure mode."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from failfade.audit import COLUMNS, audit_modes, draw_pairs, paired_sample_change
from failfade.concepts import Axis, ConceptSpace
from failfade.tasks import Outcomes


class Table:
    """A model given by its failure table F[input, cell]: inputs differ a lot in difficulty, so a
    draw that favoured some inputs would miss the truth."""

    def __init__(self, n_inputs=300, shape=(5, 5), seed=0):
        self.space = ConceptSpace([Axis(f"a{k}", "contrast", tuple(float(i) for i in range(n))) for k, n in enumerate(shape)])
        self.n_cells, self.n_inputs = self.space.n_cells, n_inputs
        rng = np.random.default_rng(seed)
        coords = self.space.all_coords()
        logit = -2.0 + 0.8 * coords.sum(1)[None, :] + 2.5 * np.linspace(-1, 1, n_inputs)[:, None]
        self.F = rng.random((n_inputs, self.n_cells)) < 1 / (1 + np.exp(-logit))
        self.scored = 0

    def score(self, input_ids, cells):
        f = self.F[np.asarray(input_ids), np.asarray(cells)]
        self.scored += len(f)
        return Outcomes(f.astype(np.int64), f.astype(np.float32), f)


def modes_of(boxes: list[np.ndarray]) -> pl.DataFrame:
    """failure_modes rows for the given cell sets (the landscape's columns the audit reads)."""
    return pl.DataFrame({
        "mode": list(range(1, len(boxes) + 1)), "selector": [f"m{k}" for k in range(len(boxes))],
        "description": [f"mode {k}" for k in range(len(boxes))], "cells": [" ".join(map(str, b)) for b in boxes],
        "failure_rate": [0.6] * len(boxes), "rate_lo": [0.55] * len(boxes), "rate_hi": [0.65] * len(boxes),
    })


def test_pairs_are_distinct_inside_the_mode_and_all_of_them_when_few():
    rng = np.random.default_rng(0)
    cells = np.array([3, 7, 11])
    ids, cs, exact = draw_pairs(100, cells, 200, rng)
    assert not exact and len(ids) == 200 and set(cs) <= set(cells)
    assert len(set(zip(ids.tolist(), cs.tolist()))) == 200  # without replacement
    ids, cs, exact = draw_pairs(10, cells, 200, rng)
    assert exact and sorted(zip(ids.tolist(), cs.tolist())) == sorted((i, c) for i in range(10) for c in cells)


def test_a_mode_with_few_pairs_is_scored_whole_and_its_rate_is_exact():
    """Exact on the held-out inputs, but the interval still counts them as a sample of inputs (as
    every held-out measurement does): a mode failing 33 of 64 seeds is no confirmed failure mode."""
    from failfade.stats import clustered_wilson, wilson_interval

    task = Table(n_inputs=40)
    box = np.array([0, 1, 5, 6])
    out = audit_modes(task, modes_of([box]), per_mode=512, seed=0, threshold=0.5, show_progress=False)
    assert dict(out.schema) == COLUMNS
    r = out.row(0, named=True)
    truth = task.F[:, box].mean()
    assert r["exact"] and r["audit_queries"] == r["pairs"] == 160 and r["audit_rate"] == pytest.approx(truth)
    lo, hi = wilson_interval(task.F[:, box].sum(), 160)
    # the inputs as the sample: pairs of one input move together (clustered_wilson), never narrower here
    _, clo, chi = clustered_wilson(np.repeat(np.arange(40), len(box)), task.F[:, box].ravel())
    assert (r["audit_lo"], r["audit_hi"]) == pytest.approx((clo, chi)) and r["audit_lo"] < truth < r["audit_hi"]
    assert chi - clo >= float(hi - lo)
    assert r["confirmed"] == (r["audit_lo"] >= 0.5)
    half = Table(n_inputs=64)
    half.F[:, 0] = np.arange(64) < 33
    r = audit_modes(half, modes_of([np.array([0])]), per_mode=512, seed=0, threshold=0.5, show_progress=False).row(0, named=True)
    assert r["exact"] and r["audit_rate"] > 0.5 and not r["confirmed"]
    assert (r["explored_rate"], r["explored_lo"], r["explored_hi"]) == (0.6, 0.55, 0.65)  # the landscape's, repeated


def test_audited_intervals_hold_the_truth_at_their_level():
    """400 random boxes, 128 pairs each: the 95% intervals hold each box's exhaustive rate about 95% of
    the time. The same check on pairs drawn from the easier half of the inputs fails, so the check
    has the power to see a draw that is not uniform."""
    task = Table()
    rng = np.random.default_rng(1)
    boxes = []
    for _ in range(400):
        lo, hi = np.sort(rng.integers(0, 5, 2)), np.sort(rng.integers(0, 5, 2))
        boxes.append(np.array([c for c, (x, y) in enumerate(task.space.all_coords()) if lo[0] <= x <= lo[1] and hi[0] <= y <= hi[1]]))
    truth = np.array([task.F[:, b].mean() for b in boxes])
    out = audit_modes(task, modes_of(boxes), per_mode=128, seed=2, threshold=0.5, show_progress=False)
    assert not out["exact"].any()
    held = (out["audit_lo"].to_numpy() <= truth) & (truth <= out["audit_hi"].to_numpy())
    assert 0.92 <= held.mean() <= 0.985, held.mean()
    assert abs(float((out["audit_rate"].to_numpy() - truth).mean())) < 0.01

    class EasyHalf(Table):  # a sampler that, wrongly, only ever sees the first half of the inputs
        def score(self, input_ids, cells):
            return super().score(np.asarray(input_ids) // 2, cells)

    easy = EasyHalf()
    skewed = audit_modes(easy, modes_of(boxes), per_mode=128, seed=2, threshold=0.5, show_progress=False)
    held = (skewed["audit_lo"].to_numpy() <= truth) & (truth <= skewed["audit_hi"].to_numpy())
    assert held.mean() < 0.8, held.mean()


def test_the_draws_follow_the_seed_and_reuse_nothing_between_modes():
    task = Table()
    boxes = [np.arange(0, 10), np.arange(10, 25)]
    a = audit_modes(task, modes_of(boxes), per_mode=64, seed=5, threshold=0.5, show_progress=False)
    b = audit_modes(task, modes_of(boxes), per_mode=64, seed=5, threshold=0.5, show_progress=False)
    c = audit_modes(task, modes_of(boxes), per_mode=64, seed=6, threshold=0.5, show_progress=False)
    assert a.equals(b) and not a.equals(c)
    assert task.scored == 3 * 128

    class Recording(Table):
        def __init__(self):
            super().__init__()
            self.calls = []

        def score(self, input_ids, cells):
            self.calls.append(set(zip(np.asarray(input_ids).tolist(), np.asarray(cells).tolist())))
            return super().score(input_ids, cells)

    # two modes of the same cells get fresh draws each (one generator goes on), not the same pairs again
    rec = Recording()
    box = np.arange(0, 10)  # 3,000 pairs, 64 drawn per mode: ~1.4 shared by chance
    audit_modes(rec, modes_of([box, box]), per_mode=64, seed=5, threshold=0.5, show_progress=False)
    drawn = [set().union(*rec.calls[:len(rec.calls) // 2]), set().union(*rec.calls[len(rec.calls) // 2:])]
    assert len(rec.calls) % 2 == 0 and all(len(d) == 64 for d in drawn)
    assert len(drawn[0] & drawn[1]) <= 8, len(drawn[0] & drawn[1])
    with pytest.raises(ValueError, match="per_mode"):
        audit_modes(task, modes_of(boxes), per_mode=0, seed=5, threshold=0.5)


def test_failfade_modes_shows_the_audit_beside_the_explored_rate(tmp_path):
    from click.testing import CliRunner

    from failfade.cli import main

    task = Table()
    boxes = [np.arange(0, 10), np.arange(10, 25)]
    modes = modes_of(boxes).with_columns(n_cells=pl.lit(10), failing_cells=pl.lit(8), cum_failing_cells=pl.lit(0.5),
                                         cum_failures=pl.lit(0.5))
    land = tmp_path / "results" / "t" / "landscape"
    land.mkdir(parents=True)
    modes.write_csv(land / "failure_modes.csv")
    run = lambda: CliRunner().invoke(main, ["modes", "t", "--results", str(tmp_path / "results")], env={"COLUMNS": "250"})  # noqa: E731
    r = run()
    assert r.exit_code == 0 and "audited rate" not in r.output and "not written yet" in r.output, r.output
    pl.DataFrame(schema=COLUMNS).write_csv(land / "modes_audit.csv")  # audit.queries_per_mode: 0
    r = run()
    assert r.exit_code == 0 and "audited rate" not in r.output and "queries_per_mode` is 0" in r.output, r.output
    audit = audit_modes(task, modes, per_mode=64, seed=5, threshold=0.5, show_progress=False)
    audit.write_csv(land / "modes_audit.csv")
    r = run()
    assert r.exit_code == 0 and "audited rate" in r.output and "64 queries" in r.output, r.output
    first = audit.row(0, named=True)
    assert f"{first['audit_rate']:.0%} [{first['audit_lo']:.0%}, {first['audit_hi']:.0%}]" in r.output
    audit.reverse().write_csv(land / "modes_audit.csv")  # an audit of other modes (an earlier landscape's)
    r = run()
    assert r.exit_code == 0 and "audited rate" not in r.output and "from an earlier landscape" in r.output, r.output
    audit.with_columns(explored_rate=pl.col("explored_rate") + 0.1).write_csv(land / "modes_audit.csv")  # same selectors
    r = run()
    assert r.exit_code == 0 and "audited rate" not in r.output and "from an earlier landscape" in r.output, r.output
    for garbled in ("not,an\naudit", audit.write_csv().replace("0.", "x.", 1)):  # wrong columns; a rate that is no number
        (land / "modes_audit.csv").write_text(garbled)
        r = run()
        assert r.exit_code != 0 and "modes_audit.csv" in r.output and "Traceback" not in r.output, r.output


def test_the_stage_writes_an_empty_table_without_the_model_when_switched_off(tmp_path):
    from failfade.landscape import summarize, write_database
    from failfade.pipeline import stage_audit

    task = Table()
    ids = np.repeat(np.arange(task.n_inputs), task.n_cells)
    cells = np.tile(np.arange(task.n_cells), task.n_inputs)
    f = task.F[ids, cells]
    q = pl.DataFrame({"input_id": ids, "cell": cells.astype(np.int32), "failure": f, "delta": f.astype(np.float32),
                      "prediction": f.astype(np.int64), "propensity": np.full(len(f), np.nan), "marginal": np.full(len(f), np.nan)})
    cells_t, modes, _ = summarize(task.space, q, 0.5)
    assert modes.height > 0
    db = tmp_path / "landscape.duckdb"
    write_database(db, q, cells_t, modes, None)
    exp = {"landscape": {"failure_rate_threshold": 0.5, "confidence": 0.95}, "audit": {"queries_per_mode": 0},
           "explore": {}, "seed": 0}
    out = stage_audit(exp, tmp_path / "no-model-here", db, tmp_path / "audit.csv")
    assert out.height == 0 and pl.read_csv(tmp_path / "audit.csv").columns == list(COLUMNS)


# --- the untargeted cells on fresh pairs, before and after -----------------------------------------

def test_the_same_pairs_are_scored_for_both_models_and_the_whole_region_is_exact():
    from failfade.audit import PAIR_COLUMNS, paired_sample, paired_sample_change

    pre, post = Table(seed=0), Table(seed=0)
    post.F = post.F.copy()
    post.F[:, 3] = ~post.F[:, 3]  # the repair flips every outcome of cell 3
    cells = np.array([1, 3, 4])
    pairs = paired_sample(pre, post, cells, 200, seed=7)
    assert dict(pairs.schema) == PAIR_COLUMNS and pairs.height == 200 and (pairs["region_pairs"] == 900).all()
    assert (pairs["region_cells"] == 3).all()
    ids, cs = pairs["input"].to_numpy(), pairs["cell"].to_numpy()
    assert (pairs["failure_pre"].to_numpy() == pre.F[ids, cs]).all() and (pairs["failure_post"].to_numpy() == post.F[ids, cs]).all()
    assert pairs.equals(paired_sample(pre, post, cells, 200, seed=7))
    whole = paired_sample_change(paired_sample(pre, post, cells, 10_000, seed=7))
    truth_pre, truth_post = pre.F[:, cells].mean(), post.F[:, cells].mean()
    assert whole["exact"] and whole["queries"] == whole["pairs"] == 900 and whole["cells"] == 3
    assert whole["pre"] == pytest.approx(truth_pre) and whole["post"] == pytest.approx(truth_post)
    assert whole["change_ci"][0] < whole["change"] < whole["change_ci"][1]  # the held-out inputs are still a sample
    assert whole["relative_change_ci"][0] < whole["relative_change"] < whole["relative_change_ci"][1]
    flipped = pre.F[:, 3]
    assert (whole["newly_failing"], whole["newly_passing"]) == (int((~flipped).sum()), int(flipped.sum()))
    assert paired_sample_change(paired_sample(pre, post, cells, 0, seed=7))["queries"] == 0


def test_the_paired_change_on_sampled_pairs_holds_the_truth_at_its_level():
    """200 repairs that move the untargeted cells by different amounts, 256 pairs each: the paired
    intervals of the change hold the exhaustive change about 95% of the time, and are far narrower
    than the unpaired ones would be (most pairs do not change)."""
    from failfade.audit import paired_sample, paired_sample_change

    pre = Table(seed=3)
    rng = np.random.default_rng(4)
    cells = np.arange(pre.n_cells)
    held, held_rel, widths = [], [], []
    for k in range(200):
        post = Table(seed=3)
        flip = rng.random(post.F.shape) < rng.uniform(0.0, 0.1)  # some pairs change, either way
        post.F = np.where(flip, rng.random(post.F.shape) < 0.6, pre.F)
        truth = post.F.mean() - pre.F.mean()
        ch = paired_sample_change(paired_sample(pre, post, cells, 256, seed=k))
        held.append(ch["change_ci"][0] <= truth <= ch["change_ci"][1])
        widths.append(ch["change_ci"][1] - ch["change_ci"][0])
        rel = post.F.mean() / pre.F.mean() - 1
        held_rel.append(ch["relative_change_ci"][0] <= rel <= ch["relative_change_ci"][1])
    assert 0.92 <= np.mean(held) <= 0.99, np.mean(held)
    assert 0.92 <= np.mean(held_rel) <= 0.99, np.mean(held_rel)
    assert np.mean(widths) < 0.09, np.mean(widths)  # unpaired, two rates near 0.6 on 256: about 0.17


@pytest.mark.parametrize("p1, p2, n", [(0.05, 0.15, 2048), (0.02, 0.08, 2048), (0.10, 0.30, 512), (0.66, 0.16, 2048),
                                       (0.30, 0.30, 256)])
def test_the_relative_change_interval_holds_where_failures_rise_from_a_low_base(p1, p2, n):
    """A rise from a low base is where dividing the change's interval by the rate before failed (it
    held the truth 66-71% of the time): the paired log-ratio interval holds it at about its level."""
    from failfade.audit import PAIR_COLUMNS, paired_sample_change

    rng = np.random.default_rng(int(1000 * p1 + 10 * p2))
    held = []
    for _ in range(400):
        a = rng.random(n) < p1
        if p2 >= 0.7 * p1:  # most pairs keep their outcome; the rest draw anew at the rate that gives p2
            b = np.where(rng.random(n) < 0.7, a, rng.random(n) < (p2 - 0.7 * p1) / 0.3)
        else:  # a large drop: a pair fails after only if it failed before, at the ratio's rate
            b = a & (rng.random(n) < p2 / p1)
        pairs = pl.DataFrame({"input": np.arange(n), "cell": np.zeros(n, np.int64), "failure_pre": a, "failure_post": b,
                              "region_cells": np.ones(n, np.int64), "region_pairs": np.full(n, 10 * n)}, schema=PAIR_COLUMNS)
        lo, hi = paired_sample_change(pairs)["relative_change_ci"]
        held.append(lo <= p2 / p1 - 1 <= hi)
    assert 0.92 <= np.mean(held) <= 0.99, np.mean(held)


def test_the_relative_change_interval_holds_its_point_when_nothing_fails_after():
    """The interval is centred on the ½-smoothed ratio: with no pair failing after, the point is
    −100% and the smoothed interval alone stopped short of it ([−99.9%, −73.6%] here)."""
    from failfade.audit import PAIR_COLUMNS, paired_sample_change

    n = 600
    pairs = pl.DataFrame({"input": np.arange(n), "cell": np.zeros(n, np.int64), "failure_pre": np.arange(n) < 12,
                          "failure_post": np.zeros(n, bool), "region_cells": np.ones(n, np.int64),
                          "region_pairs": np.full(n, 10 * n)}, schema=PAIR_COLUMNS)
    ch = paired_sample_change(pairs)
    lo, hi = ch["relative_change_ci"]
    assert ch["relative_change"] == -1.0 and lo == -1.0 and -1 < hi < 0


def test_shift_reports_the_fresh_pairs_and_the_guard_reads_them():
    from failfade.audit import PAIR_COLUMNS
    from failfade.shift import compare, markdown
    from test_shift import SPACE3, TARGETED, build_queries, plan_for

    q = build_queries({c: (20, 2) for c in range(9)})
    n = 600
    fine = pl.DataFrame({"input": np.arange(n), "cell": np.arange(n) % 5, "failure_pre": np.arange(n) < 60,
                         "failure_post": np.arange(n) < 60, "region_cells": np.full(n, 5), "region_pairs": np.full(n, 5000)},
                        schema=PAIR_COLUMNS)
    res, _ = compare(SPACE3, q, q, plan_for(TARGETED), 0.5, 0.9, 0.9, bootstrap=0, other_heldout=fine)
    oh = res["other_heldout"]
    assert (oh["pre"], oh["post"], oh["change"], oh["newly_failing"]) == (0.1, 0.1, 0.0, 0)
    assert oh["change_ci"][0] <= 0 <= oh["change_ci"][1] and not res["guard"]["tripped"]
    md = markdown(res, "x")
    assert "| other, fresh held-out pairs (5 cells; 600 of 5000 pairs at random) | 10.0%" in md
    assert "0 pairs newly failing, 0 newly passing; no significant change" in md
    worse = fine.with_columns(failure_post=pl.Series(np.arange(n) < 90))  # 30 pairs newly fail, none pass
    res, _ = compare(SPACE3, q, q, plan_for(TARGETED), 0.5, 0.9, 0.9, bootstrap=0, other_heldout=worse)
    assert res["guard"]["tripped"] and res["guard"]["other_cells_worse_on_fresh_pairs"]
    assert res["guard"]["other_cells_worse_on_fresh_pairs"][0].startswith("+5.0 pt [")
    md = markdown(res, "x")
    assert "the untargeted cells, on fresh pairs, significantly worse: +5.0 pt" in md.splitlines()[2]


def test_the_audit_interval_allows_for_pairs_that_share_an_input():
    """A whole mode of 8 cells x 60 inputs, each input failing every cell with its own difficulty
    (Beta(0.5, 0.5), rate 0.5 over inputs): Wilson over the 480 pairs as if independent held the
    rate over inputs about 65% of the time at 95%; the clustered interval holds it near 95%, and
    equals Wilson when each input appears once."""
    from failfade.audit import draw_pairs
    from failfade.stats import clustered_wilson, wilson_interval

    rng = np.random.default_rng(1)
    naive = clustered = 0
    runs = 400
    for _ in range(runs):
        u = rng.beta(0.5, 0.5, 60)
        f = rng.random((8, 60)) < u
        ids, cs, exact = draw_pairs(60, np.arange(8), 512, rng)
        assert exact
        y = f[cs, ids]
        lo, hi = wilson_interval(y.sum(), len(y))
        naive += lo <= 0.5 <= hi
        _, lo, hi = clustered_wilson(ids, y)
        clustered += lo <= 0.5 <= hi
    assert naive / runs < 0.75
    assert clustered / runs > 0.9
    y = rng.random(300) < 0.3  # one pair per input: no clustering to allow for
    n_eff, lo, hi = clustered_wilson(np.arange(300), y)
    assert n_eff == pytest.approx(300, rel=0.15) and hi - lo > 0
    assert clustered_wilson(np.repeat(np.arange(10), 5), np.zeros(50, bool))[0] == 10  # nothing failed: the inputs


def test_the_paired_change_allows_for_pairs_that_share_an_input():
    """The other cells' change before/after (paired_sample_change) from pairs that share inputs: a
    hard input fails in many cells, and fades in many. Over the pairs as if independent the change's
    95% interval held the change over inputs 64% of the time here; with the pairs at their effective
    number, 93%."""
    from failfade.stats import paired_newcombe_interval

    rng = np.random.default_rng(0)
    m, cells, size, runs = 60, 20, 400, 300
    naive = held = 0
    for _ in range(runs):
        u = rng.beta(0.6, 0.6, m)  # input difficulty, shared by every cell
        fade = rng.random(m) < 0.5  # whether mitigation helps this input at all
        pre = rng.random((m, cells)) < u[:, None]
        post = pre & ~(fade[:, None] & (rng.random((m, cells)) < 0.8))
        truth = -0.5 * 0.5 * 0.8  # E[post - pre] over inputs: -E[u] P(fade) 0.8, u and fade independent
        ids, cs, _ = draw_pairs(m, np.arange(cells), size, rng)
        pairs = pl.DataFrame({"input": ids, "cell": cs, "failure_pre": pre[ids, cs], "failure_post": post[ids, cs],
                              "region_cells": np.full(size, cells), "region_pairs": np.full(size, m * cells)})
        out = paired_sample_change(pairs)
        held += out["change_ci"][0] <= truth <= out["change_ci"][1]
        a, b = pre[ids, cs], post[ids, cs]
        both, only_pre, only_post = (a & b).sum(), (a & ~b).sum(), (b & ~a).sum()
        _, lo, hi = paired_newcombe_interval(both, only_pre, only_post, size - both - only_pre - only_post)
        naive += lo <= truth <= hi
    assert naive / runs < 0.88
    assert held / runs > 0.9


def test_the_relative_change_allows_for_the_base_rates_clustering():
    """Hard inputs fail in (nearly) every cell before; new failures after fall anywhere. The change
    b - a barely clusters, but the base rate does, and log(p2/p1) moves with both: scaled by the
    change's shrink, the relative change's 95% interval held the truth 50-67% of the time in a
    review's simulation; scaled by its own (of b/p2 - a/p1), near 95%."""
    rng = np.random.default_rng(3)

    def draw(m, cells):
        hard = rng.random(m) < 0.08
        a = np.repeat(hard, cells).reshape(m, cells) & (rng.random((m, cells)) < 0.95)
        b = a | (rng.random((m, cells)) < 0.08)
        return a.ravel(), b.ravel(), np.repeat(np.arange(m), cells)

    m, cells, runs = 128, 16, 200
    big_a, big_b, _ = draw(200_000, cells)
    truth = big_b.mean() / big_a.mean() - 1
    held = 0
    for _ in range(runs):
        a, b, ids = draw(m, cells)
        pairs = pl.DataFrame({"input": ids, "cell": np.tile(np.arange(cells), m), "failure_pre": a, "failure_post": b,
                              "region_cells": np.full(len(a), cells), "region_pairs": np.full(len(a), 10 ** 6)})
        lo, hi = paired_sample_change(pairs)["relative_change_ci"]
        held += lo <= truth <= hi
    assert held / runs > 0.88


def test_pairs_on_distinct_inputs_keep_their_number():
    """With every pair on an input of its own there is no clustering: the effective count is the
    pairs (it read n - 1, and the audit then said that pairs of one input move together)."""
    from failfade.stats import cluster_shrink, clustered_wilson

    rng = np.random.default_rng(0)
    for n in (6, 40, 500):
        f = rng.random(n) < 0.4
        f[:2] = [True, False]  # both outcomes
        assert cluster_shrink(np.arange(n), f) == pytest.approx(1.0)
        assert clustered_wilson(np.arange(n), f)[0] == pytest.approx(n)
    assert cluster_shrink(np.repeat(np.arange(10), 5), np.repeat(rng.random(10) < 0.5, 5)) < 0.5  # shared inputs


def test_the_reading_commands_look_where_the_given_config_wrote(tmp_path, monkeypatch):
    """`failfade run --configfile F` writes to F's `results:`; `modes`, `template` and `shift` read
    ./config/config.yaml's, so they showed another run's results or none. They take --configfile."""
    from click.testing import CliRunner

    from failfade.cli import main

    monkeypatch.chdir(tmp_path)
    land = tmp_path / "elsewhere" / "t" / "landscape"
    land.mkdir(parents=True)
    modes_of([np.arange(0, 10)]).with_columns(n_cells=pl.lit(10), failing_cells=pl.lit(8), cum_failing_cells=pl.lit(0.5),
                                              cum_failures=pl.lit(0.5)).write_csv(land / "failure_modes.csv")
    (tmp_path / "elsewhere" / "t" / "shift").mkdir()
    (tmp_path / "elsewhere" / "t" / "shift" / "shift.md").write_text("# the other run's shift\n")
    (tmp_path / "mine.yaml").write_text("results: elsewhere\nexperiments: {}\n")
    for args in (["modes", "t"], ["shift", "t"], ["template", "t"]):
        r = CliRunner().invoke(main, args, env={"COLUMNS": "250"})
        assert r.exit_code != 0 and "no results for experiment 't' under results/" in r.output, r.output
    r = CliRunner().invoke(main, ["modes", "t", "--configfile", "mine.yaml"], env={"COLUMNS": "250"})
    assert r.exit_code == 0 and "m0" in r.output and "mode 0" in r.output, r.output
    r = CliRunner().invoke(main, ["shift", "t", "--configfile", "mine.yaml"])
    assert r.exit_code == 0 and "the other run's shift" in r.output, r.output
    r = CliRunner().invoke(main, ["template", "t", "--configfile", "mine.yaml"])
    assert "elsewhere/t/landscape/landscape.duckdb does not exist yet" in r.output, r.output  # looked there


def test_a_failure_mode_table_with_a_blank_rate_is_named(tmp_path):
    """A blank failure_rate reached the table's formatting as None: a TypeError traceback."""
    from click.testing import CliRunner

    from failfade.cli import main

    land = tmp_path / "results" / "t" / "landscape"
    land.mkdir(parents=True)
    modes_of([np.arange(0, 10)]).with_columns(n_cells=pl.lit(10), failing_cells=pl.lit(8), cum_failing_cells=pl.lit(0.5),
                                              cum_failures=pl.lit(0.5), failure_rate=pl.lit(None, pl.Float64)
                                              ).write_csv(land / "failure_modes.csv")
    r = CliRunner().invoke(main, ["modes", "t", "--results", str(tmp_path / "results")])
    assert r.exit_code == 1 and "failure_modes.csv: cannot be read as a failure-mode table" in r.output, r.output
    assert "column 'failure_rate' has blank values" in r.output and "Traceback" not in r.output
