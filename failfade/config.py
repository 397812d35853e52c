"""Validate a workflow config against failfade/config.schema.yaml and fill in its defaults.

An invalid config fails before any job runs, with the offending key named as a dotted path.
"""

from __future__ import annotations

import copy
import math
from importlib import resources as ir
from pathlib import Path

import jsonschema
import yaml

from failfade import FailfadeError

SCHEMA_PATH = Path(str(ir.files("failfade") / "config.schema.yaml"))


def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _resolve(node: dict, root: dict) -> dict:
    ref = node.get("$ref")
    if ref:
        for part in ref.lstrip("#/").split("/"):
            root = root[part]
        return root
    return node


def _fill(node: dict, value, root: dict):
    node = _resolve(node, root)
    if isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _fill(sub, value[key], root)
        # per-task branches (`allOf: [{if: …, then: …}]`): fill the defaults of the branch that applies
        for branch in node.get("allOf", []):
            if "if" in branch and jsonschema.Draft202012Validator(branch["if"]).is_valid(value):
                value = _fill(branch["then"], value, root)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in node.get("properties", {}):
                    value[key] = _fill(extra, value[key], root)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        value = [_fill(node["items"], v, root) for v in value]
    return value


def _non_finite(node, path: str = "") -> list[str]:
    """The dotted paths of the NaN and infinite numbers in a config (YAML's .nan, .inf): JSON
    Schema's bounds let them through (every comparison with NaN is false), and none is a setting."""
    if isinstance(node, float) and not math.isfinite(node):
        return [f"{path or '(top level)'}: {node} is not a finite number"]
    if isinstance(node, int) and not isinstance(node, bool) and abs(node) > 1e308:
        # beyond what a float holds: float() overflows on it (a level, a probe's amount), nor is it any setting
        return [f"{path or '(top level)'}: {str(node)[:20]}... is too large a number"]
    if isinstance(node, dict):
        return [m for k, v in node.items() for m in _non_finite(v, f"{path}.{k}".lstrip("."))]
    if isinstance(node, list):
        return [m for i, v in enumerate(node) for m in _non_finite(v, f"{path}[{i}]")]
    return []


def _integer(checker, value) -> bool:
    """JSON Schema's draft 2020-12 counts 12800.0 as an integer; a config must not: the value stays
    a float, and a seed, a shard count or an image size that is a float fails inside a later job."""
    return isinstance(value, int) and not isinstance(value, bool)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _integer))


def _yaml_hint(error) -> str:
    """What YAML 1.1 did to a value that fails its type: `2e-3` read as text (an exponent wants a
    decimal point), an unquoted no / yes / off / on read as a boolean."""
    from failfade.concepts import yaml_number_hint

    if error.validator != "type":
        return ""
    if isinstance(error.instance, str):
        return yaml_number_hint([error.instance])
    expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
    if isinstance(error.instance, bool) and "string" in expected:
        return " (YAML reads an unquoted no, yes, off, on, true or false as a boolean: quote the word, e.g. 'no')"
    return ""


def validate(config: dict, source: str = "config") -> dict:
    """Return a validated copy of `config` with defaults filled in; raise naming the bad key."""
    bad = _non_finite(config)
    if bad:
        raise FailfadeError(f"{source}: invalid configuration: " + "; ".join(bad[:5])
                            + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""))
    sch = schema()
    validator = _Validator(sch)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors[:5]:
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path).lstrip(".") or "(top level)"
            lines.append(f"{path}: {e.message}{_yaml_hint(e)}")
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise FailfadeError(f"{source}: invalid configuration: " + "; ".join(lines) + more)
    config = _fill(sch, copy.deepcopy(config), sch)
    names = list(config["experiments"])
    for name in config.get("run", []):
        if name not in names:
            raise FailfadeError(f"{source}: run: unknown experiment {name!r}; defined: {names}")
    for name, exp in config["experiments"].items():
        axes = [c["name"] for c in exp["concepts"]]
        if len(set(axes)) != len(axes):
            raise FailfadeError(f"{source}: experiments.{name}.concepts: axis names must be unique, got {axes}")
        _check_task_keys(name, exp, source)
        fb, results = Path(exp["feedback"]).resolve(), Path(config["results"]).resolve()
        if results in fb.parents:
            home = Path(config["resources"]) / "feedback"
            where = (f"e.g. {home}/" if results not in home.resolve().parents and home.resolve() != results
                     else f"outside {config['results']}/")
            raise FailfadeError(f"{source}: experiments.{name}.feedback: {exp['feedback']} is inside {config['results']}/, "
                                "which the workflow writes (its templates are written again whenever the landscape "
                                f"changes, over your edits): copy the file elsewhere, {where}, and point "
                                "feedback: at the copy")
        if exp["task"] == "classification" and exp["data"].get("cache_dir") is None:  # beside the other caches
            exp["data"]["cache_dir"] = f"{config['resources']}/cache/images"
        ex = exp["explore"]
        if ex["budget"] < ex["num_agents"]:
            raise FailfadeError(f"{source}: experiments.{name}.explore.budget ({ex['budget']}) is below num_agents ({ex['num_agents']})")
        if ex.get("mode", "macroscopic") == "microscopic":
            # walks stop at an input's first failure, so the inputs that reach a cell are those that
            # passed the cells before it, and a pair that passed may be queried again: per-cell rates
            # from walks are not rates over the inputs (measured: low by 0.31 on average on a grid
            # whose failures follow input difficulty, 12% of intervals covering the truth)
            raise FailfadeError(f"{source}: experiments.{name}.explore.mode: microscopic walks end at an input's first "
                                "failure, so the failure landscape built from them would be biased (the inputs reaching "
                                "a cell are those that passed the cells before it); the workflow maps landscapes in "
                                "macroscopic mode. Walks remain available from Python: "
                                "failfade.explore.search.explore(..., mode='microscopic')")
    _check_paper(config, source)
    return config


