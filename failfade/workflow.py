"""The thin layer between Snakemake's `snakemake` object and failfade's stage functions."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from pathlib import Path

import torch

from failfade import FailfadeError
from failfade.tasks.family import family
from failfade.threads import set_learner_threads, usable_threads

# stages that only score a fixed model (no training of it): their thread count may follow the free cores
# (an exploring learner keeps the rule's threads all the same: threads.learner_threads)
SCORING_STAGES = frozenset({"explore", "explore_shard", "reexplore", "reexplore_shard", "groundtruth", "probes", "audit"})


def resources_dir(snakemake) -> Path:
    """The config's `resources:` folder (models, caches), read from the config rather than a rule's
    params: a param is a rerun trigger, and moving the folder must rerun nothing."""
    return Path(snakemake.config["resources"])


def outcome_cache(snakemake) -> Path:
    """Where an experiment's outcome cache lives: <resources>/cache/<experiment>."""
    return resources_dir(snakemake) / "cache" / snakemake.wildcards.experiment


# Keys that change no result: a location, or the exploration's outcome-cache switch (transparent:
# it only skips scoring a pair already scored). The rules leave them out of their params (a param is
# a rerun trigger) and the scripts take them from the config here. (`groundtruth.cache` is a trigger:
# switching it off is asking for the exhaustive truth to be scored afresh.)
UNTRIGGERED = (("data", "cache_dir"), ("explore", "cache"))


def with_locations(snakemake) -> dict:
    """The stage's config (the rule's `cfg` param) with the keys its rerun trigger leaves out
    (UNTRIGGERED) put back from the config, for the rule's experiment: the `experiment` wildcard, or
    for a rule without one, its `experiment` param."""
    cfg = snakemake.params.cfg
    experiment = getattr(snakemake.wildcards, "experiment", None) or getattr(snakemake.params, "experiment", None)
    if not experiment:
        return cfg
    exp = snakemake.config["experiments"][experiment]
    for section, key in UNTRIGGERED:
        if section in cfg and key in exp.get(section, {}):
            cfg = {**cfg, section: {**cfg[section], key: exp[section][key]}}
    return cfg


@contextlib.contextmanager
def stage(snakemake, name: str):
    """Log to the rule's log file, pin torch threads to the rule's threads, turn user errors into one clear line."""
    log_path = snakemake.log[0]
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    threads = max(1, int(snakemake.threads))
    set_learner_threads(threads)  # an exploring stage's learner keeps the rule's threads (failfade/threads.py)
    if name in SCORING_STAGES and family(snakemake.params.cfg["task"]).thread_invariant:
        # scoring whose outcomes do not depend on the thread count follows the free cores
        # (training stages keep the rule's threads: their weights depend on it)
        threads = usable_threads(threads)
    torch.set_num_threads(threads)
    with open(log_path, "w") as fh, contextlib.redirect_stderr(fh):
        logging.basicConfig(stream=fh, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)
        logging.getLogger("failfade").info("stage %s, wildcards %s, torch threads %d of the rule's %s", name,
                                           dict(snakemake.wildcards), threads, snakemake.threads)
        try:
            yield with_locations(snakemake)
        except FailfadeError as e:
            fh.write(f"failfade error in stage {name}: {e}\n")
            sys.__stderr__.write(f"failfade: {name} [{dict(snakemake.wildcards)}]: {e}\n")
            raise SystemExit(1) from None
        except Exception:
            fh.write(traceback.format_exc())
            raise
