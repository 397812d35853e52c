"""The benchmark scripts stay runnable: their measuring functions on a tiny trained model.

Only behaviour is asserted (rates are positive and finite, the paper-style query does the same
work as failfade's scoring on the untransformed cell); wall-clock numbers belong to the
benchmarks themselves, never to tests.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import discovery  # noqa: E402
import learner_cost  # noqa: E402
import throughput  # noqa: E402

from failfade.config import validate  # noqa: E402
from failfade.pipeline import build_task, stage_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["experiments"]["digits"]["model"]["epochs"] = 2
    exp = validate(cfg)["experiments"]["digits"]  # with the schema's defaults filled in
    out = tmp_path_factory.mktemp("model")
    stage_model(exp, out, ROOT / "resources")
    return build_task(exp, out)


def test_rates_are_measured(task):
    for rate in (throughput.pure(task, 256, 128), throughput.failfade_explore(task, 256, 128),
                 throughput.paper_style(task, 16)):
        assert math.isfinite(rate) and rate > 0


def test_paper_style_query_scores_like_failfade_on_the_clean_cell(task):
    """Cell 0 is every axis at its identity level: the paper's PIL path and failfade's batched path
    see the same image (up to 8-bit rounding) and must agree on nearly every prediction, so the
    baseline does the same per-query work as failfade, one query at a time."""
    assert task.space.coords([0])[0].tolist() == [0, 0, 0]
    pq = throughput.paper_queries(task)
    ids = np.arange(100)
    fails = task.score(ids, np.zeros(100, dtype=np.int64)).failure
    paper_fails = np.array([pq.query(int(i), 0) > -1.0 for i in ids])
    assert 0.05 < fails.mean() < 0.95  # a 2-epoch model: agreement below is not the trivial kind
    assert (paper_fails == fails).mean() >= 0.95
    # the far corner (every axis at its strongest level): PIL and tensor transforms differ in
    # detail (measured agreement 0.98) but make the model fail on nearly the same inputs
    far = task.n_cells - 1
    fails = task.score(ids, np.full(100, far)).failure
    assert (np.array([pq.query(int(i), far) > -1.0 for i in ids]) == fails).mean() >= 0.9
    # the paper's observation: the raw image, 0-255, flattened
    obs = pq.observation(0)
    assert obs.ndim == 1 and obs.max() > 1.0 and obs.min() >= 0.0


def test_low_precision_scoring_on_cpu_keeps_the_decisions(task):
    """The GPU path's bf16 autocast, run on the CPU: the forward pass really runs in bf16 (Δ moves),
    the failure decisions stay the same on all but a few borderline queries, and the precision is
    part of what keys the outcome cache."""
    import copy

    from failfade.tasks.classification.models import ModelUnderTest
    from failfade.tasks.classification.task import ClassificationTask

    mut = ModelUnderTest(copy.deepcopy(task.mut.module), task.mut.card, torch.device("cpu"), "bf16")
    low = ClassificationTask(mut, task.inputs, task.space)
    ids, cells = np.arange(200) % task.n_inputs, np.arange(200) % task.n_cells
    assert not np.array_equal(low.score(ids, cells).delta, task.score(ids, cells).delta)
    differ, n = throughput.disagreement(low, task, n=2000)
    assert differ / n <= 0.02
    assert low.settings["precision"] == "bf16" and "precision" not in task.settings  # part of the cache key
    with pytest.raises(ValueError, match="precision"):
        ModelUnderTest(copy.deepcopy(task.mut.module), task.mut.card, torch.device("cpu"), "fp8")


def test_time_breakdown_and_the_gpu_script(task, monkeypatch):
    b = throughput.breakdown(task, 512, 256)
    assert b["transforms_us"] > 0 and b["forward_us"] > 0
    # timed in the chunks that score uses: each call's batch cut at the task's batch_size
    sizes, forward, bs = [], task._forward, task.batch_size
    monkeypatch.setattr(task, "_forward", lambda x: sizes.append(len(x)) or forward(x))
    throughput.breakdown(task, 2 * (bs + bs // 2), bs + bs // 2)
    assert sizes == [bs] + [bs, bs // 2] * 2  # the warm-up chunk, then two calls of 1.5 chunks each


def test_a_sections_command_names_every_option_that_shaped_it():
    from common import command

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("paths", nargs="*")
    script = "/somewhere/benchmarks/x.py"
    assert command(script, ap, ap.parse_args([])) == ".venv/bin/python benchmarks/x.py"
    args = ap.parse_args(["--repeats", "3", "--set", "a.b=1", "--set", "c=two words", "--seeds", "4", "5",
                          "--skip-timing", "p1"])
    assert command(script, ap, args, keep=("device",)) == (
        ".venv/bin/python benchmarks/x.py --device cpu --seeds 4 5 --set a.b=1 --set 'c=two words' --skip-timing "
        "--repeats 3")
    assert command(script, ap, ap.parse_args(["--repeats", "5"]), keep=("skip_timing",)) == ".venv/bin/python benchmarks/x.py"
    script = ROOT / "benchmarks" / "gpu.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "throughput.py --device cuda" in script.read_text()


def test_learner_cost_parts_add_up_and_the_timers_come_off(task):
    """Every part of a step is timed once (they add up to the run's total), and the timing wrappers
    leave PPO and the task as they were."""
    from failfade.explore.ppo import PPO

    before = {name: PPO.__dict__[name] for name in ("_prior", "act", "observe", "update")}
    parts = learner_cost.breakdown(task, 8 * 64, 64)
    assert all(parts[k] >= 0 for k in learner_cost.PARTS) and parts["scoring"] > 0 and parts["update"] > 0
    assert math.isclose(sum(parts[k] for k in learner_cost.PARTS), parts["total"], rel_tol=1e-9)
    assert {name: PPO.__dict__[name] for name in before} == before and "score" not in vars(task)
    scoring, learner, wall = learner_cost.concurrent(task, 4, 64, learner_threads=None, params={"update_epochs": 1})
    assert 0 < scoring <= wall and 0 < learner <= wall
    threads = torch.get_num_threads()  # the scoring thread's own setting, put back afterwards
    scoring, learner, wall = learner_cost.concurrent(task, 4, 64, learner_threads=1, scoring_threads=2,
                                                     params={"update_epochs": 1})
    assert 0 < scoring <= wall and 0 < learner <= wall and torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="explore.ppo"):  # --ppo takes explore.ppo keys only
        learner_cost.main(["--ppo", "epochs=1"])


def test_a_gradient_step_is_timed_on_minibatches_of_the_rows_asked(task, monkeypatch):
    """The sweep times exactly one update (its gradient steps counted) on minibatches of `rows` rows."""
    from failfade.explore.ppo import PPO

    seen = []
    forward = PPO.update

    def update(self, next_value):
        seen.append(sum(len(o) for o in self.roll["obs"]) // self.cfg.num_minibatches)
        return forward(self, next_value)

    monkeypatch.setattr(PPO, "update", update)
    for rows, params in ((64, {}), (48, {"num_steps": 2, "num_minibatches": 3, "update_epochs": 1})):
        seen.clear()
        seconds = learner_cost.gradient_step(task, rows, params=params)
        assert seen == [rows] and 0 < seconds < 5


def test_the_papers_stack_runs(task):
    pytest.importorskip("stable_baselines3")
    rate = throughput.paper_stack(task, 16)
    assert rate is not None and math.isfinite(rate) and rate > 0


def test_paired_difference_against_random():
    assert discovery._paired([0.9, 0.8], [0.9, 0.8], is_base=True) == "—"  # random itself
    assert discovery._paired([0.9, 0.8], [0.9, 0.8]) == "+0.000 (+0.000, +0.000)"  # a tie is not random's row
    text = discovery._paired([1.0, 0.9, 0.95], [0.9, 0.9, 0.9])
    assert text.startswith("+0.050 (")  # mean of 0.1, 0.0, 0.05


def test_scalability_planted_conjunctions_and_report(monkeypatch, task):
    """The scalability benchmark: its planted conjunctions are the cells the rules say, the timing
    loop runs on a small grid (on the fixture's model), and a short discovery run fills its table."""
    import scalability
    from failfade.concepts import ConceptSpace
    from failfade.tasks.classification.task import ClassificationTask
    from failfade.tasks.classification.transforms import TRANSFORMS

    cells, rules = scalability.planted_cells()
    c = np.indices((5,) * 6).reshape(6, -1)[:, cells]
    assert len(rules) == 3 and len(cells) == 992  # 500 + 250 + 250, less the 8 cells in two rules
    ok = ((c[0] >= 3) & (c[1] >= 3) & (c[2] == 4)) | ((c[3] == 0) & (c[4] == 4) & (c[5] >= 3)) | ((c[1] == 0) & (c[5] == 0) & (c[2] <= 1))
    assert ok.all()

    def small(model, axes, exp, n_inputs=None):
        return ClassificationTask(task.mut, task.inputs, ConceptSpace.from_config(axes, TRANSFORMS), batch_size=64)

    monkeypatch.setattr(scalability, "image_task", small)
    rows, disc = scalability.main(["--quick", "--models", "digits", "--max-axes", "2", "--timing-queries", "256",
                                   "--repeats", "1", "--seeds", "3", "--planted-fraction", "0.001", "--num-agents", "256"])
    assert [r["cells"] for r in rows] == [5, 25]
    assert all(r[m] > 0 and math.isfinite(r[m]) for r in rows for m in ("failfade", "pure", "paper-style"))
    res = disc["planted"]
    assert res["failing"] == 992 and set(res["runs"]) == set(scalability.SEARCHERS)
    assert all(len(runs) == 3 for runs in res["runs"].values())
    text = scalability.report(argparse.Namespace(threads=2, seeds=3, num_agents=256), rows, disc)
    assert "| ppo |" in text and "| digits | 2 | 25 |" in text


def test_paper_style_query_applies_darkening_and_occlusion(task):
    """The scalability benchmark's axes 4 and 5 (darken, occlude): the paper-style loop used to skip
    them, scoring those cells as clean (0.03 failures against failfade's 0.89 in a review)."""
    from failfade.concepts import ConceptSpace
    from failfade.tasks.classification.task import ClassificationTask
    from failfade.tasks.classification.transforms import TRANSFORMS

    space = ConceptSpace.from_config([{"name": "darken", "transform": "darken", "levels": [0, 0.8]},
                                      {"name": "occlude", "transform": "occlude", "levels": [0, 0.4]}], TRANSFORMS)
    other = ClassificationTask(task.mut, task.inputs, space)
    pq = throughput.PaperStyleQueries(other)
    ids = np.arange(100)
    clean = np.array([pq.query(int(i), 0) > -1.0 for i in ids])
    mattered = []
    for cell in (1, 2, 3):  # occluded, darkened, both
        fails = other.score(ids, np.full(100, cell)).failure
        paper = np.array([pq.query(int(i), cell) > -1.0 for i in ids])
        assert (paper == fails).mean() >= 0.9, cell
        if fails.mean() > clean.mean() + 0.2:  # where the transform matters, the paper loop sees it too
            assert paper.mean() > clean.mean() + 0.1, cell
            mattered.append(cell)
    assert 3 in mattered, mattered  # darkened and occluded together fail far more than clean inputs
