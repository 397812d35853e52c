"""The stages of the loop as plain functions of (experiment config, input paths, output paths).

Workflow scripts call exactly one of these; tests and the CLI call them directly. The stages know
no task: what depends on the kind of input and model comes from the experiment's task family
(`task:`, tasks/family.py).
model → explore → landscape → audit, feedback → mitigate → reexplore (= explore) → probes → shift
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from failfade import FailfadeError
from failfade.concepts import ConceptSpace
from failfade.explore.search import exhaustive, explore, substream
from failfade.feedback import mitigation_plan, read_feedback, read_plan, write_plan
from failfade.landscape import components, feedback_template, read_table, summarize, write_database
from failfade.shift import compare, markdown
from failfade.slices import cells_of
from failfade.tasks.cache import CachedTask, fingerprint
from failfade.tasks.family import TaskFamily, family

log = logging.getLogger("failfade")


def family_of(exp: dict) -> TaskFamily:
    return family(exp.get("task", "classification"))


def space_of(exp: dict) -> ConceptSpace:
    return ConceptSpace.from_config(exp["concepts"], family_of(exp).transforms)


def read_queries(paths) -> pl.DataFrame:
    """One query table from one Parquet file or a list of shard files (in shard order)."""
    if isinstance(paths, (str, Path)):
        return _read_parquet(paths)
    frames = [_read_parquet(p).with_columns(pl.lit(k, dtype=pl.Int32).alias("shard")) for k, p in enumerate(paths)]
    return pl.concat(frames, how="vertical")


def _read_parquet(path) -> pl.DataFrame:
    from failfade import unreadable

    try:
        return pl.read_parquet(path)
    except FileNotFoundError:
        raise
    except Exception as e:  # polars raises several kinds for a truncated or foreign file
        raise unreadable(path, e, "a query log (Parquet)") from None


AUDIT_STREAM = 7001  # the audit's draws: a stream of the experiment's seed of its own
OTHER_STREAM = 7002  # the untargeted cells' pairs (stage_probes)


def shard_seed(seed: int, shard: int) -> int:
    """Shard 0 explores with the experiment's seed (so one shard = the unsharded run); every other
    shard with an independent child seed."""
    return seed if shard == 0 else substream(seed, 1000 + shard)


def stage_model(exp: dict, out_dir: Path, resources: Path, key: str = "model.source") -> dict:
    """Obtain the model under test and store it with its card (held-out clean quality included);
    `key` names the config key in errors about the source."""
    return family_of(exp).obtain_model(exp, Path(out_dir), Path(resources), key)


def build_task(exp: dict, model_dir: Path, cache_dir: Path | None = None):
    """The task on the held-out split; with a cache_dir, wrapped in the persistent outcome cache."""
    task = family_of(exp).build_task(exp, Path(model_dir))
    if cache_dir is None:
        return task
    # every model file that can change an outcome (not only the weights: generation_config.json,
    # tokenizer and scheduler files too; storage.outcome_digest), the data's config and its content:
    # a file edited under the same path must not reuse old outcomes
    from failfade.tasks.cache import scoring_code_digest
    from failfade.tasks.storage import outcome_digest

    # where the decoded images are kept (data.cache_dir, under `resources:` by default) decides no
    # outcome, and the data's content is in data_digest: moving `resources:` keeps the cache's hits
    data = {k: v for k, v in exp["data"].items() if k != "cache_dir"}
    parts = [outcome_digest(model_dir) or task.model_sha256, data, getattr(task, "data_digest", None),
             exp["seed"], exp["concepts"], scoring_code_digest(family_of(exp))]
    if getattr(task, "settings", None) is not None:  # what else decides an outcome (e.g. generation settings)
        parts.append(task.settings)
    key = fingerprint(*parts)
    return CachedTask(task, Path(cache_dir) / f"outcomes-{key}.npz")


def searcher_params(explore_cfg: dict) -> dict:
    """The configured searcher's own settings (config.SEARCHER_KEYS): a learner's block, or a
    baseline's one setting; {} (its defaults) where `explore:` gives none."""
    from failfade.config import SEARCHER_KEYS

    key = SEARCHER_KEYS.get(explore_cfg["algorithm"])
    if key is None or key not in explore_cfg:
        return {}
    value = explore_cfg[key]
    return value if isinstance(value, dict) else {key: value}


