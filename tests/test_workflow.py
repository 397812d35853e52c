"""The Snakemake workflow end to end: outputs, cache-awareness, and failures that name their cause.

One tiny run of the shipped digits experiment (few epochs, small budget) is made once per module
in a temporary working directory; the tests that change inputs work on copies of it.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
import yaml

import failfade.config

EXP = "digits"
RUN_TIMEOUT = 1200  # seconds for the whole tiny pipeline on 2 CPU cores (about 1 minute when idle)
DRY_TIMEOUT = 180

EXPECTED_OUTPUTS = [
    "model/model.safetensors",
    "model/model.json",
    "explore/queries.parquet",
    "explore/learning.csv",
    "landscape/landscape.duckdb",
    "landscape/failure_modes.csv",
    "landscape/feedback_template.csv",
    "landscape/heatmap.png",
    "landscape/gallery.png",
    "landscape/modes_audit.csv",
    "feedback/plan.json",
    "mitigate/model.safetensors",
    "reexplore/queries.parquet",
    "shift/shift.json",
    "shift/shift.md",
    "shift/before_after.png",
    "shift/other_pairs.csv",
]
LANDSCAPE_OUTPUTS = ["landscape.duckdb", "cells.csv", "failure_modes.csv", "feedback_template.csv", "heatmap.png",
                     "gallery.png"]
SHIFT_KEYS = ["clean_accuracy_pre", "clean_accuracy_post", "targeted_failure_rate_pre", "targeted_failure_rate_post",
              "other_failure_rate_pre", "other_failure_rate_post", "new_failure_cells", "failure_mass_change", "grid_emd",
              "grid_emd_noise_floor", "paper_wasserstein_1d", "probes_significantly_worse"]


# --- helpers -------------------------------------------------------------------------------------


def tiny_config(repo_root: Path) -> dict:
    """The shipped digits experiment, shrunk: same concepts, seed and feedback file."""
    shipped = yaml.safe_load((repo_root / "config" / "config.yaml").read_text())
    exp = copy.deepcopy(shipped["experiments"][EXP])
    exp["model"]["epochs"] = 8
    exp["explore"]["budget"] = 2048
    exp["explore"]["num_agents"] = 32
    exp["mitigate"]["epochs"] = 4
    # the optional exhaustive ground-truth stage (where the schema has it) is not part of this test
    explore_keys = failfade.config.schema()["$defs"]["experiment"]["properties"]["explore"]["properties"]
    if "groundtruth" in explore_keys:
        exp["explore"]["groundtruth"] = False
    return {"experiments": {EXP: exp}}


def write_config(workdir: Path, cfg: dict) -> Path:
    # The Snakefile's `configfile: "config/config.yaml"` is read relative to the working directory,
    # so the tiny config lives there (and is also passed with --configfile).
    path = workdir / "config" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return path


def make_workdir(workdir: Path, repo_root: Path, cfg: dict) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    write_config(workdir, cfg)
    feedback = Path(cfg["experiments"][EXP]["feedback"])  # relative to the working directory
    assert not feedback.is_absolute()
    (workdir / feedback).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(repo_root / feedback, workdir / feedback)
    return workdir


def snakemake(exe: Path, repo_root: Path, workdir: Path, *args: str, timeout: int = DRY_TIMEOUT):
    cmd = [str(exe), "--snakefile", str(repo_root / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config" / "config.yaml"), "--cores", "2", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)


def planned_rules(proc) -> set[str]:
    """Rules a dry run would execute, read from its `rule <name>:` job headers."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return set(re.findall(r"^rule (\w+):", proc.stdout + "\n" + proc.stderr, flags=re.M))


def feedback_path(workdir: Path) -> Path:
    cfg = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    return workdir / cfg["experiments"][EXP]["feedback"]


