"""Input data for the image-classification task, in three disjoint splits:

- held-out: never seen by training, fine-tuning or any choice of settings; exploration and every
  reported before/after number use it only;
- validation: never trained on; levels, mitigation settings and early stopping are chosen on it;
- train: what the model and its fine-tuning learn from.

The held-out split depends only on (source, heldout_fraction, seed): adding a validation split
takes its inputs from the training side and never changes which inputs are held out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from failfade import FailfadeError


@dataclass
class ImageSet:
    images: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64 class indices
    ids: np.ndarray  # (N,) stable input ids

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Splits:
    train: ImageSet
    heldout: ImageSet
    classes: list[str]
    validation: ImageSet | None = None


def load_splits(source: str, image_size: int, heldout_fraction: float, seed: int, key: str = "data.source",
                validation_fraction: float = 0.0) -> Splits:
    """Fractions are of the whole data set; validation inputs come out of the training side."""
    if source == "builtin:digits":
        images, labels, classes = _digits(image_size)
    elif source.startswith("imagefolder:"):
        images, labels, classes = _image_folder(Path(source.split(":", 1)[1]), image_size, key)
    else:
        raise FailfadeError(f"{key}: unknown data source {source!r}; use builtin:digits or imagefolder:<dir>")
    ids = np.arange(len(labels))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    n_held = int(round(len(labels) * heldout_fraction))
    n_val = int(round(len(labels) * validation_fraction))
    if n_held + n_val >= len(labels):
        raise FailfadeError(f"data: heldout_fraction + validation_fraction leave no training inputs "
                            f"({n_held} + {n_val} of {len(labels)})")
    held, val, train = np.sort(order[:n_held]), np.sort(order[n_held:n_held + n_val]), np.sort(order[n_held + n_val:])
    pick = lambda idx: ImageSet(images[idx], labels[idx], ids[idx])  # noqa: E731
    return Splits(pick(train), pick(held), classes, pick(val) if n_val else None)


def _digits(image_size: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x, torch.tensor(d.target, dtype=torch.long), [str(i) for i in range(10)]


def _image_folder(root: Path, image_size: int, key: str):
    """A folder per class (sorted names = class indices), RGB images resized to image_size."""
    from PIL import Image

    if not root.is_dir():
        raise FailfadeError(f"{key}: image folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise FailfadeError(f"{key}: {root} needs a sub-folder per class (two or more), found {classes or 'none'}")
    xs, ys = [], []
    for ci, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() not in {".png", ".jpg", ".jpeg", ".bmp", ".webp"}:
                continue
            try:
                img = Image.open(f).convert("RGB").resize((image_size, image_size))
            except (OSError, ValueError) as e:  # PIL: UnidentifiedImageError, truncated file
                raise FailfadeError(f"{f}: cannot be read as an image ({type(e).__name__}); fix or remove it "
                                    f"({key})") from None
            xs.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1))
            ys.append(ci)
    if not xs:
        raise FailfadeError(f"{key}: no images found under {root}")
    return torch.stack(xs), torch.tensor(ys), classes
