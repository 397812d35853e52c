"""The concept levels' failure rates on the validation split (how the default's levels are chosen).

    .venv/bin/python benchmarks/levels.py

Trains (once) the default experiment's model as the workflow does, then scores every validation
input at every level of each axis alone (the other axes at their first level) and at every cell
of the grid. The held-out split is not used. Writes the "levels" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import default_experiment, digits_model, write_section  # noqa: E402

from failfade.pipeline import family_of  # noqa: E402
from failfade.tasks.classification import models  # noqa: E402
from failfade.tasks.classification.transforms import apply  # noqa: E402


def cell_failure_rates(mut, inputs, space) -> np.ndarray:
    labels = inputs.labels.numpy()
    rates = np.zeros(space.n_cells)
    with torch.no_grad():
        for c in range(space.n_cells):
            x = apply(space, inputs.images, np.full(len(inputs), c))
            rates[c] = float((mut.logits(x).argmax(1).cpu().numpy() != labels).mean())
    return rates


def main():
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()  # --help, before anything runs
    torch.set_num_threads(2)
    exp = default_experiment()
    mut = models.load_model(digits_model(exp))
    fam = family_of(exp)
    splits, space = fam.splits(exp), fam.space(exp)
    rates = cell_failure_rates(mut, splits.validation, space)
    coords = space.all_coords()
    lines = ["## Concept levels on the validation split", "",
             "Command: `.venv/bin/python benchmarks/levels.py`. The default model, every one of the "
             f"{len(splits.validation)} validation inputs at each level of one axis (the others at their first level), "
             "and at every cell of the grid; the held-out split is not used.", "",
             "| axis | levels | failure rate at each level alone |", "|---|---|---|"]
    for k, a in enumerate(space.axes):
        alone = [rates[(coords[:, k] == i) & (np.delete(coords, k, 1) == 0).all(1)][0] for i in range(len(a.levels))]
        lines.append(f"| {a.name} | {', '.join(a.label(i) for i in range(len(a.levels)))} | "
                     f"{', '.join(f'{100 * r:.0f}%' for r in alone)} |")
    lines += ["", f"Across the {space.n_cells} cells: {int((rates < 0.15).sum())} fail under 15%, "
              f"{int((rates >= 0.5).sum())} fail at 50% or more (τ), {int((rates >= 0.9).sum())} at 90% or more."]
    write_section("levels", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
