"""The text-to-image family's first slice: pipelines loaded from folders, seeded sampling, the CLIP
judge and word axes, on tiny random components that the tests build and save here (no hub)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
    from failfade.tasks.generation.pipeline import load_components, parse_source

    with pytest.raises(FailfadeError, match=r"model.source: .* is not a text-to-image pipeline folder \(missing unet/"):
        (tmp_path / "text_encoder").mkdir()
        (tmp_path / "tokenizer").mkdir()
        (tmp_path / "scheduler").mkdir()
        load_components(tmp_path, "model.source")
    with pytest.raises(FailfadeError, match="expected hf:<owner>/<name>"):
        parse_source("hf:stable-diffusion", "model.source")
    assert parse_source("hf:CompVis/stable-diffusion-v1-4@main", "k") == ("hf", "CompVis/stable-diffusion-v1-4", "main")


def test_clip_judge_scores_agreement_with_the_prompt(folders):
    from failfade.tasks.generation.judges import ClipJudge

    judge = ClipJudge.load(folders["clip"], "judge.clip", threshold=0.3)
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    pred, delta, fail = judge(images, ["a red cat"] * 4)
    cos = judge.cosine(images, ["a red cat"] * 4)
    np.testing.assert_allclose(delta, 1.0 - cos, rtol=1e-6)
    assert (fail == (cos < 0.3)).all() and (pred == -1).all()
    assert judge.embed(images[:, :1]).shape == (4, 16)  # grey images are judged as RGB
    with pytest.raises(FailfadeError, match="judge.clip: .* is not a CLIP model folder"):
        ClipJudge.load(folders["sd"], "judge.clip", 0.3)


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
    req = np.stack([a.digit, a.thickness, a.size], 1)
    judge = D.AttributeJudge(net, req)
    pred, delta, fail = judge(x, None, np.arange(len(x)))
    assert 1 - fail.mean() > 0.6  # all three right (chance: 1/90); measured 0.89 at 300 steps
    wrong = req.copy()
    wrong[:, 2] = (wrong[:, 2] + 1) % 3  # ask for another size than the one drawn
    _, delta_wrong, fail_wrong = D.AttributeJudge(net, wrong)(x, None, np.arange(len(x)))
    assert fail_wrong.mean() > 0.9 and delta_wrong.mean() > delta.mean()
    assert judge.embed(x[:5]).shape == (5, 128)


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
