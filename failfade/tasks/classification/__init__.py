"""Image classification (torchvision-style models): the first task family.

data.py        splits (train / validation / held-out) of an image set
models.py      model sources, the safetensors + card format, the model under test
transforms.py  the concept transforms (batched torch image kernels)
task.py        batched scoring: failure = predicted index ≠ label index
training.py    the supervised loop (builtin model, fine-tuning) and clean accuracy
mitigate.py    the mitigation recipe (concept augmentation + learning without forgetting,
               early-stopped on validation)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from failfade import FailfadeError
from failfade.concepts import ConceptSpace
from failfade.tasks.family import TaskFamily

if TYPE_CHECKING:
    import torch

log = logging.getLogger("failfade")


def device_of(exp: dict) -> torch.device:
    import torch

    from failfade import FailfadeError

    want = exp.get("device", "auto")
    if want == "cuda" and not torch.cuda.is_available():
        raise FailfadeError("device: cuda requested but torch sees no CUDA device")
    return torch.device("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu")


def own_preprocessing(exp: dict, card: dict | None = None) -> tuple[float, str] | None:
    """(crop / resize, interpolation) of the model's own evaluation preprocessing: its card's where
    the card records one (a copy of torchvision weights: loaded through path: or downloaded through
    hf:, whose card is read only once the snapshot is there), else its source's (the weights enum of
    torchvision:, a path: folder's card; models.weights_preprocessing). None: no resize-then-crop."""
    from failfade.tasks.classification.models import card_preprocessing, weights_preprocessing

    own = card_preprocessing((card or {}).get("input"))
    return own if own is not None else weights_preprocessing(exp["model"]["source"])


