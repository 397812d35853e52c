"""What failfade promises when things go wrong — read this file as that list.

Every bad input below is given to a user-facing entry point (`failfade run`, `failfade template`,
`failfade check-feedback`, `failfade modes`, `failfade shift`) and must get:
  * a non-zero exit status,
  * one line (the first of the error) that names the file, line or dotted config key,
  * no Python traceback,
  * every result already on disk byte-identical, and nothing downstream written.
Faults (kill -9, Ctrl-C, a deleted or truncated intermediate, two runs at once) must be recovered
by one plain `failfade run`, giving the same bytes as a run that was never interrupted.

One tiny digits project is built once per module with `failfade run`; cases work on copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_workflow import EXP, ONE_THREAD, RUN_TIMEOUT, clone_run, make_workdir, tiny_config

pytestmark = pytest.mark.slow
FAILFADE = Path(sys.executable).parent / "failfade"
QUICK = 240  # seconds for one failing command (generous: a busy 2-core machine)


# --- helpers ---------------------------------------------------------------------------------------

def failfade(work: Path, *args: str, timeout: int = QUICK, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(FAILFADE), *args], cwd=work, capture_output=True, text=True, timeout=timeout, **kw)


def quick(work: Path, *args: str) -> subprocess.CompletedProcess:
    """The same entry point in-process (no interpreter start-up), for inputs refused before any
    job starts; an uncaught exception is reported as the traceback a user would see."""
    import traceback

    from click.testing import CliRunner

    from failfade.cli import main

    here = os.getcwd()
    os.chdir(work)
    try:
        r = CliRunner().invoke(main, list(args))
    finally:
        os.chdir(here)
    err = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        err += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(r.exception))
    return subprocess.CompletedProcess(list(args), r.exit_code, r.stdout, err)


def run_args(repo_root: Path, *args: str) -> list[str]:
    """`failfade run` in a project folder that holds config/ and resources/ but not the Snakefile."""
    return ["run", "--cores", "2", "--configfile", "config/config.yaml", "--snakefile", str(repo_root / "Snakefile"),
            *args, *ONE_THREAD]


def digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root (results, logs excluded)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def assert_refused(proc: subprocess.CompletedProcess, *names: str) -> str:
    """Non-zero exit, no traceback, and an error line that names each of `names`; returns that line."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "Traceback" not in out, out[-5000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(("Error: ", "failfade: "))]
    assert lines, out[-3000:]
    line = lines[0]
    for n in names:
        assert n in line, (n, line, out[-2000:])
    return line


def small_config(repo_root: Path) -> dict:
    """test_workflow's tiny digits config, smaller still: these tests rerun parts of it many times."""
    cfg = tiny_config(repo_root)
    e = cfg["experiments"][EXP]
    e["model"]["epochs"] = 4
    e["explore"].update(budget=1024, num_agents=32)
    e["mitigate"]["epochs"] = 2
    e["shift"]["bootstrap"] = 20
    return cfg


@pytest.fixture(scope="module")
def project(tmp_path_factory, repo_root):
    """A finished tiny digits run, made by `failfade run`."""
    work = make_workdir(tmp_path_factory.mktemp("bad") / "p", repo_root, small_config(repo_root))
    proc = failfade(work, *run_args(repo_root, "-q"), timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return work


@pytest.fixture
def copy_of(project, tmp_path):
    return clone_run(project, tmp_path / "p")


def set_config(work: Path, change) -> None:
    path = work / "config" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    change(cfg["experiments"][EXP])
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))


# --- 1. configs: validated before any job, the dotted key named ----------------------------------

def _exp(**over):
    """A change to the experiment: dotted key -> new value."""
    def change(e):
        for key, value in over.items():
            *parents, last = key.split(".")
            node = e
            for part in parents:
                node = node[part]
            node[last] = value
    return change


