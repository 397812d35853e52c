"""Text-to-image generation (diffusers): the third task family.

pipeline.py   sources (hf: snapshot, path: folder), the Stable Diffusion folder layout, one seeded
              DDIM sampler with classifier-free guidance
models.py     the model folder: pipeline, judge and adapter pinned by one card
judges.py     the CLIP judge (image–prompt cosine below a threshold)
digits.py     the offline default's world: attribute digits, their renders and the attribute judge
training.py   the builtin tiny pixel-space diffusion model and its training
builtin.py    the shipped builtin (resources/builtin/) and the command that regenerates it
lora.py       LoRA on the UNet (peft; attention projections by default): train, save, load
ratings.py    the rating sheet, the ratings CSV, the rule that turns ratings into a plan, the
              judge-rater comparison, and the automatic stand-in raters of the shipped example
task.py       GenerationTask: a cell is a prompt (word axes fill a template), an input is a seed
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from failfade import FailfadeError
from failfade.concepts import ConceptSpace
from failfade.numerics import keeps_denormals
from failfade.tasks.family import TaskFamily

CHECK_CHUNK = 1024  # images drawn and judged at once by the checks (a 512 px chunk: about 3 GB in float32)


def judge_question(bias: dict | None) -> dict | None:
    """What of `model.bias` the CLIP judge asks (its question and classes): the card's and the
    outcome cache's part of it; the target only measures the answers (bias.csv)."""
    return None if not bias else {"question": bias["question"], "classes": list(bias["classes"])}


def judged(sampler, judge, prompts: list[str], seeds: list[int], verdicts: bool = False):
    """The judge's failure flags (and, with `verdicts`, its per-attribute verdicts) on one image per
    (prompts[i], seeds[i]), drawn CHECK_CHUNK at a time: the checks draw a prompt's images
    for many seeds (the fresh-seed check 17,280 at once), which with a real Stable Diffusion held
    tens of GB of images before the judge saw any."""
    fails, verd = [], []
    for s in range(0, max(len(prompts), 1), CHECK_CHUNK):
        ps = prompts[s : s + CHECK_CHUNK]
        images = sampler.generate(ps, list(seeds[s : s + CHECK_CHUNK]))
        fails.append(np.asarray(judge(images, ps)[2], dtype=bool))
        if verdicts:
            verd.append(judge.verdicts(images, ps))
    fail = np.concatenate(fails)
    if not verdicts:
        return fail
    return fail, {k: np.concatenate([v[k] for v in verd]) for k in verd[0]}


if TYPE_CHECKING:
    import torch

TRANSFORMS = frozenset({"word"})  # an axis fills the template's slot of the same name with its words


def _device(exp: dict) -> torch.device:
    from failfade.tasks.classification import device_of

    return device_of(exp)


@keeps_denormals
def _check_question(question: str, key: str) -> None:
    """The bias question's one `{}`, where the class goes: any other field ({x}, {0}, a lone brace)
    failed only when the first image was judged."""
    import string

    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(question) if name is not None]
    except ValueError as e:  # a lone { or }
        raise FailfadeError(f"{key}: {question!r} is not a format string ({e}); write {{{{ and }}}} for a literal "
                            "brace") from None
    if fields != [("", "", None)]:
        raise FailfadeError(f"{key}: {question!r} must hold exactly one {{}} (where the class goes) and no other "
                            f"field; found {['{' + n + (':' + sp if sp else '') + ('!' + c if c else '') + '}' for n, sp, c in fields] or 'none'}")


def _attributes(idx: tuple[int, ...]) -> str:
    from failfade.tasks.generation.prompts import HEADS

    return " ".join(vocab[i] for vocab, i in zip(HEADS, idx) if i >= 0) or "nothing"


