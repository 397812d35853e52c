"""The text-to-image family's first slice: pipelines loaded from folders, seeded sampling, the CLIP
judge and word axes, on tiny random components that the tests build and save here (no hub)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from failfade import FailfadeError
from failfade.concepts import ConceptSpace

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_tokenizer():
    """A CLIP tokenizer with a byte-level vocabulary and no merges (transformers 5 takes `vocab=`)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    assert len(tok) == len(vocab) > 500  # the silent 2-token vocabulary of the legacy kwargs would fail here
    return tok


def _text_config(vocab: int) -> dict:
    return dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=vocab,
                max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)


def build_pipeline(out: Path, latent: bool = True, seed: int = 0) -> Path:
    """A Stable-Diffusion-layout pipeline (CLIP text encoder, UNet with cross-attention, DDIM, and a
    VAE when `latent`), random weights, written with save_pretrained."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    CLIPTextModel(CLIPTextConfig(**_text_config(len(tok)))).save_pretrained(out / "text_encoder")
    tok.save_pretrained(out / "tokenizer")
    UNet2DConditionModel(sample_size=8 if latent else 16, in_channels=4 if latent else 1, out_channels=4 if latent else 1,
                         block_out_channels=(8, 16), layers_per_block=1,
                         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                         up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, norm_num_groups=4,
                         attention_head_dim=4).save_pretrained(out / "unet")
    DDIMScheduler(steps_offset=1, clip_sample=False).save_pretrained(out / "scheduler")
    if latent:
        AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4,
                      down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                      sample_size=16).save_pretrained(out / "vae")
    return out


def build_clip(out: Path, seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    cfg = CLIPConfig(text_config=_text_config(len(tok)), projection_dim=16,
                     vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                        image_size=32, patch_size=8))
    CLIPModel(cfg).save_pretrained(out)
    CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tok).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    return {"sd": build_pipeline(root / "sd"), "px": build_pipeline(root / "px", latent=False),
            "clip": build_clip(root / "clip")}


def test_a_query_always_gives_the_same_image(folders):
    """Each image starts from its own seed's noise and DDIM (η = 0) is deterministic: the same
    (seed, prompt) gives the same pixels whatever else is in the batch or its order (up to float
    rounding: the CPU's convolutions may pick another kernel for another batch size)."""
    from failfade.tasks.generation.pipeline import Sampler, load_components

    s = Sampler(load_components(folders["sd"], "model.source"), steps=3, guidance=3.0)
    a = s.generate(["a red cat", "a blue dog", "a red cat"], [1, 2, 3])
    b = s.generate(["a blue dog", "a red cat"], [2, 1])
    assert a.shape == (3, 3, 16, 16) and 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    torch.testing.assert_close(a[0], b[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(a[1], b[0], atol=1e-5, rtol=0)
    assert (a[0] - a[2]).abs().max() > 0.01  # another seed, another image
    px = Sampler(load_components(folders["px"], "model.source"), steps=2, guidance=1.0).generate(["x", "x"], [5, 5])
    assert px.shape == (2, 1, 16, 16) and torch.equal(px[0], px[1])  # pixel space: no VAE


def test_a_folder_that_is_not_a_pipeline_is_named(folders, tmp_path):
    from failfade.tasks.generation.pipeline import load_components
    from failfade.tasks.generation.prompts import parse_source

    with pytest.raises(FailfadeError, match=r"model.source: .* is not a text-to-image pipeline folder \(missing unet/"):
        (tmp_path / "text_encoder").mkdir()
        (tmp_path / "tokenizer").mkdir()
        (tmp_path / "scheduler").mkdir()
        load_components(tmp_path, "model.source")
    with pytest.raises(FailfadeError, match="expected hf:<owner>/<name>"):
        parse_source("hf:stable-diffusion", "model.source")
    assert parse_source("hf:CompVis/stable-diffusion-v1-4@main", "k") == ("hf", "CompVis/stable-diffusion-v1-4", "main")


def test_clip_judge_scores_agreement_with_the_prompt(folders):
    """Δ = 1 − the cosine of CLIP's own image and text features (computed here from the model and
    its processor, not through the judge), failing below the threshold."""
    import torch.nn.functional as F

    from failfade.tasks.generation.judges import ClipJudge, _tensor

    judge = ClipJudge.load(folders["clip"], "judge.clip", threshold=0.3)
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    prompts = ["a red cat", "a red cat", "a dog", "a blue house on a hill"]
    pred, delta, fail = judge(images, prompts)
    tok = judge.processor.tokenizer(prompts, padding=True, return_tensors="pt")
    pixels = judge.processor.image_processor(images=list(images), do_rescale=False, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        t = F.normalize(_tensor(judge.model.get_text_features(**tok)), dim=-1)
        i = F.normalize(_tensor(judge.model.get_image_features(pixel_values=pixels)), dim=-1)
    cos = (i * t).sum(-1).numpy()
    np.testing.assert_allclose(delta, 1.0 - cos, atol=1e-5)
    assert len(set(np.round(cos, 6))) > 1  # the prompts differ, so do the scores
    assert (fail == (cos < 0.3)).all() and (pred == -1).all()
    assert judge.embed(images[:, :1]).shape == (4, 16)  # grey images are judged as RGB
    with pytest.raises(FailfadeError, match="judge.clip: .* is not a CLIP model folder"):
        ClipJudge.load(folders["sd"], "judge.clip", 0.3)


def test_clip_bias_question_answers_zero_shot(folders):
    """With model.bias, the CLIP judge's prediction is the class whose question text is closest to
    the image (checked against CLIP's own features here), and the verdict is unchanged."""
    import torch.nn.functional as F

    from failfade.tasks.generation.judges import ClipJudge, _tensor

    bias = {"question": "a photo of a {}", "classes": ["cat", "dog", "red"]}
    judge = ClipJudge.load(folders["clip"], "judge.clip", threshold=0.3, bias=bias)
    plain = ClipJudge.load(folders["clip"], "judge.clip", threshold=0.3)
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    pred, delta, fail = judge(images, ["a red cat"] * 6)
    _, delta0, fail0 = plain(images, ["a red cat"] * 6)
    np.testing.assert_allclose(delta, delta0)
    assert (fail == fail0).all()
    tok = judge.processor.tokenizer([f"a photo of a {c}" for c in bias["classes"]], padding=True, return_tensors="pt")
    with torch.no_grad():
        t = F.normalize(_tensor(judge.model.get_text_features(**tok)), dim=-1)
        i = F.normalize(_tensor(judge.model.get_image_features(pixel_values=judge._pixels(images))), dim=-1)
    assert pred.tolist() == (i @ t.T).argmax(1).tolist() and set(pred.tolist()) <= {0, 1, 2}


def test_bias_per_cell_is_the_weighted_tv_distance_with_its_noise_floor():
    from failfade.tasks.generation.bias import bias_table, tv_floor

    bias = {"classes": ["man", "woman"]}
    # cell 0: 30 "man" of 30 (TV 0.5); cell 1: 15 / 15 (TV 0); cell 2: 20 man, 10 woman, but the man
    # answers came from seeds the searcher picked 2x as often for this cell (propensity 2x): weighted 50/50
    cells = np.repeat([0, 1, 2], 30)
    pred = np.r_[np.zeros(30), np.tile([0, 1], 15), np.zeros(20), np.ones(10)].astype(np.int64)
    prop = np.r_[np.full(60, np.nan), np.full(20, 0.2), np.full(10, 0.1)]
    q = pl.DataFrame({"cell": cells, "prediction": pred, "failure": np.zeros(90, bool), "delta": np.zeros(90),
                      "propensity": prop})
    t = bias_table(q, 4, bias, seed=0)
    assert t["tv"][0] == pytest.approx(0.5) and t["tv"][1] == pytest.approx(0.0) and t["tv"][2] == pytest.approx(0.0)
    assert t["share_man"][2] == pytest.approx(0.5) and np.isnan(t["tv"][3]) and t["queries"].to_list() == [30, 30, 30, 0]
    assert t["biased"].to_list() == [True, False, False, False]
    rng = np.random.default_rng(0)
    assert 0.1 < tv_floor(30, np.array([0.5, 0.5]), rng) < 0.25  # ~1.96 * sqrt(0.25 / 30)
    t2 = bias_table(q, 4, {"classes": ["man", "woman"], "target": [0.9, 0.1]}, seed=0)
    assert t2["tv"][0] == pytest.approx(0.1)
    # a cell's floor is its size's own: the same whatever other cells, of other sizes, came before it
    alone = bias_table(q.filter(pl.col("cell") == 2), 4, bias, seed=0)
    extra = pl.DataFrame({"cell": np.zeros(7, np.int64), "prediction": np.zeros(7, np.int64),
                          "failure": np.zeros(7, bool), "delta": np.zeros(7), "propensity": np.full(7, np.nan)})
    after = bias_table(pl.concat([extra, q.filter(pl.col("cell") == 2)]), 4, bias, seed=0)
    assert alone["tv_floor"][2] == after["tv_floor"][2] == t["tv_floor"][2]


def test_the_bias_floor_holds_its_level_when_the_weights_follow_the_answer():
    """A cell whose weighted answers are on target (class 1 half the time over the inputs), explored
    by a searcher that favours it for inputs answering class 1: at Kish's size the TV floor called
    it biased in 8.3% of 1,000 runs at a 95% floor; at the size a failure cell's interval uses
    (stats.rates_from_sums, the smallest over the classes) 5.6%."""
    from failfade.tasks.generation.bias import bias_table

    rng = np.random.default_rng(2)
    d = rng.random(4000)
    p1 = 1 / (1 + np.exp(-8 * (d - 0.5)))  # P(class 1 | input)
    pref = np.exp(4 * p1)
    q = pref / pref.sum()
    runs, flagged = 1000, 0
    for r in range(runs):
        ids = rng.choice(len(d), 200, p=q)
        answer = (rng.random(200) < p1[ids]).astype(np.int64)
        table = bias_table(pl.DataFrame({"cell": np.zeros(200, np.int64), "prediction": answer,
                                         "propensity": q[ids]}), 1, {"classes": ["a", "b"]}, seed=r)
        flagged += bool(table["biased"][0])
    assert abs(float(p1.mean()) - 0.5) < 0.005
    assert flagged / runs <= 0.07, flagged


def test_bias_config_is_checked_before_anything_runs():
    from failfade.tasks.family import family

    fam = family("generation")
    exp = {"concepts": [{"name": "job", "transform": "word", "levels": ["nurse", "pilot"]}],
           "data": {"template": "a {job}"},
           "model": {"source": "builtin:digits", "judge": "clip", "judge_source": "hf:openai/clip-vit-base-patch32",
                     "bias": {"question": "a {}", "classes": ["a", "b"], "target": [0.7, 0.2]}}}
    with pytest.raises(FailfadeError, match="model.bias.target"):
        fam.check(exp, "x")
    exp["model"]["bias"]["target"] = None
    exp["model"]["judge"] = "attribute"
    with pytest.raises(FailfadeError, match="model.bias: needs judge: clip"):
        fam.check(exp, "x")
    exp["model"]["judge"] = "clip"
    # one {} and no other field: {x}, {0} or a lone brace failed only when the first image was judged
    for question, named in (("a photo", "found none"), ("a {} of {x}", r"found \['\{\}', '\{x\}'\]"),
                            ("{0} {1}", "found"), ("a {} {", "is not a format string"), ("{} and {}", "found")):
        exp["model"]["bias"]["question"] = question
        with pytest.raises(FailfadeError, match=r"x.model.bias.question: .* " + named):
            fam.check(exp, "x")
    exp["model"]["bias"]["question"] = "a {{literal}} {}"
    fam.check(exp, "x")
    exp["model"]["bias"] = None
    exp["shift"] = {"probes": [{"name": "p", "apply": {"word": 1}}]}  # failed at the probes stage, after mitigation
    with pytest.raises(FailfadeError, match="x.shift.probes: text-to-image has no off-grid transforms"):
        fam.check(exp, "x")


def test_word_axes_fill_the_prompt_template_and_read_back_in_selectors(folders):
    from failfade.feedback import parse_selector
    from failfade.tasks.generation.judges import ClipJudge
    from failfade.tasks.generation.pipeline import Sampler, load_components
    from failfade.tasks.generation.task import GenerationTask, prompt_of

    space = ConceptSpace.from_config([{"name": "colour", "transform": "word", "levels": ["red", "green", "blue"]},
                                      {"name": "animal", "transform": "word", "levels": ["cat", "dog"]}], {"word"})
    assert space.n_cells == 6 and space.describe_cell(5) == "colour=blue, animal=dog"
    assert prompt_of(space, "a {colour} {animal}", 3) == "a green dog"
    assert parse_selector("colour=blue & animal=dog", space).tolist() == [5]
    assert parse_selector("colour>=green", space).tolist() == [2, 3, 4, 5]  # words in their listed order
    assert space.describe_cells([4, 5]) == "colour = blue"
    with pytest.raises(ValueError, match="unknown level 'purple' for axis 'colour'; levels are"):
        parse_selector("colour=purple", space)
    task = GenerationTask(Sampler(load_components(folders["sd"], "model.source"), steps=2, guidance=2.0),
                          ClipJudge.load(folders["clip"], "judge.clip", 0.3), space, "a {colour} {animal}", 5, seed=0)
    assert task.observations.shape == (5, 16) and task.n_cells == 6
    out = task.score([0, 1, 0], [5, 5, 5])
    again = task.score([0], [5])
    # the same query, the same image (exactly) and the same verdict (CLIP's batched matmuls may
    # differ in the last bit with the batch size)
    torch.testing.assert_close(task.render([0], [5])[0], task.render([1, 0], [5, 5])[1], atol=1e-5, rtol=0)
    np.testing.assert_allclose([out.delta[2], again.delta[0]], out.delta[0], atol=1e-5)
    assert out.failure[0] == out.failure[2] == again.failure[0]
    assert out.failure.dtype == bool and (out.prediction == -1).all()


# --- the offline builtin's world: attribute digits, their judge, the tiny diffusion model ------------

def test_renders_carry_their_attributes():
    from failfade.tasks.generation import digits as D

    imgs, labels = D.load_digits_images()
    x = imgs[:6]
    small, large = D.render(x, "normal", "small"), D.render(x, "normal", "large")
    assert small.shape == (6, 1, 16, 16)
    assert (small[:, :, :4].abs().sum() == 0) and (small[:, :, 12:].abs().sum() == 0)  # an 8-px box, centred
    assert large[:, :, :4].sum() > 0
    thin, normal, thick = (D.render(x, t, "large").sum(dim=(1, 2, 3)) for t in D.THICKNESS)
    assert (thin < normal).all() and (normal < thick).all()  # ink grows with thickness, image by image
    rng = np.random.default_rng(0)
    a = D.sample_attributes(np.zeros(4000, dtype=np.int64), rng, thin_bias={0: 0.04})
    assert abs((a.thickness == 0).mean() - 0.04) < 0.015  # the planted bias holds
    assert D.prompt(3, 0, 2) == "thin large three"


def test_the_attribute_judge_reads_renders_and_fails_wrong_requests():
    """Trained for a few hundred steps, the judge reads held-out renders far above chance, and a
    request that differs from what the image shows is a failure."""
    from failfade.tasks.generation import digits as D

    torch.manual_seed(0)
    imgs, labels = D.load_digits_images()
    net = D.train_judge(imgs[:1200], labels[:1200], 200, seed=0)
    rng = np.random.default_rng(1)
    a = D.sample_attributes(labels[1200:], rng)
    x = D.render(imgs[1200:], np.array(D.THICKNESS)[a.thickness], np.array(D.SIZES)[a.size])
    prompts = [D.prompt(d, t, s) for d, t, s in zip(a.digit, a.thickness, a.size)]
    assert D.requested(prompts[0]) == (a.digit[0], a.thickness[0], a.size[0])
    assert D.requested("a large seven") == (7, -1, 2)  # a prompt that names no thickness: not judged on it
    judge = D.AttributeJudge(net)
    pred, delta, fail = judge(x, prompts)
    assert 1 - fail.mean() > 0.6  # all three right (chance: 1/90); measured 0.89 at 300 steps
    wrong = [D.prompt(d, t, (s + 1) % 3) for d, t, s in zip(a.digit, a.thickness, a.size)]  # another size than drawn
    _, delta_wrong, fail_wrong = judge(x, wrong)
    assert fail_wrong.mean() > 0.9 and delta_wrong.mean() > delta.mean()
    _, _, fail_no_size = judge(x, [f"{D.THICKNESS[t]} {D.DIGITS[d]}" for d, t in zip(a.digit, a.thickness)])
    assert fail_no_size.mean() < fail.mean() + 0.05  # dropping the wrong word drops its check
    assert judge.embed(x[:5]).shape == (5, 128)


def test_a_damaged_builtin_folder_is_named(tmp_path):
    """The shipped builtin with a pinned file missing, or its card cut short: one clear error each."""
    import shutil

    from failfade.tasks.generation import builtin

    d = tmp_path / "b"
    shutil.copytree(builtin.folder("digits"), d)
    assert builtin.check(d)["files"]
    weights = d / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(tmp_path / "w")
    with pytest.raises(FailfadeError, match=r"diffusion_pytorch_model\.safetensors: missing \(pinned by .*builtin\.json"):
        builtin.check(d)
    (tmp_path / "w").rename(weights)
    (d / builtin.CARD).write_text((d / builtin.CARD).read_text()[:50])
    with pytest.raises(FailfadeError, match=r"builtin\.json: not valid JSON"):
        builtin.check(d)


def test_the_builtin_diffusion_model_trains_saves_and_samples(tmp_path):
    """A few steps through the real classes: the loss falls from its start, the stored UNet holds
    the EMA weights, and the saved folder loads back and samples the same images."""
    from failfade.tasks.generation import digits as D
    from failfade.tasks.generation import training as T
    from failfade.tasks.generation.pipeline import Sampler, load_components, save_components

    imgs, labels = D.load_digits_images()
    c = T.build(seed=0, width=8)
    assert c.tokenizer.convert_ids_to_tokens(c.tokenizer("thick small seven").input_ids)[1:4] == [
        "thick</w>", "small</w>", "seven</w>"]  # one token per prompt word
    before = [p.detach().clone() for p in c.unet.parameters()]
    h = T.train(c, imgs, labels, steps=6, seed=0, batch_size=16, ema_decay=0.5)
    assert np.mean([r["loss"] for r in h[-2:]]) < h[0]["loss"]
    assert any(not torch.equal(a, b) for a, b in zip(before, c.unet.parameters()))
    files = save_components(c, tmp_path / "builtin")
    assert "unet/diffusion_pytorch_model.safetensors" in files and not (tmp_path / "builtin" / "vae").exists()
    a = Sampler(c, steps=3, guidance=2.0).generate(["thin large one", ""], [1, 2])
    b = Sampler(load_components(tmp_path / "builtin", "model.source"), steps=3, guidance=2.0).generate(["thin large one", ""], [1, 2])
    assert a.shape == (2, 1, 16, 16)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# --- the family: model folder, task, LoRA mitigation, sample and rating sheets -------------------------

WORDS = [{"name": "thickness", "transform": "word", "levels": ["thin", "thick"]},
         {"name": "size", "transform": "word", "levels": ["small", "large"]},
         {"name": "digit", "transform": "word", "levels": ["zero", "one", "eight"]}]


def tiny_experiment(pipeline: Path, **model) -> dict:
    import failfade.config

    exp = {"task": "generation", "seed": 0, "data": {"template": "{thickness} {size} {digit}", "seeds": 4},
           "model": {"source": f"path:{pipeline}", "steps": 2, "guidance": 1.5, "judge_steps": 30, "check_seeds": 2,
                     **model},
           "concepts": WORDS, "feedback": "unused.csv",
           "explore": {"algorithm": "random", "budget": 24, "num_agents": 4},
           "mitigate": {"steps": 4, "batch_size": 8, "rank": 2}}
    return failfade.config.validate({"experiments": {"t2i": exp}})["experiments"]["t2i"]


@pytest.fixture(scope="module")
def digits_world(tmp_path_factory):
    """A tiny attribute-digits pipeline (the builtin's architecture at width 8, untrained) and the
    model stage's folder for it."""
    from failfade.pipeline import stage_model
    from failfade.tasks.generation import training as T
    from failfade.tasks.generation.pipeline import save_components

    root = tmp_path_factory.mktemp("t2i")
    save_components(T.build(seed=0, width=8), root / "pipeline")
    exp = tiny_experiment(root / "pipeline")
    card = stage_model(exp, root / "model", root / "resources")
    return {"root": root, "exp": exp, "card": card}


def _pin(card: dict, files: dict) -> None:
    """`files` pinned by the card, its sha256 their combined digest: an edit that looks consistent."""
    from failfade.tasks.generation.models import combined

    card.update(files=files, sha256=combined(files))


@pytest.mark.parametrize("edit, said", [
    (lambda c: c.update(files=list(c["files"])), "files must be an object of file: sha256"),
    (lambda c: c.pop("sha256"), "sha256 must be the combined digest of its files (64 hex digits), got None"),
    (lambda c: c.update(sha256=""), "sha256 must be the combined digest of its files (64 hex digits), got ''"),
    (lambda c: c.update(sha256="0" * 64), "sha256 000000000000… is not the combined digest of its files"),
    (lambda c: _pin(c, {}), "files: 'judge/judge.safetensors' is not pinned"),
    (lambda c: _pin(c, {k: v for k, v in c["files"].items() if not k.startswith("pipeline/unet/")}),
     "files: 'pipeline/unet/diffusion_pytorch_model.safetensors' is not pinned"),
    (lambda c: c["files"].update({next(iter(c["files"])): 5}), "files: the sha256 of "),
    (lambda c: c.update(pipeline=None), "pipeline must be a folder, got None"),
    (lambda c: c.update(judge="attribute"), "judge must be an object"),
    (lambda c: c["judge"].update(kind="nope"), "judge.kind must be clip or attribute, got 'nope'"),
])
def test_a_hand_edited_text_to_image_card_is_named(digits_world, tmp_path, edit, said):
    """A list of files, a numeric digest or a null pipeline failed as a TypeError or an
    AttributeError; an unknown judge kind loaded as the attribute judge; a card without a sha256,
    or one pinning no weights (`files: {}`) or not all of them, loaded any weights beside it."""
    import shutil

    from failfade.tasks.family import family

    model = tmp_path / "model"
    for folder in ("model", "pipeline"):  # the card may name its pipeline relative to the model folder
        shutil.copytree(digits_world["root"] / folder, tmp_path / folder)
    card = json.loads((model / "model.json").read_text())
    edit(card)
    (model / "model.json").write_text(json.dumps(card))
    with pytest.raises(FailfadeError) as ei:
        family("generation").load(digits_world["exp"], model, torch.device("cpu"))
    assert str(ei.value).startswith(f"{model / 'model.json'}: ") and said in str(ei.value), str(ei.value)


def test_the_model_stage_pins_pipeline_and_judge(digits_world):
    from failfade.tasks.generation import models

    card, model_dir = digits_world["card"], digits_world["root"] / "model"
    assert set(card["files"]) >= {"pipeline/unet/diffusion_pytorch_model.safetensors", models.JUDGE_WEIGHTS}
    acc = card["judge"]["heldout_render_accuracy"]
    assert set(acc) >= {"digit", "thickness", "size", "all"} and acc["renders"] == 4 * 297
    assert 0 <= card["heldout_clean_judge_pass"] <= 1 and card["clean_check_images"] == 12 * 2
    assert models.read_card(model_dir)["sha256"] == card["sha256"]
    unet = model_dir / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"
    saved = unet.read_bytes()
    try:
        unet.write_bytes(saved[:-8] + b"\0" * 8)
        with pytest.raises(FailfadeError, match="diffusion_pytorch_model.safetensors: corrupt checkpoint"):
            models.read_card(model_dir)
    finally:
        unet.write_bytes(saved)


def test_the_task_scores_queries_deterministically_and_probes_fixed_cells(digits_world):
    from failfade.probes import targeted_spaces
    from failfade.tasks.family import family

    exp, model_dir = digits_world["exp"], digits_world["root"] / "model"
    fam = family("generation")
    task = fam.build_task(exp, model_dir)
    assert task.n_cells == 12 and task.n_inputs == 4 and task.prompts[11] == "thick large eight"
    a = task.score([0, 1, 2, 3], [11, 11, 11, 11])
    b = task.score([2, 0], [11, 11])
    np.testing.assert_allclose(b.delta, a.delta[[2, 0]], atol=1e-5)
    assert task.settings["judge"] == "attribute" and len(task.model_sha256) == 64
    (space,) = targeted_spaces(fam.space(exp), {"fix": [{"cell": 11}]})
    counts, n = fam.probe_failures(task, [space])
    assert n == 4 and [c.tolist() for c in counts] == [a.failure.tolist()]  # the fixed cell, on every held-out seed


def test_a_large_call_is_rendered_and_judged_a_chunk_at_a_time(digits_world, monkeypatch):
    """score() rendered every image of a call before judging any: the exhaustive truth asks 8,192
    pairs at once, 25 GB of 512 px images with a real Stable Diffusion. Now a chunk at a time, with
    the same outcomes."""
    from failfade.tasks.family import family
    from failfade.tasks.generation import task as T

    task = family("generation").build_task(digits_world["exp"], digits_world["root"] / "model")
    ids, cells = np.repeat(np.arange(4), 3), np.tile([0, 5, 11], 4)
    whole = task.score(ids, cells)
    seen = []
    judge = task.judge
    monkeypatch.setattr(T, "SCORE_CHUNK", 5)
    monkeypatch.setattr(task, "judge", lambda images, *a: seen.append(len(images)) or judge(images, *a))
    parts = task.score(ids, cells)
    assert seen == [5, 5, 2]
    assert parts.failure.tolist() == whole.failure.tolist() and parts.prediction.tolist() == whole.prediction.tolist()
    np.testing.assert_allclose(parts.delta, whole.delta, atol=1e-5)


def test_the_device_keys_the_outcome_cache(digits_world, tmp_path, monkeypatch):
    """Images drawn on a GPU (other kernels, other rounding, in fp32 too) can flip a borderline
    verdict: their outcomes were read back on a CPU. No GPU here: the UNet sits on the `meta`
    device, which builds the task without drawing an image."""
    from failfade import pipeline
    from failfade.tasks.family import family

    exp, model_dir, fam = digits_world["exp"], digits_world["root"] / "model", family("generation")
    cpu = pipeline.build_task(exp, model_dir, tmp_path / "cache")
    sampler, judge, card = fam.load(exp, model_dir)
    sampler.c.unet.to("meta")
    monkeypatch.setattr(fam, "load", lambda *args, **kwargs: (sampler, judge, card))
    gpu = pipeline.build_task(exp, model_dir, tmp_path / "cache")
    assert "device" not in cpu.task.settings and gpu.task.settings["device"] == "meta"
    assert gpu.task.settings["precision"] == cpu.task.settings["precision"] == "fp32"
    assert cpu.path.name != gpu.path.name


def test_the_fresh_seed_check_scores_seeds_no_stage_uses(digits_world):
    """benchmarks/t2i_fresh_seeds.py's measure: the fresh seeds are none of the held-out ones, and
    the counts are the judge's own on those images (same model on both sides: no change)."""
    from failfade.tasks.family import family
    from failfade.tasks.generation.pipeline import fresh_seed_of, seed_of

    exp, model_dir = digits_world["exp"], digits_world["root"] / "model"
    assert not {fresh_seed_of(exp["seed"], i) for i in range(500)} & {seed_of(exp["seed"], i) for i in range(500)}
    fam = family("generation")
    plan = {"fix": [{"cell": 11}, {"cell": 3}]}
    out = fam.fresh_seed_check(exp, model_dir, model_dir, plan, n_seeds=3)
    assert out["images_per_side"] == 12 * 3 and out["other_cells"] == 10
    sampler, judge, _ = fam.load(exp, model_dir)
    prompts = fam.prompts(exp)
    seeds = [fresh_seed_of(exp["seed"], i) for i in range(3)]
    k = sum(int(judge(sampler.generate([prompts[c]] * 3, seeds), [prompts[c]] * 3)[2].sum()) for c in (11, 3))
    f = out["fixed"]
    assert f["cells"] == 2 and f["queries"] == 6 and f["failures"] == {"pre": k, "post": k}
    # every prompt shares the seeds, so the change's interval would be over the seeds, paired, as
    # shift.json's; but no seed's count changed, and a paired interval with no spread was [0, 0]
    # (certainty from 3 seeds): it is the conservative one
    assert f["interval"] == "conservative: the pooled rates as measured on 3 inputs (the paired interval had no spread to go on)"
    assert f["change_ci"][0] < 0 < f["change_ci"][1]
    assert out["other_pass"]["pre"] == out["other_pass"]["post"] and out["new_failure_cells"] == []


SAVE_ADAPTER = """
import sys
from pathlib import Path
from failfade.tasks.generation import lora, training as T
from failfade.tasks.generation.pipeline import load_components, save_components
root = Path(sys.argv[1])
save_components(T.build(seed=0, width=8), root / "base")
c = load_components(root / "base", "m")
lora.add_lora(c.unet, rank=2, alpha=4.0, targets=lora.TARGETS + ("conv1", "conv2"), seed=0)
lora.save_adapter(c.unet, root / "adapter", {"rank": 2, "alpha": 4.0})
"""


@pytest.mark.parametrize("targets, named", [
    (["nonexistent"], r"mitigate.targets: \['nonexistent'\] name no module of this UNet2DConditionModel"),
    (["attn1"], r"mitigate.targets: \['attn1'\] name blocks \(Attention\), not layers LoRA adapts"),
])
def test_lora_targets_that_name_no_layer_are_named(targets, named):
    """peft's own errors (a traceback at the mitigate stage) become the key and what it named."""
    from failfade.tasks.generation import lora, training as T

    c = T.build(seed=0, width=8)
    with pytest.raises(FailfadeError, match=named):
        lora.add_lora(c.unet, rank=2, targets=targets)


def test_an_adapter_file_has_the_same_bytes_in_every_process(tmp_path):
    """peft's target modules are a set and safetensors writes its metadata from a hash map: with
    another PYTHONHASHSEED the same weights were written as other bytes, so the mitigated model's
    card (and its outcome-cache key) changed with every run."""
    import hashlib
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    from failfade.tasks.generation.models import ADAPTER_WEIGHTS

    digests = []
    for seed in ("1", "2", "3"):
        subprocess.run([sys.executable, "-c", SAVE_ADAPTER, str(tmp_path / seed)], check=True, timeout=300,
                       env={**os.environ, "PYTHONHASHSEED": seed})
        digests.append(hashlib.sha256((tmp_path / seed / "adapter" / ADAPTER_WEIGHTS).read_bytes()).hexdigest())
    assert len(set(digests)) == 1
    assert len(load_file(str(tmp_path / "1" / "adapter" / ADAPTER_WEIGHTS))) > 0  # still a valid safetensors file


@pytest.mark.parametrize("alpha", [None, 8.0])
def test_lora_adapter_round_trip(tmp_path, alpha):
    """An adapter (attention projections and convolutions) saved as a pipeline LoRA file loads back
    onto a fresh base and gives the same output, at the alpha it was trained with (alpha 8 at rank 2
    loaded at alpha 2, a quarter of its strength, before the file carried its config)."""
    from failfade.tasks.generation import lora
    from failfade.tasks.generation import training as T
    from failfade.tasks.generation.pipeline import load_components, save_components

    save_components(T.build(seed=0, width=8), tmp_path / "base")
    c = load_components(tmp_path / "base", "m")
    x, t = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 500])
    cond = c.text_encoder(c.tokenizer(["thin small one", "thick large zero"], padding="max_length",
                                      max_length=8, return_tensors="pt").input_ids)[0].detach()
    with torch.no_grad():
        base = c.unet(x, t, encoder_hidden_states=cond).sample
    params = lora.add_lora(c.unet, rank=2, alpha=alpha, targets=lora.TARGETS + ("conv1", "conv2"), seed=0)
    assert sum(p.numel() for p in params) < 0.3 * sum(p.numel() for p in c.unet.parameters())
    with torch.no_grad():
        torch.testing.assert_close(c.unet(x, t, encoder_hidden_states=cond).sample, base)  # B = 0: unchanged
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        tuned = c.unet(x, t, encoder_hidden_states=cond).sample
    assert (tuned - base).abs().max() > 1e-3
    lora.save_adapter(c.unet, tmp_path / "adapter", {"rank": 2, "alpha": alpha})
    fresh = load_components(tmp_path / "base", "m")
    lora.load_adapter(fresh.unet, tmp_path / "adapter", "m")
    with torch.no_grad():
        torch.testing.assert_close(fresh.unet(x, t, encoder_hidden_states=cond).sample, tuned, atol=1e-5, rtol=1e-4)
    # an adapter card that disagrees with the file's strength is refused, not loaded at another scale
    (tmp_path / "adapter" / "adapter.json").write_text(json.dumps({"rank": 2, "alpha": 4.0 if alpha else 8.0}))
    with pytest.raises(FailfadeError, match="m: the LoRA adapter .* loads at scale alpha/rank"):
        lora.load_adapter(load_components(tmp_path / "base", "m").unet, tmp_path / "adapter", "m")
    for broken in ('{"rank": 2', "{}", '{"rank": 0}', "[2]"):  # truncated, no rank, rank 0, not an object
        (tmp_path / "adapter" / "adapter.json").write_text(broken)
        with pytest.raises(FailfadeError, match=r"adapter\.json: cannot be read as the adapter's card .* --forcerun mitigate"):
            lora.load_adapter(load_components(tmp_path / "base", "m").unet, tmp_path / "adapter", "m")
    with pytest.raises(FailfadeError, match="m: cannot load the LoRA adapter"):
        (tmp_path / "empty").mkdir()
        lora.load_adapter(load_components(tmp_path / "base", "m").unet, tmp_path / "empty", "m")


def test_mitigation_writes_an_adapter_over_the_base_and_checks_untargeted_prompts(digits_world, tmp_path):
    from failfade.tasks.family import family
    from failfade.tasks.generation import models

    exp, model_dir = digits_world["exp"], digits_world["root"] / "model"
    fam = family("generation")
    plan = {"fix": [{"cell": 1, "weight": 1.0}, {"cell": 7, "weight": 2.0}]}
    card = fam.fine_tune(exp, model_dir, plan, tmp_path / "post")
    post = tmp_path / "post"
    assert (post / "adapter" / models.ADAPTER_WEIGHTS).is_file() and not (post / "pipeline").exists()
    assert card["parent_sha256"] == digits_world["card"]["sha256"] != card["sha256"]
    assert card["clean_check"]["cells"] == 10 and card["clean_check"]["images"] == 10 * 2
    assert card["mitigation"]["fix_cells"] == [1, 7]
    base_task, post_task = fam.build_task(exp, model_dir), fam.build_task(exp, post)
    a = base_task.render([0, 1], [7, 7])
    b = post_task.render([0, 1], [7, 7])
    assert (a - b).abs().max() > 0  # base + adapter is another model
    assert pl.read_csv(post / "training.csv").height == 4


def test_preserved_rows_regress_onto_the_base_model(digits_world, tmp_path):
    """Prior preservation: a batch with no fixed-cell rows asks the adapter to reproduce the frozen
    base, which it already does at initialisation (B = 0), so nothing moves; without preservation
    the same batches (renders) change the model."""
    import copy

    from failfade.tasks.family import family

    exp, model_dir = digits_world["exp"], digits_world["root"] / "model"
    fam = family("generation")
    plan = {"fix": [{"cell": 1, "weight": 1.0}]}
    base = fam.build_task(exp, model_dir).render([0, 1, 2], [3, 5, 7])
    for preserve, moves in ((True, False), (False, True)):
        e = copy.deepcopy(exp)
        e["mitigate"].update(perturb_fraction=0.0, preserve=preserve, preserve_near=0.5)
        fam.fine_tune(e, model_dir, plan, tmp_path / f"post-{preserve}")
        after = fam.build_task(e, tmp_path / f"post-{preserve}").render([0, 1, 2], [3, 5, 7])
        assert bool((after - base).abs().max() > 0) == moves


def explored_exhaustively(world: dict):
    """(task, queries, cells, modes) of every cell on every seed of the tiny world's model."""
    from failfade.landscape import summarize
    from failfade.tasks.family import family

    fam = family("generation")
    task = fam.build_task(world["exp"], world["root"] / "model")
    ids, cells = np.repeat(np.arange(4), 12), np.tile(np.arange(12), 4)
    out = task.score(ids, cells)
    queries = pl.DataFrame({"input_id": ids, "cell": cells, "label": np.full(48, -1), "prediction": out.prediction,
                            "delta": out.delta, "failure": out.failure})
    return (task, queries, *summarize(fam.space(world["exp"]), queries, 0.5, 0.95)[:2])


def test_the_sample_sheet_draws_without_loading_the_judge(digits_world, tmp_path):
    """The gallery only draws images: it used to load the judge too (CLIP ViT for Stable Diffusion)
    and throw it away. A card whose judge cannot load still gets its gallery; the judge's
    verdicts come from the landscape's queries."""
    import shutil

    from failfade.tasks.family import family

    model = tmp_path / "model"
    for folder in ("model", "pipeline"):
        shutil.copytree(digits_world["root"] / folder, tmp_path / folder)
    card = json.loads((model / "model.json").read_text())
    card["judge"]["kind"] = "nope"
    (model / "model.json").write_text(json.dumps(card))
    fam = family("generation")
    with pytest.raises(FailfadeError, match="judge.kind must be clip or attribute"):
        fam.load(digits_world["exp"], model)
    _, queries, _, modes = explored_exhaustively(digits_world)
    fam.gallery(digits_world["exp"], queries, modes, tmp_path / "gallery.png", 2, model)
    assert (tmp_path / "gallery.png").stat().st_size > 10_000


def test_bias_csv_is_a_stage_of_its_own(digits_world, tmp_path):
    """bias.csv was written by the gallery as a side effect, an output no rule declared (snakemake
    neither tracked nor rebuilt it). The bias stage writes it from the queries; the gallery only shows
    its distance under each cell."""
    import copy

    from failfade.pipeline import stage_bias
    from failfade.tasks.family import family
    from failfade.tasks.generation.bias import bias_table

    exp = copy.deepcopy(digits_world["exp"])
    _, queries, _, modes = explored_exhaustively(digits_world)
    queries = queries.with_columns(prediction=pl.Series(np.arange(queries.height) % 3 == 0).cast(pl.Int64))
    shard = tmp_path / "queries.parquet"
    queries.write_parquet(shard)
    with pytest.raises(FailfadeError, match="bias.csv needs a text-to-image experiment whose model sets `bias`"):
        stage_bias(exp, [shard], tmp_path / "bias.csv")
    assert not (tmp_path / "bias.csv").exists()
    exp["model"]["bias"] = {"question": "a photo of a {}", "classes": ["man", "woman"]}
    got = stage_bias(exp, [shard], tmp_path / "bias.csv")
    fam = family("generation")
    want = bias_table(queries, 12, exp["model"]["bias"], fam.prompts(exp, fam.space(exp)), exp["seed"])
    assert got.equals(want) and got.height == 12
    written = pl.read_csv(tmp_path / "bias.csv")
    assert written.columns == want.columns and written["prompt"].to_list() == want["prompt"].to_list()
    np.testing.assert_allclose(written["tv"].to_numpy(), want["tv"].to_numpy(), equal_nan=True)
    assert written["biased"].to_list() == want["biased"].to_list()
    (tmp_path / "sheet").mkdir()
    fam.gallery(exp, queries, modes, tmp_path / "sheet" / "gallery.png", 1, digits_world["root"] / "model")
    assert sorted(p.name for p in (tmp_path / "sheet").iterdir()) == ["gallery.png"]


def test_the_sample_sheet_and_the_rating_sheet(digits_world, tmp_path):
    from failfade.landscape import write_database
    from failfade.pipeline import stage_rating_sheet
    from failfade.tasks.family import family
    from failfade.tasks.generation import ratings

    exp, model_dir = digits_world["exp"], digits_world["root"] / "model"
    fam = family("generation")
    task, queries, cells, modes = explored_exhaustively(digits_world)
    fam.gallery(exp, queries, modes, tmp_path / "gallery.png", 4, model_dir)
    assert (tmp_path / "gallery.png").stat().st_size > 10_000
    assert not (tmp_path / "rating_sheet.html").exists()  # the rating sheet is a stage of its own
    write_database(tmp_path / "landscape.duckdb", queries, cells, modes)
    stage_rating_sheet(exp, model_dir, tmp_path / "landscape.duckdb", tmp_path)
    template = pl.read_csv(tmp_path / "ratings_template.csv", infer_schema=False)
    assert template.columns == ["image_id", "cell", "bias", "quality", "rater", "prompt"]
    assert template.height == 12 * 3 and template["image_id"][0].startswith("c")
    page = (tmp_path / "rating_sheet.html").read_text()
    assert page.count("<figure") == 36 and page.count("data:image/png;base64,") == 36
    judged = pl.read_csv(tmp_path / ratings.JUDGED)
    assert judged.height == 36
    # the judge's verdict on a sheet image is the task's verdict on the same query
    row = judged.filter(pl.col("image_id") == "c5-s2")
    assert bool(row["judge_failure"][0]) == bool(task.score([2], [5]).failure[0])


def test_the_rating_sheet_puts_a_cell_in_two_modes_under_the_landscapes_mode(digits_world, tmp_path, monkeypatch):
    """A cell that two failure modes hold belongs to the first (best) one in cells.csv and
    landscape.duckdb; the rating sheet, which reads the landscape's cells, groups it the same way."""
    from failfade.landscape import mode_of_cells, summarize, write_database
    from failfade.pipeline import stage_rating_sheet
    from failfade.tasks.family import family
    from failfade.tasks.generation import ratings

    exp, model_dir = digits_world["exp"], digits_world["root"] / "model"
    _, queries, _, _ = explored_exhaustively(digits_world)
    modes = pl.DataFrame({"mode": [1, 2], "selector": ["a", "b"], "description": ["first", "second"],
                          "cells": ["0 1 2", "2 3"]})
    assert mode_of_cells(12, modes).tolist() == [1, 1, 1, 2] + [0] * 8  # the landscape's: the best mode wins
    space = family("generation").space(exp)
    # the landscape's cells, with these modes' cells as the landscape stores them
    cells = summarize(space, queries, 0.5, 0.95)[0].with_columns(pl.Series("mode", mode_of_cells(12, modes)))
    write_database(tmp_path / "landscape.duckdb", queries, cells, modes)
    sheet = []
    write_sheet = ratings.write_sheet
    monkeypatch.setattr(ratings, "write_sheet", lambda *a, **k: sheet.extend(write_sheet(*a, **k)) or sheet)
    stage_rating_sheet(exp, model_dir, tmp_path / "landscape.duckdb", tmp_path)
    assert {r["cell"]: r["mode"] for r in sheet} == dict(enumerate(mode_of_cells(12, modes).tolist()))
    page = (tmp_path / "rating_sheet.html").read_text()
    first, second = page.index("Failure mode 1: first"), page.index("Failure mode 2: second")
    assert first < page.index('data-cell="2"') < second < page.index('data-cell="3"')


def test_only_a_text_to_image_experiment_has_a_rating_sheet(tmp_path):
    from failfade.pipeline import stage_rating_sheet

    with pytest.raises(FailfadeError, match=r"task 'classification': people rate images only in text-to-image"):
        stage_rating_sheet({"task": "classification"}, tmp_path, tmp_path / "landscape.duckdb", tmp_path)


# --- ratings: read, validate, aggregate, compare with the judge ----------------------------------------

def _space():
    return ConceptSpace.from_config(WORDS, {"word"})


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text("image_id,cell,bias,quality,rater\n" + "\n".join(rows) + "\n")
    return path


def test_bad_ratings_are_named_by_file_and_line(tmp_path):
    from failfade.feedback import FeedbackError
    from failfade.tasks.generation import ratings

    path = _write(tmp_path / "r.csv", ["c1-s0,1,0,4,ann", "c99-s0,99,0,4,ann", "c1-s9,1,0,4,ann", "c2-s0,2,0,7,ann",
                                       "c2-s0,2,2,3,bob", "c1-s0,1,1,1,ann", "c3-s0,4,0,3,ann", "c3-s1,3,0,3,",
                                       "c3-s1,3,0,x,cy"])
    with pytest.raises(FeedbackError) as ei:
        ratings.read_ratings(path, _space(), n_seeds=4)
    text = str(ei.value)
    assert str(path) in text
    for expected in ["line 3: unknown image id 'c99-s0'", "line 4: unknown image id 'c1-s9'",
                     "line 5: quality '7' must be an integer from 1 to 5", "line 6: bias '2' must be 0 or 1",
                     "line 7: rater 'ann' already rated c1-s0 on line 2", "line 8: cell '4' does not match image c3-s0",
                     "line 9: no rater named", "line 10: quality 'x'"]:
        assert expected in text
    with pytest.raises(FeedbackError, match="unknown image id 'c2-s0'"):  # not on the sheet that was written
        ratings.read_ratings(_write(tmp_path / "s.csv", ["c2-s0,2,0,4,ann"]), _space(), 4, known_ids={"c1-s0"})
    assert ratings.is_ratings(path) and not ratings.is_ratings(tmp_path / "missing.csv")
    with pytest.raises(FeedbackError) as ei:  # half-rated rows are named; a blank row is an unrated image
        ratings.read_ratings(_write(tmp_path / "h.csv", ["c1-s0,1,1,,ann", "c1-s1,1,,3,ann", "c2-s0,2,,,ann"]),
                             _space(), 4)
    assert "line 2: quality is blank" in str(ei.value) and "line 3: bias is blank" in str(ei.value)
    assert "line 4" not in str(ei.value)
    with pytest.raises(FeedbackError, match="no row after the header has both a bias and a quality"):
        ratings.read_ratings(_write(tmp_path / "e.csv", ["c2-s0,2,,,ann", "c2-s1,2,,,"]), _space(), 4)


def test_a_rating_of_another_prompt_is_refused(tmp_path):
    """An id names a cell by its index: after the concepts changed, an old rating of one prompt
    counted for whatever prompt that cell had become. The prompt column is checked."""
    from failfade.feedback import FeedbackError
    from failfade.tasks.generation import ratings

    prompts = [f"prompt {c}" for c in range(_space().n_cells)]
    path = tmp_path / "p.csv"
    path.write_text('image_id,cell,bias,quality,rater,prompt\nc1-s0,1,0,4,ann,"prompt 1"\nc2-s0,2,0,4,ann,"small, zero"\n'
                    'c3-s0,3,0,4,ann,\n')
    with pytest.raises(FeedbackError, match=r"line 3: image c2-s0 was rated as 'small, zero', but cell 2 is now 'prompt 2'"):
        ratings.read_ratings(path, _space(), 4, prompts=prompts)
    assert ratings.read_ratings(path, _space(), 4).height == 3  # without the prompts: not checked
    path.write_text('image_id,cell,bias,quality,rater,prompt\nc1-s0,1,0,4,ann,"prompt 1"\nc3-s0,3,0,4,ann,\n')
    assert ratings.read_ratings(path, _space(), 4, prompts=prompts)["cell"].to_list() == [1, 3]  # a blank prompt: unchecked


def test_the_shipped_ratings_name_the_prompts_of_both_configs_that_use_them():
    """resources/feedback/t2i-ratings.csv carries a `prompt` column; it must match the cells' prompts
    of config/t2i_ratings.yaml and config/paper_smoke.yaml's sd14, the two experiments that read it."""
    from failfade.config import load
    from failfade.pipeline import family_of
    from failfade.tasks.generation import ratings

    root = Path(__file__).resolve().parents[1]
    path = root / "resources" / "feedback" / "t2i-ratings.csv"
    assert path.read_text().splitlines()[0].endswith(",prompt")
    for cfg, name in (("t2i_ratings.yaml", "t2i-rated"), ("paper_smoke.yaml", "sd14")):
        exp = load(root / "config" / cfg)["experiments"][name]
        fam = family_of(exp)
        table = ratings.read_ratings(path, fam.space(exp), exp["data"]["seeds"], prompts=fam.prompts(exp))
        assert table.height == 646


def test_no_stand_in_rater_is_trained_with_the_judges_seed():
    """With `seed: 1000` the first stand-in (seed 1000 + 0) was the attribute judge itself."""
    from failfade.tasks.generation.ratings import standin_seeds

    assert standin_seeds(0, 3) == [1000, 1001, 1002]  # the shipped example's ratings, as they were written
    assert standin_seeds(1001, 3) == [1000, 1002, 1003]
    assert all(1000 not in standin_seeds(1000, n) for n in (1, 3, 5))


def test_inter_rater_agreement_holds_whatever_the_raters_are_called():
    """A rater named `image_id` (the pivot's index column) crashed the ratings plan."""
    from failfade.tasks.generation.ratings import inter_rater

    rows = {"image_id": ["a", "a", "b", "b", "c"], "bias": [1, 1, 0, 0, 0], "quality": [3, 3, 3, 1, 5]}
    got = inter_rater(pl.DataFrame({**rows, "rater": ["image_id", "ann", "image_id", "ann", "ann"]}))
    assert got == {"pairs_compared": 2, "agreement": 0.5}  # agree on a (both fail), not on b; c has one rater
    assert inter_rater(pl.DataFrame({**rows, "rater": ["bob", "ann", "bob", "ann", "ann"]})) == got


def test_a_ratings_column_given_twice_is_refused(tmp_path):
    """csv.DictReader keeps the later of two columns of one name: a quality of 1 (a failure) was
    read as the 5 of a second quality column."""
    from failfade.feedback import FeedbackError
    from failfade.tasks.generation import ratings

    path = tmp_path / "r.csv"
    path.write_text("image_id,cell,bias,quality,rater,quality\nc1-s0,1,0,1,ann,5\n")
    with pytest.raises(FeedbackError, match=r"line 1: column\(s\) \['quality'\] appear more than once"):
        ratings.read_ratings(path, _space(), 4)


@pytest.mark.parametrize("name, text, said", [
    ("sheet_judged.csv", "", "empty"),
    ("sheet_judged.csv", "image_id,cell,judge_failure,judge_delta\nc1-s0,1,true,0.5\nc1-s1,1,tr", "could not parse"),
    ("sheet_judged.csv", "image_id,cell,judge_failure,judge_delta\nc1-s0,1,true,0.5\nc1-s1,1,,\n", "blank field"),
    ("sheet_judged.csv", "image_id,cell,judge_failure,judge_delta\nc1-s0,1,maybe,0.5\n", ""),
    ("ratings_template.csv", "id,cell\nc1-s0,1\n", "no column(s) ['image_id']"),
])
def test_a_broken_rating_sheet_file_is_named_with_the_command_that_rebuilds_it(tmp_path, name, text, said):
    from failfade.tasks.generation import ratings

    (tmp_path / name).write_text(text)
    read = ratings.read_judged if name == ratings.JUDGED else ratings.sheet_ids
    with pytest.raises(FailfadeError) as ei:
        read(tmp_path)
    msg = str(ei.value)
    assert msg.startswith(f"{tmp_path / name}: cannot be read as the rating sheet's") and said in msg, msg
    assert f"failfade run --forcerun {tmp_path / name}" in msg


def test_ratings_csv_is_read_strictly_and_named_by_the_line_where_a_record_starts(tmp_path):
    """An unclosed quote swallowed the rows after it into one rater field, a field over the csv
    module's limit escaped as a bare _csv.Error, and U+2028 inside a field split its line."""
    from failfade.feedback import FeedbackError
    from failfade.tasks.generation import ratings

    head = "image_id,cell,bias,quality,rater\n"
    path = tmp_path / "r.csv"
    path.write_text(head + 'c1-s0,1,0,5,"ann\nc2-s1,2,0,4,bob\nc3-s0,3,1,1,cy\n', newline="")
    with pytest.raises(FeedbackError, match="line 2: not readable as CSV"):
        ratings.read_ratings(path, _space(), 4)
    path.write_text(head + "c1-s0,1,0,5,ann\n" + 'c2-s0,2,0,4,"' + "x" * (200 << 10) + '"\n', newline="")
    with pytest.raises(FeedbackError, match="line 3: not readable as CSV"):
        ratings.read_ratings(path, _space(), 4)
    path.write_text(head + 'c1-s0,1,0,5,"ann\u2028lee"\nc2-s0,2,0,4,bob\n', newline="")
    table = ratings.read_ratings(path, _space(), 4)
    assert table.select("line", "rater").rows() == [(2, "ann\u2028lee"), (3, "bob")]
    # a quoted line break: the next record starts on line 4, and problems name where records start
    path.write_text(head + 'c1-s0,1,0,5,"ann\nlee"\nc2-s0,2,0,9,bob\nc1-s0,1,0,5,"ann\nlee"\n', newline="")
    with pytest.raises(FeedbackError) as ei:
        ratings.read_ratings(path, _space(), 4)
    assert "line 4: quality '9'" in str(ei.value)
    assert "line 5: rater 'ann\\nlee' already rated c1-s0 on line 2" in str(ei.value)


def test_a_quoted_ratings_header_is_a_ratings_file(tmp_path):
    """R's write.csv and pandas' QUOTE_ALL quote the header: it was split on "," and read as decisions."""
    from failfade.tasks.generation import ratings

    path = tmp_path / "r.csv"
    path.write_text('"image_id","cell","bias","quality","rater"\n"c1-s0","1","0","5","ann"\n')
    assert ratings.is_ratings(path)
    assert ratings.read_ratings(path, _space(), 4).select("image_id", "rater").rows() == [("c1-s0", "ann")]
    path.write_text('"selector","decision"\n"digit=eight","fix"\n')
    assert not ratings.is_ratings(path)


def test_a_non_utf8_byte_in_ratings_is_named_by_its_offset_and_line_with_a_bom(tmp_path):
    """utf-8-sig counts offsets after the BOM: the reported byte was 3 bytes early."""
    from failfade.feedback import FeedbackError
    from failfade.tasks.generation import ratings

    body = b"image_id,cell,bias,quality,rater\nc1-s0,1,0,5,ann\nc2-s0,2,0,4,b\xe9b\n"
    for bom in (b"", b"\xef\xbb\xbf"):
        path = tmp_path / "r.csv"
        path.write_bytes(bom + body)
        assert ratings.is_ratings(path)  # the bad byte is not on the header's line: read_ratings names it
        at = len(bom) + body.index(b"\xe9")
        with pytest.raises(FeedbackError, match=f"line 3: not UTF-8 text \\(byte 0xe9 at offset {at}\\)"):
            ratings.read_ratings(path, _space(), 4)


def test_ratings_rows_are_named_by_their_own_line_after_blank_lines(tmp_path):
    from failfade.feedback import FeedbackError
    from failfade.tasks.generation import ratings

    path = tmp_path / "b.csv"
    path.write_text("image_id,cell,bias,quality,rater\nc1-s0,1,0,5,ann\n\n\nc2-s0,2,0,9,bob\n")
    with pytest.raises(FeedbackError, match="line 5: quality '9'"):
        ratings.read_ratings(path, _space(), 4)


def test_a_partly_filled_ratings_template_is_read_as_its_rated_rows(tmp_path):
    """The template lists every sheet image (with a prompt column); people rate some of them, often with the
    rater filled down the whole column: the blank rows are images left unrated, not errors."""
    from failfade.tasks.generation import ratings

    path = tmp_path / "t.csv"
    path.write_text("image_id,cell,bias,quality,rater,prompt\n"
                    "c1-s0,1,1,2,ann,a photo\nc1-s1,1,,,ann,a photo\nc2-s0,2,0,5,,a sketch\nc2-s0,2,0,5,ann,a sketch\n"
                    "c3-s0,3,,,,a drawing\n")
    with pytest.raises(Exception, match="line 4: no rater named"):
        ratings.read_ratings(path, _space(), 4)
    path.write_text(path.read_text().replace("c2-s0,2,0,5,,a sketch\n", ""))
    table = ratings.read_ratings(path, _space(), 4)
    assert table.select("image_id", "bias", "quality", "rater").rows() == [("c1-s0", 1, 2, "ann"), ("c2-s0", 0, 5, "ann")]


def test_ratings_become_a_plan_by_the_documented_rule(tmp_path):
    """Cell 1: both images fail for most raters -> fix; cell 2: a single failing rater of three -> accept."""
    from failfade.tasks.generation import ratings

    rows = ["c1-s0,1,1,4,ann", "c1-s0,1,0,2,bob", "c1-s0,1,0,5,cy",   # 2 of 3 fail it -> the image fails
            "c1-s1,1,0,1,ann", "c1-s1,1,0,4,bob",                     # 1 of 2: a tie fails
            "c2-s0,2,0,5,ann", "c2-s0,2,0,4,bob", "c2-s0,2,1,3,cy",   # 1 of 3 -> passes
            "c2-s1,2,0,3,ann", "c3-s0,3,0,4,ann"]
    table = ratings.read_ratings(_write(tmp_path / "r.csv", rows), _space(), 4)
    cells = pl.DataFrame({"cell": [1, 2, 3], "failure_rate": [0.9, 0.2, 0.1]})
    judged = pl.DataFrame({"image_id": ["c1-s0", "c1-s1", "c2-s0", "c2-s1"], "judge_failure": [True, True, False, True]})
    plan = ratings.ratings_plan(table, _space(), explored=[1, 2, 3], threshold=0.5, confidence=0.95, source="r.csv",
                                judge_cells=cells, judged=judged)
    assert [f["cell"] for f in plan["fix"]] == [1] and plan["fix"][0]["weight"] == 1.0
    assert plan["accept"] == [2, 3] and plan["kind"] == "ratings"
    s = plan["ratings"]
    assert s["raters"] == ["ann", "bob", "cy"] and s["ratings"] == 10 and s["images"] == 5
    ja = s["judge_agreement"]
    assert ja["images"]["n"] == 4 and ja["images"]["agreement"] == 0.75  # c2-s1: judge fails, the rater passes
    assert ja["cells"]["n"] == 3 and ja["cells"]["spearman"] == pytest.approx(0.866, abs=1e-3)
    assert "Judge and raters" in ratings.markdown(s) and "75.0% of 4 images" in ratings.markdown(s)
    assert ratings.kappa([1, 1, 0, 0], [1, 1, 0, 0]) == 1.0


def test_ratings_need_the_landscapes_sheet_files(tmp_path):
    """Without the sheet's image ids and the judge's verdicts the feedback stage stops, naming the
    file (it used to drop the judge-rater comparison and the id check silently)."""
    from failfade.tasks.generation import ratings

    with pytest.raises(FailfadeError, match=r"sheet_judged\.csv: missing .* a plain `failfade run` rebuilds it"):
        ratings.read_judged(tmp_path)
    with pytest.raises(FailfadeError, match=r"ratings_template\.csv: missing"):
        ratings.sheet_ids(tmp_path)
    (tmp_path / "ratings_template.csv").write_text("image_id,cell,bias,quality,rater\nc1-s0,1,,,\n")
    assert ratings.sheet_ids(tmp_path) == {"c1-s0"}


def test_ratings_that_fix_nothing_are_refused_at_the_feedback_stage(tmp_path):
    """Every rated cell passes: the plan would be empty, so the feedback stage names the file."""
    from failfade.feedback import FeedbackError
    from failfade.tasks.generation import ratings

    table = ratings.read_ratings(_write(tmp_path / "r.csv", ["c1-s0,1,0,5,ann", "c2-s0,2,0,4,ann"]), _space(), 4)
    cells = pl.DataFrame({"cell": [1, 2], "failure_rate": [0.9, 0.2]})
    with pytest.raises(FeedbackError, match=r"r\.csv: invalid feedback: no explored cell's rated failure rate reaches 0\.5"):
        ratings.ratings_plan(table, _space(), explored=[1, 2], threshold=0.5, confidence=0.95,
                             source=str(tmp_path / "r.csv"), judge_cells=cells, judged=None)


def test_every_pipeline_file_keys_the_outcome_cache(tmp_path, monkeypatch):
    """The card pins the weights (*.safetensors) only, and its sha256 keyed the cache: a pipeline whose
    scheduler_config.json, tokenizer or component configs differ reused the other one's outcomes.
    The key covers them now, for a model folder and for a derived one whose pipeline lives in its base."""
    import os
    import shutil
    from types import SimpleNamespace

    from failfade import pipeline
    from failfade.tasks.generation import models
    from failfade.tasks.generation import training as T
    from failfade.tasks.generation.pipeline import save_components

    base = tmp_path / "model"
    files = ["pipeline/" + f for f in save_components(T.build(seed=0, width=8), base / "pipeline")]
    models.write_card({"pipeline": "pipeline", "files": models.digest_files(base, files)}, base)
    (base / "training.csv").write_text("step,loss,seconds\n-1,,0.0\n")
    post = tmp_path / "post"
    (post / models.ADAPTER).mkdir(parents=True)
    (post / models.ADAPTER / models.ADAPTER_WEIGHTS).write_bytes(b"adapter")
    (post / models.ADAPTER / "adapter.json").write_text('{"rank": 4}')
    models.write_card({"pipeline": os.path.relpath(base / "pipeline", post),
                       "files": {**models.digest_files(base, files),
                                 **models.digest_files(post, [f"{models.ADAPTER}/{models.ADAPTER_WEIGHTS}"])}}, post)

    def key(model_dir):
        task = SimpleNamespace(model_sha256=json.loads((model_dir / "model.json").read_text())["sha256"], space=None,
                               n_inputs=2, n_cells=3, labels=np.zeros(2), observations=np.zeros((2, 1)))
        monkeypatch.setattr(pipeline, "family_of", lambda exp: SimpleNamespace(build_task=lambda exp, d: task))
        exp = {"data": {"template": "{digit}", "seeds": 2}, "seed": 0, "concepts": []}
        name = pipeline.build_task(exp, model_dir, tmp_path / "cache").path.name
        models.read_card(model_dir)  # the pinned weights still match their card
        return name

    first, derived = key(base), key(post)
    shutil.copytree(base, tmp_path / "copy")
    assert key(tmp_path / "copy") == first  # an identical copy reuses the outcomes
    (post / models.ADAPTER / "adapter.json").write_text('{"rank": 8}')
    assert key(post) != derived
    for rel, edit in [("pipeline/scheduler/scheduler_config.json", {"steps_offset": 0}),
                      ("pipeline/tokenizer/tokenizer_config.json", {"model_max_length": 7}),
                      ("pipeline/unet/config.json", {"upcast_attention": True})]:
        shutil.rmtree(tmp_path / "copy")
        shutil.copytree(base, tmp_path / "copy")
        f = tmp_path / "copy" / rel
        f.write_text(json.dumps({**json.loads(f.read_text()), **edit}))
        assert key(tmp_path / "copy") != first, rel
    derived = key(post)
    f = base / "pipeline" / "scheduler" / "scheduler_config.json"  # the derived model's pipeline is its base's
    f.write_text(json.dumps({**json.loads(f.read_text()), "steps_offset": 0}))
    assert key(post) != derived


def test_the_clip_judge_and_its_question_key_the_outcome_cache(tmp_path):
    """A CLIP judge lives outside the model folder: its files are pinned by the card (so another
    judge, or one edited in place, is not read back from the outcome cache), and the bias question
    is part of the key."""
    import failfade.config
    from failfade.pipeline import build_task, stage_model
    from failfade.tasks.generation import training as T
    from failfade.tasks.generation.pipeline import save_components

    save_components(T.build(seed=0, width=8), tmp_path / "pipeline")
    build_clip(tmp_path / "clipA", seed=0)
    build_clip(tmp_path / "clipB", seed=1)

    def exp_for(clip, bias=None):
        e = {"task": "generation", "seed": 0, "data": {"template": "{thickness} {size} {digit}", "seeds": 2},
             "model": {"source": f"path:{tmp_path / 'pipeline'}", "steps": 2, "guidance": 1.5, "check_seeds": 1,
                       "judge": "clip", "judge_source": f"path:{clip}", "threshold": 0.0, **({"bias": bias} if bias else {})},
             "concepts": WORDS, "feedback": "unused.csv", "explore": {"algorithm": "random", "budget": 8, "num_agents": 4}}
        return failfade.config.validate({"experiments": {"t2i": e}})["experiments"]["t2i"]

    ids, cells = np.repeat(np.arange(2), 4), np.tile(np.arange(4), 2)
    seen = {}
    for name, clip, bias in [("A", "clipA", None), ("B", "clipB", None),
                             ("B+bias", "clipB", {"question": "a photo of a {}", "classes": ["cat", "dog"]})]:
        exp = exp_for(tmp_path / clip, bias)
        stage_model(exp, tmp_path / "model", tmp_path / "res")
        task = build_task(exp, tmp_path / "model", tmp_path / "cache")
        out = task.score(ids, cells)
        task.save()
        assert task.misses == len(ids) and task.hits == 0, name  # never another judge's outcomes
        fresh = build_task(exp, tmp_path / "model").score(ids, cells)
        np.testing.assert_array_equal(out.delta, fresh.delta)
        np.testing.assert_array_equal(out.prediction, fresh.prediction)
        seen[name] = task.path.name
    assert len(set(seen.values())) == 3
    card = json.loads((tmp_path / "model" / "model.json").read_text())
    assert any(f.startswith("clip-judge/") and f.endswith(".safetensors") for f in card["files"])
    weights = next((tmp_path / "clipB").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + bytes(8))  # the judge edited in place
    with pytest.raises(FailfadeError, match="corrupt checkpoint"):
        build_task(exp, tmp_path / "model", tmp_path / "cache")


def _chromium():
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    return browser, driver


def test_a_person_rates_the_sheet_in_a_real_browser_and_the_feedback_stage_takes_it(digits_world, tmp_path):
    """The rating sheet opened in headless chromium: rate four images, export, and the exported CSV
    is accepted by the feedback stage (plan, agreement)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from failfade.landscape import write_database
    from failfade.pipeline import stage_feedback, stage_rating_sheet
    from failfade.tasks.family import family

    browser, driver_path = _chromium()
    exp, model_dir = digits_world["exp"], digits_world["root"] / "model"
    _, queries, cell_t, modes = explored_exhaustively(digits_world)
    land = tmp_path / "landscape"
    land.mkdir()
    write_database(land / "landscape.duckdb", queries, cell_t, modes)
    stage_rating_sheet(exp, model_dir, land / "landscape.duckdb", land)

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "downloads")})
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        drv.get((land / "rating_sheet.html").as_uri())
        drv.find_element(By.ID, "export").click()
        assert "enter your name" in drv.find_element(By.ID, "status").text
        drv.find_element(By.ID, "rater").send_keys("ann")
        figures = drv.find_elements(By.CSS_SELECTOR, "figure")
        assert len(figures) == 36
        rated = {}
        for f, (bias, quality) in zip(figures[:4], [("1", "2"), ("0", "5"), ("0", "1"), ("0", "4")]):
            Select(f.find_element(By.CLASS_NAME, "bias")).select_by_value(bias)
            Select(f.find_element(By.CLASS_NAME, "quality")).select_by_value(quality)
            rated[f.get_attribute("data-id")] = (bias, quality)
        Select(figures[5].find_element(By.CLASS_NAME, "bias")).select_by_value("1")  # half-rated: left out, and said so
        drv.find_element(By.ID, "export").click()
        csv_text = drv.find_element(By.ID, "csv").get_attribute("value")
        assert "4 image(s) rated, 1 half-rated" in drv.find_element(By.ID, "status").text
    finally:
        drv.quit()
    lines = csv_text.strip().splitlines()
    assert lines[0] == "image_id,cell,bias,quality,rater,prompt" and len(lines) == 5
    assert {ln.split(",")[0]: tuple(ln.split(",")[2:4]) for ln in lines[1:]} == rated
    prompts = family("generation").prompts(exp)
    assert all(ln.split(",", 5)[5] == f'"{prompts[int(ln.split(",")[1])]}"' for ln in lines[1:])
    exported = tmp_path / "ratings-ann.csv"
    exported.write_text(csv_text)
    plan = stage_feedback(exp, exported, land / "landscape.duckdb", tmp_path / "plan.json")
    assert plan["kind"] == "ratings" and plan["ratings"]["raters"] == ["ann"] and plan["ratings"]["images"] == 4
    assert plan["ratings"]["judge_agreement"]["images"]["n"] == 4


def test_a_plan_that_fixes_every_prompt_trains_on_fixed_prompts_only(tmp_path):
    """`*,fix` (valid feedback) left no prompt to preserve, and the LoRA's batches divided by zero."""
    from failfade.feedback import mitigation_plan, read_feedback
    from failfade.tasks.family import family

    exp = tiny_experiment(tmp_path / "pipe")
    fam = family("generation")
    space = fam.space(exp)
    (tmp_path / "fb.csv").write_text("selector,decision\n*,fix\n")
    plan = mitigation_plan(read_feedback(tmp_path / "fb.csv", space, range(space.n_cells)), space,
                           range(space.n_cells), "fb.csv")
    fix = np.array([f["cell"] for f in plan["fix"]])
    assert len(fix) == space.n_cells
    batches = fam.training_batches(exp, fam.prompts(exp), fix, np.full(len(fix), 1 / len(fix)), exp["mitigate"])
    x, prompts, preserve = batches(0, np.random.default_rng(0))
    assert len(prompts) == len(x) == exp["mitigate"]["batch_size"] and not preserve.any()
    assert set(prompts) <= set(fam.prompts(exp))


def test_check_feedback_reads_a_ratings_file_like_the_feedback_stage(tmp_path, monkeypatch):
    """`failfade check-feedback t2i <ratings.csv>` printed `valid` and then a KeyError traceback: a
    ratings plan has no decision-file overlaps. It now says what the ratings came to."""
    from click.testing import CliRunner

    import failfade.pipeline
    from failfade.cli import main
    from failfade.tasks.generation import ratings

    table = ratings.read_ratings(_write(tmp_path / "r.csv", ["c1-s0,1,1,4,ann", "c1-s0,1,0,2,bob", "c2-s0,2,0,5,ann"]),
                                 _space(), 4)
    plan = ratings.ratings_plan(table, _space(), explored=[1, 2], threshold=0.5, confidence=0.95, source="r.csv",
                                judge_cells=pl.DataFrame({"cell": [1, 2], "failure_rate": [0.9, 0.2]}), judged=None)
    monkeypatch.setattr(failfade.pipeline, "feedback_plan", lambda exp, path, db: plan)
    (tmp_path / "results" / "t2i" / "landscape").mkdir(parents=True)
    (tmp_path / "results" / "t2i" / "landscape" / "landscape.duckdb").write_bytes(b"")
    repo = Path(__file__).resolve().parents[1]
    r = CliRunner().invoke(main, ["check-feedback", "t2i", str(tmp_path / "r.csv"), "--configfile",
                                  str(repo / "config" / "config.yaml"), "--results", str(tmp_path / "results")])
    assert r.exit_code == 0, r.output
    assert "valid; 1 cell(s) to fix, 1 accepted" in r.output
    assert "3 rating(s) of 2 image(s) in 2 cell(s) by 2 rater(s); a rating fails an image when" in r.output


def test_a_template_without_a_slot_for_an_axis_is_named_before_any_job_runs(tmp_path):
    import failfade.config

    exp = {"task": "generation", "data": {"template": "a {thickness} {digit}"}, "concepts": WORDS, "feedback": "f.csv"}
    with pytest.raises(FailfadeError, match=r"experiments.t2i.data.template: .* has no slot for axis 'size'"):
        failfade.config.validate({"experiments": {"t2i": exp}})
    exp["data"]["template"] = "{thickness} {size} {digit} {colour}"
    with pytest.raises(FailfadeError, match=r"slot \{colour\} is not a concept axis"):
        failfade.config.validate({"experiments": {"t2i": exp}})
    # a level is a word: `{digit:d}` raised a bare ValueError while the config was read, `{digit!r}` quoted it
    for slot in ("{digit:d}", "{digit!r}", "{digit:{size}}"):
        exp["data"]["template"] = "{thickness} {size} " + slot
        with pytest.raises(FailfadeError, match=r"experiments.t2i.data.template: slot \{digit.*\} has a conversion or "
                                                r"format spec; write \{digit\}"):
            failfade.config.validate({"experiments": {"t2i": exp}})
    exp["model"] = {"judge": "sometimes"}
    exp["data"]["template"] = "{thickness} {size} {digit}"
    with pytest.raises(FailfadeError, match="experiments.t2i.model.judge"):
        failfade.config.validate({"experiments": {"t2i": exp}})


def test_a_word_the_attribute_judge_does_not_know_is_refused():
    """`huge` named no size, so the judge dropped its size head and those cells could never fail on size."""
    import failfade.config

    words = [dict(a) for a in WORDS]
    words[1] = {"name": "size", "transform": "word", "levels": ["small", "medium", "huge"]}
    exp = {"task": "generation", "data": {"template": "{thickness} {size} {digit}"}, "concepts": words, "feedback": "f.csv"}
    with pytest.raises(FailfadeError, match=r"experiments.t2i.concepts\[1\].levels: 'huge' names no digit, thickness or "
                                            r"size that the attribute judge knows .*; for other words use judge: clip"):
        failfade.config.validate({"experiments": {"t2i": exp}})
    words[1]["levels"] = ["small", "medium", "LARGE"]  # the judge reads prompts in lower case
    exp["model"] = {"judge": "attribute"}
    failfade.config.validate({"experiments": {"t2i": exp}})


def test_a_prompt_longer_than_the_tokenizer_keeps_is_refused_naming_the_template(tmp_path, digits_world):
    """The builtin's tokenizer keeps 8 tokens: 'a photo of a thin small eight' reached the text encoder
    as 'a photo' while the judge and the LoRA read the whole prompt. Refused when the config is read
    (the builtin, a path: pipeline), by the model stage (any source) and when a model folder is loaded."""
    import failfade.config
    from failfade.tasks.generation import GenerationFamily

    long = "a photo of a {thickness} {size} {digit}"
    exp = {"task": "generation", "data": {"template": long}, "concepts": WORDS, "feedback": "f.csv"}  # builtin:digits
    with pytest.raises(FailfadeError, match=r"experiments.t2i.data.template: 12 of 12 prompt\(s\) are longer than .* "
                                            r"model_max_length of 8 tokens .* e.g. 'a photo of a thin small \w+': 14 "
                                            r"tokens, of which the text encoder would read only 'a photo' "):
        failfade.config.validate({"experiments": {"t2i": exp}})
    exp["data"]["template"] = "{thickness} {size} {digit}"
    failfade.config.validate({"experiments": {"t2i": exp}})  # 5 tokens: accepted
    exp["data"]["template"] = "a {thickness} {size} {digit}"  # 6 words, but 'a' is one token: 6 + 2 = 8 fit
    failfade.config.validate({"experiments": {"t2i": exp}})

    pipe = digits_world["root"] / "pipeline"  # the builtin's tokenizer (8 tokens) in a path: pipeline
    exp = {**digits_world["exp"], "data": {**digits_world["exp"]["data"], "template": long}}
    with pytest.raises(FailfadeError, match=rf"experiments.t2i.data.template: .* \({pipe / 'tokenizer'}\)"):
        failfade.config.validate({"experiments": {"t2i": exp}})
    fam = GenerationFamily()
    with pytest.raises(FailfadeError, match=r"^data.template: .*would read only 'a photo'"):
        fam.obtain_model(exp, tmp_path / "model", tmp_path / "res")  # what an hf: pipeline meets
    assert not (tmp_path / "model" / "pipeline").exists()
    with pytest.raises(FailfadeError, match=r"^data.template: .*would read only 'a photo'"):
        fam.build_task(exp, digits_world["root"] / "model")  # a model folder written for another template


@pytest.mark.slow
def test_the_workflow_runs_a_text_to_image_experiment_from_ratings(tmp_path, repo_root, snakemake_exe):
    """Snakemake end to end on a tiny pipeline: landscape with sample and rating sheets, ratings as
    feedback, LoRA mitigation, re-exploration, and a shift report with the judge–rater comparison."""
    import subprocess

    import yaml

    from failfade.tasks.generation import training as T
    from failfade.tasks.generation.pipeline import save_components

    save_components(T.build(seed=0, width=8), tmp_path / "pipeline")
    exp = {"task": "generation", "seed": 0, "data": {"template": "{thickness} {size} {digit}", "seeds": 4},
           "model": {"source": f"path:{tmp_path / 'pipeline'}", "steps": 2, "judge_steps": 30, "check_seeds": 2},
           "concepts": WORDS, "feedback": "ratings.csv",
           "explore": {"algorithm": "ppo", "budget": 24, "num_agents": 4}, "mitigate": {"steps": 3, "batch_size": 8, "rank": 2}}
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump({"experiments": {"t2i": exp}}))
    _write(tmp_path / "ratings.csv", ["c0-s0,0,1,2,ann", "c0-s0,0,1,1,bob", "c0-s1,0,0,2,ann", "c3-s0,3,0,5,ann",
                                      "c3-s0,3,0,4,bob", "c3-s1,3,0,4,bob"])
    cmd = [str(snakemake_exe), "--snakefile", str(repo_root / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "config" / "config.yaml"), "--cores", "2", "-q",
           "--set-threads", "model=1", "explore=1", "mitigate=1", "reexplore=1", "probes=1", "audit=1",
           "rating_sheet=1"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    logs = "\n".join(p.read_text()[-1500:] for p in sorted((tmp_path / "logs").rglob("*.log")))
    assert proc.returncode == 0, proc.stderr[-3000:] + logs
    res = tmp_path / "results" / "t2i"
    for f in ("landscape/gallery.png", "landscape/rating_sheet.html", "landscape/ratings_template.csv",
              "mitigate/adapter/pytorch_lora_weights.safetensors", "reexplore/queries.parquet", "shift/shift.md"):
        assert (res / f).is_file(), f
    plan = (res / "feedback" / "plan.json").read_text()
    assert '"kind": "ratings"' in plan and '"cell": 0' in plan
    md = (res / "shift" / "shift.md").read_text()
    assert "## Judge and raters" in md and "by 2 rater(s): ann, bob" in md and "untargeted prompts" in md


@pytest.mark.slow
def test_the_workflow_writes_bias_csv_with_a_clip_judge(tmp_path, repo_root, snakemake_exe):
    """model.bias through Snakemake: the bias rule runs after the exploration (a CLIP judge at a
    path:, its zero-shot answers in the queries) and writes landscape/bias.csv, one row per prompt;
    a config without model.bias plans no bias rule."""
    import subprocess

    import yaml

    from failfade.tasks.generation import training as T
    from failfade.tasks.generation.pipeline import save_components

    save_components(T.build(seed=0, width=8), tmp_path / "pipeline")
    clip = build_clip(tmp_path / "clip")
    exp = {"task": "generation", "seed": 0, "data": {"template": "{thickness} {size} {digit}", "seeds": 4},
           "model": {"source": f"path:{tmp_path / 'pipeline'}", "steps": 2, "judge": "clip",
                     "judge_source": f"path:{clip}", "threshold": 0.3,
                     "bias": {"question": "a photo of a {}", "classes": ["cat", "dog"]}},
           "concepts": WORDS, "feedback": "ratings.csv",
           "explore": {"algorithm": "random", "budget": 48, "num_agents": 8}}
    (tmp_path / "config").mkdir()
    config = tmp_path / "config" / "config.yaml"
    config.write_text(yaml.safe_dump({"experiments": {"t2i": exp}}))
    cmd = [str(snakemake_exe), "--snakefile", str(repo_root / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(config), "--cores", "2", "-q", "--set-threads", "model=1", "explore=1"]
    dry = [c for c in cmd if c != "-q"] + ["-n"]
    planned = subprocess.run(dry, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert planned.returncode == 0 and re.search(r"^rule bias:", planned.stdout, flags=re.M), planned.stdout[-2000:]
    proc = subprocess.run(cmd[:1] + ["results/t2i/landscape/bias.csv"] + cmd[1:], cwd=tmp_path, capture_output=True, text=True,
                          timeout=1200)
    logs = "\n".join(p.read_text()[-1500:] for p in sorted((tmp_path / "logs").rglob("*.log")))
    assert proc.returncode == 0, proc.stderr[-3000:] + logs
    table = pl.read_csv(tmp_path / "results" / "t2i" / "landscape" / "bias.csv")
    assert table.height == 12 and table["prompt"][0] == "thin small zero"
    assert {"share_cat", "share_dog", "tv", "tv_floor", "biased"} <= set(table.columns), table.columns
    explored = table.filter(pl.col("queries") > 0)
    assert explored.height > 0
    np.testing.assert_allclose((explored["share_cat"] + explored["share_dog"]).to_numpy(), 1.0, atol=1e-9)
    # another target changes the distances, not the judge's answers: the table alone is redone
    exp["model"]["bias"]["target"] = [0.7, 0.3]
    config.write_text(yaml.safe_dump({"experiments": {"t2i": exp}}))
    planned = subprocess.run(dry[:1] + ["results/t2i/landscape/bias.csv"] + dry[1:], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert set(re.findall(r"^rule (\w+):", planned.stdout, flags=re.M)) == {"bias"}, planned.stdout[-2000:]
    del exp["model"]["bias"]
    config.write_text(yaml.safe_dump({"experiments": {"t2i": exp}}))
    planned = subprocess.run(dry, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert planned.returncode == 0 and re.search(r"^rule explore:", planned.stdout, flags=re.M), planned.stdout[-2000:]
    assert not re.search(r"^rule bias:", planned.stdout, flags=re.M)


def test_a_hub_snapshot_takes_one_copy_of_each_weight():
    """What download() asks the hub for, on a Stable Diffusion repository's file list: one
    safetensors copy per component with its config and tokenizer; no .bin, Flax, fp16 or non-EMA
    copies, no safety checker."""
    from huggingface_hub.utils import filter_repo_objects

    from failfade.tasks.storage import HF_IGNORE, HF_PATTERNS

    files = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
             "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.non_ema.safetensors",
             "unet/diffusion_pytorch_model.bin", "unet/diffusion_flax_model.msgpack", "text_encoder/model.safetensors",
             "text_encoder/model.fp16.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt",
             "safety_checker/model.safetensors", "safety_checker/config.json", "scheduler/scheduler_config.json"]
    kept = list(filter_repo_objects(files, allow_patterns=HF_PATTERNS, ignore_patterns=HF_IGNORE))
    assert kept == ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                    "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt",
                    "scheduler/scheduler_config.json"]


def test_a_bad_training_image_folder_is_named_before_training(tmp_path):
    """mitigate.images (the paper's curated image + caption pairs): a non-UTF-8 caption, an image
    that does not open, or images of two sizes failed mid-training with an error naming no file."""
    from PIL import Image

    from failfade import FailfadeError
    from failfade.tasks.generation import folder_batches

    def pair(name, size=(16, 16), caption=b"a thin zero"):
        Image.new("RGB", size).save(tmp_path / f"{name}.png")
        (tmp_path / f"{name}.txt").write_bytes(caption)

    pair("a")
    pair("b")
    batches = folder_batches(tmp_path, 3, "mitigate.images")
    x, captions = batches(0, np.random.default_rng(0))
    assert tuple(x.shape) == (3, 3, 16, 16) and set(captions) == {"a thin zero"}
    pair("c", caption="caf\u00e9".encode("latin-1"))
    with pytest.raises(FailfadeError, match=r"mitigate.images: .*c\.txt: the caption is not UTF-8"):
        folder_batches(tmp_path, 3, "mitigate.images")
    pair("c", size=(32, 32))
    with pytest.raises(FailfadeError, match=r"c\.png is 32x32 px, the images before it 16x16"):
        folder_batches(tmp_path, 3, "mitigate.images")
    (tmp_path / "c.png").write_bytes(b"not a png")
    with pytest.raises(FailfadeError, match=r"c\.png: not a readable image"):
        folder_batches(tmp_path, 3, "mitigate.images")


def test_training_images_are_checked_against_the_pipelines_format(tmp_path):
    """Images of another size, or of 3 channels for the 1-channel pixel model, failed at the first
    training step with a bare RuntimeError; digit renders given to a latent (Stable Diffusion)
    pipeline failed blaming data.template. The pipeline's format is named before any step."""
    from PIL import Image

    from failfade import FailfadeError
    from failfade.tasks.family import family
    from failfade.tasks.generation import folder_batches, image_format
    from failfade.tasks.generation.pipeline import load_components

    latent = load_components(build_pipeline(tmp_path / "sd"), "model.source")
    pixel = load_components(build_pipeline(tmp_path / "px", latent=False), "model.source")
    assert image_format(latent) == (3, 16) and image_format(pixel) == (1, 16)  # 8 latent px x a VAE of 2 levels
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in "ab":
        Image.new("RGB", (16, 16), (200, 10, 10)).save(imgs / f"{name}.png")
        (imgs / f"{name}.txt").write_text("a thin zero")
    x, _ = folder_batches(imgs, 2, "mitigate.images", (1, 16))(0, np.random.default_rng(0))
    assert tuple(x.shape) == (2, 1, 16, 16)  # greyscale for the 1-channel model
    assert tuple(folder_batches(imgs, 2, "mitigate.images", (3, 16))(0, np.random.default_rng(0))[0].shape) == (2, 3, 16, 16)
    with pytest.raises(FailfadeError, match=r"mitigate.images: .*a\.png is 16x16 px; this pipeline trains on 64x64 px"):
        folder_batches(imgs, 2, "mitigate.images", (3, 64))
    exp = tiny_experiment(tmp_path / "sd")
    fam = family("generation")
    fix = np.array([0, 1])
    with pytest.raises(FailfadeError, match=r"mitigate.images: this pipeline trains on 16x16 px images with 3 channel"):
        fam.training_batches(exp, fam.prompts(exp), fix, np.full(2, 0.5), exp["mitigate"], image_format(latent))
    batches = fam.training_batches(exp, fam.prompts(exp), fix, np.full(2, 0.5), exp["mitigate"], image_format(pixel))
    assert tuple(batches(0, np.random.default_rng(0))[0].shape[1:]) == (1, 16, 16)


def test_an_hf_pipeline_without_training_images_is_refused_with_the_config():
    """config/paper.yaml's Stable Diffusion experiment set no mitigate.images: its mitigate stage
    failed after the whole exploration. Now the config names the key; paper.yaml sets it."""
    import failfade.config
    from failfade import FailfadeError

    exp = {"task": "generation", "data": {"template": "{digit}"}, "feedback": "f.csv",
           "model": {"source": "hf:CompVis/stable-diffusion-v1-4", "judge": "clip",
                     "judge_source": "hf:openai/clip-vit-base-patch32"},
           "concepts": [{"name": "digit", "transform": "word", "levels": ["zero", "one"]}]}
    with pytest.raises(FailfadeError, match=r"experiments\.x\.mitigate\.images: an hf: model is fine-tuned on a folder"):
        failfade.config.validate({"experiments": {"x": exp}})
    exp["mitigate"] = {"images": "/data/pairs"}
    failfade.config.validate({"experiments": {"x": exp}})
    paper = failfade.config.load(Path(__file__).resolve().parents[1] / "config" / "paper.yaml")
    assert paper["experiments"]["sd14"]["mitigate"]["images"]


@pytest.mark.parametrize("template, message", [
    ("one {thickness} {size} {digit}", r"read the prompt 'one thin small zero' as asking for one thin small, but its "
                                      r"levels name zero thin small"),
    ("a thick, {thickness} {size} {digit}", r"read the prompt 'a thick, thin small zero' as asking for zero thick small, "
                                            r"but its levels name zero thin small"),
])
def test_template_words_the_attribute_judge_would_read_are_refused(template, message):
    import failfade.config
    from failfade import FailfadeError

    exp = {"task": "generation", "data": {"template": template}, "feedback": "f.csv", "model": {"source": "builtin:digits"},
           "concepts": WORDS}
    with pytest.raises(FailfadeError, match=r"experiments\.x\.data\.template: the attribute judge would " + message):
        failfade.config.validate({"experiments": {"x": exp}})


def test_the_attribute_judge_reads_a_digit_with_punctuation():
    from failfade.tasks.generation.prompts import requested

    assert requested("a thin small zero.") == (0, 0, 0) and requested("Large, THICK nine!") == (9, 2, 2)
    assert requested("a photo") == (-1, -1, -1)


def test_the_checks_draw_and_judge_a_chunk_at_a_time(digits_world, monkeypatch):
    """The clean check (and the probe and fresh-seed checks) drew every image before judging any:
    the fresh-seed benchmark's 17,280 at once. Chunked, the same verdicts."""
    import failfade.tasks.generation as G
    from failfade.tasks.family import family

    exp, model_dir = digits_world["exp"], digits_world["root"] / "model"
    fam = family("generation")
    from failfade.tasks.generation.pipeline import Sampler

    whole = fam.clean_check(exp, model_dir)
    drawn = []
    generate = Sampler.generate
    monkeypatch.setattr(Sampler, "generate", lambda self, ps, seeds: drawn.append(len(ps)) or generate(self, ps, seeds))
    monkeypatch.setattr(G, "CHECK_CHUNK", 7)
    chunked = fam.clean_check(exp, model_dir)
    assert sum(drawn) == whole["clean_check_images"] > 7 and max(drawn) == 7
    assert chunked == whole