def clone_run(src: Path, dst: Path) -> Path:
    """Copy a finished run (outputs, logs and .snakemake metadata), keeping every mtime."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


# --- the finished tiny run -----------------------------------------------------------------------


# One torch thread per job: on a busy 2-core machine two spinning intra-op threads per job made the
# tiny run ~4x slower (226 s vs 57 s measured). Threads are not a rerun trigger, so the dry runs below
# (without this flag) still see the run as up to date.
ONE_THREAD = ["--set-threads", "model=1", "explore=1", "mitigate=1", "reexplore=1", "probes=1", "audit=1"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, repo_root, snakemake_exe):
    workdir = make_workdir(tmp_path_factory.mktemp("wf") / "run", repo_root, tiny_config(repo_root))
    proc = snakemake(snakemake_exe, repo_root, workdir, *ONE_THREAD, "-q", timeout=RUN_TIMEOUT)
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted((workdir / "logs").rglob("*.log")))
        pytest.fail(f"snakemake exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n"
                    f"{proc.stderr[-5000:]}\nLOGS:\n{logs}")
    return workdir


@pytest.mark.slow
def test_every_expected_output_exists(finished_run):
    res = finished_run / "results" / EXP
    missing = [p for p in EXPECTED_OUTPUTS if not (res / p).is_file()]
    assert not missing, missing
    empty = [p for p in EXPECTED_OUTPUTS if (res / p).stat().st_size == 0]
    assert not empty, empty
    assert (finished_run / "logs" / EXP / "feedback.log").is_file()
    # every stage logs the torch threads it used; scoring ones may use fewer than the rule gave
    assert re.search(r"torch threads [12] of the rule's 1", (finished_run / "logs" / EXP / "explore.log").read_text())
    # the query logs hold the whole (tiny) budget, on the same concept axes as the config
    for stage in ("explore", "reexplore"):
        q = pl.read_parquet(res / stage / "queries.parquet")
        assert q.height == 2048
        assert {"rotation", "blur", "contrast", "failure", "cell"} <= set(q.columns)
    card = json.loads((res / "model" / "model.json").read_text())
    assert 0.5 < card["heldout_clean_accuracy"] <= 1.0


@pytest.mark.slow
def test_the_audit_scores_every_mode_on_fresh_pairs(finished_run):
    res = finished_run / "results" / EXP / "landscape"
    modes, audit = pl.read_csv(res / "failure_modes.csv"), pl.read_csv(res / "modes_audit.csv")
    assert modes.height > 0, "the tiny digits run has rotation and contrast modes"
    assert audit["selector"].to_list() == modes["selector"].to_list()
    assert audit["explored_rate"].to_list() == pytest.approx(modes["failure_rate"].to_list())
    # the shipped default, 512 pairs per mode (all of a mode's pairs where it has fewer)
    assert all(q == min(512, p) for q, p in zip(audit["audit_queries"], audit["pairs"]))
    assert all(lo <= r <= hi for lo, r, hi in zip(audit["audit_lo"], audit["audit_rate"], audit["audit_hi"]))
    assert "audit: mode 1" in (finished_run / "logs" / EXP / "audit.log").read_text()


@pytest.mark.slow
def test_shift_json_reports_the_mitigation(finished_run):
    shift = json.loads((finished_run / "results" / EXP / "shift" / "shift.json").read_text())
    missing = [k for k in SHIFT_KEYS if k not in shift]
    assert not missing, missing
    for k in SHIFT_KEYS[:6]:
        assert 0.0 <= shift[k] <= 1.0, (k, shift[k])
    assert shift["targeted_failure_rate_post"] < shift["targeted_failure_rate_pre"], shift
    assert isinstance(shift["new_failure_cells"], int) and shift["new_failure_cells"] >= 0
    # the untargeted cells on 2,048 fresh pairs (the default), scored for both models
    oh = shift["other_heldout"]
    assert oh["queries"] == 2048 and not oh["exact"] and oh["cells"] == 125 - len(
        json.loads((finished_run / "results" / EXP / "feedback" / "plan.json").read_text())["fix"])
    assert oh["change_ci"][0] <= oh["change"] <= oh["change_ci"][1]
    pairs = pl.read_csv(finished_run / "results" / EXP / "shift" / "other_pairs.csv")
    assert pairs.height == 2048 and int(pairs["failure_pre"].sum()) == oh["failures"]["pre"]
    plan = json.loads((finished_run / "results" / EXP / "feedback" / "plan.json").read_text())
    assert plan["fix"], "the shipped feedback says `fix rotation>=30`"
    assert all(f["levels"]["rotation"] >= 30 for f in plan["fix"])


@pytest.mark.slow
def test_learning_log_shows_updates(finished_run):
    log = pl.read_csv(finished_run / "results" / EXP / "explore" / "learning.csv")
    assert "n_updates" in log.columns
    assert log["n_updates"].drop_nulls().max() > 0
    assert log["queries"].max() == 2048


@pytest.mark.slow
def test_cache_awareness(finished_run, tmp_path, repo_root, snakemake_exe):
    work = clone_run(finished_run, tmp_path / "run")

    # (a) nothing changed: a dry run plans nothing
    noop = snakemake(snakemake_exe, repo_root, work, "-n")
    assert planned_rules(noop) == set()
    assert "Nothing to be done" in noop.stdout + noop.stderr

    # (b) the feedback CSV's content changes: only the stages after the human in the loop rerun
    fb = feedback_path(work)
    original, stat = fb.read_bytes(), fb.stat()
    fb.write_text(original.decode().replace("tilted scans are common", "tilted scans are VERY common"))
    assert fb.read_bytes() != original
    after_feedback = planned_rules(snakemake(snakemake_exe, repo_root, work, "-n"))
    assert after_feedback - {"all"} == {"feedback", "mitigate", "reexplore", "probes", "shift"}, after_feedback

    # restore the feedback file (content and mtime): back to a no-op
    fb.write_bytes(original)
    os.utime(fb, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert planned_rules(snakemake(snakemake_exe, repo_root, work, "-n")) == set()

    # (c) the exploration budget changes: explore and everything downstream, but not the model
    original_cfg = (work / "config" / "config.yaml").read_text()
    cfg = yaml.safe_load(original_cfg)
    cfg["experiments"][EXP]["explore"]["budget"] = 1024
    write_config(work, cfg)
    after_budget = planned_rules(snakemake(snakemake_exe, repo_root, work, "-n"))
    assert after_budget - {"all"} == {"explore", "landscape", "gallery", "audit", "feedback", "mitigate", "reexplore", "probes",
                                      "shift"}, after_budget
    assert "model" not in after_budget

    # (d) the scoring precision: every stage that scores sees it (it was once dropped on the way), not the model
    cfg["experiments"][EXP]["explore"]["budget"] = 2048
    cfg["experiments"][EXP]["precision"] = "bf16"
    write_config(work, cfg)
    after_precision = planned_rules(snakemake(snakemake_exe, repo_root, work, "-n"))
    assert after_precision - {"all"} == {"explore", "landscape", "gallery", "audit", "feedback", "mitigate", "reexplore",
                                         "probes", "shift"}, after_precision

    # (d2) more gallery examples rerun the gallery alone: it was part of the landscape rule, so asking for
    # them rewrote the database and reran everything after it, the fine-tuning included
    shown = yaml.safe_load(original_cfg)
    shown["experiments"][EXP].setdefault("landscape", {})["gallery_per_mode"] = 3  # the default is 8
    write_config(work, shown)
    assert planned_rules(snakemake(snakemake_exe, repo_root, work, "-n")) - {"all"} == {"gallery"}

    # (f) locations are no rerun trigger: moving `resources:` (downloads, outcome and image caches) reruns nothing
    (work / "config" / "config.yaml").write_text(original_cfg)
    assert planned_rules(snakemake(snakemake_exe, repo_root, work, "-n")) == set()
    moved = yaml.safe_load(original_cfg)
    moved["resources"] = "elsewhere/resources"
    write_config(work, moved)
    assert planned_rules(snakemake(snakemake_exe, repo_root, work, "-n")) == set()

    # (g) the outcome cache's switches change no result: no rerun (the scripts read them from the config)
    switched = yaml.safe_load(original_cfg)
    switched["experiments"][EXP]["explore"]["cache"] = not switched["experiments"][EXP]["explore"].get("cache", True)
    write_config(work, switched)
    assert planned_rules(snakemake(snakemake_exe, repo_root, work, "-n")) == set()
    (work / "config" / "config.yaml").write_text(original_cfg)

    # (h) the same settings in another order, or a default written out, rerun nothing: Snakemake compares
    # params as written, so `epochs:` above `source:` retrained the model and reran every stage after it
    reordered = yaml.safe_load(original_cfg)
    e = reordered["experiments"][EXP]
    reordered["experiments"][EXP] = {k: (dict(reversed(list(v.items()))) if isinstance(v, dict) else v)
                                     for k, v in reversed(list(e.items()))}
    reordered["experiments"][EXP]["model"] = {"lr": 0.003, **reordered["experiments"][EXP]["model"]}  # the default
    assert list(reordered["experiments"][EXP]) != list(e)
    write_config(work, reordered)
    assert planned_rules(snakemake(snakemake_exe, repo_root, work, "-n")) == set()

    # (i) another searcher's settings change no PPO exploration (they reran it and everything after it)
    others = yaml.safe_load(original_cfg)
    others["experiments"][EXP]["explore"] |= {"epsilon": 0.3, "successes": 7, "dqn": {"learning_rate": 0.01},
                                              "micro": {"step_cap": 3}}
    write_config(work, others)
    assert planned_rules(snakemake(snakemake_exe, repo_root, work, "-n")) == set()
    (work / "config" / "config.yaml").write_text(original_cfg)

    # (j) the exhaustive truth depends on the model, data and concepts alone: a new exploration budget
    # reruns the comparison with it (discovery), not the truth's scoring (nor Table A, which reads it);
    # it was one rule, which also rewrote the truth and so reran every searcher of Table A
    truthful = yaml.safe_load(original_cfg)
    truthful["experiments"][EXP]["explore"]["groundtruth"] = True
    write_config(work, truthful)
    assert planned_rules(snakemake(snakemake_exe, repo_root, work, "-n")) - {"all"} == {"groundtruth", "discovery"}
    ran = snakemake(snakemake_exe, repo_root, work, "--set-threads", "groundtruth=1", "-q", timeout=RUN_TIMEOUT)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert json.loads((work / "results" / EXP / "groundtruth" / "discovery.json").read_text())["exploration_queries"] == 2048
    truthful["experiments"][EXP]["explore"]["budget"] = 1024
    write_config(work, truthful)
    after_budget = planned_rules(snakemake(snakemake_exe, repo_root, work, "-n"))
    assert "discovery" in after_budget and "explore" in after_budget and "groundtruth" not in after_budget, after_budget
    (work / "config" / "config.yaml").write_text(original_cfg)

    # (e) deleted weights are not a rule output: the plan names them and the command that rebuilds them
    (work / "results" / EXP / "model" / "model.safetensors").unlink()
    proc = snakemake(snakemake_exe, repo_root, work, "-n")
    assert f"model.safetensors: missing, pinned by results/{EXP}/model/model.json" in proc.stderr, proc.stderr[-2000:]
    assert f"failfade run --forcerun results/{EXP}/model/model.json" in proc.stderr


@pytest.mark.slow
def test_malformed_feedback_fails_the_feedback_rule(finished_run, tmp_path, repo_root, snakemake_exe):
    work = clone_run(finished_run, tmp_path / "run")
    res = work / "results" / EXP
    before = {name: ((res / "landscape" / name).read_bytes(), (res / "landscape" / name).stat().st_mtime_ns)
              for name in LANDSCAPE_OUTPUTS}
    mitigated_mtime = (res / "mitigate" / "model.safetensors").stat().st_mtime_ns
    fb = feedback_path(work)
    fb.write_text("selector,decision,weight,note\n"
                  "rotation>=30,fix,1,fine\n"
                  "tilt>=10,fix,1,no such axis\n")

    proc = snakemake(snakemake_exe, repo_root, work, *ONE_THREAD, timeout=RUN_TIMEOUT)
    assert proc.returncode != 0
    log = (work / "logs" / EXP / "feedback.log").read_text()
    both = log + proc.stdout + proc.stderr
    rel = str(fb.relative_to(work))
    assert rel in log or rel in proc.stderr, both[-3000:]
    assert "line 3" in log, log
    assert "tilt" in log, log
    # the failure is the feedback rule's own: a user error stated in one line, not a traceback of a crash
    assert re.search(r"rule feedback|rules/feedback\.smk", proc.stderr), proc.stderr[-3000:]
    assert "Traceback" not in log, log
    # the landscape computed before the human step is untouched; nothing downstream ran on the bad plan
    for name, (content, mtime) in before.items():
        path = res / "landscape" / name
        assert path.is_file(), name
        assert path.read_bytes() == content and path.stat().st_mtime_ns == mtime, name
    assert not (res / "feedback" / "plan.json").exists()
    assert (res / "mitigate" / "model.safetensors").stat().st_mtime_ns == mitigated_mtime


# --- quick checks (no pipeline run) ----------------------------------------------------------------


def test_invalid_config_names_the_dotted_key(tmp_path, repo_root, snakemake_exe):
    cfg = tiny_config(repo_root)
    cfg["experiments"][EXP]["explore"]["budget"] = "many"
    work = make_workdir(tmp_path / "bad", repo_root, cfg)
    proc = snakemake(snakemake_exe, repo_root, work, "-q")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"experiments.{EXP}.explore.budget" in out, out[-3000:]
    assert not (work / "results").exists(), "an invalid config must fail before any job runs"


def test_plain_snakemake_names_the_configfile_it_was_given(tmp_path, repo_root, snakemake_exe):
    """Under plain `snakemake --configfile F` a bad key was blamed on "config": the error names F."""
    cfg = tiny_config(repo_root)
    cfg["experiments"][EXP]["explore"]["budget"] = -5
    work = make_workdir(tmp_path / "badfile", repo_root, tiny_config(repo_root))
    (work / "config" / "other.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(snakemake_exe, repo_root, work, "-n", "--configfile", "config/other.yaml")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"/config/other.yaml: invalid configuration: experiments.{EXP}.explore.budget" in out, out[-3000:]


def test_a_bad_config_override_is_one_line(tmp_path, repo_root, snakemake_exe):
    """`--config run=[...]` is applied by Snakemake after `failfade run` has checked the file: an
    unknown experiment there came out as Snakemake's traceback of the Snakefile."""
    work = make_workdir(tmp_path / "ovr", repo_root, tiny_config(repo_root))
    proc = snakemake(snakemake_exe, repo_root, work, "-n", "--config", 'run=["nosuch"]')
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    # named as what it is: the file, changed by the override
    assert (f"/config/config.yaml with --config run: run: unknown experiment 'nosuch'; defined: ['{EXP}']"
            in out), out[-3000:]
    assert "Traceback" not in out and 'File "' not in out, out[-3000:]