class GenerationFamily(TaskFamily):
    name = "generation"
    quality = "judge_pass"
    transforms = TRANSFORMS
    word_transforms = TRANSFORMS

    def space(self, exp: dict) -> ConceptSpace:
        return ConceptSpace.from_config(exp["concepts"], self.transforms)

    def check(self, exp: dict, key: str = "experiment") -> None:
        """The model (and CLIP judge) sources' forms; every concept axis has its {slot} in
        data.template, and the template has no other slot."""
        import string

        from failfade.tasks.generation.prompts import parse_source

        kind = parse_source(exp["model"]["source"], f"{key}.model.source")[0]
        if kind == "hf" and not (exp.get("mitigate") or {}).get("images"):
            # digit renders train a pipeline of the builtin's pixel format only: a Stable Diffusion run
            # failed at its mitigate stage, after the whole exploration, blaming data.template (a path:
            # pipeline's format is checked when the mitigate stage loads it)
            raise FailfadeError(f"{key}.mitigate.images: an hf: model is fine-tuned on a folder of image + caption "
                                "pairs (a.png + a.txt) of the prompts to fix, at the pipeline's resolution; set "
                                "mitigate.images (digit renders train the builtin's pixel format only)")
        if exp["model"]["judge"] == "clip":
            self.clip_judge_source(exp, f"{key}.model.judge_source")

        names = [c["name"] for c in exp["concepts"]]
        template = exp["data"]["template"]
        try:
            parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
        except ValueError as e:
            raise FailfadeError(f"{key}.data.template: {template!r} is not a template ({e})") from None
        for f, spec, conv in parsed:
            if spec or conv:  # a level is a word: `{digit:d}` fails to format it, `{digit!r}` quotes it
                raise FailfadeError(f"{key}.data.template: slot {{{f}{'!' + conv if conv else ''}{':' + spec if spec else ''}}} "
                                    f"has a conversion or format spec; write {{{f}}}")
        slots = [f for f, _, _ in parsed]
        missing = [n for n in names if n not in slots]
        if missing:
            raise FailfadeError(f"{key}.data.template: {template!r} has no slot for axis {missing[0]!r} (write {{{missing[0]}}})")
        extra = [f for f in slots if f not in names]
        if extra:
            raise FailfadeError(f"{key}.data.template: slot {{{extra[0]}}} is not a concept axis; axes are {names}")
        if (exp.get("shift") or {}).get("probes"):
            raise FailfadeError(f"{key}.shift.probes: text-to-image has no off-grid transforms to probe with (a `word` "
                                "level is a prompt word, not a transform); its probes are the fixed cells, scored "
                                "on every held-out seed: remove the list")
        bias = exp["model"].get("bias")
        if bias:
            if exp["model"]["judge"] != "clip":
                raise FailfadeError(f"{key}.model.bias: needs judge: clip (the zero-shot question is asked of CLIP)")
            _check_question(bias["question"], f"{key}.model.bias.question")
            t = bias.get("target")
            if t is not None and (len(t) != len(bias["classes"]) or min(t) < 0 or abs(sum(t) - 1) > 1e-6):
                raise FailfadeError(f"{key}.model.bias.target: {t} must give one share per class "
                                    f"({len(bias['classes'])}), each >= 0, summing to 1")
        if exp["model"]["judge"] == "attribute":
            self.check_attribute_words(exp, key)
        self.check_prompt_lengths(exp, key)

    def check_attribute_words(self, exp: dict, key: str) -> None:
        """The attribute judge sees a digit, a thickness and a size: every level of every axis must
        name one of them (`huge` named none, so its cells could never fail on size)."""
        from failfade.tasks.generation import prompts as D

        for i, axis in enumerate(exp["concepts"]):
            for level in axis["levels"]:
                if all(n < 0 for n in D.requested(str(level))):
                    raise FailfadeError(
                        f"{key}.concepts[{i}].levels: {level!r} names no digit, thickness or size that the attribute "
                        f"judge knows (digits {', '.join(D.DIGITS)}; thickness {', '.join(D.THICKNESS)}; size "
                        f"{', '.join(D.SIZES)}); for other words use judge: clip")
        # the judge reads a whole prompt: the template's own words must not name an attribute before
        # the cell's words do ("one {thickness} {size} {digit}" asked every cell for a one)
        space = self.space(exp)
        for cell, text in enumerate(self.prompts(exp, space)):
            named = [D.requested(a.words[i] if a.words else a.label(i)) for a, i in zip(space.axes, space.coords([cell])[0])]
            want = tuple(max((n[h] for n in named), default=-1) for h in range(len(D.HEADS)))
            if D.requested(text) != want:
                raise FailfadeError(f"{key}.data.template: the attribute judge would read the prompt {text!r} as asking "
                                    f"for {_attributes(D.requested(text))}, but its levels name {_attributes(want)}: "
                                    "the template's own words must not name a digit, thickness or size")

    def check_prompt_lengths(self, exp: dict, key: str) -> None:
        """Every prompt fits the pipeline's tokenizer, when its files are here before the model stage
        (the builtin, a path: folder); an hf: pipeline is checked by the model stage, and every
        model folder when it is loaded."""
        from failfade.tasks.generation.prompts import check_prompt_lengths, tokenizer_folder

        folder = tokenizer_folder(exp["model"]["source"])
        if folder is None or not folder.is_dir():
            return
        try:
            from transformers import CLIPTokenizer

            tokenizer = CLIPTokenizer.from_pretrained(str(folder))
        except Exception:  # not a tokenizer folder: the model stage names the pipeline that is not one
            return
        check_prompt_lengths(tokenizer, self.prompts(exp), f"{key}.data.template", str(folder))

    def prompts(self, exp: dict, space: ConceptSpace | None = None) -> list[str]:
        from failfade.tasks.generation.prompts import prompt_of

        space = space or self.space(exp)
        return [prompt_of(space, exp["data"]["template"], c) for c in range(space.n_cells)]

    # --- the model under test -------------------------------------------------------------------------

    def unused_model_keys(self, exp: dict) -> tuple[str, ...]:
        # the attribute judge is trained here (judge_steps); the CLIP judge is downloaded (judge_source)
        # and decides by its threshold
        return ("judge_source", "threshold") if exp["model"]["judge"] == "attribute" else ("judge_steps",)

    def obtain_model(self, exp: dict, out_dir: Path, resources: Path, key: str = "model.source") -> dict:
        from failfade.tasks.generation import builtin, models
        from failfade.tasks.generation.pipeline import download, load_components, save_components
        from failfade.tasks.generation.prompts import check_prompt_lengths, parse_source

        m, out_dir = exp["model"], Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        kind, target, rev = parse_source(m["source"], key)
        if kind == "builtin":
            src = builtin.folder(target)
            builtin.check(src)
        else:
            src = download(target, rev, resources, key) if kind == "hf" else Path(target)
        c = load_components(src, key)  # fails on a folder that is not a pipeline, before anything is copied
        check_prompt_lengths(c.tokenizer, self.prompts(exp), "data.template", f"{key}: {m['source']}")
        # a stale judge/ (an attribute judge left by a run before model.judge became clip) would hold a
        # weight file the new card does not pin, and the card check refuses unpinned weights
        for stale in ("pipeline", "judge"):
            if (out_dir / stale).exists():
                shutil.rmtree(out_dir / stale)
        files = ["pipeline/" + f for f in save_components(c, out_dir / "pipeline")]
        card = {"source": m["source"], "pipeline": "pipeline", "seed": exp["seed"], "unet_parameters":
                sum(p.numel() for p in c.unet.parameters()), "latent": c.vae is not None}
        judge_card = self.obtain_judge(exp, out_dir, resources)
        files += judge_card.pop("files", [])
        pinned = judge_card.pop("pinned", {})  # a CLIP judge's files, where they are
        card["judge"] = judge_card
        card["files"] = {**models.digest_files(out_dir, files), **pinned}
        # the model under test is not trained here (the builtin's training is in its own card)
        pl.DataFrame([{"step": -1, "loss": float("nan"), "seconds": 0.0}]).write_csv(out_dir / "training.csv")
        models.write_card(card, out_dir)  # a first card, so the clean check can load the folder
        card.update(self.clean_check(exp, out_dir))
        return models.write_card(card, out_dir)

    def clip_judge_source(self, exp: dict, key: str = "model.judge_source") -> tuple[str, str, str | None]:
        """(kind, target, revision) of the CLIP judge's source: hf: or path:, not a builtin."""
        from failfade.tasks.generation.prompts import parse_source

        kind, target, rev = parse_source(exp["model"]["judge_source"], key)
        if kind == "builtin":
            raise FailfadeError(f"{key}: the CLIP judge needs hf:<owner>/<name> or path:<CLIPModel folder>")
        return kind, target, rev

    def obtain_judge(self, exp: dict, out_dir: Path, resources: Path) -> dict:
        """The attribute judge trained here (seeded) on renders of the training digits, with its
        accuracy on renders of held-out digits; or the CLIP judge's source."""
        from safetensors.torch import save_file

        from failfade.tasks.generation import digits as D, models
        from failfade.tasks.generation.models import JUDGE_WEIGHTS

        m = exp["model"]
        if m["judge"] == "clip":
            from failfade.tasks.generation.judges import ClipJudge
            from failfade.tasks.generation.pipeline import download

            kind, target, rev = self.clip_judge_source(exp)
            folder = download(target, rev, resources, "model.judge_source") if kind == "hf" else Path(target)
            ClipJudge.load(folder, "model.judge_source", m["threshold"])  # fails here, at the model stage
            # its files are pinned by the card like the pipeline's: they decide every outcome, so
            # they key the outcome cache (through the card's sha256), and a judge edited in place is refused
            return {"kind": "clip", "source": m["judge_source"], "folder": str(Path(folder).resolve()),
                    "threshold": m["threshold"], "bias": judge_question(m.get("bias")),
                    "pinned": models.pin_folder(folder, models.CLIP_JUDGE)}
        imgs, labels = D.load_digits_images()
        train, heldout = D.split(len(imgs))
        net = D.train_judge(imgs[train], labels[train], m["judge_steps"], exp["seed"])
        (Path(out_dir) / "judge").mkdir(exist_ok=True)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(Path(out_dir) / JUDGE_WEIGHTS))
        accuracy = D.judge_accuracy(net, imgs[heldout], labels[heldout], exp["seed"])
        return {"kind": "attribute", "steps": m["judge_steps"], "heldout_render_accuracy": accuracy,
                "heldout_digits": int(len(heldout)), "files": [JUDGE_WEIGHTS]}

    def load(self, exp: dict, model_dir: Path, device: torch.device | None = None, with_judge: bool = True):
        """(sampler, judge, card) of a model folder: base pipeline (+ LoRA adapter) and its judge
        (None when `with_judge` is false: what only draws images need not load CLIP)."""
        from failfade.tasks.generation import models
        from failfade.tasks.generation.lora import load_adapter
        from failfade.tasks.generation.pipeline import Sampler, load_components
        from failfade.tasks.generation.prompts import check_prompt_lengths

        device = device or _device(exp)
        model_dir = Path(model_dir)
        card = models.read_card(model_dir)
        c = load_components(models.pipeline_dir(model_dir, card), str(model_dir))
        check_prompt_lengths(c.tokenizer, self.prompts(exp), "data.template", f"{model_dir}'s pipeline")
        if (model_dir / models.ADAPTER).is_dir():
            load_adapter(c.unet, model_dir / models.ADAPTER, str(model_dir))
        if device.type == "cuda" and exp["model"].get("fp16_on_gpu", True):
            for mod in (c.unet, c.text_encoder, c.vae):
                if mod is not None:
                    mod.half()
        c.to(device)
        m = exp["model"]
        sampler = Sampler(c, m["steps"], m["guidance"], m["batch_size"])
        return sampler, self.judge(exp, model_dir, card, device) if with_judge else None, card

    def judge(self, exp: dict, model_dir: Path, card: dict, device: torch.device):
        j = card.get("judge", {})
        if j.get("kind") not in ("clip", "attribute"):
            raise FailfadeError(f"{Path(model_dir) / 'model.json'}: judge.kind must be clip or attribute, got "
                                f"{j.get('kind')!r}: rebuild the model stage (failfade run --forcerun model)")
        if j["kind"] == "clip":
            from failfade.tasks.generation.judges import ClipJudge

            return ClipJudge.load(Path(j["folder"]), f"{model_dir}/model.json judge.folder", j["threshold"], device,
                                  bias=j.get("bias"))
        from safetensors.torch import load_file

        from failfade.tasks.generation import digits as D
        from failfade.tasks.generation.models import JUDGE_WEIGHTS

        net = D.JudgeNet()
        try:  # pinned by the card, so this is a file changed together with its digest
            net.load_state_dict(load_file(str(Path(model_dir) / JUDGE_WEIGHTS)))
        except Exception as e:  # safetensors raises several types for truncated or garbage files
            raise FailfadeError(f"{Path(model_dir) / JUDGE_WEIGHTS}: cannot be read as the attribute judge's weights "
                                f"({type(e).__name__}: {str(e)[:200]})") from None
        return D.AttributeJudge(net.to(device))

    def clean_check(self, exp: dict, model_dir: Path, untargeted=None) -> dict:
        """The judge's pass rate on the model's images of every cell at the first `model.check_seeds`
        held-out seeds (per attribute for the attribute judge); with `untargeted`, also the rate
        on those cells alone (`untargeted_pass`), from the same images."""
        from failfade.tasks.generation.pipeline import seed_of

        sampler, judge, _ = self.load(exp, model_dir)
        prompts = self.prompts(exp)
        k = min(exp["model"]["check_seeds"], exp["data"]["seeds"])
        cell_of = np.repeat(np.arange(len(prompts)), k)
        ps = [prompts[int(c)] for c in cell_of]
        seeds = [seed_of(exp["seed"], i) for _ in prompts for i in range(k)]
        if hasattr(judge, "verdicts"):
            fail, v = judged(sampler, judge, ps, seeds, verdicts=True)
        else:
            fail, v = judged(sampler, judge, ps, seeds), None
        out = {"heldout_clean_judge_pass": float(1 - fail.mean()), "clean_check_images": len(ps)}
        if v is not None:
            out["attribute_pass"] = {a: float((v[a] == 1).sum() / max((v[a] >= 0).sum(), 1)) for a in ("digit", "thickness", "size")}
        if untargeted is not None:
            keep = np.isin(cell_of, np.asarray(untargeted))
            out["untargeted_pass"], out["untargeted_images"] = float(1 - fail[keep].mean()), int(keep.sum())
        return out

    # --- scoring ---------------------------------------------------------------------------------------

    def build_task(self, exp: dict, model_dir: Path):
        import torch

        from failfade.tasks.generation.task import GenerationTask

        sampler, judge, card = self.load(exp, model_dir)
        task = GenerationTask(sampler, judge, self.space(exp), exp["data"]["template"], exp["data"]["seeds"],
                              exp["seed"], card["sha256"])
        m = exp["model"]
        # the CLIP judge's threshold decides its verdicts; the attribute judge has none
        task.settings = {k: m[k] for k in ("steps", "guidance", "judge") + (("threshold",) if m["judge"] == "clip" else ())}
        # the zero-shot question a CLIP judge asks decides its `prediction` (bias.csv reads it)
        task.settings["bias"] = card["judge"].get("bias")
        # fp16 on a GPU can flip a borderline verdict: part of the outcome cache's key
        unet = next(sampler.c.unet.parameters())
        task.settings["precision"] = "fp16" if unet.dtype == torch.float16 else "fp32"
        if unet.device.type != "cpu":  # so can a GPU's kernels, which round differently, in any precision
            task.settings["device"] = unet.device.type
        return task

    def probe_failures(self, task, probe_spaces: list[ConceptSpace]) -> tuple[list[np.ndarray], int]:
        """Every held-out seed under each one-cell space's prompt (generation knows no off-grid
        transforms: its probes are the fixed cells)."""
        from failfade.tasks.generation.pipeline import seed_of
        from failfade.tasks.generation.prompts import prompt_of

        n = task.n_inputs
        seeds = [seed_of(task.seed, i) for i in range(n)]
        counts = []
        for space in probe_spaces:
            ps = [prompt_of(space, task.template, 0)] * n
            counts.append(judged(task.sampler, task.judge, ps, seeds))
        return counts, n

    def fresh_seed_check(self, exp: dict, pre_dir: Path, post_dir: Path, plan: dict, n_seeds: int) -> dict:
        """Every cell before and after mitigation on `n_seeds` seeds that no stage uses
        (pipeline.fresh_seed_of): the mitigation's settings were chosen by looking at the held-out
        seeds, so its effect measured there can be optimistic; here it is measured on images that
        played no part in the choice. Returns the fixed cells pooled (probes.pooled_change with the
        per-seed table, as shift.json's `targeted_heldout`: every prompt shares the seeds, so the
        change's interval is over the seeds, paired), the judge's pass rate on the other cells, and
        the cells that are failure cells by the landscape's rule (interval lower bound >= the
        threshold)."""
        from failfade.probes import input_table, paired_counts, pooled_change, targeted_table
        from failfade.stats import wilson_interval
        from failfade.tasks.generation.pipeline import fresh_seed_of

        space, prompts = self.space(exp), self.prompts(exp)
        seeds = [fresh_seed_of(exp["seed"], i) for i in range(n_seeds)]
        ps = [p for p in prompts for _ in seeds]
        conf, tau = exp["landscape"]["confidence"], exp["landscape"]["failure_rate_threshold"]
        fails = {}
        for side, model_dir in (("pre", pre_dir), ("post", post_dir)):
            sampler, judge, _ = self.load(exp, Path(model_dir))
            fails[side] = judged(sampler, judge, ps, seeds * len(prompts)).reshape(len(prompts), n_seeds)
        fix = np.array([int(f["cell"]) for f in plan["fix"]], dtype=np.int64)
        other = np.setdiff1d(np.arange(space.n_cells), fix)
        on_fixed = {side: [f[c] for c in fix] for side, f in fails.items()}  # each fixed cell's per-seed outcomes
        table = targeted_table(space, plan, n=n_seeds, confidence=conf, **paired_counts(on_fixed["pre"], on_fixed["post"]))
        failing = {}
        for side, f in fails.items():
            lo, _ = wilson_interval(f.sum(1), np.full(len(f), n_seeds), conf)
            failing[side] = lo >= tau
        per_seed = input_table(on_fixed["pre"], on_fixed["post"])
        return {"seeds": n_seeds, "images_per_side": len(ps), "fixed": pooled_change(table, conf, per_seed),
                "other_pass": {side: float(1 - f[other].mean()) for side, f in fails.items()},
                "other_cells": int(len(other)),
                "failure_cells": {side: [int(c) for c in np.flatnonzero(v)] for side, v in failing.items()},
                "new_failure_cells": [space.describe_cell(int(c)) for c in other if failing["post"][c] and not failing["pre"][c]]}

    # --- restructure -------------------------------------------------------------------------------------

    def fine_tune(self, exp: dict, model_dir: Path, plan: dict, out_dir: Path) -> dict:
        """LoRA on the UNet's attention projections, trained on labelled images: for the builtin,
        renders of the training digits with the fixed cells' attributes (a `perturb_fraction` share
        of each batch, drawn by the feedback weights) and of every cell (the rest, which keeps the
        untargeted prompts as they were); for other models, the image + caption pairs in
        `mitigate.images`. The base stays where it is; the new folder holds the adapter."""
        import polars as pl

        from failfade.tasks.generation import lora, models
        from failfade.tasks.generation.pipeline import load_components

        model_dir, out_dir, m = Path(model_dir), Path(out_dir), exp["mitigate"]
        out_dir.mkdir(parents=True, exist_ok=True)
        card = models.read_card(model_dir)
        if (model_dir / models.ADAPTER).is_dir():
            raise FailfadeError(f"{model_dir}: already carries a LoRA adapter; mitigate its base model instead")
        space, prompts = self.space(exp), self.prompts(exp)
        c = load_components(models.pipeline_dir(model_dir, card), str(model_dir)).to(_device(exp))
        fix = np.array([int(f["cell"]) for f in plan["fix"]])
        weights = np.array([f["weight"] for f in plan["fix"]], dtype=float)
        batches = self.training_batches(exp, prompts, fix, weights / weights.sum(), m, image_format(c))
        timesteps = None
        if m["timesteps"] == "sampler":  # the noise levels the fixed-step sampler asks the UNet at
            c.scheduler.set_timesteps(exp["model"]["steps"])
            timesteps = c.scheduler.timesteps.tolist()
        history = lora.train_lora(c, batches, m["steps"], m["lr"], m["rank"], exp["seed"], m["alpha"], m["targets"],
                                  desc="mitigate (LoRA)", timesteps=timesteps)
        if (out_dir / models.ADAPTER).exists():
            shutil.rmtree(out_dir / models.ADAPTER)
        adapter_card = {"rank": m["rank"], "alpha": m["alpha"] or m["rank"], "targets": list(m["targets"]),
                        "steps": m["steps"], "lr": m["lr"], "fix_cells": fix.tolist(), "base_sha256": card["sha256"]}
        lora.save_adapter(c.unet, out_dir / models.ADAPTER, adapter_card)
        pl.DataFrame(history).write_csv(out_dir / "training.csv")
        if (out_dir / "judge").exists():
            shutil.rmtree(out_dir / "judge")
        if (model_dir / "judge").is_dir():
            shutil.copytree(model_dir / "judge", out_dir / "judge")
        files = {f: d for f, d in card["files"].items() if models.pinned_elsewhere(f)}
        files.update(models.digest_files(out_dir, [f for f in card["files"] if not models.pinned_elsewhere(f)]
                                         + [f"{models.ADAPTER}/{models.ADAPTER_WEIGHTS}"]))
        base = models.pipeline_dir(model_dir, card).resolve()
        new = {k: v for k, v in card.items() if k not in ("sha256", "files", "pipeline", "written_with")}
        new.update(pipeline=os.path.relpath(base, out_dir.resolve()), files=files, parent_sha256=card["sha256"],
                   mitigation={**m, "fix_cells": fix.tolist()})
        models.write_card(new, out_dir)
        untargeted = np.setdiff1d(np.arange(space.n_cells), fix)
        before = self.clean_check(exp, model_dir, untargeted)
        after = self.clean_check(exp, out_dir, untargeted)
        new.update({k: v for k, v in after.items() if not k.startswith("untargeted_")})
        new["clean_check"] = {"what": "the judge's pass rate on the untargeted prompts", "cells": int(len(untargeted)),
                              "images": after["untargeted_images"], "pre": before["untargeted_pass"],
                              "post": after["untargeted_pass"]}
        return models.write_card(new, out_dir)

    def training_batches(self, exp: dict, prompts: list[str], fix: np.ndarray, p_fix: np.ndarray, m: dict,
                         fmt: tuple[int, int] | None = None):
        """batches(step, rng) -> (images, prompts) for the LoRA. `fmt`: the (channels, side) of the
        images the pipeline trains on (image_format), checked against the images before any step."""
        if m.get("images"):
            return folder_batches(Path(m["images"]), m["batch_size"], "mitigate.images", fmt)
        from failfade.tasks.generation import digits as D

        if fmt is not None and fmt != (1, D.SIDE):
            raise FailfadeError(f"mitigate.images: this pipeline trains on {fmt[1]}x{fmt[1]} px images with {fmt[0]} "
                                f"channel(s); the digit renders (1 channel, {D.SIDE}x{D.SIDE} px) train the builtin's "
                                "pixel format only: set mitigate.images to a folder of image + caption pairs")

        imgs, labels = D.load_digits_images()
        train, _ = D.split(len(imgs))
        imgs, labels = imgs[train], labels[train]
        by_digit = {d: np.flatnonzero(labels == d) for d in range(len(D.DIGITS))}
        want = [D.requested(p) for p in prompts]
        if any(min(w) < 0 for w in want):
            raise FailfadeError("data.template: the builtin's LoRA data are renders, so every prompt must name a digit, "
                                "a thickness and a size")

        others = np.setdiff1d(np.arange(len(prompts)), fix) if m["preserve"] else np.arange(len(prompts))
        if not len(others):  # `*,fix` (or every explored cell rated failing): nothing is left to preserve
            import logging

            logging.getLogger("failfade").warning("mitigate: the plan fixes every prompt, so no image preserves "
                                                  "another: each batch renders fixed prompts only")
        # the other cells the adapter is likeliest to move: one word away from a fixed prompt
        space = self.space(exp)
        near = np.setdiff1d(np.unique([nb for c in fix for nb in space.neighbours(int(c))]), fix)
        p_other = np.full(len(others), 1.0 / max(len(others), 1))
        if m["preserve"] and len(near) and m["preserve_near"] > 0:
            p_other = (1 - m["preserve_near"]) * p_other + m["preserve_near"] * np.isin(others, near) / len(near)

        def batches(step: int, rng: np.random.Generator):
            n_fix = int(round(m["perturb_fraction"] * m["batch_size"])) if len(others) else m["batch_size"]
            fixed = rng.choice(fix, n_fix, p=p_fix)  # first: the stream as it was
            rest = rng.choice(others, m["batch_size"] - n_fix, p=p_other) if len(others) else np.zeros(0, np.int64)
            cells = np.concatenate([fixed, rest])
            digit, thick, size = (np.array([want[c][h] for c in cells]) for h in range(3))
            idx = np.array([rng.choice(by_digit[d]) for d in digit])
            x = D.render(imgs[idx], np.array(D.THICKNESS)[thick], np.array(D.SIZES)[size])
            ps = [prompts[c] for c in cells]
            if not m["preserve"]:
                return x, ps
            # the rest keep the base model's answers, for their prompts and (one in ten) the empty
            # prompt, which classifier-free guidance also asks
            preserve = np.arange(len(cells)) >= n_fix
            for i in np.flatnonzero(preserve & (rng.random(len(cells)) < 0.1)):
                ps[i] = ""
            return x, ps, preserve

        return batches

    # --- what people look at ---------------------------------------------------------------------------------

    def bias(self, exp: dict, queries: pl.DataFrame) -> pl.DataFrame | None:
        """With `model.bias` (a CLIP judge's zero-shot question), each cell's share of every class,
        its distance from the target and that distance's noise floor (failfade.tasks.generation.bias);
        None without it."""
        if not exp["model"].get("bias"):
            return None
        from failfade.tasks.generation.bias import bias_table

        space = self.space(exp)
        return bias_table(queries.lazy().collect(), space.n_cells, exp["model"]["bias"], self.prompts(exp, space),
                          exp["seed"])

    def gallery(self, exp: dict, queries: pl.DataFrame, modes: pl.DataFrame, path: Path, per_mode: int,
                model_dir: Path | None = None) -> None:
        """The sample sheet: one panel per cell (its prompt's first `per_mode` held-out seeds, tiled),
        captioned with the cell's failure rate as the landscape estimates it and, for the attribute
        judge, the share of its images whose digit the judge recognises (same weighting), so that an
        immature model is not read as bias; failure cells are outlined. Beside it: the rating sheet
        (`rating_sheet`, a stage of its own) for people to rate images."""
        from failfade.landscape import cell_table
        from failfade.plots import sample_sheet
        from failfade.tasks.generation.pipeline import seed_of

        space, ls = self.space(exp), exp["landscape"]
        prompts = self.prompts(exp, space)
        queries = queries.lazy().collect()  # a generation landscape is small: thousands of images
        cells = cell_table(space, queries, ls["failure_rate_threshold"], ls["confidence"])
        rate, failing = cells["failure_rate"].to_numpy(), cells["is_failure"].to_numpy()
        digit = self.digit_recognised(exp, queries, prompts, space.n_cells)
        table = self.bias(exp, queries)  # per-cell bias beside the failure rate (bias.csv: the bias stage)
        bias = None if table is None else table["tv"].to_numpy()
        if model_dir is None:
            sample_sheet({}, ["-"], ["-"], path, "The sample sheet needs the explored model")
            return
        sampler, _, _ = self.load(exp, model_dir, with_judge=False)
        k = max(1, min(per_mode, 4, exp["data"]["seeds"]))
        images = sampler.generate([p for p in prompts for _ in range(k)],
                                  [seed_of(exp["seed"], i) for _ in prompts for i in range(k)])
        images = images.permute(0, 2, 3, 1).numpy()
        images = images[..., 0] if images.shape[-1] == 1 else images
        rows, cols, panels = self.sheet_layout(space)
        side = int(np.ceil(np.sqrt(k)))
        for c in range(space.n_cells):
            tile = tile_images(images[c * k:(c + 1) * k], side)
            cap = "not explored" if np.isnan(rate[c]) else f"fail {rate[c]:.0%}" + ("" if digit is None else f" · digit {digit[c]:.0%}")
            if bias is not None and not np.isnan(bias[c]):
                cap += f" · bias TV {bias[c]:.2f}"
            panels[(rows[c], cols[c])] = (tile, cap, bool(failing[c]))
        sample_sheet(panels, list(dict.fromkeys(rows)), list(dict.fromkeys(cols)), path,
                     f"One sample sheet per cell ({k} held-out seeds each): the landscape's failure rate"
                     + ("" if digit is None else ", digit recognised by the judge") + "; failure cells in red")

    def rating_sheet(self, exp: dict, cells: pl.DataFrame, modes: pl.DataFrame, out_dir: Path, model_dir: Path) -> None:
        """The images people rate, grouped by the landscape's failure modes (`cells` holds each cell's
        `mode`: a cell in several modes goes under the first, best one, as in cells.csv):
        rating_sheet.html, the same as ratings_template.csv to fill in a spreadsheet, and the judge's
        verdicts on them (sheet_judged.csv), which the ratings are compared with."""
        from failfade.tasks.generation import ratings

        space = self.space(exp)
        sampler, judge, _ = self.load(exp, model_dir)
        ratings.write_sheet(exp, space, self.prompts(exp, space), modes, cells, sampler, Path(out_dir),
                            self.rating_ids(exp), judge)

    def sheet_layout(self, space: ConceptSpace):
        """Rows: the last axis's words; columns: the other axes' combinations."""
        coords = space.all_coords()
        last = space.axes[-1]
        rows = [last.label(int(c[-1])) for c in coords]
        cols = [" ".join(a.label(int(i)) for a, i in zip(space.axes[:-1], c[:-1])) or "-" for c in coords]
        return rows, cols, {}

    def rating_ids(self, exp: dict) -> list[int]:
        """The seeds whose images go on the rating sheet (the first few held-out inputs)."""
        return list(range(min(3, exp["data"]["seeds"])))

    def digit_recognised(self, exp: dict, queries: pl.DataFrame, prompts: list[str], n_cells: int):
        """Per cell, the share of its queried images in which the attribute judge saw the requested
        digit (the landscape's weighting); None for other judges or prompts that name no digit."""
        from failfade.landscape import propensities
        from failfade.stats import weighted_cell_rates
        from failfade.tasks.generation import digits as D

        if exp["model"]["judge"] != "attribute":
            return None
        want = np.array([D.requested(p)[0] for p in prompts])
        if (want < 0).any() or queries.height == 0:
            return None
        cells = queries["cell"].to_numpy()
        ok = queries["prediction"].to_numpy() == want[cells]
        rate, _, _ = weighted_cell_rates(cells, ok, propensities(queries), n_cells)
        return rate


