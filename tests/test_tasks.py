"""The task seam: the family registry, the schema's per-task branch, and the searcher registry."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from failfade import FailfadeError
from failfade.config import schema, validate
from failfade.explore.search import ALGORITHMS, SEARCHERS, explore
from failfade.tasks.family import FAMILIES, TaskFamily, family
from failfade.tasks.synthetic import SyntheticTask

ROOT = Path(__file__).resolve().parent.parent


def shipped() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_every_schema_task_has_a_family_and_a_branch():
    sch = schema()
    tasks = sch["$defs"]["experiment"]["properties"]["task"]["enum"]
    assert set(tasks) == set(FAMILIES)
    branches = {b["if"]["properties"]["task"]["const"] for b in sch["$defs"]["experiment"]["allOf"]}
    assert branches == set(tasks)
    for name in tasks:
        fam = family(name)
        assert isinstance(fam, TaskFamily) and fam.name == name and fam.quality and fam.transforms
        assert name in sch["$defs"]


def test_unknown_task_is_named():
    with pytest.raises(FailfadeError, match=r"task: unknown task 'poetry'"):
        family("poetry")
    cfg = shipped()
    cfg["experiments"]["digits"]["task"] = "poetry"
    with pytest.raises(FailfadeError, match=r"experiments.digits.task"):
        validate(cfg)


def test_a_key_the_task_does_not_know_is_named_by_its_path():
    cfg = shipped()
    cfg["experiments"]["digits"]["data"]["prompt_template"] = "a photo of {x}"
    with pytest.raises(FailfadeError, match=r"experiments.digits.data: Additional properties.*prompt_template"):
        validate(cfg)
    cfg = shipped()
    cfg["experiments"]["digits"]["mitigate"]["lora_rank"] = 4
    with pytest.raises(FailfadeError, match=r"experiments.digits.mitigate"):
        validate(cfg)


def test_the_branch_fills_its_defaults():
    cfg = shipped()
    exp = cfg["experiments"]["digits"]
    del exp["mitigate"], exp["data"]
    filled = validate(cfg)["experiments"]["digits"]
    assert filled["data"]["source"] == "builtin:digits" and filled["data"]["validation_fraction"] == 0.15
    assert filled["mitigate"]["mode"] == "last" and filled["mitigate"]["early_stopping"] is True


def test_an_unknown_concept_transform_is_named_with_the_family():
    from failfade.pipeline import space_of

    cfg = validate(shipped())
    exp = copy.deepcopy(cfg["experiments"]["digits"])
    exp["concepts"][1]["transform"] = "sepia"
    with pytest.raises(FailfadeError, match=r"concepts\[1\].transform: unknown transform 'sepia'"):
        space_of(exp)


# --- the searcher registry -------------------------------------------------------------------------

def test_every_algorithm_but_exhaustive_is_registered():
    assert set(SEARCHERS) == set(ALGORITHMS) - {"exhaustive"}


@pytest.mark.parametrize("algorithm, params, bad", [
    ("ppo", {"learning_rate": 1e-3, "lerning_rate": 1e-3}, "lerning_rate"),
    ("dqn", {"gama": 0.9}, "gama"),
    ("threshold", {"epsilon": 0.1}, "epsilon"),
    ("random", {"successes": 3}, "successes"),
])
def test_unknown_hyper_parameters_are_errors(algorithm, params, bad):
    with pytest.raises(ValueError, match=rf"unknown key\(s\) \['{bad}'\]"):
        explore(SyntheticTask(shape=(3, 3)), 64, 8, 0, algorithm, params, progress=False)


def test_known_hyper_parameters_reach_the_searcher():
    """ε reaches ε-greedy: at ε = 1 every query is uniform, at ε = 0 it locks onto the planted cell
    (one of 9, failing 90% of the time)."""
    task = SyntheticTask(shape=(3, 3))
    share = {}
    for eps in (1.0, 0.0):
        q, _ = explore(task, 640, 8, 0, "epsilon_greedy", {"epsilon": eps}, progress=False)
        counts = np.bincount(q["cell"].to_numpy(), minlength=9)
        share[eps] = counts[task.planted[0]] / 640
        if eps == 1.0:
            assert q.height == 640 and counts.min() >= 40  # 71 expected per cell
    assert share[1.0] < 0.2 and share[0.0] > 0.5, share


def test_the_scoring_code_keys_the_outcome_cache(tmp_path, monkeypatch):
    """After a fix to a transform, `--forcerun` replayed the outcomes the old code had cached: the key
    held the model, the data and the concepts, not the code that scores them."""
    import importlib
    import sys

    from failfade.tasks.cache import scoring_code_digest
    from failfade.tasks.family import family

    digests = {name: scoring_code_digest(family(name)) for name in ("classification", "summarization", "generation")}
    assert len(set(digests.values())) == 3
    assert scoring_code_digest(family("classification")) == digests["classification"]  # stable
    pkg = tmp_path / "fakefamily"  # a family package of its own: a change to any of its modules is a new key
    pkg.mkdir()
    (pkg / "__init__.py").write_text("class Family:\n    pass\n")
    (pkg / "transforms.py").write_text("def rotate(x, a):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fam = importlib.import_module("fakefamily").Family()
    before = scoring_code_digest(fam)
    (pkg / "transforms.py").write_text("def rotate(x, a):\n    return -x\n")
    assert scoring_code_digest(fam) != before
    del sys.modules["fakefamily"]


def test_the_models_preprocessing_keys_the_outcome_cache(tmp_path, monkeypatch):
    """Same weights, another normalisation in the card: other outcomes, so another cache file (the
    key held the weights' sha256 only, and 129 of 200 cached decisions were stale). So does the
    card's `build`: a GoogLeNet rebuilt with transform_input reused the outcomes scored without it."""
    import json

    from failfade.pipeline import build_task
    from failfade.tasks.classification.models import DigitsCNN, save_model

    torch.manual_seed(0)
    card = {"arch": "digits-cnn", "classes": [str(i) for i in range(10)],
            "input": {"channels": 1, "size": 32, "mean": [0.0], "std": [1.0]}}
    save_model(DigitsCNN(), card, tmp_path / "m")
    exp = {"task": "classification", "seed": 0, "data": {"source": "builtin:digits", "image_size": 32,
           "heldout_fraction": 0.3}, "model": {"source": "builtin:digits-cnn"},
           "concepts": [{"name": "rotation", "transform": "rotate", "levels": [0, 30]}]}
    first = build_task(exp, tmp_path / "m", tmp_path / "cache").path
    assert build_task(exp, tmp_path / "m", tmp_path / "cache").path == first
    saved = json.loads((tmp_path / "m" / "model.json").read_text())
    saved["input"]["mean"], saved["input"]["std"] = [0.5], [0.5]
    (tmp_path / "m" / "model.json").write_text(json.dumps(saved))
    second = build_task(exp, tmp_path / "m", tmp_path / "cache").path
    assert second != first
    # `build` (torchvision cards only: the check is lifted here, the digits CNN's builder ignores it)
    from failfade.tasks.classification import models

    monkeypatch.setattr(models, "check_card_input", lambda card, where: None)
    (tmp_path / "m" / "model.json").write_text(json.dumps(saved | {"build": {"transform_input": True}}))
    assert build_task(exp, tmp_path / "m", tmp_path / "cache").path not in (first, second)


def test_factor_one_is_exactly_the_image_and_a_non_positive_blur_leaves_it():
    from failfade.tasks.classification.transforms import contrast, gaussian_blur, saturation

    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ones = torch.ones(6)
    assert torch.equal(contrast(x, ones), x) and torch.equal(saturation(x, ones), x)
    assert torch.equal(gaussian_blur(x[:2], torch.tensor([0.0, -0.5])), x[:2])  # alone, it used to crash
    half = contrast(x, torch.full((6,), 0.5))
    assert not torch.equal(half, x) and torch.allclose(half.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-6)


def test_clean_accuracy_after_mitigation_is_measured_at_full_precision(tmp_path, monkeypatch):
    """shift.json compares it with the model stage's, which is at fp32: at `precision: bf16` part of
    the reported change was the precision's."""
    from failfade.tasks.classification import mitigate as mitigate_module
    from failfade.tasks.classification.data import load_splits
    from failfade.tasks.classification.models import DigitsCNN, load_model, save_model
    from failfade.tasks.classification.models import ModelUnderTest
    from failfade.tasks.classification.training import accuracy, fit

    torch.manual_seed(0)
    card = {"arch": "digits-cnn", "classes": [str(i) for i in range(10)],
            "input": {"channels": 1, "size": 32, "mean": [0.0], "std": [1.0]}}
    splits = load_splits("builtin:digits", 32, 0.3, 0)
    module = DigitsCNN()
    fit(ModelUnderTest(module, card), splits.train, list(module.parameters()), 1, 0.002, 64, 0, desc="train")
    save_model(module, card, tmp_path / "m")
    heldout = splits.heldout
    at = {p: accuracy(load_model(tmp_path / "m", precision=p), heldout) for p in ("fp32", "bf16")}
    assert at["fp32"] != at["bf16"]  # this model tells the two apart
    monkeypatch.setattr(mitigate_module, "mitigate", lambda *a, **k: ([{"epoch": 0}], {}))  # weights unchanged
    exp = {"task": "classification", "seed": 0, "precision": "bf16",
           "data": {"source": "builtin:digits", "image_size": 32, "heldout_fraction": 0.3},
           "model": {"source": "builtin:digits-cnn"}, "concepts": [{"name": "rotation", "transform": "rotate", "levels": [0, 30]}],
           "mitigate": {"mode": "last_layer", "epochs": 1, "lr": 0.01, "batch_size": 64, "perturb_fraction": 0.5, "distill": 0.0}}
    out = family("classification").fine_tune(exp, tmp_path / "m", {"fix": [{"cell": 1, "weight": 1.0}]}, tmp_path / "after")
    assert out["heldout_clean_accuracy"] == at["fp32"]


def _key_of(model_dir: Path, cache: Path, monkeypatch) -> str:
    """The outcome cache file pipeline.build_task picks for a model folder (a stand-in family whose
    task carries the card's weights digest, as every family's does)."""
    import json
    from types import SimpleNamespace

    import numpy as np

    from failfade import pipeline

    sha = json.loads((model_dir / "model.json").read_text())["sha256"]
    task = SimpleNamespace(model_sha256=sha, space=None, n_inputs=2, n_cells=3, labels=np.zeros(2),
                           observations=np.zeros((2, 1)))
    monkeypatch.setattr(pipeline, "family_of", lambda exp: SimpleNamespace(build_task=lambda exp, model_dir: task))
    exp = {"data": {"source": "builtin:reports"}, "seed": 0, "concepts": []}
    return pipeline.build_task(exp, model_dir, cache).path.name


def test_every_file_of_a_summarizer_folder_keys_the_outcome_cache(tmp_path, monkeypatch):
    """The key held the card's sha256, which covers model.safetensors only: a copy of the model folder
    with no_repeat_ngram_size=2 in generation_config.json kept the cache file while 17 of 80 clean
    summaries changed. The weights' integrity check is unchanged."""
    import json
    import shutil

    from failfade.tasks.storage import read_checked_card
    from failfade.tasks.summarization import models

    tok = models.train_tokenizer(["the cat sat on the mat 12", "a dog ran 3 miles home"] * 4, vocab_size=60)
    models.save(models.tiny_t5(tok, 0), tok, {"arch": "T5ForConditionalGeneration"}, tmp_path / "m")
    (tmp_path / "m" / "training.csv").write_text("step,loss,seconds\n0,1.0,0.5\n")
    first = _key_of(tmp_path / "m", tmp_path / "cache", monkeypatch)
    shutil.copytree(tmp_path / "m", tmp_path / "same")
    (tmp_path / "same" / "training.csv").write_text("step,loss,seconds\n0,1.0,0.7\n")  # wall times decide nothing
    assert _key_of(tmp_path / "same", tmp_path / "cache", monkeypatch) == first
    for name, edit in [("generation_config.json", {"no_repeat_ngram_size": 2}), ("config.json", {"num_beams": 3}),
                       ("tokenizer_config.json", {"model_max_length": 7})]:
        shutil.copytree(tmp_path / "m", tmp_path / name)
        f = tmp_path / name / name
        f.write_text(json.dumps({**json.loads(f.read_text()), **edit}))
        assert _key_of(tmp_path / name, tmp_path / "cache", monkeypatch) != first, name
        read_checked_card(tmp_path / name, "weights")  # the weights still match their card
