"""Measurements that can fail: the recall rules, off-grid probes, the validation split, early
stopping, and ground truth scored without the outcome cache."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from failfade import FailfadeError
from failfade.concepts import Axis, ConceptSpace
from failfade.config import validate
from failfade.landscape import summarize
from failfade.metrics import oracle_recall, queries_to_confirm, queries_to_recall, scores, scores_of
from failfade.probes import check_probes, newcombe, probe_table
from failfade.tasks.classification.data import load_splits
from failfade.tasks.classification.mitigate import pick_epoch
from failfade.tasks.classification.transforms import TRANSFORMS

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- recall by the rule the user sees ------------------------------------------------------------

LINE = ConceptSpace([Axis("x", "contrast", (0.0, 1.0, 2.0, 3.0))])


def queries(counts: dict[int, tuple[int, int]]) -> pl.DataFrame:
    cells, fails = [], []
    for c, (n, k) in counts.items():
        cells += [c] * n
        fails += [True] * k + [False] * (n - k)
    return pl.DataFrame({"cell": np.array(cells, dtype=np.int32), "failure": np.array(fails),
                         "delta": np.array(fails, dtype=np.float32)})


def test_interval_rule_recall_is_what_the_landscape_shows():
    truth = np.array([0.9, 0.6, 0.55, 0.1])  # cells 0, 1, 2 truly fail at tau 0.5
    # cell 0: 18/20 (lower bound ~0.70: a failure cell); cell 1: 6/10 (rate 0.6 but lower bound ~0.31);
    # cell 2: 11/20 (0.55, lower bound ~0.34); cell 3: 1/20
    q = queries({0: (20, 18), 1: (10, 6), 2: (20, 11), 3: (20, 1)})
    s = scores_of(LINE.n_cells, q, truth, 0.5)
    assert s["recall_point"] == pytest.approx(1.0)  # every true failure cell has a point estimate >= 0.5
    assert s["recall"] == pytest.approx(1 / 3)  # only cell 0 is a failure cell of the landscape
    assert s["precision"] == 1.0 and s["precision_point"] == 1.0
    cells, _, _ = summarize(LINE, q, 0.5)
    shown = set(cells.filter(pl.col("is_failure"))["cell"].to_list())
    assert s["recall"] == len(shown & {0, 1, 2}) / 3
    # a point-estimate false positive: 3/5 at a truly safe cell
    q2 = queries({0: (20, 18), 1: (10, 6), 2: (20, 11), 3: (5, 3)})
    s2 = scores_of(LINE.n_cells, q2, truth, 0.5)
    assert s2["precision_point"] == pytest.approx(3 / 4) and s2["precision"] == 1.0


def test_recall_rules_follow_the_confidence():
    truth = np.array([0.9, 0.6, 0.55, 0.1])
    q = queries({0: (20, 18), 1: (10, 6), 2: (20, 11), 3: (20, 1)})
    loose = scores(LINE.n_cells, q["cell"].to_numpy(), q["failure"].to_numpy(), truth, 0.5, confidence=0.2)
    assert loose["recall"] > scores(LINE.n_cells, q["cell"].to_numpy(), q["failure"].to_numpy(), truth, 0.5)["recall"]


def test_queries_to_recall_by_rule():
    truth = np.array([0.9, 0.9, 0.1, 0.1])
    rng = np.random.default_rng(0)
    cells = np.tile(np.arange(4), 64)
    fails = rng.random(len(cells)) < truth[cells]
    q = pl.DataFrame({"cell": cells.astype(np.int32), "failure": fails, "delta": fails.astype(np.float32)})
    point = queries_to_recall(4, q, truth, 0.5, step=4, rule="point")
    interval = queries_to_recall(4, q, truth, 0.5, step=4, rule="interval")
    assert point is not None and interval is not None and interval > point


def test_queries_to_confirm_is_the_first_n_whose_interval_clears_tau():
    from failfade.stats import wilson_interval

    for p in (0.57, 0.6, 0.75, 1.0):
        n = queries_to_confirm(p, 0.5, 1000)
        assert wilson_interval(p * n, float(n))[0] >= 0.5 > wilson_interval(p * (n - 1), float(n - 1))[0]
    assert queries_to_confirm(0.5, 0.5, 1000) is None and queries_to_confirm(0.52, 0.5, 200) is None


def test_oracle_recall_spends_the_budget_on_the_cheapest_cells():
    truth = np.array([1.0, 1.0, 0.6, 0.52, 0.1])  # 4 true failure cells; 0.52 needs > 200 queries
    c1, c06 = queries_to_confirm(1.0, 0.5, 200), queries_to_confirm(0.6, 0.5, 200)
    assert oracle_recall(truth, 0.5, 2 * c1 - 1, 200) == 0.25
    assert oracle_recall(truth, 0.5, 2 * c1, 200) == 0.5
    assert oracle_recall(truth, 0.5, 2 * c1 + c06, 200) == 0.75
    assert oracle_recall(truth, 0.5, 10**6, 200) == 0.75  # at most one query per input and cell
    assert oracle_recall(truth, 0.5, 10**6, 5000) == 1.0


# --- off-grid probes -------------------------------------------------------------------------------

def test_probe_table_flags_a_regression():
    probes = [{"name": "darkening 0.5", "apply": {"darken": 0.5}}, {"name": "rotation", "apply": {"rotate": 10}},
              {"name": "blur", "apply": {"gaussian_blur": 2}}]
    spaces = check_probes(probes, TRANSFORMS)
    table = probe_table(probes, spaces, [0, 50, 60], [200, 50, 20], 200)
    dark, rot, blur = table.rows(named=True)
    assert dark["significantly_worse"] and dark["delta"] == pytest.approx(1.0) and dark["delta_lo"] > 0.9
    assert not rot["significantly_worse"] and not rot["significantly_better"] and rot["delta"] == 0
    assert blur["significantly_better"] and blur["failure_rate_post"] == pytest.approx(0.1)
    assert dark["condition"] == "darken 0.5"


ROTATION_30 = {"name": "rotation 30", "apply": {"rotate": -30}}


def test_probe_table_pairs_the_same_inputs():
    """Before and after are the same 539 inputs. A rotation probe whose outcome changed on 55 of them,
    37 newly failing and 18 newly passing (McNemar p = 0.014), with the other 484 unchanged: the
    unpaired interval, as if the two sides were independent samples, read +3.5 pt [-2.4, +9.4],
    "no significant change"; the paired one is [+0.8, +6.2], significantly worse."""
    from scipy.stats import binomtest

    spaces = check_probes([ROTATION_30], TRANSFORMS)
    paired = probe_table([ROTATION_30], spaces, [250], [269], 539, newly_failing=[37], newly_passing=[18]).row(0, named=True)
    assert paired["interval"] == "paired" and (paired["newly_failing"], paired["newly_passing"]) == (37, 18)
    assert paired["delta"] == pytest.approx(19 / 539)
    assert paired["significantly_worse"] and not paired["significantly_better"]
    assert paired["delta_lo"] == pytest.approx(0.0082, abs=5e-4) and paired["delta_hi"] == pytest.approx(0.0621, abs=5e-4)
    assert binomtest(37, 37 + 18).pvalue < 0.05  # McNemar's exact test agrees
    unpaired = probe_table([ROTATION_30], spaces, [250], [269], 539).row(0, named=True)  # the counts alone
    assert unpaired["interval"].startswith("unpaired") and unpaired["newly_failing"] is None
    assert not unpaired["significantly_worse"] and unpaired["delta_lo"] < -0.02 < 0.09 < unpaired["delta_hi"]
    # the same change with no concordance at all (independent outcomes): the paired interval is no narrower
    spread = probe_table([ROTATION_30], spaces, [250], [269], 539, newly_failing=[145], newly_passing=[126]).row(0, named=True)
    assert spread["delta_hi"] - spread["delta_lo"] >= 0.95 * (unpaired["delta_hi"] - unpaired["delta_lo"])
    assert not spread["significantly_worse"]


def test_paired_counts_from_per_input_outcomes():
    from failfade.probes import paired_counts

    pre = [np.array([1, 1, 0, 0, 1], bool), np.zeros(5, bool)]
    post = [np.array([1, 0, 1, 1, 1], bool), np.ones(5, bool)]
    assert paired_counts(pre, post) == {"failures_pre": [3, 0], "failures_post": [4, 5], "newly_failing": [2, 5],
                                        "newly_passing": [1, 0]}
    with pytest.raises(FailfadeError, match="differ in length"):
        paired_counts([np.zeros(3, bool)], [np.zeros(4, bool)])
    with pytest.raises(FailfadeError, match="do not fit"):  # 250 -> 269 cannot be 30 newly failing, 18 newly passing
        probe_table([ROTATION_30], check_probes([ROTATION_30], TRANSFORMS), [250], [269], 539,
                    newly_failing=[30], newly_passing=[18])


def test_stage_probes_writes_paired_counts(tmp_path, monkeypatch):
    """The probes stage pairs each probe's and each fixed cell's per-input outcomes before and after:
    probes.csv and targeted.csv carry the discordant counts and the paired verdicts, and shift reads
    them back (and a table written before the counts were kept, as unpaired)."""
    from failfade import pipeline
    from failfade.probes import read_table

    exp = small_experiment()
    exp["shift"]["probes"] = [ROTATION_30]
    rng = np.random.default_rng(3)
    n = 539
    before = rng.random(n) < 250 / n
    after = before.copy()
    after[np.flatnonzero(~before)[:37]] = True  # 37 newly failing
    after[np.flatnonzero(before)[:18]] = False  # 18 newly passing
    cell_pre, cell_post = rng.random(n) < 0.6, rng.random(n) < 0.2

    class Family:
        transforms, level_ranges = TRANSFORMS, {}

        def build_task(self, exp, model_dir):
            return model_dir.name  # stands for the model's task

        def probe_failures(self, task, spaces):
            assert len(spaces) == 2  # the probe, then the fixed cell
            return ([before, cell_pre] if task == "pre" else [after, cell_post]), n

    monkeypatch.setattr(pipeline, "family_of", lambda exp: Family())
    (tmp_path / "plan.json").write_text(json.dumps({"fix": [{"cell": 1, "weight": 1.0}]}))
    out = {k: tmp_path / f"{k}.csv" for k in ("probes", "targeted", "inputs")}
    pipeline.stage_probes(exp, tmp_path / "pre", tmp_path / "post", out["probes"], tmp_path / "plan.json",
                          out["targeted"], out["inputs"])
    probe = read_table(out["probes"]).row(0, named=True)
    assert (probe["failures_pre"], probe["failures_post"]) == (before.sum(), after.sum())
    assert (probe["newly_failing"], probe["newly_passing"], probe["interval"]) == (37, 18, "paired")
    assert probe["significantly_worse"]
    cell = read_table(out["targeted"]).row(0, named=True)
    assert cell["newly_failing"] == int((cell_post & ~cell_pre).sum()) and cell["interval"] == "paired"
    assert cell["significantly_better"]
    # a probes.csv from before the counts were kept: read as unpaired, its verdicts as written
    old = tmp_path / "old.csv"
    pl.read_csv(out["probes"]).drop("newly_failing", "newly_passing", "interval").write_csv(old)
    probe_old = read_table(old).row(0, named=True)
    assert probe_old["newly_failing"] is None and probe_old["interval"].startswith("unpaired")


def _pair_probabilities(p1, p2, shared):
    """Cell probabilities (both fail, only before, only after, neither) of a pair of Bernoulli outcomes
    with rates p1, p2: with probability `shared` both read one uniform draw (as concordant as the rates
    allow), else each its own."""
    same = np.array([min(p1, p2), max(p1 - p2, 0), max(p2 - p1, 0), 1 - max(p1, p2)])
    apart = np.array([p1 * p2, p1 * (1 - p2), (1 - p1) * p2, (1 - p1) * (1 - p2)])
    return shared * same + (1 - shared) * apart


def test_paired_newcombe_matches_a_published_example():
    """Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (2017), chapter 8: complete
    response before and after consolidation therapy (Cavo et al. 2012), 59 / 6 / 16 / 80 of 161 patients;
    Newcombe's square-and-add (paired, method 10) interval -0.1186 to -0.0046 for before - after
    (the same figures as the book's R package contingencytables checks)."""
    from failfade.stats import paired_newcombe_interval

    d, lo, hi = paired_newcombe_interval(59, 6, 16, 80)  # after - before: the book's interval mirrored
    assert d == pytest.approx(10 / 161)
    assert (round(float(lo), 4), round(float(hi), 4)) == (0.0046, 0.1186)
    # no correlation (a margin of 0): the independent-samples interval
    assert np.allclose(paired_newcombe_interval(0, 0, 5, 15)[1:], newcombe(0, 20, 5, 20)[1:])


def test_paired_newcombe_degenerates_sensibly():
    from failfade.stats import paired_newcombe_interval

    # no discordant pair among many concordant ones: a change of 0, and a narrow interval around it
    d, lo, hi = paired_newcombe_interval(100, 0, 0, 439)
    assert d == 0 and -0.01 < lo < 0 < hi < 0.01
    # every input fails both times (a margin of 0: phi 0): the Wilson half-widths, still around 0
    d, lo, hi = paired_newcombe_interval(50, 0, 0, 0)
    assert d == 0 and lo < 0 < hi
    # a single input: wide, within [-1, 1], and the change it shows inside
    for cells in ((1, 0, 0, 0), (0, 0, 0, 1), (0, 0, 1, 0), (0, 1, 0, 0)):
        d, lo, hi = paired_newcombe_interval(*cells)
        assert -1 <= lo <= d <= hi <= 1 and hi - lo > 0.5, cells
    # no input at all
    d, lo, hi = paired_newcombe_interval(0, 0, 0, 0)
    assert np.isnan(d) and (lo, hi) == (-1, 1)
    # elementwise on arrays
    d, lo, hi = paired_newcombe_interval(np.array([59, 100]), np.array([6, 0]), np.array([16, 0]), np.array([80, 439]))
    assert d.shape == lo.shape == hi.shape == (2,) and d[1] == 0


@pytest.mark.parametrize("confidence", [0.95, 1 - 0.05 / 7])
def test_paired_newcombe_covers_correlated_pairs(confidence):
    """Correlated before/after outcomes of the same inputs (2,000 replicates of each setting): the
    paired interval covers the true change at about the nominal rate, where the unpaired one, blind
    to the correlation, is far wider than it needs to be (it covered ~100% at 95%)."""
    from failfade.stats import paired_newcombe_interval

    rng = np.random.default_rng(7)
    reps = 2000
    for n, p1, p2, shared in ((539, 0.45, 0.48, 0.8), (539, 0.2, 0.23, 0.6), (100, 0.2, 0.25, 0.7),
                              (50, 0.3, 0.2, 0.5), (30, 0.5, 0.5, 0.0), (200, 0.05, 0.08, 0.5)):
        cells = rng.multinomial(n, _pair_probabilities(p1, p2, shared), size=reps).T
        _, lo, hi = paired_newcombe_interval(*cells, confidence=confidence)
        cover = np.mean((lo <= p2 - p1) & (p2 - p1 <= hi))
        tolerance = 3 * np.sqrt(confidence * (1 - confidence) / reps) + 0.005  # 3 Monte Carlo SEs, and a little
        assert abs(cover - confidence) <= tolerance, (n, p1, p2, shared, cover)
        if shared >= 0.6:  # strongly correlated: the paired interval is much narrower than the unpaired one
            _, ulo, uhi = newcombe(cells[0] + cells[1], n, cells[0] + cells[2], n, confidence)
            assert np.mean(hi - lo) < 0.8 * np.mean(uhi - ulo)


def test_classification_probe_failures(tmp_path):
    """The identity probe fails exactly where clean inputs do; a black image fails far more."""
    from failfade.pipeline import family_of, stage_model

    exp = small_experiment()
    card = stage_model(exp, tmp_path / "model", ROOT / "resources")
    fam = family_of(exp)
    spaces = check_probes([{"name": "identity", "apply": {"darken": 0.0}}, {"name": "black", "apply": {"darken": 1.0}}],
                          fam.transforms)
    (identity, black), n = fam.probe_failures(fam.build_task(exp, tmp_path / "model"), spaces)
    assert n == card["heldout_inputs"]
    assert len(identity) == len(black) == n and identity.dtype == bool  # whether each held-out input failed
    assert identity.sum() == round((1 - card["heldout_clean_accuracy"]) * n)
    assert black.sum() >= 0.8 * n


def test_fixed_cells_scored_on_every_heldout_input_match_the_grid(tmp_path):
    """The targeted measurement applies exactly the grid cell's perturbation: its failure count
    over the held-out inputs equals the exhaustive grid's count for that cell."""
    from failfade.explore.search import exhaustive
    from failfade.pipeline import build_task, family_of, space_of, stage_model
    from failfade.probes import pooled_change, targeted_spaces, targeted_table

    exp = small_experiment()
    stage_model(exp, tmp_path / "model", ROOT / "resources")
    space = space_of(exp)
    plan = {"fix": [{"cell": 1, "weight": 1.0}]}  # rotation 40
    task = build_task(exp, tmp_path / "model")
    (outcomes,), n = family_of(exp).probe_failures(task, targeted_spaces(space, plan))
    truth, _ = exhaustive(task, exp["seed"], progress=False)
    cell = truth.filter(pl.col("cell") == 1).sort("input_id")
    assert outcomes.tolist() == cell["failure"].to_list() and n == cell.height  # input by input
    k = int(outcomes.sum())
    table = targeted_table(space, plan, [k], [k // 2], n)
    assert table["probe"].to_list() == ["rotation=40"]
    pooled = pooled_change(table)
    assert pooled["pre"] == k / n and pooled["relative_change"] == pytest.approx(k // 2 / k - 1)
    lo, hi = pooled["relative_change_ci"]
    assert lo < pooled["relative_change"] < hi < 0


def test_pooled_targeted_change_keeps_an_interval_when_nothing_fails_after():
    from failfade.probes import pooled_change

    table = pl.DataFrame({"inputs": [100, 100], "failures_pre": [30, 10], "failures_post": [0, 0]})
    p = pooled_change(table)
    assert p["pre"] == 0.2 and p["post"] == 0.0 and p["relative_change"] == -1.0
    # finite, and a clear reduction: the two cells count as 100 inputs' worth (they share them), not 200;
    # the interval is centred on Haldane's smoothed ratio, and widened to hold the reported −100%
    # (it read [−99.9%, −73.6%]-like, without its own point)
    assert p["relative_change_ci"][0] == -1.0 < p["relative_change_ci"][1] < -0.5
    per_input = pl.DataFrame({"input": np.arange(100), "failures_pre": (np.arange(100) < 30) + (np.arange(100) < 10),
                              "failures_post": np.zeros(100, np.int64)})
    paired = pooled_change(table, per_input=per_input)
    assert paired["relative_change_ci"][0] == -1.0 < paired["relative_change_ci"][1] < -0.5


@pytest.mark.parametrize("shift", [0, -1])
def test_pooled_paired_interval_falls_back_when_the_inputs_show_no_spread(shift):
    """No input's failure count changes (shift 0), or every input's drops by one (shift -1): the
    per-input change has no spread, and the paired t interval collapsed to a point (and the ratio's,
    var_log = 0), claiming certainty on 100 inputs. It falls back to the conservative one, and says so."""
    from failfade.probes import input_table, pooled_change

    rng = np.random.default_rng(0)
    pre = [rng.random(100) < 0.5 for _ in range(3)]
    pre[0][:] = True  # every input fails at least once before, so that every one can drop by one
    post = [p.copy() for p in pre]
    if shift:
        post[0][:] = False
    table = pl.DataFrame({"inputs": [100] * 3, "failures_pre": [int(p.sum()) for p in pre],
                          "failures_post": [int(p.sum()) for p in post]})
    paired = pooled_change(table, per_input=input_table(pre, post))
    conservative = pooled_change(table)
    assert paired["interval"].startswith("conservative") and "no spread" in paired["interval"]
    assert paired["change_ci"] == conservative["change_ci"] and paired["change_ci"][1] - paired["change_ci"][0] > 0.1
    lo, hi = paired["relative_change_ci"]
    assert lo < paired["relative_change"] < hi
    if not shift:  # the ratio's log has no spread either (a drop by one does not keep the ratio: it has some)
        assert paired["relative_change_ci"] == conservative["relative_change_ci"]


@pytest.mark.parametrize("post_noise", ["same", "fresh"])
def test_pooled_targeted_intervals_cover_when_the_cells_share_hard_inputs(post_noise):
    """The fixed cells are scored on the same inputs, and a hard input fails in every cell, before
    and after: Wilson on all K x n outcomes as if independent covered the pooled rate 66% of the
    time here, and Newcombe's change on them 65-72% in a review's simulation. With each input's
    failures over the cells (paired) and without them (conservative: the rates as measured on n
    inputs), every interval covers. `post_noise`: the after-model's failures share the before-model's
    per-(cell, input) noise, or draw their own (only the input's difficulty shared)."""
    from failfade.probes import input_table, pooled_change

    rng = np.random.default_rng(0)
    k_cells, n, reps = 6, 100, 400
    t_pre = np.array([.5, .55, .6, .5, .45, .6])
    t_post = t_pre - .2
    truth = {"pre": t_pre.mean(), "post": t_post.mean(), "change": (t_post - t_pre).mean(),
             "relative_change": t_post.mean() / t_pre.mean() - 1}
    cover = {(how, key): 0 for how in ("paired", "conservative") for key in truth}
    width = dict.fromkeys(cover, 0.0)
    for _ in range(reps):
        hard = rng.random(n)  # each input's difficulty, shared by every cell
        z = np.where(rng.random((k_cells, n)) < 0.8, hard, rng.random((k_cells, n)))
        z2 = z if post_noise == "same" else np.where(rng.random((k_cells, n)) < 0.8, hard, rng.random((k_cells, n)))
        pre, post = z < t_pre[:, None], z2 < t_post[:, None]
        table = pl.DataFrame({"inputs": [n] * k_cells, "failures_pre": pre.sum(1), "failures_post": post.sum(1)})
        for how, per_input in (("paired", input_table(list(pre), list(post))), ("conservative", None)):
            p = pooled_change(table, per_input=per_input)
            for key, value in truth.items():
                lo, hi = p[f"{key}_ci"]
                cover[(how, key)] += lo <= value <= hi
                width[(how, key)] += (hi - lo) / reps
    rates = {k: c / reps for k, c in cover.items()}
    assert all(r >= 0.92 for r in rates.values()), rates
    # and not by being wide: pairing the inputs narrows the change's interval (measured: 0.106 / 0.120
    # against 0.264 for same / fresh noise), which then covers near its nominal 95% (0.92 / 0.94)
    for key in ("change", "relative_change"):
        assert width[("paired", key)] < 0.6 * width[("conservative", key)], width
        assert rates[("paired", key)] <= 0.985, rates


def test_probe_errors_name_the_key():
    with pytest.raises(FailfadeError, match=r"shift.probes\[1\].apply.sharpen: unknown transform"):
        check_probes([{"name": "a", "apply": {"darken": 0.5}}, {"name": "b", "apply": {"sharpen": 2}}], TRANSFORMS)
    with pytest.raises(FailfadeError, match="repeated"):
        check_probes([{"name": "a", "apply": {"darken": 0.5}}, {"name": "a", "apply": {"darken": 0.4}}], TRANSFORMS)


def test_probe_schema():
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    exp = validate(cfg)["experiments"]["digits"]
    assert len(exp["shift"]["probes"]) >= 5 and exp["shift"]["bootstrap"] > 0
    check_probes(exp["shift"]["probes"], TRANSFORMS)  # the shipped probes are valid
    bad = copy.deepcopy(cfg)
    bad["experiments"]["digits"]["shift"]["probes"][0]["apply"] = {"darken": "lots"}
    with pytest.raises(FailfadeError, match=r"experiments\.digits\.shift\.probes\[0\]\.apply\.darken"):
        validate(bad)


# --- the validation split ----------------------------------------------------------------------------

def test_validation_split_is_disjoint_and_leaves_heldout_unchanged():
    plain = load_splits("builtin:digits", 8, 0.3, 0)
    with_val = load_splits("builtin:digits", 8, 0.3, 0, validation_fraction=0.15)
    assert plain.validation is None
    np.testing.assert_array_equal(plain.heldout.ids, with_val.heldout.ids)
    ids = [set(s.ids.tolist()) for s in (with_val.train, with_val.validation, with_val.heldout)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(map(len, ids)) == 1797 and len(ids[1]) == round(1797 * 0.15)
    assert set(plain.train.ids.tolist()) == ids[0] | ids[1]
    with pytest.raises(FailfadeError, match="no training inputs"):
        load_splits("builtin:digits", 8, 0.6, 0, validation_fraction=0.4)


# --- early stopping ------------------------------------------------------------------------------------

def test_pick_epoch_respects_the_clean_tolerance():
    h = [{"epoch": 0, "val_clean_accuracy": 0.95, "val_targeted_failure_rate": 0.5},
         {"epoch": 1, "val_clean_accuracy": 0.94, "val_targeted_failure_rate": 0.2},
         {"epoch": 2, "val_clean_accuracy": 0.90, "val_targeted_failure_rate": 0.1}]
    assert pick_epoch(h, 0.95, 0.005) == 0
    assert pick_epoch(h, 0.95, 0.02) == 1
    assert pick_epoch(h, 0.95, 0.10) == 2
    assert pick_epoch(h, 0.99, 0.005) == 0  # none within tolerance: the best clean accuracy


@pytest.mark.parametrize("scripted", [False, True], ids=["picked", "first-epoch"])
def test_mitigation_keeps_the_chosen_epochs_weights(tmp_path, monkeypatch, scripted):
    """The kept model is the chosen epoch's. Scripted to keep the first of 3 epochs, so that a run
    which forgot to restore its weights (keeping the last epoch's) cannot pass."""
    from failfade.tasks.classification import mitigate as M
    from failfade.tasks.classification import models

    mitigate = M.mitigate

    splits = load_splits("builtin:digits", 16, 0.3, 0, validation_fraction=0.15)
    torch.manual_seed(0)
    module = models.DigitsCNN(num_classes=10, in_channels=1, width=8)
    card = {"arch": "digits-cnn", "classes": splits.classes,
            "input": {"channels": 1, "size": 16, "mean": [0.0], "std": [1.0]}}
    from failfade.tasks.classification.training import fit

    mut = models.ModelUnderTest(module, card, torch.device("cpu"))
    fit(mut, splits.train, list(module.parameters()), 3, 3e-3, 64, 0, desc="t")
    space = ConceptSpace([Axis("rotation", "rotate", (0.0, 40.0))])
    plan = {"fix": [{"cell": 1, "weight": 1.0}], "accept": []}
    if scripted:
        monkeypatch.setattr(M, "pick_epoch", lambda rows, base, drop: 0)
    history, sel = mitigate(mut, splits.train, space, plan, "full", 3, 3e-3, 64, 0.5, 0, 1.0,
                            validation=splits.validation, max_clean_drop=0.0, validation_pairs=200)
    assert sel["early_stopping"] and len(history) == 3
    assert sel["kept_epoch"] == (0 if scripted else pick_epoch(history, sel["val_clean_accuracy_base"], 0.0))
    if scripted:  # the epochs differ, so the last epoch's weights would score otherwise
        assert (history[0]["val_clean_accuracy"], history[0]["val_targeted_failure_rate"]) != \
            (history[2]["val_clean_accuracy"], history[2]["val_targeted_failure_rate"])
    # the kept model scores on validation what its epoch recorded
    from failfade.tasks.classification.mitigate import validation_scorer

    now = validation_scorer(mut, splits.validation, space, plan, 200, 0)()
    kept = history[sel["kept_epoch"]]
    assert now["val_clean_accuracy"] == pytest.approx(kept["val_clean_accuracy"])
    assert now["val_targeted_failure_rate"] == pytest.approx(kept["val_targeted_failure_rate"])


# --- ground truth without the cache ------------------------------------------------------------------

def small_experiment() -> dict:
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    e = cfg["experiments"]["digits"]
    e["model"]["epochs"] = 1
    e["data"]["image_size"] = 16
    e["concepts"] = [{"name": "rotation", "transform": "rotate", "levels": [0, 40]}]
    e["explore"].update(budget=256, num_agents=32)
    return validate(cfg)["experiments"]["digits"]


def test_groundtruth_can_score_without_the_cache(tmp_path):
    from failfade.pipeline import stage_discovery, stage_explore, stage_groundtruth, stage_model

    exp = small_experiment()
    stage_model(exp, tmp_path / "model", ROOT / "resources")
    cache = tmp_path / "cache"
    stage_explore(exp, tmp_path / "model", tmp_path / "q.parquet", tmp_path / "l.csv", progress=False, cache_dir=cache)
    cached_file = next(cache.glob("outcomes-*.npz"))
    # poison the cache: every cached outcome now says "failure"
    data = dict(np.load(cached_file))
    for k, v in data.items():
        if v.dtype == bool:
            data[k] = np.ones_like(v)
    np.savez(cached_file, **data)
    truth = tmp_path / "truth.parquet"
    exp_nocache = copy.deepcopy(exp)
    exp_nocache["groundtruth"]["cache"] = False
    stage_groundtruth(exp_nocache, tmp_path / "model", truth, cache)
    truth_fresh = pl.read_parquet(truth)["failure"].mean()
    assert truth_fresh < 0.9  # scored afresh: the poisoned cache did not leak in
    # the comparison with the exploration reads the truth as written
    outs = {k: tmp_path / f"gt-{k}" for k in ("json", "curve")}
    summary = stage_discovery(exp, truth, tmp_path / "q.parquet", outs)
    assert summary["exhaustive_queries"] == pl.read_parquet(truth).height
    assert json.loads(Path(outs["json"]).read_text())["true_failure_cells"] == summary["true_failure_cells"]
    # with the cache, the poison would have been the ground truth
    stage_groundtruth(exp, tmp_path / "model", truth, cache)
    assert pl.read_parquet(truth)["failure"].mean() == 1.0