def _check_paper(config: dict, source: str) -> None:
    """The `paper:` section names experiments that exist, and its scalability axes are valid ones."""
    from failfade.concepts import ConceptSpace
    from failfade.tasks.family import family

    paper = config.get("paper")
    if paper is None:
        return
    names = list(config["experiments"])
    for name in paper["rows"]:
        if name not in names:
            raise FailfadeError(f"{source}: paper.rows: unknown experiment {name!r}; defined: {names}")
    sc = paper["scalability"]
    if sc["experiment"] is not None:
        if sc["experiment"] not in names:
            raise FailfadeError(f"{source}: paper.scalability.experiment: unknown experiment {sc['experiment']!r}; "
                                f"defined: {names}")
        if not sc["axes"]:
            raise FailfadeError(f"{source}: paper.scalability.axes: give the axes to time (1 ... 6 of them)")
        fam = family(config["experiments"][sc["experiment"]]["task"])
        ConceptSpace.from_config(sc["axes"], fam.transforms, f"{source}: paper.scalability.axes", fam.level_ranges,
                                 fam.word_transforms)


def _check_task_keys(name: str, exp: dict, source: str) -> None:
    """What the schema cannot see, checked before any job runs: transform names the task family
    knows, monotonic levels, probes, and a feedback path that is not a folder."""
    from failfade.concepts import ConceptSpace
    from failfade.probes import check_probes
    from failfade.tasks.family import family

    key = f"experiments.{name}"
    try:
        fam = family(exp["task"], f"{key}.task")
        ConceptSpace.from_config(exp["concepts"], fam.transforms, f"{key}.concepts", fam.level_ranges,
                                 fam.word_transforms)
        check_probes(exp.get("shift", {}).get("probes", []), fam.transforms, f"{key}.shift.probes", fam.level_ranges)
        if hasattr(fam, "check"):  # what else a family needs to hold together (generation: a slot per axis)
            fam.check(exp, key)
    except FailfadeError as e:
        raise FailfadeError(f"{source}: {e}") from None
    if exp["task"] != "classification" and exp.get("precision", "fp32") != "fp32":
        raise FailfadeError(f"{source}: {key}.precision: {exp['precision']!r} is for classification models only "
                            "(a summarizer scores in fp32; a text-to-image pipeline runs in fp16 on a GPU by itself); "
                            "remove the key")
    if not exp["feedback"].strip():
        raise FailfadeError(f"{source}: {key}.feedback: empty; give the feedback CSV's path (it need not exist yet)")
    if Path(exp["feedback"]).is_dir():
        raise FailfadeError(f"{source}: {key}.feedback: {exp['feedback']} is a directory, not a CSV file")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: PyYAML (and Snakemake) keep the
    later value silently, so a second `budget:` or a second experiment of the same name would
    replace the first without a word (and a replaced experiment's results be overwritten)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor`: merged keys may be overridden, as YAML intends
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base loader names it
                break
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given at line {first}); a key may appear once per "
                    f"mapping", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path):
    """A config file's YAML, every problem (missing, not UTF-8, a syntax error, a key given twice)
    raised as a FailfadeError naming the file and line."""
    path = Path(path)
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except FileNotFoundError:
        raise FailfadeError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise FailfadeError(f"{path}: is a directory, not a config file") from None
    except UnicodeDecodeError as e:
        raise FailfadeError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise FailfadeError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None


def source_name(files, overrides=None) -> str:
    """What a config error names as its source under plain `snakemake`: the config file or files it
    merged, in order, and `--config` overrides where there are any (`failfade run` validates the
    file itself first, so its errors name the file already)."""
    name = " + ".join(str(f) for f in files) or "config"
    return f"{name} with --config {', '.join(map(str, overrides))}" if overrides else name


def load(path: str | Path) -> dict:
    raw = read_yaml(path)
    if raw is not None and not isinstance(raw, dict):
        raise FailfadeError(f"{path}: a config is a YAML mapping (experiments: ...), got {type(raw).__name__}")
    return validate(raw or {}, str(path))