def test_a_key_given_twice_in_a_configfile_is_refused_by_snakemake_too(tmp_path, repo_root, snakemake_exe):
    """Plain `snakemake --configfile` reads the YAML itself (keeping the later key): the workflow
    reads each config file again and refuses the repeated key."""
    work = make_workdir(tmp_path / "dup", repo_root, tiny_config(repo_root))
    cfg_file = work / "config" / "config.yaml"
    text = cfg_file.read_text()
    assert text.count("budget:") == 1
    cfg_file.write_text(re.sub(r"^(\s*)budget: (.*)$", r"\1budget: \2\n\1budget: 64", text, flags=re.M))
    proc = snakemake(snakemake_exe, repo_root, work, "-n")
    assert proc.returncode != 0
    assert "duplicate key 'budget'" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]


def test_stages_see_the_keys_their_rerun_trigger_leaves_out():
    """A rule's params leave out what changes no result (locations, the outcome cache's switches);
    the script must still see the config's value: `explore.cache: false` was once silently true in
    the explore stage. A rule without an experiment wildcard (paper_scalability) names it in params."""
    from types import SimpleNamespace

    from failfade.workflow import with_locations

    config = {"experiments": {"e": {"task": "classification", "explore": {"budget": 8, "cache": False},
                                    "groundtruth": {"cache": False}, "data": {"source": "s", "cache_dir": "/c"}}}}
    cfg = {"task": "classification", "explore": {"budget": 8}, "groundtruth": {}, "data": {"source": "s"}}
    for wildcards, params in ((SimpleNamespace(experiment="e"), SimpleNamespace(cfg=cfg)),
                              (SimpleNamespace(), SimpleNamespace(cfg=cfg, experiment="e"))):
        got = with_locations(SimpleNamespace(config=config, wildcards=wildcards, params=params))
        assert got["explore"] == {"budget": 8, "cache": False}
        assert got["data"] == {"source": "s", "cache_dir": "/c"}
    assert cfg == {"task": "classification", "explore": {"budget": 8}, "groundtruth": {}, "data": {"source": "s"}}
    no_section = with_locations(SimpleNamespace(config=config, wildcards=SimpleNamespace(experiment="e"),
                                                params=SimpleNamespace(cfg={"task": "classification"})))
    assert no_section == {"task": "classification"}  # a stage that does not see a section does not get it


def test_lint_is_clean(repo_root, snakemake_exe):
    proc = subprocess.run([str(snakemake_exe), "--lint"], cwd=repo_root, capture_output=True, text=True,
                          timeout=DRY_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
