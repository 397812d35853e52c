"""Attribute digits: the offline default's world, where every image can be labelled without people.

sklearn's 8×8 handwritten digits are rendered at 16×16 with two attributes that a prompt names:
  size       small / medium / large: the digit's box is 8, 12 or 16 pixels, centred
  thickness  thin / normal / thick: the stroke's core only, as drawn, or grey-dilated
so a prompt is `<thickness> <size> <digit>` (3 × 3 × 10 = 90 prompts) and a rendered image's
attributes are known exactly. `AttributeJudge` (a small 3-head CNN trained here on balanced renders)
says which digit, thickness and size an image shows: the judge of the offline default, in CLIP's
role, whose own error on real renders is measured and reported beside every failure rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from failfade.numerics import keeps_denormals
from failfade.tasks.generation.prompts import DIGITS, SIZES, THICKNESS, requested

BOX = {"small": 8, "medium": 12, "large": 16}
SIDE = 16


def load_digits_images() -> tuple[torch.Tensor, np.ndarray]:
    """(N, 1, 8, 8) images in [0, 1] and their labels (sklearn's 1,797 digits)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0, d.target.astype(np.int64)


def render(images: torch.Tensor, thickness, size) -> torch.Tensor:
    """Render (N, 1, 8, 8) digits at 16×16 with one thickness and size word per image."""
    out = torch.zeros(len(images), 1, SIDE, SIDE)
    thickness, size = np.broadcast_to(np.asarray(thickness), len(images)), np.broadcast_to(np.asarray(size), len(images))
    for s in SIZES:
        for t in THICKNESS:
            idx = np.flatnonzero((size == s) & (thickness == t))
            if len(idx) == 0:
                continue
            box = BOX[s]
            x = F.interpolate(images[idx], size=(box, box), mode="bilinear", align_corners=False)
            if t == "thin":
                x = torch.where(x > 0.55, x, torch.zeros_like(x))  # the stroke's core only
            elif t == "thick":
                x = F.max_pool2d(x, 3, stride=1, padding=1)  # grey dilation
            off = (SIDE - box) // 2
            out[idx, :, off:off + box, off:off + box] = x
    return out.clamp(0.0, 1.0)


@dataclass(frozen=True)
class Attributes:
    digit: np.ndarray  # (N,) index into DIGITS
    thickness: np.ndarray  # (N,) index into THICKNESS
    size: np.ndarray  # (N,) index into SIZES


def sample_attributes(labels: np.ndarray, rng: np.random.Generator, thin_bias: dict[int, float] | None = None) -> Attributes:
    """A thickness and size for each digit, uniform, except that `thin_bias` {digit: p} draws thin
    with probability p for those digits (the rest split evenly): a planted data bias."""
    n = len(labels)
    size = rng.integers(0, len(SIZES), n)
    thickness = rng.integers(0, len(THICKNESS), n)
    for digit, p in (thin_bias or {}).items():
        idx = np.flatnonzero(labels == digit)
        u = rng.random(len(idx))
        thickness[idx] = np.where(u < p, 0, np.where(u < p + (1 - p) / 2, 1, 2))
    return Attributes(labels.copy(), thickness, size)


def prompt(digit: int, thickness: int, size: int) -> str:
    return f"{THICKNESS[thickness]} {SIZES[size]} {DIGITS[digit]}"


class JudgeNet(nn.Module):
    """A small CNN with one head per attribute (digit, thickness, size)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                                  nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU())
        self.heads = nn.ModuleList([nn.Linear(128, len(DIGITS)), nn.Linear(128, len(THICKNESS)), nn.Linear(128, len(SIZES))])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.body(x)
        return [head(h) for head in self.heads]


@keeps_denormals
def train_judge(images: torch.Tensor, labels: np.ndarray, steps: int, seed: int, batch_size: int = 128,
                lr: float = 2e-3) -> JudgeNet:
    """The judge on balanced renders of the training digits (every thickness and size equally often)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = JudgeNet()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        idx = rng.integers(0, len(images), batch_size)
        a = sample_attributes(labels[idx], rng)
        x = render(images[idx], np.array(THICKNESS)[a.thickness], np.array(SIZES)[a.size])
        x = (x + 0.03 * torch.randn(x.shape, generator=torch.Generator().manual_seed(int(rng.integers(2**31))))).clamp(0, 1)
        targets = [torch.as_tensor(v) for v in (a.digit, a.thickness, a.size)]
        loss = sum(F.cross_entropy(o, t) for o, t in zip(net(x), targets))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@keeps_denormals
class AttributeJudge:
    """Did the image show the digit, thickness and size that its prompt asks for? Δ = 1 − Π p(requested
    attribute) over the attributes the prompt names; a failure when any of those heads' top answer
    differs from the request; prediction = the judged digit."""

    def __init__(self, net: JudgeNet, batch_size: int = 256):
        self.net, self.batch_size = net.eval(), int(batch_size)
        self.device = next(net.parameters()).device

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> list[torch.Tensor]:
        outs = [self.net(images[s : s + self.batch_size].to(self.device)) for s in range(0, len(images), self.batch_size)]
        return [torch.cat([o[h] for o in outs]).softmax(-1).float().cpu() for h in range(3)]

    @torch.inference_mode()
    def embed(self, images: torch.Tensor) -> np.ndarray:
        return torch.cat([self.net.features(images[s : s + self.batch_size].to(self.device)).float().cpu()
                          for s in range(0, len(images), self.batch_size)]).numpy()

    def verdicts(self, images: torch.Tensor, prompts: list[str]) -> dict[str, np.ndarray]:
        """Per image: whether each named attribute is right (−1 where the prompt names none), p(all)."""
        want = np.array([requested(p) for p in prompts], dtype=np.int64).reshape(-1, 3)
        probs = self.probabilities(images)
        out, p_all = {}, np.ones(len(images))
        for h, name in enumerate(("digit", "thickness", "size")):
            ph, named = probs[h].numpy(), want[:, h] >= 0
            ok = ph.argmax(1) == np.where(named, want[:, h], 0)
            p_all *= np.where(named, ph[np.arange(len(images)), np.clip(want[:, h], 0, None)], 1.0)
            out[name] = np.where(named, ok.astype(np.int64), -1)
        out["p_all"], out["digit_seen"] = p_all, probs[0].argmax(1).numpy()
        return out

    def __call__(self, images: torch.Tensor, prompts: list[str], cells=None):
        v = self.verdicts(images, prompts)
        wrong = np.zeros(len(images), dtype=bool)
        for name in ("digit", "thickness", "size"):
            wrong |= v[name] == 0
        return v["digit_seen"], (1.0 - v["p_all"]).astype(np.float32), wrong


def split(n: int, heldout: int = 297) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices of the digits, fixed (seed 0): the builtin and its judge train on
    the first, the judge's accuracy is measured on the second."""
    perm = np.random.default_rng(0).permutation(n)
    return np.sort(perm[heldout:]), np.sort(perm[:heldout])


@keeps_denormals
def judge_accuracy(net: JudgeNet, images: torch.Tensor, labels: np.ndarray, seed: int, copies: int = 4) -> dict[str, float]:
    """The judge's accuracy on renders of `images` (each rendered `copies` times with uniform
    attributes): per attribute and all three together."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 31]))
    labels = np.tile(labels, copies)
    a = sample_attributes(labels, rng)
    x = render(images.repeat(copies, 1, 1, 1), np.array(THICKNESS)[a.thickness], np.array(SIZES)[a.size])
    v = AttributeJudge(net).verdicts(x, [prompt(d, t, s) for d, t, s in zip(a.digit, a.thickness, a.size)])
    out = {k: float(v[k].mean()) for k in ("digit", "thickness", "size")}
    out["all"] = float(((v["digit"] == 1) & (v["thickness"] == 1) & (v["size"] == 1)).mean())
    out["renders"] = int(len(x))
    return out
