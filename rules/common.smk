# Config → file names. The config is validated (and defaults filled) before any job runs;
# a bad key fails here with its dotted path named.
import failfade.config

_validated = failfade.config.validate(config, "config")
config.clear()
config.update(_validated)

R = config["results"]
EXPERIMENTS = config.get("run") or list(config["experiments"])


wildcard_constraints:
    experiment="|".join(config["experiments"]),
    shard=r"[1-9][0-9]*",


def exp_cfg(wildcards, *keys):
    """The parts of one experiment's config that a stage depends on (its rerun trigger)."""
    exp = config["experiments"][wildcards.experiment]
    return {k: exp[k] for k in ("task",) + keys}  # every stage asks the task family


def model_cfg(wildcards):
    return exp_cfg(wildcards, "seed", "device", "data", "model")


def explore_cfg(wildcards):
    # the failure-rate threshold shapes the explorer's level-set bonus; the rest of `landscape:` does not
    tau = config["experiments"][wildcards.experiment]["landscape"]["failure_rate_threshold"]
    # `model` too: a family may keep scoring settings there (summarization: generation settings, ε)
    return exp_cfg(wildcards, "seed", "device", "data", "model", "concepts", "explore") | {"landscape": {"failure_rate_threshold": tau}}


def landscape_cfg(wildcards):
    return exp_cfg(wildcards, "seed", "data", "model", "concepts", "landscape")


def feedback_cfg(wildcards):
    return exp_cfg(wildcards, "concepts")


def mitigate_cfg(wildcards):
    return exp_cfg(wildcards, "seed", "device", "data", "model", "concepts", "mitigate")


def shift_cfg(wildcards):
    return exp_cfg(wildcards, "seed", "concepts", "landscape", "shift")


def probes_cfg(wildcards):
    probes = config["experiments"][wildcards.experiment]["shift"]["probes"]
    return exp_cfg(wildcards, "seed", "device", "data", "model", "landscape") | {"shift": {"probes": probes}}


def groundtruth_cfg(wildcards):
    return exp_cfg(wildcards, "seed", "device", "data", "model", "concepts", "explore", "landscape", "groundtruth")


def cache_dir(wildcards):
    return f"{config['resources']}/cache/{wildcards.experiment}"


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


def feedback_csv(wildcards):
    return config["experiments"][wildcards.experiment]["feedback"]


def gpus(wildcards):
    return config["experiments"][wildcards.experiment]["gpus"]


def final_outputs():
    out = expand(
        [
            f"{R}/{{experiment}}/shift/shift.json",
            f"{R}/{{experiment}}/shift/shift.md",
            f"{R}/{{experiment}}/landscape/failure_modes.csv",
        ],
        experiment=EXPERIMENTS,
    )
    for e in EXPERIMENTS:
        if config["experiments"][e]["explore"]["groundtruth"]:
            out.append(f"{R}/{e}/groundtruth/discovery.json")
    return out
