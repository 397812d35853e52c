"""LoRA on a UNet's attention projections (peft), trained on images for the targeted prompts, saved
as a diffusers-format safetensors adapter and loaded back onto the base model.

The loss is the diffusion loss of the pipeline's own scheduler: the clean image (x0-prediction,
prediction_type "sample"), the noise ("epsilon") or the velocity ("v_prediction"); a latent
pipeline encodes images with its VAE first. Only the adapter's weights train.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from failfade import FailfadeError
from failfade.numerics import keeps_denormals
from failfade.progress import progress as progress_bar
from failfade.tasks import peft_targets
from failfade.tasks.generation.models import ADAPTER_WEIGHTS
from failfade.tasks.generation.pipeline import Components

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def add_lora(unet, rank: int, alpha: float | None = None, targets=TARGETS, seed: int = 0) -> list[torch.nn.Parameter]:
    """Attach a fresh LoRA adapter (B = 0, so the model is unchanged until it trains); returns its parameters."""
    from peft import LoraConfig

    layers = "name linear or convolution layers, e.g. to_q, to_k, to_v, to_out.0, conv1, conv2"
    matched = peft_targets.matches(unet, targets)
    missing = sorted(t for t, ms in matched.items() if not ms)
    if missing or not targets:
        raise FailfadeError(f"mitigate.targets: {missing or list(targets)} name no module of this "
                            f"{type(unet).__name__} ({layers})")
    blocks = sorted(t for t, ms in matched.items()
                    if any(not isinstance(m, peft_targets.LORA_LAYERS) for m in ms))
    if blocks:
        kinds = sorted({type(m).__name__ for t in blocks for m in matched[t]})
        raise FailfadeError(f"mitigate.targets: {blocks} name blocks ({', '.join(kinds)}), not layers LoRA adapts: "
                            f"{layers}")
    torch.manual_seed(seed)
    try:
        unet.add_adapter(LoraConfig(r=int(rank), lora_alpha=float(alpha or rank), init_lora_weights="gaussian",
                                    target_modules=list(targets)))
    except ValueError as e:  # anything else peft refuses (its errors are ValueErrors)
        raise FailfadeError(f"mitigate.targets: {list(targets)}: {' '.join(str(e).split())[:200]} ({layers})") from None
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    if not params:
        raise FailfadeError(f"mitigate.targets: none of {list(targets)} is a module of this UNet")
    for n, p in unet.named_parameters():
        p.requires_grad_("lora_" in n)
    return params


def targets_of(c: Components, images: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, sched):
    """(noisy model input, regression target) for the scheduler's prediction type."""
    x0 = images * 2.0 - 1.0
    if c.vae is not None:
        with torch.no_grad():
            x0 = c.vae.encode(x0).latent_dist.sample() * c.vae.config.scaling_factor
    noisy = sched.add_noise(x0, noise, t)
    kind = sched.config.prediction_type
    if kind == "sample":
        return noisy, x0
    if kind == "epsilon":
        return noisy, noise
    if kind == "v_prediction":
        return noisy, sched.get_velocity(x0, noise, t)
    raise FailfadeError(f"scheduler prediction_type {kind!r} is not supported for fine-tuning")


@keeps_denormals
def train_lora(c: Components, batches, steps: int, lr: float, rank: int, seed: int, alpha: float | None = None,
               targets=TARGETS, desc: str = "LoRA", timesteps=None) -> list[dict]:
    """Fit a LoRA adapter on `batches(step, rng) -> (images in [0, 1], prompts[, preserve])`; the
    text encoder and the base weights stay frozen.

    `timesteps`: the noise levels to train at (default: all of the training schedule); a sampler
    with a fixed step count only ever asks the UNet at its own few, so training there spends the
    adapter's capacity where it is used. `preserve` (a bool per row): those rows regress onto the
    frozen base model's own prediction for the same noisy input and prompt instead of the image
    (prior preservation by distillation), which holds the untargeted prompts where they were.
    """
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(c.scheduler.config)
    ts = None if timesteps is None else torch.as_tensor(np.asarray(timesteps), dtype=torch.long)
    params = add_lora(c.unet, rank, alpha, targets, seed)
    c.text_encoder.requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 67]))
    device = next(c.unet.parameters()).device
    c.unet.train()
    history, t0 = [], time.perf_counter()
    for step in progress_bar(range(steps), desc=desc, unit="step"):
        images, prompts, *rest = batches(step, rng)
        preserve = torch.as_tensor(rest[0], dtype=torch.bool) if rest else torch.zeros(len(images), dtype=torch.bool)
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        images = images.to(device)
        shape = images.shape if c.vae is None else (len(images), c.unet.config.in_channels, c.unet.config.sample_size,
                                                    c.unet.config.sample_size)
        noise = torch.randn(shape, generator=gen).to(device)
        if ts is None:
            t = torch.randint(0, sched.config.num_train_timesteps, (len(images),), generator=gen)
        else:
            t = ts[torch.randint(0, len(ts), (len(images),), generator=gen)]
        t = t.to(device)
        noisy, target = targets_of(c, images, noise, t, sched)
        tok = c.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=c.tokenizer.model_max_length,
                          return_tensors="pt")
        with torch.no_grad():
            cond = c.text_encoder(tok.input_ids.to(device))[0]
            if preserve.any():  # the frozen base's answer: the adapter switched off
                keep = preserve.to(device)
                c.unet.disable_adapters()
                base = c.unet(noisy[keep], t[keep], encoder_hidden_states=cond[keep]).sample
                c.unet.enable_adapters()
                target = target.clone()
                target[keep] = base.to(target.dtype)
        loss = F.mse_loss(c.unet(noisy, t, encoder_hidden_states=cond).sample.float(), target.float())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history.append({"step": step, "loss": float(loss.detach()), "seconds": time.perf_counter() - t0})
    c.unet.eval()
    return history


