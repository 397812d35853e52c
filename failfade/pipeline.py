"""The stages of the loop as plain functions of (experiment config, input paths, output paths).

Workflow scripts call exactly one of these; tests and the CLI call them directly.
model → explore → landscape → feedback → mitigate → reexplore (= explore) → shift
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl
import torch

from failfade import FailfadeError, models
from failfade.concepts import ConceptSpace
from failfade.data import load_splits
from failfade.explore.cache import CachedTask, fingerprint
from failfade.explore.search import exhaustive, explore
from failfade.feedback import mitigation_plan, read_feedback, read_plan, write_plan
from failfade.landscape import feedback_template, read_table, summarize, write_database
from failfade.mitigate import mitigate
from failfade.shift import compare, markdown
from failfade.tasks.classification import ClassificationTask
from failfade.training import accuracy, fit

log = logging.getLogger("failfade")


def device_of(exp: dict) -> torch.device:
    want = exp.get("device", "auto")
    if want == "cuda" and not torch.cuda.is_available():
        raise FailfadeError("device: cuda requested but torch sees no CUDA device")
    return torch.device("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu")


def space_of(exp: dict) -> ConceptSpace:
    return ConceptSpace.from_config(exp["concepts"])


def splits_of(exp: dict):
    d = exp["data"]
    return load_splits(d["source"], d["image_size"], d["heldout_fraction"], exp["seed"],
                       validation_fraction=d.get("validation_fraction", 0.0))


def read_queries(paths) -> pl.DataFrame:
    """One query table from one Parquet file or a list of shard files (in shard order)."""
    if isinstance(paths, (str, Path)):
        return pl.read_parquet(paths)
    frames = [pl.read_parquet(p).with_columns(pl.lit(k, dtype=pl.Int32).alias("shard")) for k, p in enumerate(paths)]
    return pl.concat(frames, how="vertical")


def shard_seed(seed: int, shard: int) -> int:
    """Shard 0 explores with the experiment's seed (so one shard = the unsharded run); every other
    shard with an independent child seed."""
    from failfade.explore.search import substream

    return seed if shard == 0 else substream(seed, 1000 + shard)


def stage_model(exp: dict, out_dir: Path, resources: Path, key: str = "model.source") -> dict:
    """Obtain the model under test and store it as safetensors + card (with held-out clean accuracy)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = models.ModelSource.parse(exp["model"]["source"], key)
    splits = splits_of(exp)
    device = device_of(exp)
    history = []
    if source.kind == "builtin":
        torch.manual_seed(exp["seed"])
        module = models.DigitsCNN(num_classes=len(splits.classes), in_channels=splits.train.images.shape[1])
        card = {"arch": "digits-cnn", "classes": splits.classes,
                "input": {"channels": int(splits.train.images.shape[1]), "size": exp["data"]["image_size"],
                          "mean": [0.0] * splits.train.images.shape[1], "std": [1.0] * splits.train.images.shape[1]}}
        mut = models.ModelUnderTest(module, card, device)
        m = exp["model"]
        history = fit(mut, splits.train, list(module.parameters()), m["epochs"], m["lr"], m["batch_size"], exp["seed"],
                      desc="train digits-cnn")
    else:
        got = models.resolve_source(source, Path(resources), key)
        if isinstance(got, Path):
            mut = models.load_model(got, device)
            card = {k: v for k, v in mut.card.items() if k not in ("sha256", "weights")}
            module = mut.module
        else:
            module, card = got
            mut = models.ModelUnderTest(module, card, device)
    card = dict(card, source=exp["model"]["source"], heldout_clean_accuracy=accuracy(mut, splits.heldout),
                heldout_inputs=len(splits.heldout), train_inputs=len(splits.train),
                validation_inputs=len(splits.validation) if splits.validation is not None else 0, seed=exp["seed"])
    pl.DataFrame(history or [{"epoch": -1, "loss": float("nan"), "accuracy": float("nan")}]).write_csv(out_dir / "training.csv")
    return models.save_model(module, card, out_dir)


def build_task(exp: dict, model_dir: Path, cache_dir: Path | None = None):
    """The task on the held-out split; with a cache_dir, wrapped in the persistent outcome cache."""
    mut = models.load_model(model_dir, device_of(exp))
    task = ClassificationTask(mut, splits_of(exp).heldout, space_of(exp))
    if cache_dir is None:
        return task
    key = fingerprint(mut.card.get("sha256"), exp["data"], exp["seed"], exp["concepts"])
    return CachedTask(task, Path(cache_dir) / f"outcomes-{key}.npz")


def searcher_params(explore_cfg: dict) -> dict:
    e = explore_cfg
    return {"ppo": e.get("ppo", {}), "dqn": e.get("dqn", {}), "epsilon_greedy": {"epsilon": e.get("epsilon", 0.2)},
            "threshold": {"successes": e.get("successes", 5)}}.get(e["algorithm"], {})