def tile_images(images: np.ndarray, side: int) -> np.ndarray:
    """k images (H, W[, C]) tiled into a side × side square (blank where k < side²)."""
    k, h, w = images.shape[:3]
    out = np.zeros((side * h, side * w) + images.shape[3:], dtype=images.dtype)
    for i in range(k):
        r, c = divmod(i, side)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = images[i]
    return out


def image_format(c) -> tuple[int, int]:
    """(channels, side in px) of the images pipeline `c` is trained on: its UNet's own input for a
    pixel-space model; the VAE's input, at the UNet's latent size times the VAE's downsampling,
    for a latent one."""
    unet = c.unet.config
    if c.vae is None:
        return int(unet.in_channels), int(unet.sample_size)
    vae = c.vae.config
    return int(vae.in_channels), int(unet.sample_size) * 2 ** (len(vae.block_out_channels) - 1)


def folder_batches(folder: Path, batch_size: int, key: str, fmt: tuple[int, int] | None = None):
    """batches from a folder of image + caption pairs (a.png + a.txt), as in the paper's curated set."""
    from PIL import Image

    if fmt is not None and fmt[0] not in (1, 3):  # before reading any file
        raise FailfadeError(f"{key}: this pipeline trains on {fmt[0]}-channel images; a folder of images gives 1 or 3")

    if not folder.is_dir():
        raise FailfadeError(f"{key}: {folder} is not a folder of image + caption pairs")
    pairs, size = [], None
    for img in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")):
        cap = img.with_suffix(".txt")
        if not cap.is_file():
            raise FailfadeError(f"{key}: {img} has no caption file {cap.name}")
        try:
            caption = cap.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError as e:
            raise FailfadeError(f"{key}: {cap}: the caption is not UTF-8 text ({e.reason} at byte {e.start})") from None
        # checked here, from each header, not mid-training: a batch of mixed sizes cannot be stacked
        try:
            with Image.open(img) as im:
                this = im.size
        except Exception as e:  # PIL raises several kinds for a truncated or foreign file
            raise FailfadeError(f"{key}: {img}: not a readable image ({type(e).__name__}: {str(e)[:120]})") from None
        if size is not None and this != size:
            raise FailfadeError(f"{key}: {img} is {this[0]}x{this[1]} px, the images before it {size[0]}x{size[1]}: "
                                f"every training image must have one size (the pipeline's resolution)")
        if fmt is not None and this != (fmt[1], fmt[1]):  # the noise and the latents would not match mid-training
            raise FailfadeError(f"{key}: {img} is {this[0]}x{this[1]} px; this pipeline trains on {fmt[1]}x{fmt[1]} px "
                                "images")
        size = this
        pairs.append((img, caption))
    if not pairs:
        raise FailfadeError(f"{key}: {folder} holds no .png/.jpg images")
    mode = "L" if fmt is not None and fmt[0] == 1 else "RGB"  # a 1-channel pixel model reads greyscale
    import torch
    from torchvision.transforms.functional import pil_to_tensor

    def batches(step: int, rng: np.random.Generator):
        pick = rng.integers(0, len(pairs), batch_size)
        x = [pil_to_tensor(Image.open(pairs[i][0]).convert(mode)).float() / 255.0 for i in pick]
        return torch.stack(x), [pairs[i][1] for i in pick]

    return batches
