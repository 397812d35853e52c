"""CPU denormals: the classification family flushes them to zero, process-wide as torch sets it; the
text and generation families compute with them kept whatever a classifier built earlier in the same
process set, so that they give what their workflow stage (a process of its own) gives.

(The default tiny T5 trained after the digits CNN had been built came out another model, held-out
ROUGE-L 0.9328 against 0.9378; short trainings like the ones a test can afford do not reach
denormals, so the tests check where each family's computation runs.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from failfade import numerics


@pytest.fixture
def flush_restored():
    yield
    torch.set_flush_denormal(False)  # torch's default, as every other test expects


def test_flushing_reads_the_setting(flush_restored):
    torch.set_flush_denormal(True)
    assert numerics.flushing()
    torch.set_flush_denormal(False)
    assert not numerics.flushing()


def test_denormals_kept_inside_and_the_flush_restored_after(flush_restored):
    @numerics.keeps_denormals
    def inside():
        return numerics.flushing()

    numerics.flush_denormals()
    assert inside() is False
    assert numerics.flushing()
    with pytest.raises(ZeroDivisionError):  # restored on an error too
        numerics.keeps_denormals(lambda: 1 / 0)()
    assert numerics.flushing()
    torch.set_flush_denormal(False)
    assert inside() is False and not numerics.flushing()  # and not turned on where it was off


def _classifier():
    from failfade.tasks.classification.models import DigitsCNN, ModelUnderTest

    card = {"arch": "digits-cnn", "classes": [str(i) for i in range(10)],
            "input": {"channels": 1, "size": 32, "mean": [0.0], "std": [1.0]}}
    return ModelUnderTest(DigitsCNN(), card)


def _recorder(module):
    seen = []
    module.register_forward_pre_hook(lambda *_: seen.append(numerics.flushing()))
    return seen


def test_a_classifier_flushes(flush_restored):
    assert not numerics.flushing()
    _classifier()
    assert numerics.flushing()


def test_summarization_trains_and_scores_with_denormals_kept_after_a_classifier(tmp_path, flush_restored):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_summarization import save_tiny

    from failfade.tasks.summarization import models
    from failfade.tasks.summarization.task import Summarizer

    model, tok = models.load_pretrained(save_tiny("t5", tmp_path / "t5"), "k")
    _classifier()
    seen = _recorder(model)
    models.train_seq2seq(model, tok, ["a b c d"] * 4, ["a b"] * 4, 2, 1e-3, 2, 16, 0)
    trained = len(seen)
    summarizer = Summarizer(model, tok, 16, 4, 1)
    summarizer.summarize(["a b c d"])
    summarizer.embed(["a b c d"])
    assert trained >= 2 and len(seen) > trained and not any(seen), seen
    assert numerics.flushing()  # the classifier's setting is back


def test_generation_samples_and_judges_with_denormals_kept_after_a_classifier(flush_restored):
    from failfade.tasks.generation import digits as D
    from failfade.tasks.generation.pipeline import Sampler
    from failfade.tasks.generation.training import build

    c = build(0, width=8)
    judge = D.AttributeJudge(D.JudgeNet())
    _classifier()
    seen_unet, seen_judge = _recorder(c.unet), _recorder(judge.net)
    images = Sampler(c, steps=1, guidance=1.0).generate([D.prompt(3, 1, 1)], [0])
    judge(images, [D.prompt(3, 1, 1)])
    assert seen_unet and seen_judge and not any(seen_unet + seen_judge), (seen_unet, seen_judge)
    assert numerics.flushing()


def test_the_worker_threads_keep_denormals_too():
    """In a fresh process whose first parallel work comes after a classifier set the flush (as when
    a benchmark trains the digits CNN, then the tiny T5): torch's workers keep the setting of the
    thread that starts them, so a pool started while flushing flushed half of every later 2-thread
    result, inside `denormals_kept` too."""
    import subprocess

    code = """
import torch
torch.set_num_threads(2)
from failfade import numerics
from failfade.tasks.classification.models import DigitsCNN, ModelUnderTest
card = {"arch": "digits-cnn", "classes": [str(i) for i in range(10)],
        "input": {"channels": 1, "size": 32, "mean": [0.0], "std": [1.0]}}
ModelUnderTest(DigitsCNN(), card)  # the classifier sets the flush
x = torch.full((4_000_000,), 1e-38) / 1e3  # the first parallel work, while flushing
assert int((x == 0).sum()) == x.numel()
with numerics.denormals_kept():  # counted inside: outside, a flushing thread reads a denormal as 0
    y = torch.full((4_000_000,), 1e-38) / 1e3
    print(int((y == 0).sum()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "0"
