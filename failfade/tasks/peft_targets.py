"""Which modules a LoRA target name picks, as peft picks them: one rule for every family, so that a
target naming nothing (or a block rather than a layer) is refused by its config key before peft
raises its own error."""

from __future__ import annotations

import torch

# the layer kinds peft's LoRA adapts
LORA_LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Embedding)


def matches(model: torch.nn.Module, targets) -> dict[str, list[torch.nn.Module]]:
    """Each target's modules: those whose whole name is the target or ends in "." + target
    (`to_q` picks `attn1.to_q`, `q_proj` picks `self_attn.q_proj`)."""
    named = list(model.named_modules())
    return {t: [m for n, m in named if n == t or n.endswith("." + t)] for t in sorted(set(targets))}
