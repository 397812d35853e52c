# Config → file names. The config is validated (and defaults filled) before any job runs;
# a bad key fails here with its dotted path named.
import sys
from pathlib import Path
from types import SimpleNamespace

import failfade
import failfade.config
import failfade.tasks.family

try:
    for _f in workflow.configfiles:  # Snakemake's YAML keeps the later of a key given twice: refuse that
        failfade.config.read_yaml(_f)
    _source = failfade.config.source_name(workflow.configfiles, workflow.config_settings.config)
    _validated = failfade.config.workflow_config(failfade.config.validate(config, _source))
except failfade.FailfadeError as _e:  # one line (Snakemake prints a traceback for an error in a Snakefile),
    # e.g. a `--config run=[...]` override naming no experiment, which `failfade run` cannot see beforehand
    sys.stderr.write(f"failfade: {_e}\n")
    raise SystemExit(1)
config.clear()
config.update(_validated)

R = config["results"]
EXPERIMENTS = config.get("run") or list(config["experiments"])


def _warn_missing_weights():
    """A model folder whose card pins a file that is gone (deleted weights) looks done to Snakemake:
    say so, with the command that rebuilds it and what stood on it."""
    import failfade.tasks.storage

    for e in EXPERIMENTS:
        for stage in ("model", "mitigate"):
            card = Path(R) / e / stage / "model.json"
            missing = failfade.tasks.storage.missing_files(card.parent) if card.is_file() else []
            if missing:
                sys.stderr.write(f"failfade: {missing[0]}: missing, pinned by {card} ({len(missing)} file(s)); "
                                 f"rebuild it and what stood on it: failfade run --forcerun {card}\n")


_warn_missing_weights()


# the text-to-image experiments (their own rule: rating_sheet); a regex that matches no name if none
GENERATION = "|".join(e for e, exp in config["experiments"].items() if exp["task"] == "generation") or "(?!)"


def has_bias(exp):
    # validated with the config: model.bias needs the CLIP judge of a text-to-image model
    return exp["task"] == "generation" and bool(exp["model"].get("bias"))


# those with `model.bias` (their own rule: bias)
BIASED = "|".join(e for e, exp in config["experiments"].items() if has_bias(exp)) or "(?!)"


wildcard_constraints:
    experiment="|".join(config["experiments"]),
    shard=r"[1-9][0-9]*",


def exp_cfg(wildcards, *keys, bias_target=False):
    """The parts of one experiment's config that a stage depends on (its rerun trigger), and all
    that its script sees of the experiment: a key left out here is silently at its default there
    (`precision` once was, for every stage that scores). Locations are left out (`data.cache_dir`;
    `resources:` is no rule's param either): moving them must rerun nothing, so a script takes
    them from the config (failfade.workflow.stage puts `data.cache_dir` back). So is
    `model.bias.target` but where `bias_target` (the bias table and the gallery): the judge's
    answers do not depend on it, and changing it must not redraw and rejudge every image."""
    exp = config["experiments"][wildcards.experiment]
    cfg = {k: exp[k] for k in ("task",) + keys}  # every stage asks the task family
    if "cache_dir" in cfg.get("data", {}):
        cfg["data"] = {k: v for k, v in cfg["data"].items() if k != "cache_dir"}
    if "model" in cfg:  # what this source (or judge) never reads: a builtin's training settings beside a pretrained model
        unused = failfade.tasks.family.family(exp["task"]).unused_model_keys(exp)
        cfg["model"] = {k: v for k, v in cfg["model"].items() if k not in unused}
    bias = cfg.get("model", {}).get("bias")
    if bias and not bias_target:
        cfg["model"] = cfg["model"] | {"bias": {k: v for k, v in bias.items() if k != "target"}}
    return cfg


def model_cfg(wildcards):
    # a text-to-image model's card holds the judge's pass rate on every prompt: there, the concepts too
    generation = config["experiments"][wildcards.experiment]["task"] == "generation"
    return exp_cfg(wildcards, "seed", "device", "data", "model", *(("concepts",) if generation else ()))


def explore_cfg(wildcards, algorithms=None):
    # the failure-rate threshold shapes the explorer's level-set bonus and the interval level its confirm
    # prior settles cells by; the rest of `landscape:` does not
    ls = config["experiments"][wildcards.experiment]["landscape"]
    # `model` too: a family may keep scoring settings there (summarization: generation settings, ε)
    # `explore` without the keys that do not change an exploration's queries: `groundtruth` switches
    # on a rule of its own, `shards` adds explorations beside shard 0 (which is the unsharded run),
    # the outcome cache is transparent, and other searchers' settings are theirs
    explore = {k: v for k, v in failfade.config.explore_settings(
        config["experiments"][wildcards.experiment]["explore"], algorithms).items()
        if k not in ("groundtruth", "shards", "cache")}
    return exp_cfg(wildcards, "seed", "device", "precision", "data", "model", "concepts") | {
        "explore": explore, "landscape": {k: ls[k] for k in ("failure_rate_threshold", "confidence")}}


