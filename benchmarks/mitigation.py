"""Mitigation settings, chosen on the validation split only.

    .venv/bin/python benchmarks/mitigation.py [--seeds 0 1 2] [--grid default|small]

For each seed, the default experiment's model is trained as the workflow trains it; the shipped
feedback becomes a plan (every cell explored); each candidate mitigation setting fine-tunes a
copy (with validation early stopping, as the workflow does) and is scored on the VALIDATION inputs
exhaustively: clean accuracy change, failure rate on the fixed cells and on the other cells, and
the off-grid probes of the config. The held-out split is never touched here: it is kept for the
numbers the workflow reports (benchmarks/seeds.py). Writes the "mitigation" section of
benchmarks/RESULTS.md and benchmarks/out/mitigation.json.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import OUT, ROOT, command, default_experiment, write_section  # noqa: E402

from failfade.feedback import mitigation_plan, read_feedback  # noqa: E402
from failfade.pipeline import family_of, stage_model  # noqa: E402
from failfade.probes import check_probes  # noqa: E402
from failfade.tasks.classification import models  # noqa: E402
from failfade.tasks.classification.mitigate import mitigate  # noqa: E402
from failfade.tasks.classification.training import accuracy  # noqa: E402
from failfade.tasks.classification.transforms import TRANSFORMS, apply  # noqa: E402

GRIDS = {
    "default": [dict(zip(("epochs", "lr", "distill", "perturb_fraction"), v))
                for v in itertools.product((10, 20), (1e-3,), (1.0, 3.0), (0.5,))]
    + [{"epochs": 20, "lr": 2e-3, "distill": 3.0, "perturb_fraction": 0.5},
       {"epochs": 20, "lr": 1e-3, "distill": 3.0, "perturb_fraction": 0.7}],
    "small": [{"epochs": 10, "lr": 1e-3, "distill": 1.0, "perturb_fraction": 0.5}],
}


def grid_failure_rate(mut, inputs, space, cells) -> float:
    """Share of (input, cell) pairs that fail, over every input and the given cells."""
    labels = inputs.labels.numpy()
    wrong = total = 0
    with torch.no_grad():
        for c in cells:
            for s in range(0, len(inputs), 512):
                x = apply(space, inputs.images[s:s + 512], np.full(min(512, len(inputs) - s), c))
                wrong += int((mut.logits(x).argmax(1).cpu().numpy() != labels[s:s + 512]).sum())
                total += len(x)
    return wrong / total


def evaluate(mut, splits, space, fix, other, probes) -> dict:
    v = splits.validation
    return {"clean": accuracy(mut, v), "targeted": grid_failure_rate(mut, v, space, fix),
            "other": grid_failure_rate(mut, v, space, other),
            "probes": {p["name"]: grid_failure_rate(mut, v, ps, [0]) for p, ps in zip(probes, check_probes(probes, TRANSFORMS))}}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--grid", choices=sorted(GRIDS), default="default")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    base_exp = default_experiment()
    probes = base_exp["shift"]["probes"]
    rows = []
    for seed in args.seeds:
        exp = copy.deepcopy(base_exp)
        exp["seed"] = seed
        model_dir = OUT / "mitigation" / f"seed{seed}" / "model"
        if not (model_dir / "model.json").is_file():
            stage_model(exp, model_dir, ROOT / "resources")
        fam = family_of(exp)
        splits, space = fam.splits(exp), fam.space(exp)
        all_cells = list(range(space.n_cells))
        plan = mitigation_plan(read_feedback(ROOT / exp["feedback"], space, all_cells), space, all_cells, exp["feedback"])
        fix = sorted(f["cell"] for f in plan["fix"])
        other = sorted(set(all_cells) - set(fix))
        base = evaluate(models.load_model(model_dir), splits, space, fix, other, probes)
        for setting in GRIDS[args.grid]:
            mut = models.load_model(model_dir)
            m = {**exp["mitigate"], **setting}
            t0 = time.perf_counter()
            _, sel = mitigate(mut, splits.train, space, plan, m["mode"], m["epochs"], m["lr"], m["batch_size"],
                              m["perturb_fraction"], seed, m["distill"], validation=splits.validation,
                              early_stopping=m["early_stopping"], max_clean_drop=m["max_clean_drop"],
                              validation_pairs=m["validation_pairs"])
            after = evaluate(mut, splits, space, fix, other, probes)
            row = {"seed": seed, **setting, "kept_epoch": sel["kept_epoch"], "seconds": time.perf_counter() - t0,
                   "clean_change": after["clean"] - base["clean"],
                   "targeted_reduction": 1 - after["targeted"] / base["targeted"],
                   "other_change": after["other"] - base["other"],
                   "probe_change": {k: after["probes"][k] - base["probes"][k] for k in base["probes"]}}
            rows.append(row)
            print(f"seed {seed} {setting} kept {sel['kept_epoch']}: clean {100 * row['clean_change']:+.2f} pt, "
                  f"targeted -{100 * row['targeted_reduction']:.1f}%, other {100 * row['other_change']:+.1f} pt, "
                  f"worst probe {max(row['probe_change'].values()) * 100:+.1f} pt ({row['seconds']:.0f} s)", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "mitigation.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "## Mitigation settings on the validation split",
        "",
        f"Command: `{command(__file__, ap, args)}`. "
        "Each setting fine-tunes the default model (per seed) away from the shipped feedback's `fix` cells, with early "
        f"stopping on validation; every number is on the {len(splits.validation)} validation inputs, scored exhaustively "
        "(the held-out split is never used to choose). Mean over seeds (min to max in brackets); *worst probe* is the "
        "largest increase in failure rate among the config's off-grid probes.",
        "",
        "| epochs | lr | distill | perturb | clean change (pt) | targeted reduction | other cells change (pt) | worst probe (pt) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting in GRIDS[args.grid]:
        rs = [r for r in rows if all(r[k] == v for k, v in setting.items())]

        def agg(key, scale=100.0, fn=lambda r, k: r[k]):
            v = np.array([fn(r, key) for r in rs]) * scale
            return f"{v.mean():+.2f} ({v.min():+.2f} to {v.max():+.2f})"

        lines.append(f"| {setting['epochs']} | {setting['lr']:g} | {setting['distill']:g} | {setting['perturb_fraction']:g} | "
                     f"{agg('clean_change')} | {agg('targeted_reduction')}% | {agg('other_change')} | "
                     f"{agg('probe_change', fn=lambda r, k: max(r[k].values()))} |")
    write_section("mitigation", "\n".join(lines))


if __name__ == "__main__":
    main()
