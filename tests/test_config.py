"""Config validation: defaults, dotted error paths, loading files."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from failfade import FailfadeError
from failfade.config import load, source_name, validate

REPO = Path(__file__).resolve().parents[1]


def minimal(**experiment) -> dict:
    exp = {
        "concepts": [{"name": "rotation", "transform": "rotate", "levels": [0, 10, 20]}],
        "feedback": "resources/feedback/digits.csv",
    }
    exp.update(experiment)
    return {"experiments": {"x": exp}}


def error_of(config: dict, source: str = "config") -> str:
    with pytest.raises(FailfadeError) as ei:
        validate(config, source)
    return str(ei.value)


def test_defaults_filled():
    cfg = validate(minimal())
    assert cfg["results"] == "results" and cfg["resources"] == "resources"
    exp = cfg["experiments"]["x"]
    assert exp["task"] == "classification" and exp["seed"] == 0 and exp["device"] == "auto"
    ex = exp["explore"]
    assert (ex["algorithm"], ex["budget"], ex["num_agents"], ex["ppo"]) == ("ppo", 12800, 64, {})
    assert exp["mitigate"]["mode"] == "last"
    assert exp["mitigate"]["epochs"] == 30 and exp["mitigate"]["distill"] == 1.0
    assert exp["landscape"]["failure_rate_threshold"] == 0.5 and exp["landscape"]["confidence"] == 0.95
    assert exp["data"] == {"source": "builtin:digits", "image_size": 32, "heldout_fraction": 0.3, "validation_fraction": 0.15,
                           "cache_dir": "resources/cache/images", "crop": None}
    assert exp["audit"] == {"queries_per_mode": 512}
    assert exp["groundtruth"] == {"cache": True} and exp["shift"] == {"bootstrap": 200, "guard": "warn", "probes": [],
                                                                  "other_pairs": 2048}
    assert exp["mitigate"]["early_stopping"] is True and exp["mitigate"]["max_clean_drop"] == 0.005
    assert exp["model"]["source"] == "builtin:digits-cnn"
    assert exp["concepts"][0]["unit"] == ""  # defaults inside list items too


def test_given_values_kept_and_partial_sections_completed():
    cfg = validate(minimal(explore={"budget": 500}, mitigate={"mode": "full"}, seed=7))
    exp = cfg["experiments"]["x"]
    assert exp["explore"]["budget"] == 500 and exp["explore"]["num_agents"] == 64
    assert exp["mitigate"]["mode"] == "full" and exp["mitigate"]["lr"] == 0.003
    assert exp["seed"] == 7


def test_validate_does_not_mutate_input():
    raw = minimal()
    before = copy.deepcopy(raw)
    validate(raw)
    assert raw == before


def test_defaults_are_not_shared_between_experiments():
    raw = minimal()
    raw["experiments"]["y"] = copy.deepcopy(raw["experiments"]["x"])
    cfg = validate(raw)
    cfg["experiments"]["x"]["explore"]["budget"] = 1
    assert cfg["experiments"]["y"]["explore"]["budget"] == 12800


def test_string_budget_names_dotted_path():
    msg = error_of(minimal(explore={"budget": "lots"}), "my.yaml")
    assert msg.startswith("my.yaml: invalid configuration")
    assert "experiments.x.explore.budget: 'lots' is not of type 'integer'" in msg


def test_unknown_key_under_experiment():
    msg = error_of(minimal(colour="blue"))
    assert "experiments.x: " in msg and "'colour'" in msg


def test_unknown_key_deeper():
    msg = error_of(minimal(explore={"ppo": {"learning_rat": 0.1}}))
    assert "experiments.x.explore.ppo: " in msg and "'learning_rat'" in msg


def test_empty_concepts():
    msg = error_of(minimal(concepts=[]))
    assert "experiments.x.concepts: " in msg


def test_concept_with_one_level():
    msg = error_of(minimal(concepts=[{"name": "rotation", "levels": [0]}]))
    assert "experiments.x.concepts[0].levels: " in msg


def test_missing_required_feedback():
    raw = minimal()
    del raw["experiments"]["x"]["feedback"]
    msg = error_of(raw)
    assert "experiments.x: 'feedback' is a required property" in msg


def test_bad_enum_value():
    msg = error_of(minimal(mitigate={"mode": "half"}))
    assert "experiments.x.mitigate.mode: " in msg and "'half'" in msg


def test_precision_is_checked():
    assert "experiments.x.precision: 'fp64'" in error_of(minimal(precision="fp64"))


def test_threshold_out_of_range():
    msg = error_of(minimal(landscape={"failure_rate_threshold": 1.5}))
    assert "experiments.x.landscape.failure_rate_threshold: " in msg


@pytest.mark.parametrize("tau", [0, 0.0, 1, 1.0])
def test_a_threshold_of_zero_or_one_is_refused(tau):
    # tau = 0 makes every visited cell a failure cell (even at 0 failures); tau = 1 makes none one
    # (a Wilson lower bound is below 1)
    msg = error_of(minimal(landscape={"failure_rate_threshold": tau}))
    assert "experiments.x.landscape.failure_rate_threshold: " in msg


def test_an_epsilon_of_one_is_refused():
    # a query fails when ROUGE-L F drops by more than epsilon; a drop is at most 1
    msg = error_of(minimal(task="summarization", model={"epsilon": 1},
                           concepts=[{"name": "typo", "transform": "typo", "levels": [0, 0.1]}]))
    assert "experiments.x.model.epsilon: " in msg


def test_several_errors_reported_together():
    msg = error_of(minimal(explore={"budget": "lots"}, mitigate={"mode": "half"}))
    assert "experiments.x.explore.budget" in msg and "experiments.x.mitigate.mode" in msg


def test_budget_below_num_agents():
    msg = error_of(minimal(explore={"budget": 10, "num_agents": 64}), "cfg.yaml")
    assert msg.startswith("cfg.yaml: experiments.x.explore.budget (10) is below num_agents (64)")
    # the default num_agents (64) counts too
    assert "below num_agents (64)" in error_of(minimal(explore={"budget": 63}))
    validate(minimal(explore={"budget": 64}))  # equal is fine


def test_a_microscopic_explore_is_refused_before_any_job():
    """Walks end at an input's first failure: a landscape from them would be biased, so the
    workflow does not build one (tests/test_searchers.py measures the bias)."""
    for algorithm in ("ppo", "random", "levelset"):
        msg = error_of(minimal(explore={"algorithm": algorithm, "mode": "microscopic"}), "cfg.yaml")
        assert msg.startswith("cfg.yaml: experiments.x.explore.mode: microscopic walks end at an input's first failure")
    validate(minimal(explore={"algorithm": "ppo", "mode": "macroscopic"}))


@pytest.mark.parametrize("path", ["results/x/landscape/ratings_template.csv", "results/x/landscape/feedback_template.csv",
                                  "./results/../results/mine.csv"])
def test_feedback_filled_in_where_the_workflow_writes_is_refused(path):
    """A template filled in where it lies is written over, blank, whenever the landscape reruns."""
    msg = error_of(minimal(feedback=path), "cfg.yaml")
    assert msg.startswith(f"cfg.yaml: experiments.x.feedback: {path} is inside results/, which the workflow writes")
    validate(minimal(feedback="resources/feedback/results.csv"))  # a name that merely looks like it is fine
    assert "e.g. resources/feedback/," in msg
    # with results: resources, that advice would name the very folder refused
    same = {**minimal(feedback="resources/feedback/x.csv"), "results": "resources"}
    msg = error_of(same, "cfg.yaml")
    assert "is inside resources/" in msg and "elsewhere, outside resources/," in msg and "e.g." not in msg


def test_levels_must_be_finite():
    msg = error_of(minimal(concepts=[{"name": "rotation", "transform": "rotate", "levels": [0, 10, float("inf")]}]))
    assert "experiments.x.concepts[0].levels[2]: inf is not a finite number" in msg


@pytest.mark.parametrize("section, key", [("landscape", "failure_rate_threshold"), ("landscape", "confidence"),
                                          ("mitigate", "lr"), ("mitigate", "distill")])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_no_setting_takes_a_nan_or_an_infinity(section, key, value):
    """JSON Schema's bounds let NaN through (every comparison with it is false): a threshold of
    .nan made every landscape modeless, where 0.5 found 4 modes."""
    msg = error_of(minimal(**{section: {key: value}}), "cfg.yaml")
    assert msg.startswith(f"cfg.yaml: invalid configuration: experiments.x.{section}.{key}: {value} is not a finite number")


@pytest.mark.parametrize("where, value", [("seed", 1.0), ("explore", {"budget": 12800.0}),
                                          ("data", {"image_size": 32.0}), ("explore", {"shards": 2.0})])
def test_an_integer_setting_given_as_a_float_is_refused(where, value):
    """JSON Schema counts 1.0 as an integer, so `seed: 1.0` passed and stayed a float: numpy's
    SeedSequence refused it in the model stage, `shards: 2.0` broke the plan (range(1, 2.0))."""
    key, val = (where, value) if not isinstance(value, dict) else (f"{where}.{next(iter(value))}", next(iter(value.values())))
    msg = error_of(minimal(**{where: value}), "cfg.yaml")
    assert f"experiments.x.{key}: {val} is not of type 'integer'" in msg
    validate(minimal(seed=1, explore={"budget": 12800, "shards": 2}))


def test_a_number_no_float_holds_is_named():
    """A 400-digit level overflowed float() while the levels were checked: a traceback, no key."""
    msg = error_of(minimal(concepts=[{"name": "rotation", "transform": "rotate", "levels": [0, 10**400]}]))
    assert "experiments.x.concepts[0].levels[1]: 10000000000000000000... is too large a number" in msg


def test_a_nan_in_a_yaml_file_is_named(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("experiments:\n  x:\n    feedback: f.csv\n    concepts: [{name: r, transform: rotate, levels: [0, 10]}]\n"
                 "    landscape: {failure_rate_threshold: .nan}\n")
    with pytest.raises(FailfadeError, match=r"experiments\.x\.landscape\.failure_rate_threshold: nan is not a finite"):
        load(f)


@pytest.mark.parametrize("axes, where", [
    (["rotation"], "paper.scalability.axes[0]: 'rotation' is not of type 'object'"),
    ([{"name": "rotation"}], "paper.scalability.axes[0]: 'levels' is a required property"),
    ([{"name": "rotation", "levels": 5}], "paper.scalability.axes[0].levels: 5 is not of type 'array'"),
    ([{"name": f"a{i}", "transform": "rotate", "levels": [0, 1]} for i in range(7)], "paper.scalability.axes: "),
])
def test_bad_scalability_axes_are_named(axes, where):
    raw = minimal()
    raw["paper"] = {"rows": ["x"], "scalability": {"experiment": "x", "axes": axes}}
    assert where in error_of(raw)


def test_run_names_unknown_experiment():
    raw = minimal()
    raw["run"] = ["x", "nope"]
    msg = error_of(raw)
    assert "run: unknown experiment 'nope'" in msg
    raw["run"] = ["x"]
    assert validate(raw)["run"] == ["x"]


def test_duplicate_axis_names():
    c = {"name": "rotation", "levels": [0, 1]}
    msg = error_of(minimal(concepts=[c, dict(c)]))
    assert "experiments.x.concepts: axis names must be unique" in msg


def test_no_experiments():
    assert "(top level): 'experiments' is a required property" in error_of({})
    assert "experiments: " in error_of({"experiments": {}})


def test_repo_config_validates():
    cfg = load(REPO / "config" / "config.yaml")
    assert "digits" in cfg["experiments"] and cfg["experiments"]["reports"]["task"] == "summarization"
    for exp in cfg["experiments"].values():
        # defaults filled in for every section, whether the file sets it or not
        for section in ("data", "model", "explore", "landscape", "mitigate"):
            assert isinstance(exp[section], dict)
        assert 0 < exp["landscape"]["confidence"] < 1
        if exp["task"] == "classification":
            assert exp["mitigate"]["mode"] in ("last", "full")
        else:
            assert exp["mitigate"]["steps"] > 0 and exp["model"]["source"].startswith("builtin:")
        assert exp["explore"]["budget"] >= exp["explore"]["num_agents"]
        assert (REPO / exp["feedback"]).is_file()


def test_load_missing_file(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(FailfadeError) as ei:
        load(path)
    assert str(path) in str(ei.value) and "not found" in str(ei.value)


def test_load_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("experiments:\n  x: [1, 2\n  y: {\n")
    with pytest.raises(FailfadeError) as ei:
        load(path)
    assert str(path) in str(ei.value) and "not valid YAML" in str(ei.value)


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    """YAML keeps the later of two equal keys silently: a second experiment of the same name would
    replace the first (and overwrite its results), a second `budget:` win unseen."""
    path = tmp_path / "dup.yaml"
    path.write_text("experiments:\n  a:\n    feedback: f.csv\n    explore:\n      budget: 12800\n      budget: 64\n")
    with pytest.raises(FailfadeError, match=r"line 6, column 7: duplicate key 'budget' \(first given at line 5\)"):
        load(path)
    path.write_text("experiments:\n  a:\n    feedback: f.csv\n  a:\n    feedback: g.csv\n")
    with pytest.raises(FailfadeError, match=r"line 4, column 3: duplicate key 'a' \(first given at line 2\)"):
        load(path)
    # YAML's merge key (`<<: *anchor`, as config/paper*.yaml use it) may be overridden: not a repeat
    path.write_text("base: &b {budget: 1, num_agents: 1}\nexperiments:\n  a:\n    explore: {<<: *b, budget: 2}\n")
    with pytest.raises(FailfadeError, match="base"):  # (an unknown top-level key, but read without a repeat)
        load(path)
    path.write_text("experiments:\n  a:\n    feedback: f.csv\n  b:\n    feedback: f.csv\n")  # equal values are fine
    with pytest.raises(FailfadeError, match="concepts"):  # (fails later, for the missing concepts)
        load(path)


def test_load_invalid_content_names_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("experiments:\n  x:\n    feedback: f.csv\n    concepts: []\n")
    with pytest.raises(FailfadeError) as ei:
        load(path)
    assert str(ei.value).startswith(f"{path}: invalid configuration")
    assert "experiments.x.concepts" in str(ei.value)


def test_load_empty_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(FailfadeError, match="'experiments' is a required property"):
        load(path)


def test_local_sources_are_the_model_stages_inputs(tmp_path):
    """A path: model or judge folder's files and a jsonl:/csv: data file are the model rule's
    inputs (replaced under the same path, they rerun the model stage); hidden files are not."""
    from failfade.config import local_sources

    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "m" / "model.json").write_text("{}")
    (tmp_path / "m" / "sub" / "w.safetensors").write_bytes(b"x")
    (tmp_path / "m" / ".cache").mkdir()
    (tmp_path / "m" / ".cache" / "lock").write_text("")
    exp = {"model": {"source": f"path:{tmp_path / 'm'}", "judge_source": f"path:{tmp_path / 'nope'}"},
           "data": {"source": f"jsonl:{tmp_path / 'd.jsonl'}"}}
    assert local_sources(exp) == [str(tmp_path / "m" / "model.json"), str(tmp_path / "m" / "sub" / "w.safetensors")]
    (tmp_path / "d.jsonl").write_text("{}\n")  # sources not on this machine are left out; present ones are in
    assert local_sources(exp)[-1] == str(tmp_path / "d.jsonl")
    assert local_sources({"model": {"source": "builtin:digits-cnn"}, "data": {"source": "imagefolder:/x"}}) == []
    # `path:<file>` loads the file's folder, so the folder's files are tracked (they were not: replacing
    # the weights file under the same name reran nothing)
    file_source = {"model": {"source": f"path:{tmp_path / 'm' / 'model.json'}"}}
    assert local_sources(file_source) == [str(tmp_path / "m" / "model.json"), str(tmp_path / "m" / "sub" / "w.safetensors")]


def test_an_image_folders_signature_follows_its_pictures(tmp_path):
    """A picture replaced or relabelled under the same folder reran nothing: the folder's files are no
    rule's inputs. The model rule's `images` param is this signature (and mitigate's, of mitigate.images)."""
    import os
    import shutil

    from failfade.config import data_folders, folder_signature

    root = tmp_path / "imgs"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        (root / cls / "1.png").write_bytes(cls.encode() * 10)
    first = folder_signature(root)
    assert first == folder_signature(root)  # stable
    (root / ".ipynb_checkpoints").mkdir()  # hidden: not data
    (root / "a" / ".DS_Store").write_bytes(b"x")
    assert folder_signature(root) == first
    shutil.copyfile(root / "b" / "1.png", root / "a" / "1.png")  # a relabel: the same name, b's picture in a/
    relabelled = folder_signature(root)
    assert relabelled != first
    os.rename(root / "b" / "1.png", root / "b" / "2.png")
    assert folder_signature(root) not in (first, relabelled)
    assert folder_signature(tmp_path / "elsewhere") is None  # not on this machine: the stage names it
    assert data_folders({"data": {"source": f"imagefolder:{root}"}}, "data") == {str(root): folder_signature(root)}
    assert data_folders({"data": {"source": "builtin:digits"}}, "data") == {}
    assert data_folders({"mitigate": {"images": str(root)}}, "mitigate") == {str(root): folder_signature(root)}
    assert data_folders({"mitigate": {"images": ""}}, "mitigate") == {}


def test_missing_pinned_weights_are_found_when_the_workflow_plans(tmp_path):
    """Weights are not rule outputs, so a deleted weights file leaves its card looking done: the
    plan names it (rules/common.smk) from storage.missing_files."""
    import json

    from failfade.tasks.storage import missing_files

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.json").write_text(json.dumps({"sha256": "0" * 64, "weights": "model.safetensors"}))
    assert missing_files(tmp_path / "m") == [tmp_path / "m" / "model.safetensors"]
    (tmp_path / "m" / "model.safetensors").write_bytes(b"x")
    assert missing_files(tmp_path / "m") == []
    (tmp_path / "g" / "pipeline" / "unet").mkdir(parents=True)  # a text-to-image folder: every pinned file
    (tmp_path / "g" / "pipeline" / "unet" / "w.safetensors").write_bytes(b"x")
    (tmp_path / "g" / "model.json").write_text(json.dumps({"pipeline": "pipeline", "files": {
        "pipeline/unet/w.safetensors": "0", "judge/judge.safetensors": "0"}}))
    assert missing_files(tmp_path / "g") == [tmp_path / "g" / "judge" / "judge.safetensors"]
    assert missing_files(tmp_path / "nothing") == []
    # a hand-edited card crashed every plan, dry runs included (KeyError 'pipeline', 'folder'): the plan
    # passes it over and the stage that reads it names the key
    from failfade.tasks.generation.models import read_card

    for i, (card, said) in enumerate([({"files": {"pipeline/unet/w.safetensors": "0" * 64}}, r"missing key\(s\) \['pipeline'\]"),
                       ({"files": {"pipeline/w": "0" * 64}, "pipeline": None}, "pipeline must be a folder, got None"),
                       ({"files": {"clip-judge/model.safetensors": "0" * 64}, "pipeline": "pipeline",
                         "judge": {"kind": "clip"}}, "'clip-judge/model.safetensors' is a CLIP judge's file, but "
                                                     "judge.folder is missing")]):
        from failfade.tasks.generation.models import combined

        (tmp_path / f"h{i}").mkdir()
        (tmp_path / f"h{i}" / "model.json").write_text(json.dumps({**card, "sha256": combined(card["files"])}))
        assert missing_files(tmp_path / f"h{i}") == []
        with pytest.raises(FailfadeError, match=said):
            read_card(tmp_path / f"h{i}")


@pytest.mark.parametrize("transform,levels,said", [
    ("gaussian_blur", [-1, 0, 1], "gaussian_blur levels are at least 0, got [-1, 0, 1]"),
    ("occlude", [0, 0.5, 1.5], "occlude levels are from 0 to 1, got [0, 0.5, 1.5]"),
    ("darken", [0, 0.5, 2], "darken levels are at most 1, got [0, 0.5, 2]"),
    ("contrast", [1, 0, -0.5], "contrast levels are at least 0"),
])
def test_levels_outside_a_transforms_range_are_refused(transform, levels, said):
    msg = error_of(minimal(concepts=[{"name": "rotation", "transform": "rotate", "levels": [0, 10]},
                                     {"name": "a", "transform": transform, "levels": levels}]))
    assert f"experiments.x.concepts[1].levels: {said}" in msg


@pytest.mark.parametrize("apply,said", [
    ({"gaussian_blur": -5}, "gaussian_blur levels are at least 0, got -5"),
    ({"rotate": float("nan")}, "nan is not a finite number"),
    ({"occlude": 3}, "occlude levels are from 0 to 1, got 3"),
    ({"darken": 5}, "darken levels are at most 1, got 5"),
])
def test_probe_levels_are_checked_like_concept_levels(apply, said):
    """A blur of -5 px (or a NaN rotation) left the images unchanged, so the probe scored clean
    inputs under its name; an occlusion of 3 blacked out the whole image."""
    name = next(iter(apply))
    msg = error_of(minimal(shift={"probes": [{"name": "ok", "apply": {"rotate": 45}}, {"name": "p", "apply": apply}]}))
    assert f"experiments.x.shift.probes[1].apply.{name}: {said}" in msg, msg


def test_word_levels_are_refused_on_a_numeric_transform():
    """Words on a numeric transform became their positions: `rotate: [none, strong]` rotated by 0° and 1°."""
    msg = error_of(minimal(concepts=[{"name": "rotation", "transform": "rotate", "levels": ["none", "strong"]}]))
    assert "experiments.x.concepts[0].levels: rotate takes numbers, got words ['none', 'strong']" in msg


@pytest.mark.parametrize("experiment,said", [
    ({"model": {"source": "foo:bar"}}, "experiments.x.model.source: unknown model source kind 'foo'"),
    ({"model": {"source": "torchvision:resnet18"}}, "experiments.x.model.source: expected torchvision:<arch>:<weights-enum>"),
    ({"data": {"source": "imagefolders:/data"}}, "experiments.x.data.source: unknown data source 'imagefolders:/data'"),
    # torchvision data of another form waited for the model stage, named without the experiment
    ({"data": {"source": "torchvision:CIFAR10:/data"}},
     "experiments.x.data.source: expected torchvision:ImageNet:<root>[:val|train], got 'torchvision:CIFAR10:/data'"),
    ({"data": {"source": "torchvision:ImageNet:/data:test"}}, "experiments.x.data.source: ImageNet split 'test' is not"),
    # `@` and no revision read as the latest: a pin that pins nothing
    ({"model": {"source": "hf:owner/name@"}}, "experiments.x.model.source: expected hf:<owner>/<name>[@revision]"),
    ({"feedback": " "}, "experiments.x.feedback: empty"),
])
def test_source_typos_and_an_empty_feedback_path_are_named_before_any_job(experiment, said):
    """A typo in a source waited for the model stage; an empty feedback path read as 'is a directory'."""
    assert said in error_of(minimal(**experiment))


def test_precision_is_refused_where_it_would_be_ignored():
    """bf16 was accepted for a summarizer and silently ignored (it scores in fp32)."""
    cfg = minimal(task="summarization", precision="bf16",
                  concepts=[{"name": "typo", "levels": [0, 0.3]}])
    assert "experiments.x.precision: 'bf16' is for classification models only" in error_of(cfg)
    cfg["experiments"]["x"]["precision"] = "fp32"
    validate(cfg)


def test_the_workflows_form_of_a_config_ignores_key_order_but_where_order_means_something():
    from failfade.config import canonical, workflow_config

    a = {"model": {"source": "builtin:digits-cnn", "epochs": 5}, "seed": 0,
         "shift": {"probes": [{"name": "p", "apply": {"rotate": 20, "darken": 0.5}}]}}
    b = {"seed": 0, "shift": {"probes": [{"apply": {"rotate": 20, "darken": 0.5}, "name": "p"}]},
         "model": {"epochs": 5, "source": "builtin:digits-cnn"}}
    assert repr(canonical(a)) == repr(canonical(b))  # Snakemake compares params as written
    # a probe's transforms run in the order written: swapping them is another probe
    swapped = {**a, "shift": {"probes": [{"name": "p", "apply": {"darken": 0.5, "rotate": 20}}]}}
    assert repr(canonical(swapped)) != repr(canonical(a))
    cfg = workflow_config({"experiments": {"z": a, "b": b}, "paper": {"rows": {"z": "Z", "b": "B"}, "strategies": {"seeds": 3, "algorithms": ["ppo"]}}})
    assert list(cfg["experiments"]) == ["z", "b"] and list(cfg["paper"]["rows"]) == ["z", "b"]  # the order given
    assert list(cfg["paper"]["strategies"]) == ["algorithms", "seeds"]


def test_an_exploration_depends_on_its_own_searchers_settings_only():
    from failfade.config import explore_settings
    from failfade.pipeline import searcher_params

    e = {"algorithm": "ppo", "mode": "macroscopic", "budget": 64, "ppo": {"hidden": 32}, "dqn": {"learning_rate": 0.1},
         "epsilon": 0.3, "successes": 7, "micro": {"step_cap": 3}}
    assert explore_settings(e) == {"algorithm": "ppo", "mode": "macroscopic", "budget": 64, "ppo": {"hidden": 32}}
    assert explore_settings({**e, "algorithm": "epsilon_greedy", "mode": "microscopic"}) == {
        "algorithm": "epsilon_greedy", "mode": "microscopic", "budget": 64, "epsilon": 0.3, "micro": {"step_cap": 3}}
    assert set(explore_settings(e, ["ppo", "threshold", "random"])) == {"algorithm", "mode", "budget", "ppo", "successes"}
    # and each searcher reads the settings explore_settings keeps for it
    for algo, params in [("ppo", {"hidden": 32}), ("dqn", {"learning_rate": 0.1}), ("epsilon_greedy", {"epsilon": 0.3}),
                         ("threshold", {"successes": 7}), ("random", {})]:
        assert searcher_params(explore_settings({**e, "algorithm": algo})) == searcher_params({**e, "algorithm": algo}) == params
    assert searcher_params({"algorithm": "threshold"}) == {}  # its default


@pytest.mark.parametrize("task, model, unused", [
    ("classification", {"source": "builtin:digits-cnn"}, ()),
    ("classification", {"source": "torchvision:resnet18:IMAGENET1K_V1"}, ("epochs", "lr", "batch_size")),
    ("summarization", {"source": "builtin:tiny-t5"}, ()),
    ("summarization", {"source": "hf:google-t5/t5-small"}, ("train_steps", "lr", "batch_size")),
    ("generation", {"source": "builtin:digits", "judge": "attribute"}, ("judge_source", "threshold")),
    ("generation", {"source": "builtin:digits", "judge": "clip"}, ("judge_steps",)),
])
def test_the_model_keys_a_source_never_reads_are_no_rerun_trigger(task, model, unused):
    """`model.epochs` beside a torchvision classifier, or `model.threshold` beside the attribute
    judge, reran the model stage and everything after it (the workflow's exp_cfg drops these)."""
    from failfade.tasks.family import family

    assert family(task).unused_model_keys({"task": task, "model": model}) == unused


def test_reading_a_config_imports_neither_torch_nor_scipy():
    """Snakemake validates the config on every start (every dry run, every SLURM job) and so does
    `failfade run`: importing torch and scipy.stats for it took 3 of `failfade run -n`'s 6.7 s on the
    digits config. Every family's checks stay light (the text-to-image prompt-length check reads the
    builtin's tokenizer with transformers, without torch). In a fresh process, since this one has
    imported both long ago."""
    import subprocess
    import sys

    code = (
        "import sys, yaml, failfade.config as C\n"
        "cfg = yaml.safe_load(open('config/config.yaml'))\n"
        "assert {e['task'] for e in cfg['experiments'].values()} == {'classification', 'summarization', 'generation'}\n"
        "C.validate(cfg)\n"
        "print(sorted(m for m in ('torch', 'scipy.stats', 'diffusers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout


def _default_with(change) -> dict:
    import yaml

    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    change(raw["experiments"])
    return raw


@pytest.mark.parametrize("change, named", [
    # YAML 1.1 reads 2e-3 as text and an unquoted no / off as a boolean: the error says so
    (lambda e: e["reports"]["mitigate"].update(lr="2e-3"), "reports.mitigate.lr: '2e-3' is not of type 'number' "
                                                           "(YAML reads 2e-3 as text, not a number: write 2.0e-3 or 0.002)"),
    (lambda e: e["reports"]["concepts"][0].update(levels=[0, "1e-1", "2e-1"]), "write 1.0e-1 or 0.1"),
    (lambda e: e["t2i"]["concepts"][0].update(levels=[False, "normal", "thick"]),
     "t2i.concepts[0].levels[0]: False is not of type 'number', 'string' (YAML reads an unquoted no"),
    # bounds that a value past them met only inside a job (an overflow, a huge allocation, a hang)
    (lambda e: e["reports"].update(seed=2 ** 64), "reports.seed: 18446744073709551616 is greater than the maximum"),
    (lambda e: e["t2i"]["data"].update(seeds=2 ** 70), "t2i.data.seeds: 1180591620717411303424 is greater than"),
    (lambda e: e["reports"]["data"].update(n_documents=10 ** 20), "reports.data.n_documents"),
    (lambda e: e["digits"]["explore"].update(budget=2 ** 70), "digits.explore.budget"),
    (lambda e: e["reports"]["shift"]["probes"].append({"name": "far", "apply": {"buried": 1.0e20}}),
     "apply.buried: buried levels are from 0 to 1000, got 1e+20"),
    (lambda e: e["reports"]["concepts"][1].update(levels=[0, 10 ** 30]), "distractors levels are from 0 to 1000"),
    # settings that were taken silently
    (lambda e: e["t2i"]["mitigate"].update(targets=[]), "t2i.mitigate.targets: [] should be non-empty"),
    (lambda e: e["reports"]["mitigate"].update(lora_targets=[""]), "reports.mitigate.lora_targets[0]: '' should be non-empty"),
    (lambda e: e["t2i"]["mitigate"].update(alpha=0), "t2i.mitigate.alpha: 0 is less than or equal to the minimum of 0"),
    (lambda e: e["t2i"]["model"].update(threshold=7), "t2i.model.threshold: 7 is greater than the maximum of 1"),
])
def test_what_a_job_met_late_is_refused_by_key(change, named):
    assert named in error_of(_default_with(change), "cfg.yaml")


def test_the_largest_seed_is_accepted():
    validate(_default_with(lambda e: e["reports"].update(seed=2 ** 31 - 1)))


def test_source_name_is_the_files_and_the_overrides():
    assert source_name([]) == "config"
    assert source_name(["config/config.yaml"]) == "config/config.yaml"
    assert source_name(["a.yaml", "b.yaml"], {}) == "a.yaml + b.yaml"
    assert source_name(["a.yaml"], {"run": ["x"], "seed": 1}) == "a.yaml with --config run, seed"
