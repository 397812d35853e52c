"""Text summarization (transformers seq2seq models): the second task family.

corpus.py      the seeded synthetic event reports with key facts (the offline default data)
data.py        document / reference splits (builtin, jsonl, csv)
models.py      sources (builtin tiny T5 trained here, hf:, path:), save_pretrained storage, training
transforms.py  text perturbations (typo rate, distractor sentences, buried key)
task.py        batched generation and ROUGE-L scoring against the reference
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from failfade import FailfadeError
from failfade.concepts import ConceptSpace
from failfade.numerics import keeps_denormals
from failfade.tasks.family import TaskFamily
from failfade.tasks.storage import parse_source as _parse_source
from failfade.tasks.summarization.transforms import COUNTS, LEVEL_RANGES, TRANSFORMS

if TYPE_CHECKING:
    import torch

BUILTIN_MODELS = ("tiny-t5",)  # model.source builtin:<name>


def parse_model_source(text: str, key: str) -> tuple[str, str, str | None]:
    """(kind, target, revision) of a summarizer's model.source (builtin:, hf: or path:)."""
    return _parse_source(text, key, BUILTIN_MODELS, "summarizer")


def _device(exp: dict) -> torch.device:
    from failfade.tasks.classification import device_of

    return device_of(exp)


@keeps_denormals
class SummarizationFamily(TaskFamily):
    name = "summarization"
    quality = "rouge_l"
    thread_invariant = True  # 1 vs 2 threads: identical outcomes (tests/test_threads.py)
    transforms = frozenset(TRANSFORMS)
    level_ranges = LEVEL_RANGES  # typo a rate in [0, 1]; distractors and buried counts >= 0

    def splits(self, exp: dict):
        from failfade.tasks.summarization.data import load_splits

        return load_splits(exp["data"], exp["seed"])

    def space(self, exp: dict) -> ConceptSpace:
        return ConceptSpace.from_config(exp["concepts"], self.transforms, ranges=self.level_ranges)

    def check(self, exp: dict, key: str = "experiment") -> None:
        """The model and data sources' forms (a typo otherwise waited for the model stage), and whole
        numbers where the transform counts sentences, in the concepts and in the shift probes (that
        levels are numbers, and in range, is checked with word_transforms and level_ranges)."""
        from failfade.tasks.summarization.data import check_source

        parse_model_source(exp["model"]["source"], f"{key}.model.source")
        check_source(exp["data"]["source"], f"{key}.data.source")
        first: dict[str, int] = {}
        for i, item in enumerate(exp["concepts"]):
            transform, levels = item.get("transform", item["name"]), list(item["levels"])
            if transform in first:  # a document takes one level of each edit: the second axis would replace the first
                raise FailfadeError(f"{key}.concepts[{i}].transform: {transform!r} is concepts[{first[transform]}]'s "
                                    f"transform too; a summarization transform can be one axis only (give that axis "
                                    f"all the levels)")
            first[transform] = i
            if transform in COUNTS and any(float(v) != int(v) for v in levels):
                raise FailfadeError(f"{key}.concepts[{i}].levels: {transform} levels count sentences, so they are "
                                    f"whole numbers; got {levels}")
        for j, probe in enumerate((exp.get("shift") or {}).get("probes") or []):
            for name, level in probe["apply"].items():
                if name in COUNTS and float(level) != int(level):
                    raise FailfadeError(f"{key}.shift.probes[{j}].apply.{name}: {name} levels count sentences, so "
                                        f"they are whole numbers; got {level!r}")

    def summarizer(self, exp: dict, model, tokenizer):
        from failfade.tasks.summarization.task import Summarizer

        m = exp["model"]
        return Summarizer(model, tokenizer, m["max_input_tokens"], m["max_new_tokens"], m["num_beams"])

    def load(self, exp: dict, model_dir: Path):
        from failfade.tasks.summarization import models

        model, tokenizer, card = models.load(model_dir, _device(exp))
        return self.summarizer(exp, model, tokenizer), card

    # --- the model under test -------------------------------------------------------------------------

    def unused_model_keys(self, exp: dict) -> tuple[str, ...]:
        # train_steps, lr and batch_size train the builtin T5; a hub or path model comes trained
        builtin = parse_model_source(exp["model"]["source"], "model.source")[0] == "builtin"
        return () if builtin else ("train_steps", "lr", "batch_size")

    def obtain_model(self, exp: dict, out_dir: Path, resources: Path, key: str = "model.source") -> dict:
        from failfade.tasks.summarization import models
        from failfade.tasks.summarization.task import clean_quality

        m = exp["model"]
        kind, target, rev = parse_model_source(m["source"], key)
        splits = self.splits(exp)
        history = []
        if kind == "builtin":
            docs = [r.document for r in splits.train]
            refs = [r.reference for r in splits.train]
            tokenizer = models.train_tokenizer(docs + refs)
            model = models.tiny_t5(tokenizer, exp["seed"])
            # a short-input curriculum: 30% of the pairs are the key and count sentences alone,
            # which makes copying names and numbers learnable in a few minutes of CPU
            short = [f"{r.key} {r.count}".strip() for r in splits.train[: int(0.3 * len(splits.train))]]
            history = models.train_seq2seq(model, tokenizer, docs + short, refs + refs[: len(short)], m["train_steps"],
                                           m["lr"], m["batch_size"], m["max_input_tokens"], exp["seed"],
                                           desc="train tiny-t5")
            model = model.to(_device(exp))
        else:
            folder = models.download(target, rev, resources, key) if kind == "hf" else Path(target)
            model, tokenizer = models.load_pretrained(folder, key, _device(exp))
        quality = clean_quality(self.summarizer(exp, model, tokenizer), splits.heldout)
        card = {"arch": type(model).__name__, "source": m["source"], "heldout_clean_rouge_l": quality,
                "heldout_inputs": len(splits.heldout), "train_inputs": len(splits.train),
                "validation_inputs": len(splits.validation), "seed": exp["seed"]}
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        pl.DataFrame(history or [{"step": -1, "loss": float("nan"), "seconds": 0.0}]).write_csv(out_dir / "training.csv")
        return models.save(model, tokenizer, card, out_dir)

    # --- scoring ---------------------------------------------------------------------------------------

    def build_task(self, exp: dict, model_dir: Path):
        from failfade.tasks.summarization.task import SummarizationTask

        summarizer, card = self.load(exp, model_dir)
        task = SummarizationTask(summarizer, self.splits(exp).heldout, self.space(exp), exp["seed"],
                                 exp["model"]["epsilon"], card.get("sha256"))
        m = exp["model"]
        task.settings = {k: m[k] for k in ("max_input_tokens", "max_new_tokens", "num_beams", "epsilon")}
        if any(not (r.count or r.fillers) for r in task.reports):
            # a file's documents get their distractors after the lead (they were appended after the
            # end and truncated away): outcomes cached before that change are not reused
            task.settings["distractors_at"] = "lead"
        if summarizer.prefix:  # outcomes scored without the checkpoint's prefix are not reused
            task.settings["prefix"] = summarizer.prefix
        device = next(summarizer.model.parameters()).device
        if device.type != "cpu":  # a GPU's kernels round differently: a borderline beam or Δ can flip
            task.settings["device"] = device.type
        return task

    def probe_failures(self, task, probe_spaces: list[ConceptSpace]) -> tuple[list[np.ndarray], int]:
        """Each one-cell space scored on every held-out report by a view of `task` with that space:
        the clean summaries it holds are the same for every probe."""
        n, counts = task.n_inputs, []
        for space in probe_spaces:
            view = copy.copy(task)
            view.space, view.n_cells = space, space.n_cells
            counts.append(np.asarray(view.score(np.arange(n), np.zeros(n, dtype=np.int64)).failure, bool))
        return counts, n

    # --- restructure -------------------------------------------------------------------------------------

    def fine_tune(self, exp: dict, model_dir: Path, plan: dict, out_dir: Path) -> dict:
        """Seq2seq fine-tuning with the plan's cells applied to a fraction of the training documents
        (drawn by the feedback weights; the rest stay clean) plus a term that keeps clean outputs."""
        from failfade.tasks.summarization import models
        from failfade.tasks.summarization.task import clean_quality
        from failfade.tasks.summarization.transforms import perturb_cell

        summarizer, card = self.load(exp, model_dir)
        splits, space, m = self.splits(exp), self.space(exp), exp["mitigate"]
        rng = np.random.default_rng(np.random.SeedSequence([exp["seed"], 61]))
        cells = np.array([f["cell"] for f in plan["fix"]])
        weights = np.array([f["weight"] for f in plan["fix"]], dtype=float)
        sources, clean, targets = [], [], []
        for copy_id in range(m["copies"]):
            for i, r in enumerate(splits.train):
                doc = r.document
                if rng.random() < m["perturb_fraction"]:
                    c = int(rng.choice(cells, p=weights / weights.sum()))
                    doc = perturb_cell(space, r, c, exp["seed"] + 1 + copy_id, i)
                sources.append(doc)
                clean.append(r.document)
                targets.append(r.reference)
        teacher = copy.deepcopy(summarizer.model).eval() if m["distill"] > 0 else None
        student = models.with_lora(summarizer.model, m["lora_rank"], m["lora_targets"], exp["seed"]) if m["lora_rank"] else summarizer.model
        history = models.train_seq2seq(student, summarizer.tokenizer, sources, targets, m["steps"], m["lr"],
                                       m["batch_size"], exp["model"]["max_input_tokens"], exp["seed"], teacher=teacher,
                                       distill=m["distill"], clean_sources=clean, desc="mitigate",
                                       prefix=summarizer.prefix, freeze_position_bias=m["freeze_position_bias"])
        if m["lora_rank"]:
            summarizer.model = student.merge_and_unload()  # stored like any model: one set of safetensors weights
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        pl.DataFrame(history).write_csv(out_dir / "training.csv")
        new = {k: v for k, v in card.items() if k not in ("sha256", "weights")}
        new.update(parent_sha256=card.get("sha256"), mitigation={**m, "fix_cells": cells.tolist()},
                   heldout_clean_rouge_l=clean_quality(summarizer, splits.heldout))
        return models.save(summarizer.model, summarizer.tokenizer, new, out_dir)

    # --- what people look at ---------------------------------------------------------------------------------

    def gallery(self, exp: dict, queries: pl.DataFrame, modes: pl.DataFrame, path: Path, per_mode: int,
                model_dir: Path | None = None) -> None:
        """One failing example per mode (up to 6): the clean document, the perturbed one with its
        edits marked, the reference, the summaries of both (with the model), and what was lost."""
        from failfade.plots import text_gallery
        from failfade.slices import cells_of
        from failfade.tasks.summarization.transforms import mark_edits, perturb_cell

        reports, space = self.splits(exp).heldout, self.space(exp)
        summarizer = self.load(exp, model_dir)[0] if model_dir is not None else None
        rows = []
        for m in modes.head(6).iter_rows(named=True):
            mode_cells = cells_of(m["cells"]).tolist()
            fails = queries.lazy().filter(pl.col("failure") & pl.col("cell").is_in(mode_cells)).head(1).collect()
            for q in fails.iter_rows(named=True):
                r = reports[q["input_id"]]
                doc = perturb_cell(space, r, q["cell"], exp["seed"], q["input_id"])
                lines = [f"clean document: {r.document}",
                         f"perturbed document ({space.describe_cell(q['cell'])}), edits marked: {mark_edits(r.document, doc)}",
                         f"reference: {r.reference}"]
                if summarizer is not None:
                    clean, perturbed = summarizer.summarize([r.document, doc])
                    lines += [f"summary of the clean document: {clean}", f"summary of the perturbed document: {perturbed}"]
                lines.append(f"ROUGE-L lost: {q['delta']:.2f}; key facts lost: {max(q['prediction'], 0)}")
                rows.append((f"mode {m['mode']}: {m['description']}", lines))
        text_gallery(rows, path, "One failing held-out document per failure mode ([-removed-] {+added+} words)")
