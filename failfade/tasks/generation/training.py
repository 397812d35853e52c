"""The offline builtin text-to-image model: a tiny pixel-space conditional diffusion model trained
here, seeded, on attribute digits (digits.py), through the real diffusers and transformers classes.

  tokenizer     CLIPTokenizer whose merges spell every prompt word as one token (unknown words
                fall back to bytes), 8 tokens long
  text encoder  CLIPTextModel, 2 layers, hidden 64, trained jointly
  UNet          UNet2DConditionModel on 16×16 grey images, cross-attention at 8×8 (attention at
                16×16 too cost 3.8× the time per step here: 0.69 s against 0.18 s at width 16)
  scheduler     1,000-step cosine schedule, x0-prediction ("sample": ε-prediction left the digit at
                chance for minutes on this CPU), sampled with DDIM
Training: MSE on the clean image, 10% empty prompts (for classifier-free guidance), AdamW with a
cosine learning-rate decay and an EMA of the UNet's weights (what is stored), a fixed step count.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from failfade.numerics import keeps_denormals
from failfade.progress import progress as progress_bar
from failfade.tasks.generation import digits as D
from failfade.tasks.generation.pipeline import Components

WORDS = D.DIGITS + D.THICKNESS + D.SIZES


def word_tokenizer(words=WORDS, max_length: int = 8):
    """A CLIP tokenizer with the byte alphabet plus one token per word in `words`, built from merges
    (transformers 5 takes `vocab=`/`merges=`; the legacy file kwargs are silently ignored)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    for w in words:
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        cur = parts[0]
        for nxt in parts[1:]:
            if (cur, nxt) not in merges:
                merges.append((cur, nxt))
            cur += nxt
            vocab.setdefault(cur, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def build(seed: int, width: int = 16) -> Components:
    """The builtin's components with fresh weights (seeded)."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tok = word_tokenizer()
    text = CLIPTextModel(CLIPTextConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                        vocab_size=len(tok), max_position_embeddings=tok.model_max_length,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(sample_size=D.SIDE, in_channels=1, out_channels=1, block_out_channels=(width, 2 * width),
                                layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=64,
                                attention_head_dim=8, norm_num_groups=8)
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                          clip_sample=True, set_alpha_to_one=False, steps_offset=1)
    return Components(text, tok, unet, sched)


@keeps_denormals
def train(c: Components, images: torch.Tensor, labels: np.ndarray, steps: int, seed: int, batch_size: int = 64,
          lr: float = 2e-3, ema_decay: float = 0.999, empty_prompt: float = 0.1,
          thin_bias: dict[int, float] | None = None, desc: str = "train builtin diffusion") -> list[dict]:
    """Fit text encoder + UNet for `steps` batches; the UNet ends with its EMA weights. Attributes are
    drawn per sample by `digits.sample_attributes` (with the planted `thin_bias`, if any)."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    torch.manual_seed(seed)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    noise_sched = DDPMScheduler.from_config(c.scheduler.config)
    params = list(c.unet.parameters()) + list(c.text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    ema = EMAModel(c.unet.parameters(), decay=ema_decay)
    c.unet.train()
    c.text_encoder.train()
    history, t0 = [], time.perf_counter()
    for step in progress_bar(range(steps), desc=desc, unit="step"):
        idx = rng.integers(0, len(images), batch_size)
        a = D.sample_attributes(labels[idx], rng, thin_bias)
        x0 = D.render(images[idx], np.array(D.THICKNESS)[a.thickness], np.array(D.SIZES)[a.size]) * 2.0 - 1.0
        prompts = [D.prompt(d, t, s) if rng.random() >= empty_prompt else ""
                   for d, t, s in zip(a.digit, a.thickness, a.size)]
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (batch_size,), generator=gen)
        noisy = noise_sched.add_noise(x0, noise, t)
        tok = c.tokenizer(prompts, padding="max_length", truncation=True, max_length=c.tokenizer.model_max_length,
                          return_tensors="pt")
        cond = c.text_encoder(tok.input_ids)[0]
        loss = F.mse_loss(c.unet(noisy, t, encoder_hidden_states=cond).sample, x0)  # x0-prediction
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay.step()
        ema.step(c.unet.parameters())
        history.append({"step": step, "loss": float(loss.detach()), "lr": decay.get_last_lr()[0], "seconds": time.perf_counter() - t0})
    ema.copy_to(c.unet.parameters())
    c.unet.eval()
    c.text_encoder.eval()
    return history