def stage_explore(exp: dict, model_dir: Path, queries_path: Path, log_path: Path, curve_path: Path | None = None,
                  progress: bool = True, cache_dir: Path | None = None, shard: int = 0) -> pl.DataFrame:
    """One exploration (one shard of `explore.shards`), with the full `explore.budget`."""
    e = exp["explore"]
    task = build_task(exp, model_dir, cache_dir if e.get("cache", True) else None)
    queries, learning = explore(task, e["budget"], e["num_agents"], shard_seed(exp["seed"], shard), e["algorithm"],
                                searcher_params(e), progress, mode=e.get("mode", "macroscopic"), micro=e.get("micro"),
                                tau=exp["landscape"]["failure_rate_threshold"] if "landscape" in exp else 0.5,
                                confidence=exp["landscape"].get("confidence", 0.95) if "landscape" in exp else 0.95)
    if isinstance(task, CachedTask):
        task.save()
        log.info("outcome cache: %d hits, %d new (input, cell) pairs scored", task.hits, task.misses)
    queries.write_parquet(queries_path)
    learning.write_csv(log_path)
    if curve_path is not None:
        from failfade.plots import learning_curve

        learning_curve(learning, curve_path, f"Exploration ({e['algorithm']}, {e.get('mode', 'macroscopic')}, {queries.height} queries)")
    return queries


def stage_groundtruth(exp: dict, model_dir: Path, queries_path: Path, cache_dir: Path | None = None) -> pl.DataFrame:
    """The exhaustive landscape of the model under test: every cell on every held-out input. It
    depends on the model, data and concepts alone (not on the exploration), so an exploration
    setting changes it never (stage_discovery compares the two)."""
    use_cache = exp.get("explore", {}).get("cache", True) and exp.get("groundtruth", {}).get("cache", True)
    task = build_task(exp, model_dir, cache_dir if use_cache else None)
    truth_q, _ = exhaustive(task, exp["seed"])
    if isinstance(task, CachedTask):
        task.save()
    truth_q.write_parquet(queries_path)
    log.info("ground truth: %d queries (%s)", truth_q.height, "outcome cache used" if use_cache else "scored afresh")
    return truth_q