def save_adapter(unet, out_dir: Path, card: dict) -> Path:
    """The adapter as a pipeline's LoRA file (peft keys under `unet.`, what a Stable Diffusion
    pipeline's `load_lora_weights` reads) plus adapter.json. The peft keys are kept as they are:
    diffusers' older key conversion drops attention layers when convolutions are adapted too."""
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the adapter's config (its alpha above all) travels in the file's metadata: without it a loader
    # assumes alpha = rank, and an adapter trained at another alpha would load at another strength
    config = next(iter(unet.peft_config.values())).to_dict()
    # peft keeps target_modules as a set, whose order follows the process's string hashing
    config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}
    StableDiffusionPipeline.save_lora_weights(str(out_dir), unet_lora_layers=get_peft_model_state_dict(unet),
                                              safe_serialization=True, weight_name=ADAPTER_WEIGHTS,
                                              unet_lora_adapter_metadata=config)
    canonical_metadata(out_dir / ADAPTER_WEIGHTS)
    (out_dir / "adapter.json").write_text(json.dumps(card, indent=2) + "\n")
    return out_dir / ADAPTER_WEIGHTS


def canonical_metadata(path: Path) -> None:
    """Rewrite a safetensors file's header with its metadata in sorted order. safetensors writes the
    metadata from a hash map, so two runs that trained bit-identical weights wrote different bytes:
    the card's sha256, and with it the outcome cache's key, changed with every run. The tensors'
    bytes and offsets are untouched; the header is padded to 8 bytes as the format asks."""
    data = Path(path).read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(meta.items()))} if meta else {}) | dict(sorted(header.items()))
    text = json.dumps(ordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])


def load_adapter(unet, folder: Path, key: str) -> None:
    """Base + adapter: the adapter's weights are loaded onto `unet` and fused (inference only)."""
    folder = Path(folder)
    try:
        if not (folder / ADAPTER_WEIGHTS).is_file():
            raise FileNotFoundError(f"no {ADAPTER_WEIGHTS}")
        unet.load_lora_adapter(str(folder), weight_name=ADAPTER_WEIGHTS, prefix="unet", adapter_name="failfade")
    except Exception as e:
        raise FailfadeError(f"{key}: cannot load the LoRA adapter in {folder} ({type(e).__name__}: {str(e)[:200]})") from e
    card_path = folder / "adapter.json"
    if card_path.is_file():  # the strength it was trained at, alpha / rank, must be the one it loads at
        try:
            card = json.loads(card_path.read_text())
            want = float(card.get("alpha") or card["rank"]) / float(card["rank"])
        except (ValueError, KeyError, TypeError, AttributeError, ZeroDivisionError) as e:
            raise FailfadeError(f"{card_path}: cannot be read as the adapter's card with its rank and alpha "
                                f"({type(e).__name__}: {e}); rebuild it: failfade run --forcerun mitigate") from None
        cfg = unet.peft_config["failfade"]
        got = float(cfg.lora_alpha) / float(cfg.r)
        if abs(got - want) > 1e-6 * want:
            raise FailfadeError(f"{key}: the LoRA adapter in {folder} loads at scale alpha/rank {got:g}, but was trained at "
                                f"{want:g} ({card_path}); it was written without its alpha: rerun the mitigate stage")
    unet.fuse_lora(lora_scale=1.0)