def stage_explore(exp: dict, model_dir: Path, queries_path: Path, log_path: Path, curve_path: Path | None = None,
                  progress: bool = True, cache_dir: Path | None = None, shard: int = 0) -> pl.DataFrame:
    """One exploration (one shard of `explore.shards`), with the full `explore.budget`."""
    e = exp["explore"]
    task = build_task(exp, model_dir, cache_dir if e.get("cache", True) else None)
    queries, learning = explore(task, e["budget"], e["num_agents"], shard_seed(exp["seed"], shard), e["algorithm"],
                                searcher_params(e), progress, mode=e.get("mode", "macroscopic"), micro=e.get("micro"),
                                tau=exp["landscape"]["failure_rate_threshold"] if "landscape" in exp else 0.5)
    if isinstance(task, CachedTask):
        task.save()
        log.info("outcome cache: %d hits, %d new (input, cell) pairs scored", task.hits, task.misses)
    queries.write_parquet(queries_path)
    learning.write_csv(log_path)
    if curve_path is not None:
        from failfade.plots import learning_curve

        learning_curve(learning, curve_path, f"Exploration ({e['algorithm']}, {e.get('mode', 'macroscopic')}, {queries.height} queries)")
    return queries


def stage_groundtruth(exp: dict, model_dir: Path, explore_queries, out: dict[str, Path],
                      cache_dir: Path | None = None) -> dict:
    """Exhaustive landscape of the model under test, and how well the exploration recovered it.

    out keys: queries (parquet), json (discovery summary), curve (csv).
    """
    from failfade.metrics import discovery_curve, queries_to_recall, scores_of, true_rates

    use_cache = exp["explore"].get("cache", True) and exp.get("groundtruth", {}).get("cache", True)
    task = build_task(exp, model_dir, cache_dir if use_cache else None)
    truth_q, _ = exhaustive(task, exp["seed"])
    if isinstance(task, CachedTask):
        task.save()
    truth_q.write_parquet(out["queries"])
    tau, conf = exp["landscape"]["failure_rate_threshold"], exp["landscape"]["confidence"]
    truth = true_rates(task.n_cells, truth_q)
    q = read_queries(explore_queries)
    curve = discovery_curve(task.n_cells, q, truth, tau, confidence=conf)
    curve.write_csv(out["curve"])
    sc = scores_of(task.n_cells, q, truth, tau, conf)
    summary = {
        "algorithm": exp["explore"]["algorithm"], "mode": exp["explore"].get("mode", "macroscopic"),
        "exhaustive_queries": truth_q.height, "exploration_queries": q.height,
        "budget_fraction": q.height / truth_q.height, "true_failure_cells": int((truth >= tau).sum()),
        "threshold": tau, "confidence": conf, "outcome_cache_used": bool(use_cache),
        "rules": {
            "interval": f"reported failing when the landscape calls it a failure cell: the {conf:.0%} Wilson lower bound "
                        "of its failure rate is >= threshold (what the landscape, the modes and the feedback template show)",
            "point": "reported failing when its estimated failure rate is >= threshold",
        },
        "recall": sc["recall"], "precision": sc["precision"],
        "recall_point": sc["recall_point"], "precision_point": sc["precision_point"],
        "mae": sc["mae"], "coverage": sc["coverage"],
        "queries_to_90pct_recall": queries_to_recall(task.n_cells, q, truth, tau, confidence=conf),
        "queries_to_90pct_recall_point": queries_to_recall(task.n_cells, q, truth, tau, rule="point", confidence=conf),
    }
    Path(out["json"]).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def stage_landscape(exp: dict, queries_paths, out: dict[str, Path], gallery_inputs=None) -> pl.DataFrame:
    """Merge the exploration shards into the landscape database. out keys: db, modes, template, cells, heatmap, gallery."""
    from failfade.plots import gallery, heatmaps

    space = space_of(exp)
    ls = exp["landscape"]
    queries = read_queries(queries_paths)
    cells, modes = summarize(space, queries, ls["failure_rate_threshold"], ls["confidence"])
    write_database(out["db"], queries, cells, modes)
    modes.write_csv(out["modes"])
    feedback_template(modes).write_csv(out["template"])
    cells.write_csv(out["cells"])
    heatmaps(space, cells, out["heatmap"], f"Failure landscape: failure rate per cell ({queries.height} queries)")
    heldout = gallery_inputs if gallery_inputs is not None else splits_of(exp).heldout
    rows = []
    for m in modes.head(8).iter_rows(named=True):
        mode_cells = [int(c) for c in m["cells"].split()]
        fails = queries.filter(pl.col("failure") & pl.col("cell").is_in(mode_cells)).head(ls["gallery_per_mode"])
        if fails.height == 0:
            continue
        idx = torch.as_tensor(fails["input_id"].to_numpy())  # input_id = position in the held-out split
        imgs = space.apply(heldout.images[idx], fails["cell"].to_numpy()).permute(0, 2, 3, 1).numpy()
        imgs = imgs[..., 0] if imgs.shape[-1] == 1 else imgs
        caps = [f"true {y} → {p}" for y, p in zip(fails["label"], fails["prediction"])]
        rows.append((f"mode {m['mode']}", imgs, caps))
    gallery(rows, out["gallery"], "Failing held-out inputs per failure mode (descriptions in failure_modes.csv)")
    return modes


