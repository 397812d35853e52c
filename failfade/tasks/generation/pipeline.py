"""Text-to-image pipelines: where they come from, how they are stored, and one seeded sampler.

A pipeline is the Stable Diffusion layout of diffusers components, each in its own folder:
`text_encoder/` (transformers CLIPTextModel), `tokenizer/` (CLIPTokenizer), `unet/`
(UNet2DConditionModel), `scheduler/` and, for latent models, `vae/` (AutoencoderKL). A pixel-space
model (the offline builtin) has no `vae/`: its UNet denoises the image itself. The same loader reads
a downloaded `hf:CompVis/stable-diffusion-v1-4` snapshot, a `path:` folder and the model stage's
output, with safetensors only and no remote code.

Sampling is one loop for every pipeline (`Sampler.generate`): the prompts are encoded once, every
image starts from the latent noise of its own seed (drawn on the CPU, so a seed gives the same
image on any device), the scheduler (DDIM, η = 0: deterministic) runs a fixed number of steps with
classifier-free guidance, and a VAE, when there is one, decodes. A query (seed, prompt) therefore
always gives the same image: bit for bit in the same batch layout, and up to float rounding (about
1e-6) in another, where the CPU's convolutions may pick other kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from failfade import FailfadeError
from failfade.numerics import keeps_denormals
from failfade.tasks import storage

COMPONENTS = ("text_encoder", "tokenizer", "unet", "scheduler")  # plus vae/ for latent models


download = storage.download


@dataclass
class Components:
    text_encoder: torch.nn.Module
    tokenizer: object
    unet: torch.nn.Module
    scheduler: object
    vae: torch.nn.Module | None = None

    def to(self, device: torch.device) -> "Components":
        for m in (self.text_encoder, self.unet, self.vae):
            if m is not None:
                m.to(device).eval()
        return self


def load_components(folder: Path, key: str, device: torch.device = torch.device("cpu")) -> Components:
    """The pipeline in `folder` (Stable Diffusion layout); a folder that is not one is named."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    missing = [c for c in COMPONENTS if not (folder / c).is_dir()]
    if missing:
        raise FailfadeError(f"{key}: {folder} is not a text-to-image pipeline folder (missing {', '.join(m + '/' for m in missing)})")
    try:
        text_encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), use_safetensors=True)
        tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
        unet = UNet2DConditionModel.from_pretrained(str(folder / "unet"), use_safetensors=True)
        # a fixed sampler: DDIM with the checkpoint's own noise schedule and prediction type
        scheduler = DDIMScheduler.from_pretrained(str(folder / "scheduler"))
        vae = AutoencoderKL.from_pretrained(str(folder / "vae"), use_safetensors=True) if (folder / "vae").is_dir() else None
    except Exception as e:  # transformers and diffusers raise many types for missing or broken files
        raise FailfadeError(f"{key}: cannot load a text-to-image pipeline from {folder} ({type(e).__name__}: {str(e)[:200]})") from e
    for m in (text_encoder, unet, vae):  # weights may be stored in fp16 (the builtin); compute in fp32 here
        if m is not None:
            m.float()
    return Components(text_encoder, tokenizer, unet, scheduler, vae).to(device)


def save_components(c: Components, out_dir: Path) -> list[str]:
    """Every component with save_pretrained (safetensors); returns the weight files, relative."""
    out_dir = Path(out_dir)
    c.text_encoder.save_pretrained(str(out_dir / "text_encoder"), safe_serialization=True)
    c.tokenizer.save_pretrained(str(out_dir / "tokenizer"))
    c.unet.save_pretrained(str(out_dir / "unet"), safe_serialization=True)
    c.scheduler.save_pretrained(str(out_dir / "scheduler"))
    if c.vae is not None:
        c.vae.save_pretrained(str(out_dir / "vae"), safe_serialization=True)
    return sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*.safetensors"))


def seed_of(seed: int, input_id: int) -> int:
    """The generation seed of held-out input `input_id` (an input of this family is a seed)."""
    return int(np.random.SeedSequence([seed, 7, int(input_id)]).generate_state(1)[0])


def fresh_seed_of(seed: int, i: int) -> int:
    """The i-th of a set of generation seeds that no stage uses (not held out, not trained on): for
    checking, on images that played no part in it, a choice made by looking at the held-out seeds."""
    return int(np.random.SeedSequence([seed, 8, int(i)]).generate_state(1)[0])


@keeps_denormals
class Sampler:
    """Seeded, batched text-to-image generation with a fixed scheduler, step count and guidance."""

    def __init__(self, c: Components, steps: int, guidance: float, batch_size: int = 64):
        self.c, self.steps, self.guidance, self.batch_size = c, int(steps), float(guidance), int(batch_size)
        self.device = next(c.unet.parameters()).device
        cfg = c.unet.config
        self.shape = (int(cfg.in_channels), int(cfg.sample_size), int(cfg.sample_size))
        self._empty = None

    def encode(self, prompts: list[str]) -> torch.Tensor:
        tok = self.c.tokenizer(list(prompts), padding="max_length", truncation=True,
                               max_length=self.c.tokenizer.model_max_length, return_tensors="pt")
        return self.c.text_encoder(tok.input_ids.to(self.device))[0]

    def noise(self, seeds) -> torch.Tensor:
        """Each image's initial noise from its own seed, drawn on the CPU (device-independent)."""
        return torch.stack([torch.randn(self.shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])

    @torch.inference_mode()
    def generate(self, prompts: list[str], seeds) -> torch.Tensor:
        """(B, C, H, W) images in [0, 1], in chunks of `batch_size`; C is the pipeline's image channels."""
        seeds = list(seeds)  # once: an iterator would be spent by the first chunk
        out = [self._generate(prompts[s : s + self.batch_size], seeds[s : s + self.batch_size])
               for s in range(0, len(prompts), self.batch_size)]
        return torch.cat(out) if out else torch.zeros((0,) + self.shape)

    def _generate(self, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        sched = self.c.scheduler
        sched.set_timesteps(self.steps)
        cond = self.encode(prompts)
        guided = self.guidance != 1.0
        if guided:
            if self._empty is None:
                self._empty = self.encode([""])
            cond = torch.cat([cond, self._empty.expand(len(prompts), -1, -1)])
        dtype = next(self.c.unet.parameters()).dtype  # fp16 on a GPU: the noise follows the UNet
        x = self.noise(seeds).to(self.device, dtype) * sched.init_noise_sigma
        for t in sched.timesteps:
            inp = torch.cat([x, x]) if guided else x
            inp = sched.scale_model_input(inp, t)
            pred = self.c.unet(inp, t, encoder_hidden_states=cond).sample
            if guided:
                on, off = pred.chunk(2)
                pred = off + self.guidance * (on - off)
            x = sched.step(pred, t, x, eta=0.0).prev_sample
        if self.c.vae is not None:
            x = self.c.vae.decode(x / self.c.vae.config.scaling_factor).sample
        return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0).cpu()