def folder_signature(folder) -> str | None:
    """A digest of every file under `folder` (hidden ones left out) by path, size, inode,
    modification and change time, without reading a byte: what the image cache's key holds. A
    picture replaced, relabelled (moved to another class folder), added or removed changes it. None
    when the folder is not on this machine (a cluster's data need not be where the workflow is
    planned; the stage that reads it names it)."""
    import hashlib
    import os

    root = Path(folder)
    if not root.is_dir():
        return None
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(f for f in filenames if not f.startswith(".")):
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            h.update(os.fsencode(path) + f"\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_ctime_ns}\n".encode())
    return h.hexdigest()[:20]


def data_folders(exp: dict, section: str) -> dict[str, str | None]:
    """The image folders a stage reads, by signature (`folder_signature`): a rule's param, so that
    pictures replaced under the same folder rerun it (their thousands of files are no rule's inputs,
    and the image cache's key only helps once a stage runs). `section` "data": an `imagefolder:` data
    source (the model stage; what follows reruns with the model's card); "mitigate": the images a
    text-to-image fine-tuning reads. `torchvision:ImageNet` is left out: a reference set, and a
    train split's million files would be stat-ed at every plan."""
    if section == "data":
        src = (exp.get("data") or {}).get("source")
        folder = src.split(":", 1)[1] if isinstance(src, str) and src.startswith("imagefolder:") else None
    else:
        folder = (exp.get("mitigate") or {}).get("images") or None
    return {} if not folder else {folder: folder_signature(folder)}


def local_sources(exp: dict) -> list[str]:
    """The local files an experiment's model stage reads from its sources: every file of a `path:`
    model (or CLIP judge) folder, and a `jsonl:` / `csv:` data file. The model rule declares them as
    inputs, so replacing a model or a data file under the same path reruns the model stage and
    everything after it. Sources not on this machine are left out (a cluster's data need not be
    where the workflow is planned; the model stage names a missing one). `imagefolder:` data is
    left out too (tens of thousands of files): the model rule's `images` param holds its signature
    (`data_folders`)."""
    out: list[str] = []
    for key in ("source", "judge_source"):
        src = (exp.get("model") or {}).get(key)
        if not (isinstance(src, str) and src.startswith("path:")):
            continue
        target = Path(src[len("path:"):])
        if target.is_file():  # `path:<file>` loads its folder (resolve_source): track every file of it
            target = target.parent
        if target.is_dir():
            from failfade.tasks.storage import folder_files

            out += [str(f) for f in folder_files(target)]
    data = (exp.get("data") or {}).get("source")
    if isinstance(data, str) and data.startswith(("jsonl:", "csv:")) and Path(data.split(":", 1)[1]).is_file():
        out.append(data.split(":", 1)[1])
    return out


# the `explore:` keys that hold one searcher's own settings (read by searcher_params)
SEARCHER_KEYS = {"ppo": "ppo", "dqn": "dqn", "epsilon_greedy": "epsilon", "threshold": "successes"}


def explore_settings(explore_cfg: dict, algorithms=None) -> dict:
    """`explore:` as the searchers `algorithms` (default: the configured one) read it: without the
    other searchers' own settings, nor the microscopic walk's outside microscopic mode. The
    workflow's rerun trigger: DQN's learning rate or ε-greedy's ε changes no PPO exploration."""
    algorithms = [explore_cfg["algorithm"]] if algorithms is None else list(algorithms)
    mine = {SEARCHER_KEYS[a] for a in algorithms if a in SEARCHER_KEYS}
    drop = (set(SEARCHER_KEYS.values()) - mine) | ({"micro"} if explore_cfg.get("mode", "macroscopic") != "microscopic" else set())
    return {k: v for k, v in explore_cfg.items() if k not in drop}


# mappings whose order means something: a probe's transforms run in the order written, and the
# paper's tables list their rows in `paper.rows`' order
ORDERED = ("apply", "rows")


def canonical(node, key: str | None = None):
    """`node` with every mapping's keys sorted, but those of ORDERED and any list's order. Snakemake
    compares a rule's params as written, so the same settings in another order (`epochs:` above
    `source:`, a default written out at the top of its section) reran every stage, the model's
    training included; in this form they compare equal."""
    if isinstance(node, dict):
        items = node.items() if key in ORDERED else sorted(node.items(), key=lambda kv: str(kv[0]))
        return {k: canonical(v, k) for k, v in items}
    if isinstance(node, list):
        return [canonical(v) for v in node]
    return node


def workflow_config(config: dict) -> dict:
    """A validated config as the workflow's rules read it: each experiment's settings (and the paper
    target's) in canonical order (`canonical`); the experiments keep the order they were given in
    (the order they run and are listed in)."""
    out = dict(config, experiments={name: canonical(exp) for name, exp in config["experiments"].items()})
    if out.get("paper") is not None:
        out["paper"] = canonical(out["paper"])
    return out