def feedback_plan(exp: dict, feedback_path: Path, db_path: Path) -> dict:
    """Validate a feedback CSV against the explored landscape and turn it into a mitigation plan."""
    space = space_of(exp)
    cells = read_table(db_path, "cells")
    explored = cells.filter(pl.col("queries") > 0)["cell"].to_list()
    return mitigation_plan(read_feedback(feedback_path, space, explored), space, explored, str(feedback_path))


def stage_feedback(exp: dict, feedback_path: Path, db_path: Path, plan_path: Path) -> dict:
    plan = feedback_plan(exp, feedback_path, db_path)
    write_plan(plan, plan_path)
    return plan


def stage_mitigate(exp: dict, model_dir: Path, plan_path: Path, out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mut = models.load_model(model_dir, device_of(exp))
    splits = splits_of(exp)
    plan = read_plan(plan_path)
    m = exp["mitigate"]
    history, selection = mitigate(mut, splits.train, space_of(exp), plan, m["mode"], m["epochs"], m["lr"], m["batch_size"],
                                  m["perturb_fraction"], exp["seed"], m["distill"], validation=splits.validation,
                                  early_stopping=m.get("early_stopping", True), max_clean_drop=m.get("max_clean_drop", 0.005),
                                  validation_pairs=m.get("validation_pairs", 4096))
    pl.DataFrame(history).write_csv(out_dir / "training.csv")
    card = {k: v for k, v in mut.card.items() if k not in ("sha256", "weights")}
    card.update(parent_sha256=mut.card.get("sha256"), mitigation={**m, "fix_cells": [f["cell"] for f in plan["fix"]]},
                selection=selection, heldout_clean_accuracy=accuracy(mut, splits.heldout))
    return models.save_model(mut.module, card, out_dir)


def stage_probes(exp: dict, pre_model_dir: Path, post_model_dir: Path, out_csv: Path) -> pl.DataFrame:
    """Score every off-grid probe (`shift.probes`) on every held-out input, before and after mitigation."""
    from failfade.probes import COLUMNS, score_probes

    probes = exp.get("shift", {}).get("probes", [])
    if not probes:
        table = pl.DataFrame(schema=COLUMNS)
    else:
        device = device_of(exp)
        pre, post = models.load_model(pre_model_dir, device), models.load_model(post_model_dir, device)
        table = score_probes(probes, pre, post, splits_of(exp).heldout, exp["landscape"]["confidence"])
    table.write_csv(out_csv)
    return table


def stage_shift(exp: dict, name: str, pre_queries, post_queries, plan_path: Path, pre_card: Path,
                post_card: Path, out: dict[str, Path], probes_csv: Path | None = None) -> dict:
    """out keys: json, md, cells, figure."""
    space = space_of(exp)
    ls = exp["landscape"]
    pre_q, post_q = read_queries(pre_queries), read_queries(post_queries)
    clean_pre = json.loads(Path(pre_card).read_text())["heldout_clean_accuracy"]
    clean_post = json.loads(Path(post_card).read_text())["heldout_clean_accuracy"]
    probes = None
    if probes_csv is not None:
        from failfade.probes import COLUMNS

        probes = pl.read_csv(probes_csv, schema=COLUMNS)
    result, per_cell = compare(space, pre_q, post_q, read_plan(plan_path), ls["failure_rate_threshold"],
                               clean_pre, clean_post, ls["confidence"], bootstrap=exp.get("shift", {}).get("bootstrap", 200),
                               seed=exp.get("seed", 0), probes=probes)
    result = {"experiment": name, **result}
    Path(out["json"]).write_text(json.dumps(result, indent=2) + "\n")
    Path(out["md"]).write_text(markdown(result, name))
    per_cell.write_csv(out["cells"])
    before_after(space, per_cell, out["figure"])
    return result


def before_after(space: ConceptSpace, per_cell: pl.DataFrame, path: Path) -> None:
    """One figure: before, after, and the change, with the targeted cells outlined."""
    import matplotlib.pyplot as plt

    from failfade.plots import heatmap_size, heatmaps

    w, h = heatmap_size(space)
    fig = plt.figure(figsize=(w, 3 * h))
    for sub, (col, n_col, title, cmap, lo, hi) in zip(fig.subfigures(3, 1), (
        ("failure_rate_pre", "queries_pre", "Before mitigation: failure rate", "magma", 0, 1),
        ("failure_rate_post", "queries_post", "After mitigation: failure rate", "magma", 0, 1),
        ("delta", "queries_pre", "Change in failure rate (after − before)", "coolwarm", -1, 1),
    )):
        heatmaps(space, per_cell.rename({n_col: "queries"}), None, title, column=col, cmap=cmap, vmin=lo, vmax=hi,
                 outline="targeted", outline_label="cell targeted by the feedback", fig=sub)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
