"""The task seam: the family registry, the schema's per-task branch, and the searcher registry."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
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
    q, _ = explore(SyntheticTask(shape=(3, 3)), 64, 8, 0, "epsilon_greedy", {"epsilon": 1.0}, progress=False)
    assert q.height == 64