def strategies_cfg(wildcards):
    # Table A's runs: every searcher of `paper.strategies`, each with its settings, at the exploration's
    # budget and explorers (the configured searcher and its mode are not theirs)
    cfg = explore_cfg(wildcards, config["paper"]["strategies"]["algorithms"])
    return cfg | {"explore": {k: v for k, v in cfg["explore"].items() if k not in ("algorithm", "mode")}}


def landscape_rules(wildcards):
    """The `landscape:` section without what only the gallery shows (how many examples): the rules
    by which cells and modes are judged, the rerun trigger of every stage that uses them."""
    ls = config["experiments"][wildcards.experiment]["landscape"]
    return {"landscape": {k: v for k, v in ls.items() if k != "gallery_per_mode"}}


def landscape_cfg(wildcards):
    # the concept space and the landscape's rules; not the gallery's size (the gallery rule's)
    return exp_cfg(wildcards, "concepts") | landscape_rules(wildcards)


def gallery_cfg(wildcards):
    # `device`: the gallery runs the model (a summarizer regenerates summaries, a pipeline draws)
    return exp_cfg(wildcards, "seed", "device", "data", "model", "concepts", "landscape", bias_target=True)


def bias_cfg(wildcards):
    # the prompts (data.template, concepts) and model.bias; the seed draws the noise floor
    return exp_cfg(wildcards, "seed", "data", "model", "concepts", bias_target=True)


def rating_sheet_cfg(wildcards):
    # the prompts (data.template, concepts), the images' seeds and the model that draws and judges them
    # (on `device`: a hub pipeline draws on a GPU); the modes come in with landscape.duckdb
    return exp_cfg(wildcards, "seed", "device", "data", "model", "concepts")


def audit_cfg(wildcards):
    # what scores the pairs (as the exploration's) and the audit's own settings; of `landscape:`,
    # only what decides `confirmed` (the modes themselves come in with landscape.duckdb). `explore`
    # is there empty for its outcome-cache switch (put back by failfade.workflow.with_locations)
    ls = config["experiments"][wildcards.experiment]["landscape"]
    return exp_cfg(wildcards, "seed", "device", "precision", "data", "model", "concepts", "audit") | {
        "explore": {}, "landscape": {k: ls[k] for k in ("failure_rate_threshold", "confidence")}}


def feedback_cfg(wildcards):
    # the path too: pointing `feedback` at another file reruns the stage even if that file is older;
    # text-to-image ratings also need the seeds (image ids) and the landscape's threshold (the rule)
    generation = config["experiments"][wildcards.experiment]["task"] == "generation"
    return exp_cfg(wildcards, "concepts", "feedback", *(("data",) if generation else ())) | (
        landscape_rules(wildcards) if generation else {})


def mitigate_cfg(wildcards):
    return exp_cfg(wildcards, "seed", "device", "precision", "data", "model", "concepts", "mitigate")


def shift_cfg(wildcards):
    return exp_cfg(wildcards, "seed", "concepts", "shift") | landscape_rules(wildcards)


def probes_cfg(wildcards):
    # `explore` empty, for its outcome-cache switch (put back by failfade.workflow.with_locations)
    shift = config["experiments"][wildcards.experiment]["shift"]
    return exp_cfg(wildcards, "seed", "device", "precision", "data", "model", "concepts") | landscape_rules(wildcards) | {
        "shift": {k: shift[k] for k in ("probes", "other_pairs")}, "explore": {}}


def groundtruth_cfg(wildcards):
    # what scores the exhaustive truth: the model, data and concepts (not the exploration, nor the
    # landscape's rules). `explore` is there empty for the outcome cache's switch (put back by
    # failfade.workflow.with_locations); `groundtruth.cache: false` does rerun it, since re-scoring
    # afresh is what it is for
    return exp_cfg(wildcards, "seed", "device", "precision", "data", "model", "concepts", "groundtruth") | {"explore": {}}


def discovery_cfg(wildcards):
    # the exploration's searcher and mode (named in discovery.json), the concepts and the landscape's
    # rules (its modes are compared with the truth's); its queries and the truth are inputs
    explore = config["experiments"][wildcards.experiment]["explore"]
    return exp_cfg(wildcards, "concepts") | {"explore": {k: explore[k] for k in ("algorithm", "mode")}} | \
        landscape_rules(wildcards)


def shard_index(wildcards):
    """Shard 0 is the plain explore/ output; shards 1..K-1 live in explore/shard<k>/."""
    return int(wildcards.get("shard", 0))


def shard_queries(stage):
    """Input function: the query files of every exploration shard of `stage` (explore or reexplore)."""

    def inner(wildcards):
        e = wildcards.experiment
        k = config["experiments"][e]["explore"]["shards"]
        return [f"{R}/{e}/{stage}/queries.parquet"] + [f"{R}/{e}/{stage}/shard{i}/queries.parquet" for i in range(1, k)]

    return inner