class ClassificationFamily(TaskFamily):
    name = "classification"
    quality = "accuracy"
    thread_invariant = True  # 1 vs 2 threads: identical outcomes (tests/test_threads.py)

    @property
    def transforms(self) -> frozenset[str]:
        from failfade.tasks.classification.concept_names import KERNELS

        return frozenset(KERNELS)

    @property
    def level_ranges(self) -> dict[str, tuple[float, float]]:
        from failfade.tasks.classification.concept_names import LEVEL_RANGES

        return LEVEL_RANGES

    # --- data and models -----------------------------------------------------------------------

    def splits(self, exp: dict, card: dict | None = None):
        """The data's splits; with a model's card, labelled by the model's output indices and decoded
        by its own preprocessing (own_preprocessing: an hf: model's is known only from its card)."""
        from failfade.tasks.classification.data import load_splits

        d = exp["data"]
        crop, interpolation = d.get("crop"), "bilinear"
        if d["source"].startswith(("imagefolder:", "torchvision:")):
            own = own_preprocessing(exp, card)  # the weights' own resize-then-crop
            if own is not None:
                crop, interpolation = (own[0] if crop is None else crop), own[1]
        splits = load_splits(d["source"], d["image_size"], d["heldout_fraction"], exp["seed"],
                             validation_fraction=d.get("validation_fraction", 0.0),
                             cache_dir=Path(d["cache_dir"]) if d.get("cache_dir") else None, crop=crop,
                             interpolation=interpolation)
        return splits if card is None else self.for_model(exp, splits, card)

    def for_model(self, exp: dict, splits, card: dict):
        """`splits` labelled by the model's output indices (data.aligned). For weights with their own
        evaluation preprocessing (resize, then crop), data.image_size must be their input size: decoded
        at the default 32 px, an ImageNet photo was stretched back up to 224 px, blurring every input,
        with no word said."""
        from failfade.tasks.classification.data import aligned

        d, size = exp["data"], int((card.get("input") or {}).get("size") or 0)
        if (size and d["image_size"] != size and d["source"].startswith(("imagefolder:", "torchvision:"))
                and own_preprocessing(exp, card) is not None):
            raise FailfadeError(f"data.image_size: {d['image_size']} px, but {exp['model']['source']} reads {size} px "
                                f"images (its weights' own resize and crop); set data.image_size: {size}")
        return aligned(splits, card["classes"])

    def space(self, exp: dict) -> ConceptSpace:
        return ConceptSpace.from_config(exp["concepts"], self.transforms)

    def load(self, exp: dict, model_dir: Path):
        from failfade.tasks.classification import models

        return models.load_model(model_dir, device_of(exp), exp.get("precision", "fp32"))

    def check(self, exp: dict, key: str = "experiment") -> None:
        """The model and data sources' forms, read when the config is (a typo such as `foo:bar`
        otherwise waited for the model stage); whether they exist is the model stage's to find."""
        from failfade.tasks.classification.sources import ModelSource

        ModelSource.parse(exp["model"]["source"], f"{key}.model.source")
        src = exp["data"]["source"]
        if src.startswith("imagefolder:") and not src.split(":", 1)[1].strip():  # it scanned the working folder
            raise FailfadeError(f"{key}.data.source: {src!r} names no folder; use imagefolder:<dir>")
        if not (src == "builtin:digits" or src.startswith(("imagefolder:", "torchvision:"))):
            raise FailfadeError(f"{key}.data.source: unknown data source {src!r}; use builtin:digits, "
                                "imagefolder:<dir> or torchvision:ImageNet:<root>[:val|train]")
        if src.startswith("torchvision:"):
            from failfade.tasks.classification.sources import torchvision_form

            torchvision_form(src, f"{key}.data.source")

    def unused_model_keys(self, exp: dict) -> tuple[str, ...]:
        from failfade.tasks.classification.sources import ModelSource

        # epochs, lr and batch_size train the builtin CNN; a torchvision, hub or path model comes trained
        builtin = ModelSource.parse(exp["model"]["source"], "model.source").kind == "builtin"
        return () if builtin else ("epochs", "lr", "batch_size")

    def obtain_model(self, exp: dict, out_dir: Path, resources: Path, key: str = "model.source") -> dict:
        """The model under test as safetensors + card (with held-out clean accuracy)."""
        import torch

        from failfade.tasks.classification import models
        from failfade.tasks.classification.training import accuracy, fit

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        source = models.ModelSource.parse(exp["model"]["source"], key)
        device = device_of(exp)
        history = []
        if source.kind == "builtin":
            splits = self.splits(exp)
            torch.manual_seed(exp["seed"])
            channels = int(splits.train.images.shape[1])
            module = models.DigitsCNN(num_classes=len(splits.classes), in_channels=channels)
            card = {"arch": "digits-cnn", "classes": splits.classes,
                    "input": {"channels": channels, "size": exp["data"]["image_size"],
                              "mean": [0.0] * channels, "std": [1.0] * channels}}
            mut = models.ModelUnderTest(module, card, device)
            m = exp["model"]
            history = fit(mut, splits.train, list(module.parameters()), m["epochs"], m["lr"], m["batch_size"], exp["seed"],
                          desc="train digits-cnn")
        else:
            from failfade.tasks.classification.data import check_source

            check_source(exp["data"]["source"])  # a missing folder is named before any download
            got = models.resolve_source(source, Path(resources), key, seed=exp["seed"])
            if isinstance(got, Path):
                mut = models.load_model(got, device)
                card = {k: v for k, v in mut.card.items() if k not in ("sha256", "weights")}
                module = mut.module
            else:
                module, card = got
                mut = models.ModelUnderTest(module, card, device)
            # read as the model reads images (its card's resize and crop: an hf: snapshot's is known only
            # now), labelled by its output indices
            splits = self.splits(exp, card)
        card = dict(card, source=exp["model"]["source"], heldout_clean_accuracy=accuracy(mut, splits.heldout),
                    heldout_inputs=len(splits.heldout), train_inputs=len(splits.train),
                    validation_inputs=len(splits.validation) if splits.validation is not None else 0, seed=exp["seed"])
        pl.DataFrame(history or [{"epoch": -1, "loss": float("nan"), "accuracy": float("nan")}]).write_csv(out_dir / "training.csv")
        return models.save_model(module, card, out_dir)

    # --- scoring --------------------------------------------------------------------------------

    def build_task(self, exp: dict, model_dir: Path):
        from failfade.tasks.classification.task import ClassificationTask

        mut = self.load(exp, model_dir)
        return ClassificationTask(mut, self.splits(exp, mut.card).heldout, self.space(exp))

    def probe_failures(self, task, probe_spaces: list[ConceptSpace]) -> tuple[list[np.ndarray], int]:
        import torch

        from failfade.tasks.classification.data import batch_rows
        from failfade.tasks.classification.transforms import apply

        mut, inputs = task.mut, task.inputs
        labels = inputs.labels.numpy()
        out = []
        with torch.no_grad():
            for space in probe_spaces:
                wrong = []
                b = batch_rows(inputs.images, 512)
                for s in range(0, len(inputs), b):
                    x = apply(space, inputs.images[s:s + b], np.zeros(min(b, len(inputs) - s), dtype=np.int64))
                    wrong.append(mut.logits(x).argmax(1).cpu().numpy() != labels[s:s + b])
                out.append(np.concatenate(wrong))
        return out, len(inputs)

    # --- restructure ------------------------------------------------------------------------------

    def fine_tune(self, exp: dict, model_dir: Path, plan: dict, out_dir: Path) -> dict:
        from failfade.tasks.classification import models
        from failfade.tasks.classification.mitigate import mitigate
        from failfade.tasks.classification.training import accuracy

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        mut = self.load(exp, model_dir)
        splits = self.splits(exp, mut.card)
        m = exp["mitigate"]
        history, selection = mitigate(mut, splits.train, self.space(exp), plan, m["mode"], m["epochs"], m["lr"],
                                      m["batch_size"], m["perturb_fraction"], exp["seed"], m["distill"],
                                      validation=splits.validation, early_stopping=m.get("early_stopping", True),
                                      max_clean_drop=m.get("max_clean_drop", 0.005),
                                      validation_pairs=m.get("validation_pairs", 4096))
        pl.DataFrame(history).write_csv(out_dir / "training.csv")
        card = {k: v for k, v in mut.card.items() if k not in ("sha256", "weights")}
        # clean accuracy at full precision, as the model stage measured the model before mitigation:
        # shift.json compares the two (at `precision: bf16` part of the change was the precision's)
        precision, mut.precision = mut.precision, "fp32"
        clean = accuracy(mut, splits.heldout)
        mut.precision = precision
        card.update(parent_sha256=mut.card.get("sha256"), mitigation={**m, "fix_cells": [f["cell"] for f in plan["fix"]]},
                    selection=selection, heldout_clean_accuracy=clean)
        return models.save_model(mut.module, card, out_dir)

    # --- what people look at ------------------------------------------------------------------------

    def gallery(self, exp: dict, queries: pl.DataFrame, modes: pl.DataFrame, path: Path, per_mode: int,
                model_dir: Path | None = None) -> None:
        """Failing held-out inputs of the largest modes, as rendered images with true → predicted class."""
        import torch

        from failfade.plots import gallery
        from failfade.slices import cells_of
        from failfade.tasks.classification.transforms import apply

        from failfade.tasks.storage import CARD, read_card_json

        card = read_card_json(Path(model_dir) / CARD, "the model's card") if model_dir is not None else None
        heldout, space = self.splits(exp, card).heldout, self.space(exp)  # the images the model was shown
        rows = []
        for m in modes.head(8).iter_rows(named=True):
            mode_cells = cells_of(m["cells"]).tolist()
            fails = queries.lazy().filter(pl.col("failure") & pl.col("cell").is_in(mode_cells)).head(per_mode).collect()
            if fails.height == 0:
                continue
            idx = torch.as_tensor(fails["input_id"].to_numpy())  # input_id = position in the held-out split
            imgs = apply(space, heldout.images[idx], fails["cell"].to_numpy()).permute(0, 2, 3, 1).numpy()
            imgs = imgs[..., 0] if imgs.shape[-1] == 1 else imgs
            caps = [f"true {y} → {p}" for y, p in zip(fails["label"], fails["prediction"])]
            rows.append((f"mode {m['mode']}", imgs, caps))
        gallery(rows, path, "Failing held-out inputs per failure mode (descriptions in failure_modes.csv)")