def stage_discovery(exp: dict, truth_path: Path, explore_queries, out: dict[str, Path]) -> dict:
    """How well the exploration recovered the exhaustive landscape. out keys: json (discovery
    summary), curve (csv)."""
    from failfade.metrics import discovery_curve, oracle_recall, queries_to_recall, scores_of, true_rates

    n_cells = space_of(exp).n_cells
    truth_q = read_queries([truth_path])
    tau, conf = exp["landscape"]["failure_rate_threshold"], exp["landscape"]["confidence"]
    truth = true_rates(n_cells, truth_q)
    q = read_queries(explore_queries)
    curve = discovery_curve(n_cells, q, truth, tau, confidence=conf)
    curve.write_csv(out["curve"])
    sc = scores_of(n_cells, q, truth, tau, conf)
    summary = {
        "algorithm": exp["explore"]["algorithm"], "mode": exp["explore"].get("mode", "macroscopic"),
        "exhaustive_queries": truth_q.height, "exploration_queries": q.height,
        "budget_fraction": q.height / truth_q.height, "true_failure_cells": int((truth >= tau).sum()),
        "threshold": tau, "confidence": conf,
        "rules": {
            "interval": f"reported failing when the landscape calls it a failure cell: the {conf:.0%} Wilson lower bound "
                        "of its failure rate is >= threshold (what the landscape, the modes and the feedback template show)",
            "point": "reported failing when its estimated failure rate is >= threshold",
        },
        "recall": sc["recall"], "precision": sc["precision"],
        "oracle_recall": oracle_recall(truth, tau, q.height, truth_q.height // n_cells, conf),
        "recall_point": sc["recall_point"], "precision_point": sc["precision_point"],
        "mae": sc["mae"], "coverage": sc["coverage"],
        "queries_to_90pct_recall": queries_to_recall(n_cells, q, truth, tau, confidence=conf),
        "queries_to_90pct_recall_point": queries_to_recall(n_cells, q, truth, tau, rule="point", confidence=conf),
        "slices": slices_against_truth(exp, truth_q, q),
    }
    Path(out["json"]).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def slices_against_truth(exp: dict, truth_q: pl.DataFrame, explored: pl.DataFrame) -> dict:
    """The failure modes (slices) of the exhaustive landscape beside those of the exploration: which
    the exploration shows, which it misses, and what each list covers of the true failure cells (as
    discovery.json's `true_failure_cells` counts them: exhaustive failure rate >= tau)."""
    from failfade.metrics import true_rates

    space, ls = space_of(exp), exp["landscape"]
    tau = ls["failure_rate_threshold"]
    _, truth_modes, _ = summarize(space, truth_q, tau, ls["confidence"], ls)
    _, modes, _ = summarize(space, explored, tau, ls["confidence"], ls)
    true_sel, got_sel = truth_modes["selector"].to_list(), modes["selector"].to_list()
    failing = true_rates(space.n_cells, truth_q) >= tau

    def share_covered(mode_cells) -> float:
        inside = np.zeros(space.n_cells, dtype=bool)
        for text in mode_cells:
            inside[cells_of(text)] = True
        return float((failing & inside).sum() / failing.sum()) if failing.any() else float("nan")

    return {
        "truth": [{"selector": s, "description": d, "failure_rate": r} for s, d, r in
                  zip(true_sel, truth_modes["description"], truth_modes["failure_rate"])],
        "explored": got_sel,
        "precision": len(set(true_sel) & set(got_sel)) / len(got_sel) if got_sel else float("nan"),
        "recall": len(set(true_sel) & set(got_sel)) / len(true_sel) if true_sel else float("nan"),
        "truth_covers_true_failure_cells": share_covered(truth_modes["cells"]),
        "explored_cover_true_failure_cells": share_covered(modes["cells"]),
    }


def query_paths(queries_paths) -> list[str]:
    """The query shards a stage reads: one path, or Snakemake's list of them."""
    return [str(q) for q in ([queries_paths] if isinstance(queries_paths, (str, Path)) else queries_paths)]


def stage_landscape(exp: dict, queries_paths, out: dict[str, Path]) -> pl.DataFrame:
    """Merge the exploration shards into the landscape database. out keys: db, modes, template,
    cells, heatmap. The gallery is a stage of its own (stage_gallery): it runs the model, and its
    settings (how many examples) must not rerun what depends on the database."""
    from failfade.plots import heatmaps

    from failfade.slices import coverage

    space = space_of(exp)
    ls = exp["landscape"]
    paths = query_paths(queries_paths)
    try:  # DuckDB aggregates the shards where they lie: only per-cell sums come into memory
        cells, modes, search = summarize(space, paths, ls["failure_rate_threshold"], ls["confidence"], ls)
    except (duckdb.Error, ValueError) as e:
        raise _unreadable_shard(paths, e) from None
    write_database(out["db"], paths, cells, modes, components(space, cells))
    modes.write_csv(out["modes"])
    feedback_template(modes).write_csv(out["template"])
    cells.write_csv(out["cells"])
    cov = coverage(cells, modes)
    log.info("landscape: %d queries, %d failure cells; %d modes (slices of <= %d terms; %s candidates evaluated per level) "
             "cover %d of them and %.0f%% of the failing queries", int(cells["queries"].sum()), cov["failing_cells"],
             modes.height, ls["max_terms"], search["evaluated"], cov["failing_cells_covered"], 100 * (cov["failure_share"] or 0))
    heatmaps(space, cells, out["heatmap"], f"Failure landscape: failure rate per cell ({int(cells['queries'].sum())} queries)")
    return modes


def stage_gallery(exp: dict, queries_paths, db_path: Path, out_path: Path, model_dir: Path | None = None) -> None:
    """Examples of the landscape's failure modes (gallery.png): failing inputs with what the model
    said (with the explored model's folder, a summarizer regenerates its summaries), or for
    text-to-image a sample sheet the pipeline draws."""
    paths = query_paths(queries_paths)
    family_of(exp).gallery(exp, scan_queries(paths), read_table(db_path, "failure_modes"), out_path,
                           exp["landscape"]["gallery_per_mode"], model_dir)


def stage_bias(exp: dict, queries_paths, out_csv: Path) -> pl.DataFrame:
    """Text-to-image with `model.bias`: landscape/bias.csv, per cell the share of each class the CLIP
    judge answered, its total variation distance from the target and that distance's noise floor."""
    paths = query_paths(queries_paths)
    fam = family_of(exp)
    table = fam.bias(exp, scan_queries(paths)) if hasattr(fam, "bias") else None
    if table is None:
        raise FailfadeError(f"task {exp['task']!r}: bias.csv needs a text-to-image experiment whose model sets "
                            "`bias` (a CLIP judge's zero-shot question and its classes)")
    table.write_csv(out_csv)
    log.info("bias: %d of %d cells biased beyond sampling noise", int(table["biased"].sum()), table.height)
    return table


def stage_rating_sheet(exp: dict, model_dir: Path, db_path: Path, out_dir: Path) -> None:
    """Text-to-image: the images people rate (rating_sheet.html, ratings_template.csv) and the judge's
    verdicts on them (sheet_judged.csv), in out_dir, grouped by the landscape's failure modes."""
    fam = family_of(exp)
    if not hasattr(fam, "rating_sheet"):
        raise FailfadeError(f"task {exp['task']!r}: people rate images only in text-to-image experiments "
                            "(task: generation); the other tasks' feedback is feedback_template.csv")
    fam.rating_sheet(exp, read_table(db_path, "cells"), read_table(db_path, "failure_modes"), Path(out_dir),
                     Path(model_dir))


def stage_audit(exp: dict, model_dir: Path, db_path: Path, out_csv: Path, cache_dir: Path | None = None,
                show_progress: bool = True) -> pl.DataFrame:
    """Each failure mode's rate again on `audit.queries_per_mode` fresh (held-out input, cell) pairs
    drawn uniformly from the mode (failfade.audit): what the landscape's rates, chosen by an adaptive
    exploration, cannot give, an unbiased rate with an interval that holds."""
    from failfade.audit import COLUMNS, audit_modes

    ls, per_mode = exp["landscape"], exp["audit"]["queries_per_mode"]
    modes = read_table(db_path, "failure_modes")
    if per_mode == 0 or modes.height == 0:  # nothing to score: no model is loaded
        table = pl.DataFrame(schema=COLUMNS)
    else:
        task = build_task(exp, model_dir, cache_dir if exp["explore"].get("cache", True) else None)
        table = audit_modes(task, modes, per_mode, substream(exp["seed"], AUDIT_STREAM), ls["failure_rate_threshold"],
                            ls["confidence"], show_progress)
        if isinstance(task, CachedTask):
            task.save()
            log.info("outcome cache: %d hits, %d new (input, cell) pairs scored", task.hits, task.misses)
    table.write_csv(out_csv)
    for r in table.iter_rows(named=True):
        log.info("audit: mode %d %s: explored %.3f [%.3f, %.3f], audited %.3f [%.3f, %.3f] on %d of %d pairs%s",
                 r["mode"], r["selector"], r["explored_rate"], r["explored_lo"], r["explored_hi"], r["audit_rate"],
                 r["audit_lo"], r["audit_hi"], r["audit_queries"], r["pairs"], "" if r["confirmed"] else " (not confirmed)")
    return table


def scan_queries(paths) -> pl.LazyFrame:
    """The query shards as one lazy table (polars reads only what a filter keeps), `shard` numbered."""
    return pl.concat([pl.scan_parquet(p).with_columns(pl.lit(k, dtype=pl.Int32).alias("shard")) for k, p in enumerate(paths)],
                     how="vertical")


def _unreadable_shard(paths: list[str], error: Exception):
    """The error for a query shard DuckDB could not read: the first file that does not open, or
    whose rows do not decode on their own, named. The message ends in a rebuild command, so it names
    real paths only: it once named "<first> (and N more shards)", which pasted into --forcerun
    rebuilt nothing; an error no single shard gives names them all."""
    from failfade import unreadable

    for path in paths:
        try:
            pl.read_parquet_schema(path)
        except FileNotFoundError:
            return FileNotFoundError(path)
        except Exception as e:  # polars raises several kinds for a truncated or foreign file
            return unreadable(path, e, "a query log (Parquet)")
    if len(paths) == 1:
        return unreadable(paths[0], error, "a query log (Parquet)")
    with duckdb.connect() as con:  # a damaged page opens but does not decode: read each shard's columns alone
        for path in paths:
            try:
                con.execute("SELECT sum(cell::BIGINT), sum(failure::DOUBLE), sum(delta::DOUBLE) FROM read_parquet(?)",
                            [path]).fetchall()
            except duckdb.Error as e:
                return unreadable(path, e, "a query log (Parquet)")
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return FailfadeError(f"the query shards {', '.join(paths)}: cannot be read together as query logs "
                         f"({type(error).__name__}: {first}); rebuild them with `failfade run --forcerun {' '.join(paths)}`")


def feedback_plan(exp: dict, feedback_path: Path, db_path: Path) -> dict:
    """Validate a feedback CSV against the explored landscape and turn it into a mitigation plan."""
    space = space_of(exp)
    cells = read_table(db_path, "cells")
    explored = cells.filter(pl.col("queries") > 0)["cell"].to_list()
    if exp.get("task") == "generation":
        from failfade.tasks.generation import ratings

        if ratings.is_ratings(feedback_path):  # people rated images: aggregate, decide per cell, compare with the judge
            landscape_dir = Path(db_path).parent
            from failfade.tasks.family import family

            table = ratings.read_ratings(feedback_path, space, exp["data"]["seeds"], ratings.sheet_ids(landscape_dir),
                                         family("generation").prompts(exp, space))
            ls = exp["landscape"]
            return ratings.ratings_plan(table, space, explored, ls["failure_rate_threshold"], ls["confidence"],
                                        str(feedback_path), cells, ratings.read_judged(landscape_dir))
    return mitigation_plan(read_feedback(feedback_path, space, explored), space, explored, str(feedback_path))


def stage_feedback(exp: dict, feedback_path: Path, db_path: Path, plan_path: Path) -> dict:
    plan = feedback_plan(exp, feedback_path, db_path)
    write_plan(plan, plan_path)
    return plan


def stage_mitigate(exp: dict, model_dir: Path, plan_path: Path, out_dir: Path) -> dict:
    """Fine-tune the model away from the plan's `fix` cells (the family's recipe); returns the new card."""
    return family_of(exp).fine_tune(exp, Path(model_dir), read_plan(plan_path), Path(out_dir))


def stage_probes(exp: dict, pre_model_dir: Path, post_model_dir: Path, out_csv: Path, plan_path: Path | None = None,
                 targeted_csv: Path | None = None, inputs_csv: Path | None = None, other_csv: Path | None = None,
                 cache_dir: Path | None = None) -> pl.DataFrame:
    """Score every off-grid probe (`shift.probes`) on every held-out input, before and after mitigation;
    with the plan, also every fixed cell (`targeted_csv`), and per input how many of them it failed
    (`inputs_csv`: what the pooled change's interval needs). Each probe's and cell's row carries its
    paired counts (inputs newly failing / newly passing) from the per-input outcomes, and so the paired
    interval of its change: both sides are the same inputs. `other_csv`: `shift.other_pairs` pairs
    drawn uniformly from the cells the plan does not fix × the held-out inputs, each scored for both
    models (failfade.audit.paired_sample; through the outcome cache in `cache_dir`)."""
    from failfade.probes import (COLUMNS, check_probes, input_table, paired_counts, probe_table, targeted_spaces,
                                 targeted_table)

    probes = exp.get("shift", {}).get("probes", [])
    fam = family_of(exp)
    conf = exp["landscape"]["confidence"]
    spaces = check_probes(probes, fam.transforms, ranges=fam.level_ranges) if probes else []
    plan = read_plan(plan_path) if plan_path is not None else {"fix": []}
    space = space_of(exp)
    fixed = targeted_spaces(space, plan)
    others = np.setdiff1d(np.arange(space.n_cells), [int(f["cell"]) for f in plan["fix"]])
    sample_others = other_csv is not None and exp.get("shift", {}).get("other_pairs", 0) > 0 and len(others) > 0
    tasks = []  # each model's task, built once for the probes, the fixed cells and the other cells' sample
    if spaces or fixed or sample_others:
        use_cache = cache_dir if sample_others and exp.get("explore", {}).get("cache", True) else None
        tasks = [build_task(exp, Path(d), use_cache) for d in (pre_model_dir, post_model_dir)]
    pre, post, n = [], [], 0
    if spaces or fixed:  # every held-out input, straight through the model (the outcome cache keeps grid cells only)
        (pre, n), (post, _) = (fam.probe_failures(t.task if isinstance(t, CachedTask) else t, spaces + fixed) for t in tasks)
    k = len(spaces)
    on_probes, on_cells = paired_counts(pre[:k], post[:k]), paired_counts(pre[k:], post[k:])
    table = probe_table(probes, spaces, n=n, confidence=conf, **on_probes) if probes else pl.DataFrame(schema=COLUMNS)
    table.write_csv(out_csv)
    if targeted_csv is not None:
        targeted_table(space, plan, n=n, confidence=conf, **on_cells).write_csv(targeted_csv)
    if inputs_csv is not None:
        input_table(pre[k:], post[k:]).write_csv(inputs_csv)
    if other_csv is not None:
        other_pairs(exp, tasks, others).write_csv(other_csv)
    return table


def other_pairs(exp: dict, tasks: list, cells: np.ndarray) -> pl.DataFrame:
    """The untargeted cells' sample for shift.json's `other_heldout`: `shift.other_pairs` pairs of
    `cells` (those the plan does not fix) x held-out inputs, scored by both models' `tasks` (before,
    after; through the outcome cache when they are CachedTasks). Empty when the size is 0 or there
    are no such cells."""
    from failfade.audit import PAIR_COLUMNS, paired_sample

    size = exp.get("shift", {}).get("other_pairs", 0)
    if size == 0 or len(cells) == 0:
        return pl.DataFrame(schema=PAIR_COLUMNS)
    pairs = paired_sample(*tasks, cells, size, substream(exp["seed"], OTHER_STREAM))
    for t in tasks:
        if isinstance(t, CachedTask):
            t.save()
    log.info("other cells: %d pairs of %d cells x %d inputs scored before and after: %d newly failing, %d newly passing",
             pairs.height, len(cells), tasks[0].n_inputs, int((pairs["failure_post"] & ~pairs["failure_pre"]).sum()),
             int((pairs["failure_pre"] & ~pairs["failure_post"]).sum()))
    return pairs


def stage_shift(exp: dict, name: str, pre_queries, post_queries, plan_path: Path, pre_card: Path,
                post_card: Path, out: dict[str, Path], probes_csv: Path | None = None,
                targeted_csv: Path | None = None, inputs_csv: Path | None = None, other_csv: Path | None = None) -> dict:
    """out keys: json, md, cells, figure. `other_csv`: the untargeted cells' pairs from the probes stage."""
    space = space_of(exp)
    ls = exp["landscape"]
    pre_q, post_q = read_queries(pre_queries), read_queries(post_queries)
    quality = family_of(exp).quality
    clean_pre = json.loads(Path(pre_card).read_text())[f"heldout_clean_{quality}"]
    post = json.loads(Path(post_card).read_text())
    clean_post = post[f"heldout_clean_{quality}"]
    if "clean_check" in post:  # the family measured clean quality where it matters (generation: untargeted prompts)
        clean_pre, clean_post = post["clean_check"]["pre"], post["clean_check"]["post"]
    from failfade.probes import read_table  # tables written before the paired counts were kept read too

    probes = read_table(probes_csv) if probes_csv is not None else None
    targeted = read_table(targeted_csv) if targeted_csv is not None else None
    inputs = None
    if inputs_csv is not None:
        from failfade.probes import INPUT_COLUMNS

        inputs = pl.read_csv(inputs_csv, schema=INPUT_COLUMNS)
    other = None
    if other_csv is not None:
        from failfade.audit import PAIR_COLUMNS

        try:
            other = pl.read_csv(other_csv, schema=PAIR_COLUMNS)
        except Exception as e:
            from failfade import unreadable

            raise unreadable(other_csv, e, "the untargeted cells' pairs (CSV)") from None
    result, per_cell = compare(space, pre_q, post_q, read_plan(plan_path), ls["failure_rate_threshold"],
                               clean_pre, clean_post, ls["confidence"], bootstrap=exp.get("shift", {}).get("bootstrap", 200),
                               seed=exp.get("seed", 0), probes=probes, quality=quality, targeted_heldout=targeted, targeted_inputs=inputs,
                               other_heldout=other, guard=exp.get("shift", {}).get("guard", "warn"))
    result = {"experiment": name, **result}
    if result["guard"]["tripped"]:
        log.warning("the no-new-failures guard tripped for %s: see the top of %s", name, out["md"])
    text = markdown(result, name)
    plan = read_plan(plan_path)
    if "ratings" in plan:  # the plan came from people's ratings: how the judge compares with them
        from failfade.tasks.generation.ratings import markdown as ratings_markdown

        result["ratings"] = {k: v for k, v in plan["ratings"].items() if k != "cells_table"}
        text += ratings_markdown(plan["ratings"])
    if "clean_check" in post:
        text += f"\nClean quality here is {post['clean_check']['what']} ({post['clean_check']['cells']} cells, " \
                f"{post['clean_check']['images']} images).\n"
    Path(out["json"]).write_text(json.dumps(result, indent=2) + "\n")
    Path(out["md"]).write_text(text)
    per_cell.write_csv(out["cells"])
    from failfade.plots import before_after

    before_after(space, per_cell, out["figure"])
    return result
