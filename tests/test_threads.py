"""Threads that follow the free cores, and the families whose scoring allows it."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from failfade import threads
from failfade.tasks.family import family


def test_busy_cores_sums_each_cpus_busy_share():
    before = {0: (100, 1000), 1: (500, 1000)}
    after = {0: (200, 1100), 1: (510, 1100)}  # cpu0 fully busy, cpu1 10% busy over the window
    assert threads.busy_cores(before, after) == pytest.approx(1.1)
    assert threads.busy_cores(after, after) == 0.0  # no time passed: nothing known to be busy


def test_usable_threads_leaves_the_busy_cores(monkeypatch):
    samples = iter([{0: (0, 100), 1: (0, 100), 2: (0, 100), 3: (0, 100)},
                    {0: (100, 200), 1: (90, 200), 2: (5, 200), 3: (0, 200)}])  # ~1.95 cores busy of 4
    monkeypatch.setattr(threads, "allowed_cpus", lambda: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "_cpu_times", lambda cpus: next(samples))
    assert threads.usable_threads(4, window=0) == 2
    monkeypatch.setattr(threads, "_cpu_times", lambda cpus: {0: (0, 100)})
    assert threads.usable_threads(1, window=0) == 1  # never below 1, never above the request
    assert threads.usable_threads(0, window=0) == 1


def test_a_busy_process_is_seen():
    """The real /proc/stat reading: a busy child shows up as about one more busy core."""
    cpus = threads.allowed_cpus()
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        before = threads._cpu_times(cpus)
        time.sleep(0.5)
        after = threads._cpu_times(cpus)
    finally:
        child.kill()
    assert threads.busy_cores(before, after) >= 0.6


def _classification_task(tmp_path):
    from failfade.concepts import ConceptSpace
    from failfade.tasks.classification.data import load_splits
    from failfade.tasks.classification.models import DigitsCNN, ModelUnderTest
    from failfade.tasks.classification.task import ClassificationTask
    from failfade.tasks.classification.transforms import TRANSFORMS

    torch.manual_seed(0)
    card = {"arch": "digits-cnn", "classes": [str(i) for i in range(10)],
            "input": {"channels": 1, "size": 32, "mean": [0.0], "std": [1.0]}}
    space = ConceptSpace.from_config([{"name": "rotation", "transform": "rotate", "levels": [0, 20, 40]},
                                      {"name": "blur", "transform": "gaussian_blur", "levels": [0, 1.5]},
                                      {"name": "contrast", "transform": "contrast", "levels": [1, 0.3]}], TRANSFORMS)
    inputs = load_splits("builtin:digits", 32, 0.3, 0).heldout
    return ClassificationTask(ModelUnderTest(DigitsCNN(), card), inputs, space)


def _summarization_task(tmp_path):
    from failfade.config import validate
    from failfade.pipeline import build_task, stage_model

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_summarization import summarization_config

    exp = validate(summarization_config(tmp_path / "fb.csv"))["experiments"]["r"]
    stage_model(exp, tmp_path / "model", tmp_path / "res")
    return build_task(exp, tmp_path / "model")


@pytest.mark.parametrize("name,build", [("classification", _classification_task), ("summarization", _summarization_task)])
def test_thread_invariant_families_score_the_same_on_1_and_2_threads(tmp_path, name, build):
    assert family(name).thread_invariant
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        task = build(tmp_path)
        rng = np.random.default_rng(0)
        ids, cells = rng.integers(0, task.n_inputs, 600), rng.integers(0, task.n_cells, 600)
        outs = []
        for n in (2, 1):
            torch.set_num_threads(n)
            outs.append(task.score(ids, cells))
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(outs[0].failure, outs[1].failure)
    np.testing.assert_array_equal(outs[0].delta, outs[1].delta)
    np.testing.assert_array_equal(outs[0].prediction, outs[1].prediction)


def test_generation_keeps_its_threads():
    assert not family("generation").thread_invariant


def test_the_learner_keeps_its_threads_when_scoring_follows_the_free_cores():
    """An exploring stage's scoring may run on fewer threads than its rule under load, but PPO's
    float results depend on the thread count (its weight gradients sum over the batch, split across
    threads), so the learner keeps the rule's: the same config gives the same queries on a busy
    machine. Wide observations (4,096 features, as AlexNet's) make the difference show: with the
    learner on the scoring's threads, 1 and 2 threads gave different propensities within 2,048 queries
    (and different cells within 8,192)."""
    import hashlib

    from failfade.explore.search import explore
    from failfade.tasks.synthetic import SyntheticTask

    task = SyntheticTask(n_inputs=539, obs_dim=4096, seed=0)
    saved = torch.get_num_threads()

    def digest(scoring_threads: int, learner: int | None) -> str:
        torch.set_num_threads(scoring_threads)
        threads.set_learner_threads(learner)
        try:
            q, _ = explore(task, 2048, 64, 0, "ppo", {}, progress=False)
        finally:
            threads.set_learner_threads(None)
            torch.set_num_threads(saved)
        return hashlib.sha256(q.select(["input_id", "cell", "propensity"]).write_csv().encode()).hexdigest()

    assert digest(1, 2) == digest(2, 2)
    # the check can fail: unpinned, the learner follows the scoring's thread count and drifts
    assert digest(1, None) != digest(2, None)