def feedback_inputs(wildcards):
    """The feedback file, and for ratings of a text-to-image experiment the rating sheet's image ids
    and the judge's verdicts on them (the ratings are checked against the one, compared with the other)."""
    exp = config["experiments"][wildcards.experiment]
    out = {"feedback": exp["feedback"]}
    if exp["task"] == "generation":
        import failfade.tasks.generation.ratings

        if failfade.tasks.generation.ratings.is_ratings(Path(exp["feedback"])):
            landscape = f"{R}/{wildcards.experiment}/landscape"
            out.update(sheet=f"{landscape}/ratings_template.csv", judged=f"{landscape}/sheet_judged.csv")
    return out


def gpus(wildcards):
    return config["experiments"][wildcards.experiment]["gpus"]


def feedback_ready(e):
    """Whether experiment e's feedback file exists. Until it does, a run stops at the landscape
    (whose feedback template is what a person fills in) and says so."""
    return Path(config["experiments"][e]["feedback"]).is_file()


# Every stage's every output is a target of the default target, not only the last ones. A deleted or
# truncated-and-removed intermediate (landscape.duckdb, queries.parquet, ...) is rebuilt by the
# next plain run, and everything downstream of it reruns (its input is newer), instead of
# "Nothing to be done" on results whose inputs no longer exist.
UPSTREAM = ("model", "explore", "landscape", "gallery", "audit")
DOWNSTREAM = ("feedback", "mitigate", "reexplore", "probes", "shift")
SHARDED = {"explore": "explore_shard", "reexplore": "reexplore_shard"}


def final_outputs():
    out = []
    for e in EXPERIMENTS:
        exp = config["experiments"][e]
        stages = (list(UPSTREAM) + (["rating_sheet"] if exp["task"] == "generation" else [])
                  + (["bias"] if has_bias(exp) else [])
                  + (["groundtruth", "discovery"] if exp["explore"]["groundtruth"] else []))
        if feedback_ready(e):
            stages += DOWNSTREAM
        else:
            sys.stderr.write(
                f"failfade: experiments.{e}.feedback: {exp['feedback']} does not exist yet, so this run stops at "
                + (f"the landscape and its rating sheet. Rate the images of {R}/{e}/landscape/rating_sheet.html (or "
                   f"fill in a copy of {R}/{e}/landscape/ratings_template.csv; or give decisions as in "
                   "feedback_template.csv), "
                   if exp["task"] == "generation" else
                   f"the landscape. Fill in a copy of {R}/{e}/landscape/feedback_template.csv (or `failfade template {e}`), ")
                + f"save it as {exp['feedback']} and run again."
                + (" The feedback, mitigate and shift results already on disk come from an earlier feedback file."
                   if Path(f"{R}/{e}/feedback/plan.json").exists() else "") + "\n")
        for stage in stages:
            out += expand(list(getattr(rules, stage).output), experiment=e)
            if stage in SHARDED and exp["explore"]["shards"] > 1:
                out += expand(list(getattr(rules, SHARDED[stage]).output), experiment=e,
                              shard=range(1, exp["explore"]["shards"]))
    if config.get("paper") is not None:  # the paper's artifacts, from the experiments finished so far
        out.append(f"{R}/paper/index.html")
    return out


# --- the paper target (rules/paper.smk) ---

def paper_part(part):
    """Params function: one part of `paper:` (strategies, scalability), so that editing another
    part (a row label, the figures) does not rerun this part's expensive runs."""
    return lambda wildcards: {part: config["paper"][part]}


def scalability_cfg(wildcards):
    """What Table C's timings depend on: the timed experiment's model and its searcher's settings
    (as its exploration's), not its concepts (the table's axes replace them) nor its later stages."""
    cfg = explore_cfg(SimpleNamespace(experiment=config["paper"]["scalability"]["experiment"]), ["ppo"])
    # of `explore:`, PPO's settings alone: the table times PPO, with its own queries and explorers
    return {k: v for k, v in cfg.items() if k != "concepts"} | {"explore": {"ppo": cfg["explore"].get("ppo", {})}}


def paper_experiments():
    """The experiments the paper target collects: those `rule all` builds whose feedback exists."""
    return [e for e in EXPERIMENTS if feedback_ready(e)]


def paper_inputs(wildcards):
    ins = []
    for e in paper_experiments():
        exp = config["experiments"][e]
        ins += [f"{R}/{e}/shift/shift.json", f"{R}/{e}/feedback/plan.json"]
        # the figures the page shows
        ins += [f"{R}/{e}/{p}.png" for p in ("landscape/heatmap", "landscape/gallery", "explore/learning_curve",
                                              "shift/before_after")]
        if exp["explore"]["groundtruth"]:
            ins.append(f"{R}/{e}/paper/strategies.csv")
        if has_bias(exp):  # Table E
            ins.append(f"{R}/{e}/landscape/bias.csv")
    if config["paper"]["scalability"]["experiment"] is not None:
        ins.append(f"{R}/paper/scalability.csv")
    return ins