CONFIG_CASES = {
    "yaml syntax error": ("text", "experiments:\n  x: [unclosed\n", ["config/config.yaml", "line"]),
    "not a mapping": ("text", "- just\n- a list\n", ["config/config.yaml", "mapping"]),
    "unknown top-level key": ("cfg", lambda c: c.update(extra=1), ["(top level)"]),
    "wrong type": ("exp", _exp(**{"explore.budget": "many"}), [f"experiments.{EXP}.explore.budget"]),
    "unknown transform": ("exp", lambda e: e["concepts"][0].update(transform="spin"), [f"experiments.{EXP}.concepts[0].transform"]),
    "levels not monotonic": ("exp", lambda e: e["concepts"][1].update(levels=[0, 2, 1]), [f"experiments.{EXP}.concepts[1].levels"]),
    "duplicate axis names": ("exp", lambda e: e["concepts"][1].update(name=e["concepts"][0]["name"]), [f"experiments.{EXP}.concepts"]),
    "unknown task": ("exp", _exp(task="translation"), [f"experiments.{EXP}.task"]),
    "unknown searcher": ("exp", _exp(**{"explore.algorithm": "genetic"}), [f"experiments.{EXP}.explore.algorithm"]),
    "key of another task": ("exp", _exp(**{"mitigate.steps": 10}), [f"experiments.{EXP}.mitigate"]),
    "unknown PPO setting": ("exp", _exp(**{"explore.ppo": {"learning_rat": 0.1}}), [f"experiments.{EXP}.explore.ppo"]),
    "budget below agents": ("exp", _exp(**{"explore.budget": 8}), [f"experiments.{EXP}.explore.budget"]),
    "probe with unknown transform": ("exp", _exp(**{"shift.probes": [{"name": "p", "apply": {"melt": 1}}]}),
                                     [f"experiments.{EXP}.shift.probes[0].apply.melt"]),
    "feedback is a folder": ("exp", _exp(feedback="resources/feedback"), [f"experiments.{EXP}.feedback", "directory"]),
    "run names no experiment": ("cfg", lambda c: c.update(run=["nosuch"]), ["run", "nosuch"]),
    "bad experiment name": ("cfg", lambda c: c["experiments"].update({"a b": c["experiments"][EXP]}), ["experiments", "a b"]),
    "not UTF-8": ("bytes", b"experiments:\n  x: caf\xe9\n", ["config/config.yaml", "UTF-8"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_is_refused_before_any_job(case, copy_of, repo_root):
    kind, what, names = CONFIG_CASES[case]
    path = copy_of / "config" / "config.yaml"
    if kind == "text":
        path.write_text(what)
    elif kind == "bytes":
        path.write_bytes(what)
    else:
        cfg = yaml.safe_load(path.read_text())
        what(cfg if kind == "cfg" else cfg["experiments"][EXP])
        path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    before = digest(copy_of / "results")
    assert_refused(quick(copy_of, *run_args(repo_root)), *names)
    assert digest(copy_of / "results") == before


def test_missing_configfile_is_named(copy_of, repo_root):
    args = run_args(repo_root)
    args[args.index("config/config.yaml")] = "config/nope.yaml"
    assert_refused(quick(copy_of, *args), "config/nope.yaml", "does not exist")


# --- 2. feedback files: file and line named, however long the file ------------------------------

FEEDBACK_CASES = {
    "spreadsheet cp1252": ("selector,decision,note\nrotation>=30,fix,caf\xe9\n".encode("cp1252"), ["line 2", "UTF-8"]),
    "empty file": (b"", ["line 1", "empty"]),
    "no decision column": (b"selector,weight\nrotation>=30,1\n", ["line 1", "decision"]),
    "unknown column": (b"selector,decision,colour\nrotation>=30,fix,red\n", ["colour"]),
    "unknown axis": (b"selector,decision\ntilt>=30,fix\n", ["line 2", "tilt"]),
    "unknown level": (b"selector,decision\nrotation=15,fix\n", ["line 2", "15"]),
    "bad decision": (b"selector,decision\nrotation>=30,perhaps\n", ["line 2", "perhaps"]),
    "bad weight": (b"selector,decision,weight\nrotation>=30,fix,-1\n", ["line 2", "weight"]),
    "contradiction": (b"selector,decision\nrotation>=30,fix\nrotation=40,accept\n", ["line 3", "contradicts line 2"]),
    "duplicate": (b"selector,decision\nrotation>=30,fix\nrotation>20,fix\n", ["line 3", "duplicate of line 2"]),
    "nothing to fix": (b"selector,decision\nrotation>=30,accept\n", ["nothing to mitigate"]),
    "too many fields": (b"selector,decision\nrotation>=30,fix,extra\n", ["line 2", "more fields"]),
}


@pytest.mark.parametrize("case", list(FEEDBACK_CASES))
def test_bad_feedback_is_named_by_file_and_line(case, project):
    data, names = FEEDBACK_CASES[case]
    path = project / "bad_feedback" / f"{case.replace(' ', '_')}.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    before = digest(project / "results")
    proc = quick(project, "check-feedback", EXP, str(path.relative_to(project)))
    line = assert_refused(proc, str(path.relative_to(project)))
    assert all(n in line for n in names), (names, line)
    assert digest(project / "results") == before


def test_a_flood_of_problems_is_summarised_and_fast(project):
    """100,000 identical rows: every row after the first is a duplicate. Checking is near-linear
    (the old pairwise check took 562 s), and the answer is a summary, not 99,999 lines."""
    path = project / "bad_feedback" / "flood.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_text("selector,decision\n" + "rotation>=30,fix\n" * 100_000)
    # a separate process with a time limit: a quadratic check would hang here, not pass slowly
    proc = failfade(project, "check-feedback", EXP, str(path.relative_to(project)), timeout=120)
    assert_refused(proc, str(path.relative_to(project)))
    assert "99999 problem(s)" in proc.stderr and "... and 99979 more: 99979 × duplicate of line 2" in proc.stderr
    assert len(proc.stderr.splitlines()) < 30


def test_check_feedback_says_what_a_partial_overlap_resolves_to(project):
    """Rows that decide differently and share only some cells are valid; the shared cells are fixed,
    and the check says so instead of fixing them silently."""
    path = project / "bad_feedback" / "overlap.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_text("selector,decision\nrotation>=30,fix\ncontrast=0.2,accept\n")
    proc = quick(project, "check-feedback", EXP, str(path.relative_to(project)))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"lines 2 \(fix\) and 3 \(accept\) share [1-9]\d* cell\(s\): they are fixed", proc.stdout), proc.stdout


def test_bad_feedback_fails_the_feedback_rule_and_keeps_the_landscape(copy_of, repo_root):
    res = copy_of / "results" / EXP
    (copy_of / "resources" / "feedback" / f"{EXP}.csv").write_bytes("selector,decision\nrotation>=30,fix\u00e9\n".encode("cp1252"))
    upstream = {k: v for k, v in digest(copy_of / "results").items() if k.startswith(f"{EXP}/landscape/")}
    mitigated = (res / "mitigate" / "model.safetensors").stat().st_mtime_ns
    proc = failfade(copy_of, *run_args(repo_root), timeout=RUN_TIMEOUT)
    assert_refused(proc, "feedback", f"resources/feedback/{EXP}.csv")
    assert {k: v for k, v in digest(copy_of / "results").items() if k.startswith(f"{EXP}/landscape/")} == upstream
    assert not (res / "feedback" / "plan.json").exists()  # no stale plan left in force
    assert (res / "mitigate" / "model.safetensors").stat().st_mtime_ns == mitigated


# --- 3. model folders (model.source: path:<folder>) ----------------------------------------------

def _break_model(folder: Path, how: str) -> None:
    card = folder / "model.json"
    weights = folder / "model.safetensors"
    if how == "no card":
        card.unlink()
    elif how == "card not JSON":
        card.write_text("{not json")
    elif how == "card lacks arch":
        c = json.loads(card.read_text())
        del c["arch"]
        card.write_text(json.dumps(c))
    elif how == "unknown torchvision arch":
        c = json.loads(card.read_text())
        c["arch"] = "torchvision:resnet9000"
        card.write_text(json.dumps(c))
    elif how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif how == "weights of another arch":
        c = json.loads(card.read_text())
        c["classes"] = c["classes"][:3]  # a 3-class head for 10-class weights
        card.write_text(json.dumps(c))
    elif how == "no folder":
        shutil.rmtree(folder)


MODEL_CASES = {
    "no folder": ["model.source"],
    "no card": ["model.source", "model.json"],
    "card not JSON": ["model.json", "JSON"],
    "card lacks arch": ["model.json", "arch"],
    "unknown torchvision arch": ["model.json", "resnet9000"],
    "truncated weights": ["model.safetensors", "corrupt checkpoint"],
    "weights of another arch": ["model.safetensors", "do not fit"],
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_broken_model_folder_is_named(case, project, tmp_path, repo_root):
    work = make_workdir(tmp_path / "m", repo_root, small_config(repo_root))
    folder = work / "given_model"
    shutil.copytree(project / "results" / EXP / "model", folder)
    _break_model(folder, case)
    set_config(work, _exp(**{"model.source": "path:given_model"}))
    proc = failfade(work, *run_args(repo_root, "--until", "model"), timeout=RUN_TIMEOUT)
    assert_refused(proc, *MODEL_CASES[case])
    assert not (work / "results" / EXP / "model" / "model.json").exists()


# --- 4. data folders -------------------------------------------------------------------------------

def _image_folder(root: Path, how: str) -> None:
    from PIL import Image

    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / cls / f"{i}.png")
    if how == "corrupt image":
        (root / "b" / "2.png").write_bytes(b"\x89PNG not really")
    elif how == "one class":
        shutil.rmtree(root / "b")
    elif how == "no folder":
        shutil.rmtree(root)


DATA_CASES = {"no folder": ["data.source", "does not exist"], "one class": ["data.source", "class"],
              "corrupt image": ["b/2.png", "cannot be read as an image"]}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_broken_image_folder_is_named(case, tmp_path, repo_root):
    work = make_workdir(tmp_path / "d", repo_root, small_config(repo_root))
    _image_folder(work / "images", case)
    set_config(work, _exp(**{"data.source": "imagefolder:images", "data.image_size": 16}))
    proc = failfade(work, *run_args(repo_root, "--until", "model"), timeout=RUN_TIMEOUT)
    assert_refused(proc, *DATA_CASES[case])
    assert not (work / "results" / EXP / "model" / "model.json").exists()


# --- 5. corrupt and missing intermediates ----------------------------------------------------------

def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(8, path.stat().st_size // 3)])


@pytest.mark.parametrize("command", [["template", EXP], ["check-feedback", EXP, f"resources/feedback/{EXP}.csv"],
                                     ["modes", EXP]])
def test_truncated_landscape_is_named_with_the_rebuild_command(command, copy_of):
    db = f"results/{EXP}/landscape/landscape.duckdb"
    _truncate(copy_of / db)
    if command[0] == "modes":  # modes reads the CSV twin
        _truncate(copy_of / f"results/{EXP}/landscape/failure_modes.csv")
        (copy_of / f"results/{EXP}/landscape/failure_modes.csv").write_bytes(b"\xff\xfe\x00garbage")
        db = f"results/{EXP}/landscape/failure_modes.csv"
    before = digest(copy_of / "results")
    assert_refused(quick(copy_of, *command), db, f"failfade run --forcerun {db}")
    assert digest(copy_of / "results") == before


def test_a_garbled_audit_is_named_with_the_rebuild_command(copy_of):
    audit = f"results/{EXP}/landscape/modes_audit.csv"
    (copy_of / audit).write_bytes(b"\xff\xfe\x00garbage")
    before = digest(copy_of / "results")
    assert_refused(quick(copy_of, "modes", EXP), audit, f"failfade run --forcerun {audit}")
    assert digest(copy_of / "results") == before


@pytest.mark.parametrize("victim, rule, named", [
    (f"results/{EXP}/landscape/landscape.duckdb", "feedback", f"results/{EXP}/landscape/landscape.duckdb"),
    (f"results/{EXP}/explore/queries.parquet", "landscape", f"results/{EXP}/explore/queries.parquet"),
    (f"results/{EXP}/feedback/plan.json", "mitigate", f"results/{EXP}/feedback/plan.json"),
    (f"results/{EXP}/model/model.safetensors", "explore", "corrupt checkpoint"),
])
def test_truncated_intermediate_fails_its_reader_by_name(victim, rule, named, copy_of, repo_root):
    _truncate(copy_of / victim)
    proc = failfade(copy_of, *run_args(repo_root, "--forcerun", rule), timeout=RUN_TIMEOUT)
    assert_refused(proc, named)


def test_deleted_intermediates_are_rebuilt_by_a_plain_run(copy_of, project, repo_root):
    db, queries = f"results/{EXP}/landscape/landscape.duckdb", f"results/{EXP}/explore/queries.parquet"
    for victim in (db, queries):
        (copy_of / victim).unlink()
    proc = failfade(copy_of, *run_args(repo_root, "-q"), timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (copy_of / db).is_file()
    assert (copy_of / queries).read_bytes() == (project / queries).read_bytes()  # a deterministic stage: same bytes
    again = failfade(copy_of, *run_args(repo_root, "-n"))
    assert "Nothing to be done" in again.stdout + again.stderr  # and nothing is left to redo


def test_a_corrupt_outcome_cache_is_discarded_and_named(copy_of, project, repo_root):
    caches = sorted((copy_of / "resources" / "cache" / EXP).glob("outcomes-*.npz"))
    assert caches
    for cache in caches:
        _truncate(cache)
    proc = failfade(copy_of, *run_args(repo_root, "--forcerun", "explore", "--until", "explore", "-q"), timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = (copy_of / "logs" / EXP / "explore.log").read_text() + proc.stderr
    assert any(f"discarding the unreadable outcome cache {c.relative_to(copy_of)}" in said for c in caches), said[-3000:]
    q = f"results/{EXP}/explore/queries.parquet"
    assert (copy_of / q).read_bytes() == (project / q).read_bytes()


# --- 6. stale feedback: never silently reused -------------------------------------------------------

def test_feedback_path_typo_stops_at_the_landscape_and_says_so(copy_of, repo_root):
    set_config(copy_of, _exp(feedback="resources/feedback/typo.csv"))
    proc = failfade(copy_of, *run_args(repo_root, "-n"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"experiments.{EXP}.feedback: resources/feedback/typo.csv does not exist yet" in proc.stderr
    assert "come from an earlier feedback file" in proc.stderr
    assert "rule mitigate" not in proc.stdout + proc.stderr
    forced = failfade(copy_of, *run_args(repo_root, "-n", "--forcerun", "feedback"))  # asking for it does not help
    assert "typo.csv does not exist yet" in forced.stderr and "rule feedback" not in forced.stdout + forced.stderr


def test_feedback_path_change_reruns_the_feedback_stage(copy_of, repo_root):
    other = copy_of / "resources" / "feedback" / "other.csv"
    shutil.copy2(copy_of / "resources" / "feedback" / f"{EXP}.csv", other)
    os.utime(other, (1, 1))  # older than the plan: only the changed path can trigger the rerun
    set_config(copy_of, _exp(feedback="resources/feedback/other.csv"))
    proc = failfade(copy_of, *run_args(repo_root, "-n"))
    assert proc.returncode == 0 and "rule feedback" in proc.stdout + proc.stderr, proc.stdout[-3000:]


def test_first_run_without_feedback_builds_the_landscape(tmp_path, repo_root):
    cfg = small_config(repo_root)
    cfg["experiments"][EXP]["feedback"] = "resources/feedback/mine.csv"  # not written yet
    work = make_workdir(tmp_path / "f", repo_root, small_config(repo_root))
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = failfade(work, *run_args(repo_root, "--until", "landscape", "-q"), timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "results" / EXP / "landscape" / "feedback_template.csv").is_file()
    assert "resources/feedback/mine.csv does not exist yet" in proc.stderr


# --- 7. CLI names ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, named", [
    (["shift", "../../etc"], "'../../etc'"),
    (["modes", "../x"], "'../x'"),
    (["template", "a b"], "'a b'"),
    (["shift", "nosuch"], "no results for experiment 'nosuch' under results/"),
    (["check-feedback", "nosuch", "resources/feedback/digits.csv"], "no experiment 'nosuch'"),
    (["shift", EXP, "--check", "--results", "elsewhere"], "no results for experiment 'digits' under elsewhere/"),
])
def test_cli_names_are_checked_like_the_config(args, named, project):
    assert_refused(quick(project, *args), named)


def test_configfile_then_a_target(copy_of, repo_root):
    """`failfade run --configfile F <target>`: the target is a target, not a second config file."""
    target = f"results/{EXP}/landscape/failure_modes.csv"
    # the target right after failfade's own options, as a user types it
    proc = failfade(copy_of, "run", "--cores", "2", "--configfile", "config/config.yaml", target,
                    "--snakefile", str(repo_root / "Snakefile"), "-n", "--forcerun", "landscape")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "rule landscape" in out and "rule mitigate" not in out


def test_a_configfile_replaces_the_default_experiments(copy_of, repo_root):
    cfg = yaml.safe_load((copy_of / "config" / "config.yaml").read_text())
    cfg["experiments"] = {"mini": cfg["experiments"][EXP]}
    (copy_of / "mini.yaml").write_text(yaml.safe_dump(cfg))
    shutil.rmtree(copy_of / "results")  # so that a dry run would list every experiment it builds
    args = run_args(repo_root, "-n")
    args[args.index("config/config.yaml")] = "mini.yaml"
    proc = failfade(copy_of, *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "experiment=mini" in out and f"experiment={EXP}" not in out


# --- 8. the no-new-failures guard ---------------------------------------------------------------------

def test_guard_fail_mode_sets_the_exit_status(copy_of):
    path = copy_of / "results" / EXP / "shift" / "shift.json"
    shift = json.loads(path.read_text())
    shift["guard"] = {"mode": "fail", "tripped": True, "new_failure_cells": ["rotation=0°, blur=2.5 px, contrast=0.2"],
                      "untargeted_cells_significantly_worse": [], "probes_significantly_worse": []}
    path.write_text(json.dumps(shift))
    proc = quick(copy_of, "shift", EXP, "--check")
    assert proc.returncode == 1 and "guard tripped (fail): new failure cells: rotation=0°" in proc.stderr
    shift["guard"]["mode"] = "warn"
    path.write_text(json.dumps(shift))
    proc = quick(copy_of, "shift", EXP, "--check")
    assert proc.returncode == 0 and "guard tripped (warn)" in proc.stderr


@pytest.mark.parametrize("name, content", [
    ("shift.json", {"guard": 5}),
    ("shift.json", {"guard": {"tripped": True}}),  # no mode (an older or hand-edited file)
    ("shift.json", {"guard": {"tripped": "yes", "mode": "fail"}}),
    ("shift.json", b"\xff\xfe not json"),
    ("shift.md", b"# shift\n\xe9t\xe9\n"),  # not UTF-8
    ("shift.md", None),  # a folder where the report should be
])
def test_a_broken_shift_summary_is_named(copy_of, name, content):
    path = copy_of / "results" / EXP / "shift" / name
    path.unlink()
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    proc = quick(copy_of, "shift", EXP, *(["--check"] if name == "shift.json" else []))
    assert_refused(proc, str(Path("results") / EXP / "shift" / name), "cannot be read as")


# --- 9. faults: kill -9, Ctrl-C, two runs at once ------------------------------------------------------

def _start(work: Path, repo_root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(FAILFADE), *run_args(repo_root, *args)], cwd=work, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_job(work: Path, rule: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until `rule`'s job has started (its log file is written) and is still running."""
    log = work / "logs" / EXP / f"{rule}.log"
    start = time.time()
    stamp = log.stat().st_mtime if log.exists() else 0
    while time.time() - start < timeout:
        if log.exists() and log.stat().st_mtime > stamp and "stage" in log.read_text():
            time.sleep(1.0)
            return
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.2)
    pytest.fail(f"{rule} did not start within {timeout} s")


# kill -9 leaves the job's outputs and snakemake's incomplete markers as they were; Ctrl-C lets
# snakemake clean up: the signal decides what is left behind, the stage only where. One of each,
# at the exploration and at the fine-tuning (each case reruns everything downstream, about a minute)
@pytest.mark.parametrize(("rule", "sig"), [("explore", signal.SIGKILL), ("mitigate", signal.SIGINT)],
                         ids=["kill-9-explore", "ctrl-c-mitigate"])
def test_an_interrupted_run_is_recovered_by_one_plain_run(rule, sig, copy_of, project, repo_root):
    proc = _start(copy_of, repo_root, "--forcerun", rule)
    _wait_for_job(copy_of, rule, proc)
    os.killpg(proc.pid, sig)  # the whole run: failfade, snakemake and the job (as a terminal's Ctrl-C does)
    proc.wait(timeout=120)
    assert proc.returncode != 0, "the run finished before the signal: nothing was interrupted"
    rerun = failfade(copy_of, *run_args(repo_root, "-q"), timeout=RUN_TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for f in ("explore/queries.parquet", "shift/shift.json", "mitigate/model.safetensors"):
        p = f"results/{EXP}/{f}"
        assert (copy_of / p).read_bytes() == (project / p).read_bytes(), f


def test_two_runs_in_one_folder_are_refused(copy_of, repo_root):
    first = _start(copy_of, repo_root, "--forcerun", "explore")
    try:
        _wait_for_job(copy_of, "explore", first)
        second = failfade(copy_of, *run_args(repo_root))
        line = assert_refused(second, "another `failfade run`", str(first.pid))
        assert "working in this folder" in line
        # a dry run takes no lock, however its flags are spelt (`-np` was refused as if it were a run)
        dry = failfade(copy_of, *run_args(repo_root), "-np")
        assert "another `failfade run`" not in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-2000:]
    finally:
        os.killpg(first.pid, signal.SIGINT)  # the first run is not needed to the end
        first.wait(timeout=RUN_TIMEOUT)


def test_an_experiment_without_results_is_named_with_those_that_have_some(tmp_path):
    """`failfade modes digit` (a typo) used to say "run failfade run first", which never creates it."""
    (tmp_path / "results" / "digits" / "landscape").mkdir(parents=True)
    (tmp_path / "results" / "t2i").mkdir()
    r = quick(tmp_path, "modes", "digit")
    assert r.returncode != 0 and "no results for experiment 'digit' under results/ (experiments with results: digits, t2i)" in r.stderr
    assert "Traceback" not in r.stderr
    r = quick(tmp_path, "modes", "digits")  # the experiment exists, its landscape file does not yet
    assert r.returncode != 0 and "failure_modes.csv does not exist yet" in r.stderr


def test_the_reading_commands_take_the_results_folder_from_the_config(tmp_path):
    """`failfade shift/modes/template` read the config's `results:` (where the workflow wrote) when
    --results is not given; they always read ./results, so a config that moves it (as the paper's
    smoke config asks) left them reading nothing, or another run's results."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("results: elsewhere\n")
    (tmp_path / "elsewhere" / "digits" / "shift").mkdir(parents=True)
    (tmp_path / "elsewhere" / "digits" / "shift" / "shift.md").write_text("# the moved results\n")
    (tmp_path / "results" / "digits" / "shift").mkdir(parents=True)
    (tmp_path / "results" / "digits" / "shift" / "shift.md").write_text("# the default folder\n")
    r = quick(tmp_path, "shift", "digits")
    assert r.returncode == 0 and "the moved results" in r.stdout, r.stdout + r.stderr
    r = quick(tmp_path, "shift", "digits", "--results", "results")  # an explicit folder still wins
    assert r.returncode == 0 and "the default folder" in r.stdout, r.stdout + r.stderr


def test_a_lock_is_kept_while_the_recorded_snakemake_lives_or_when_it_is_not_that_runs(tmp_path):
    """failfade records its own pid and its snakemake's. Killed with -9, failfade leaves snakemake
    running, holding the lock: that lock is live, not stale. A lock made long after the recorded run
    started is a plain snakemake's, which failfade cannot see: refused, never removed."""
    import click

    from failfade import cli

    state = tmp_path / ".snakemake"
    (state / "locks").mkdir(parents=True)
    lock = state / "locks" / "0.input.lock"
    lock.write_text("")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        (state / cli.PIDFILE).write_text(f"{dead.pid} {child.pid}")
        with pytest.raises(click.ClickException, match=f"its snakemake, pid {child.pid}, still runs"):
            cli._free_the_folder(state)
        assert lock.exists()
    finally:
        child.kill()
        child.wait()
    t = time.time()
    os.utime(state / cli.PIDFILE, (t - 2 * cli.LOCK_GRACE_S, t - 2 * cli.LOCK_GRACE_S))
    with pytest.raises(click.ClickException, match="did not start"):
        cli._free_the_folder(state)
    assert lock.exists()
    os.utime(state / cli.PIDFILE, (t, t))  # the recorded run's own lock, its processes gone: removed
    cli._free_the_folder(state)
    assert not lock.exists()


def test_a_zombie_is_not_a_live_run():
    """Killed with -9 together with failfade, a run's snakemake is a zombie until something reaps it
    (a container's init may never): `kill(pid, 0)` still succeeds on it, and the next run was refused
    as if that snakemake still worked."""
    from failfade import cli

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    while time.time() < deadline:  # exited, not yet reaped: a zombie
        with open(f"/proc/{child.pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.05)
    assert not cli._alive(child.pid)
    child.wait()
    assert cli._alive(os.getpid())


def test_a_reused_pid_is_not_the_recorded_run():
    """After a crash or a reboot the recorded pid may belong to another program: a process that
    started after the record was written is not the run it recorded."""
    from failfade import cli

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)
        assert cli._alive(child.pid, since=time.time())  # started before the record: the recorded run
        assert not cli._alive(child.pid, since=time.time() - 3600)  # started an hour after the record: another
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("args", [("-d", "w"), ("-dw",), ("--directory", "w"), ("--directory=w",), ("--dir", "w"),
                                  ("--direc=w",), ("-n", "--cores", "2", "--dir", "w", "all")])
def test_every_spelling_of_snakemakes_directory_is_read(args):
    """`failfade run --dir X` (snakemake takes abbreviations) validated ./config/config.yaml and
    looked for locks in ./.snakemake, not in X."""
    from failfade import cli

    assert cli._directory(args) == Path("w")
    assert cli._directory(("-n", "--cores", "2")) == Path(".") and cli._directory(("--dryrun",)) == Path(".")
