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


class ImageArray:
    """(N, C, H, W) images kept on disk as uint8 (a .npy file) and read a batch at a time:
    indexing (an int array, a tensor or a slice) returns float32 in [0, 1], like a tensor of the
    whole set would, but memory holds only the batch. Rows are read with pread (runs of adjacent
    rows in one call), not memory-mapped, so the pages read stay in the OS's cache and out of the
    process's resident memory. `subset` makes a view, copying nothing."""

    device = torch.device("cpu")

    def __init__(self, path: Path, index: np.ndarray | None = None):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            self._offset = f.tell()
        if fortran or np.dtype(dtype) != np.uint8 or len(shape) != 4:
            raise ValueError(f"{self.path}: not a C-ordered uint8 (N, C, H, W) array")
        self._full = tuple(int(v) for v in shape)
        self._row = int(np.prod(self._full[1:]))
        self._index = np.arange(self._full[0]) if index is None else np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self._index),) + self._full[1:]

    def subset(self, idx) -> "ImageArray":
        return ImageArray(self.path, self._index[np.asarray(idx, dtype=np.int64)])

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """uint8 rows in the order given; the file is read in ascending runs of adjacent rows."""
        import os

        uniq, inverse = np.unique(rows, return_inverse=True)
        out = np.empty((len(uniq), self._row), dtype=np.uint8)
        breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(uniq)]):
                n = (b - a) * self._row
                buf = os.pread(fd, n, self._offset + int(uniq[a]) * self._row)
                if len(buf) != n:
                    raise OSError(f"{self.path}: truncated (wanted {n} bytes at row {int(uniq[a])})")
                out[a:b] = np.frombuffer(buf, dtype=np.uint8).reshape(b - a, self._row)
        finally:
            os.close(fd)
        return out[inverse.reshape(-1)].reshape((len(rows),) + self._full[1:])

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, slice):
            rows = self._index[key]
        else:
            rows = self._index[np.asarray(key.cpu() if isinstance(key, torch.Tensor) else key, dtype=np.int64)]
        if rows.ndim == 0:
            return torch.from_numpy(self._read(rows[None])[0]).float().div_(255.0)
        return torch.from_numpy(self._read(rows)).float().div_(255.0)


def batch_rows(images, cap: int, budget_bytes: int = 64 << 20) -> int:
    """Images per batch: at most `cap`, and few enough that one float32 batch stays within
    `budget_bytes` (64 MiB: 512 digits at 32 px, 111 images at 224 px), so that evaluating a
    large-image split costs a bounded batch (its activations included) whatever the split's size."""
    per = 4 * int(np.prod(tuple(images.shape[1:])))
    return max(1, min(int(cap), budget_bytes // max(per, 1)))


@dataclass
class ImageSet:
    images: torch.Tensor | ImageArray  # (N, C, H, W) float32 in [0, 1] (in memory, or read from disk per batch)
    labels: torch.Tensor  # (N,) int64 class indices
    ids: np.ndarray  # (N,) stable input ids

    def __len__(self) -> int:
        return len(self.labels)

    def digest(self) -> str:
        """What these inputs are, for the outcome cache's key: the pixels of an in-memory set, or the
        decoded file's name (itself keyed by every image file's path, size and modification time and
        the preprocessing) and the rows taken from it; and the labels. A folder whose pictures were
        replaced, added or relabelled gets a new digest, so no outcome scored on the old one is reused."""
        import hashlib

        h = hashlib.sha256()
        if isinstance(self.images, ImageArray):
            h.update(self.images.path.name.encode())
            h.update(self.images._index.tobytes())
        else:
            h.update(self.images.detach().cpu().contiguous().numpy().tobytes())
        h.update(self.labels.cpu().numpy().astype(np.int64).tobytes())
        return h.hexdigest()[:16]


@dataclass
class Splits:
    train: ImageSet
    heldout: ImageSet
    classes: list[str]
    validation: ImageSet | None = None


def class_index(data: list[str], model: list[str], key: str = "data.source") -> np.ndarray:
    """The model's output index of each data class. By name where the model names every data class
    (its own classes, or a subset: folders named after its categories); by number where every data
    class is an output index (ImageNetV2's folders 0-999); in order where the two have as many
    classes and no data class is named after a model class (a full ImageNet folder of wnids, whose
    sorted order is the weights' category order). Anything else is refused: scoring a subset's
    labels 0..k against a 1,000-way model's indices would call nearly every input a failure, and
    folders named after the categories with one misspelt would, in sorted order, put nearly every
    class on another's output."""
    data, model = [str(c) for c in data], [str(c) for c in model]
    repeated = next((c for i, c in enumerate(data) if c in data[:i]), None)
    if repeated is not None:  # two classes, one output: one of them would be scored against the other's
        raise FailfadeError(f"{key}: two of the data's classes are both named {repeated!r}; each class needs a name "
                            "of its own")
    pos = {c: i for i, c in enumerate(model)}
    named = [c for c in data if c in pos]
    if len(named) == len(data):
        return np.array([pos[c] for c in data], dtype=np.int64)
    if all(c.isdigit() and int(c) < len(model) for c in data):
        return np.array([int(c) for c in data], dtype=np.int64)
    bad = next(c for c in data if c not in pos)
    if named:
        raise FailfadeError(f"{key}: {len(named)} of the data's {len(data)} class folders are named after the model's "
                            f"classes, but {bad!r} is not one of them ({len(data) - len(named)} in all); name every folder "
                            "by the model's class name (or every one by its output index)")
    if len(data) == len(model):
        return np.arange(len(data), dtype=np.int64)
    raise FailfadeError(f"{key}: the data's {len(data)} classes do not match the model's {len(model)} outputs: class "
                        f"{bad!r} is neither one of the model's class names (e.g. {model[0]!r}) nor an output index; "
                        f"name each class folder by the model's class name or output index (0-{len(model) - 1})")


def aligned(splits: "Splits", model_classes: list[str], key: str = "data.source") -> "Splits":
    """`splits` with labels as the model's output indices (see class_index)."""
    index = class_index(splits.classes, model_classes, key)
    if np.array_equal(index, np.arange(len(index))) and [str(c) for c in splits.classes] == [str(c) for c in model_classes]:
        return splits

    def relabel(s: ImageSet | None) -> ImageSet | None:
        return None if s is None else ImageSet(s.images, torch.from_numpy(index[s.labels.numpy()]), s.ids)

    return Splits(relabel(splits.train), relabel(splits.heldout), [str(c) for c in model_classes],
                  relabel(splits.validation))


def load_splits(source: str, image_size: int, heldout_fraction: float, seed: int, key: str = "data.source",
                validation_fraction: float = 0.0, cache_dir: Path | None = None, crop: float | None = None,
                interpolation: str = "bilinear") -> Splits:
    """Fractions are of the whole data set; validation inputs come out of the training side.

    An image folder is decoded once into a uint8 array file under `cache_dir` (default: in memory,
    for small folders and tests) and read a batch at a time. `crop`: resize the shorter side to
    image_size / crop, then centre-crop image_size (torchvision's evaluation preprocessing, e.g.
    224 / 256, with torchvision's own size arithmetic and the weights' `interpolation`: the same
    pixels as their `transforms()`); None stretches the whole image to image_size."""
    if source == "builtin:digits":
        images, labels, classes = _digits(image_size)
    elif source.startswith("imagefolder:"):
        root = Path(source.split(":", 1)[1])
        images, labels, classes = _image_set(root, *_folder_files(root, key), image_size, key, cache_dir, crop,
                                             interpolation)
    elif source.startswith("torchvision:"):
        root, files, labels, classes = _torchvision_files(source, key)
        images, labels, classes = _image_set(root, files, labels, classes, image_size, key, cache_dir, crop,
                                             interpolation)
    else:
        raise FailfadeError(f"{key}: unknown data source {source!r}; use builtin:digits, imagefolder:<dir> or "
                            "torchvision:ImageNet:<root>[:val|train]")
    ids = np.arange(len(labels))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    n_held = int(round(len(labels) * heldout_fraction))
    n_val = int(round(len(labels) * validation_fraction))
    if n_held == 0 or (validation_fraction > 0 and n_val == 0):
        which = "heldout_fraction" if n_held == 0 else "validation_fraction"
        raise FailfadeError(f"data.{which}: {heldout_fraction if n_held == 0 else validation_fraction} of "
                            f"{len(labels)} inputs rounds to none; raise it or use more inputs")
    if n_held + n_val >= len(labels):
        raise FailfadeError(f"data: heldout_fraction + validation_fraction leave no training inputs "
                            f"({n_held} + {n_val} of {len(labels)})")
    held, val, train = np.sort(order[:n_held]), np.sort(order[n_held:n_held + n_val]), np.sort(order[n_held + n_val:])
    def pick(idx):
        return ImageSet(images.subset(idx) if isinstance(images, ImageArray) else images[idx], labels[idx], ids[idx])

    return Splits(pick(train), pick(held), classes, pick(val) if n_val else None)


def check_source(source: str, key: str = "data.source") -> None:
    """That the data source can be read (a folder's files listed, ImageNet's split opened), without
    decoding an image: the model stage checks it before it downloads a model, whose preprocessing
    it needs before it decodes (an hf: model's is in its card)."""
    if source.startswith("imagefolder:"):
        _folder_files(Path(source.split(":", 1)[1]), key)
    elif source.startswith("torchvision:"):
        _torchvision_files(source, key)


def _digits(image_size: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x, torch.tensor(d.target, dtype=torch.long), [str(i) for i in range(10)]


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def _folder_files(root: Path, key: str) -> tuple[list[Path], list[int], list[str]]:
    if not root.is_dir():
        raise FailfadeError(f"{key}: image folder {root} does not exist")
    # hidden folders (.ipynb_checkpoints, .git) are not classes: one would shift every label
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise FailfadeError(f"{key}: {root} needs a sub-folder per class (two or more), found {classes or 'none'}")
    files, labels, skipped = [], [], []
    for ci, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.name.startswith("."):
                continue
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(ci)
            else:
                skipped.append(f)
    if not files:
        raise FailfadeError(f"{key}: no images found under {root}")
    if skipped:  # nested folders, other formats: said, not silently dropped
        import logging

        logging.getLogger("failfade").warning(
            "%s: %d entr%s in the class folders %s not read (only %s files directly inside a class folder are), "
            "e.g. %s", root, len(skipped), "y" if len(skipped) == 1 else "ies", "is" if len(skipped) == 1 else "are",
            "/".join(sorted(IMAGE_SUFFIXES)), skipped[0])
    return files, labels, classes


def _decode(f: Path, image_size: int, crop: float | None, key: str, interpolation: str = "bilinear") -> np.ndarray:
    """(3, size, size) uint8: stretched to size, or (crop) shorter side to size / crop with
    `interpolation`, then the centre size x size, by torchvision's own functions (its weights'
    `transforms()` compute the long side and the crop offset the same way)."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    try:
        img = Image.open(f)
        if img.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grey: scale to 8 bits, not clip at 255
            img = Image.fromarray((np.asarray(img, dtype=np.int64).clip(0, 65535) >> 8).astype(np.uint8))
        img = img.convert("RGB")
        if crop:
            short = max(1, int(round(image_size / crop)))
            img = TF.resize(img, short, interpolation=InterpolationMode(interpolation), antialias=True)
            img = TF.center_crop(img, [image_size, image_size])
        else:
            img = img.resize((image_size, image_size))
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # unreadable, truncated, or > ~179 MP
        raise FailfadeError(f"{f}: cannot be read as an image ({type(e).__name__}); fix or remove it ({key})") from None
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def _torchvision_files(source: str, key: str):
    """torchvision:ImageNet:<root>[:<split>]: the files and labels torchvision's ImageNet dataset
    finds (its devkit's meta.bin and the split's wnid folders; nothing is downloaded). Class
    indices follow the sorted wnids, as the torchvision weights' categories do."""
    from failfade.tasks.classification.sources import torchvision_form

    root, split = torchvision_form(source, key)
    from torchvision.datasets import ImageNet

    try:
        ds = ImageNet(str(root), split=split)
    except (RuntimeError, OSError, FileNotFoundError, ValueError) as e:
        raise FailfadeError(f"{key}: cannot open ImageNet at {root} ({type(e).__name__}: {str(e)[:200]}); it needs the "
                            f"devkit (meta.bin or ILSVRC2012_devkit_t12.tar.gz) and the {split} images") from None
    files = [Path(f) for f, _ in ds.samples]
    if not files:
        raise FailfadeError(f"{key}: no images found in ImageNet's {split} split under {root}")
    return root, files, [int(c) for _, c in ds.samples], _imagenet_classes(root, ds)


def _imagenet_classes(root: Path, ds) -> list[str]:
    """The split's class names for class_index. Every devkit class present: its wnids, whose sorted
    order is the weights' category order (matched in order). Otherwise the devkit's first names
    (matched by name), a wnid where that name is another class's too: the devkit's first names
    repeat ("crane" is classes 134 and 517, "maillot" 638 and 639), and matched by name two classes
    landed on one output."""
    from collections import Counter

    from torchvision.datasets.imagenet import load_meta_file

    every = load_meta_file(str(root))[0]  # wnid -> names, for all the devkit's classes
    if set(ds.wnids) == set(every):
        return list(ds.wnids)
    count = Counter(names[0] if isinstance(names, tuple) else names for names in every.values())
    return [names[0] if count[names[0]] == 1 else w for names, w in zip(ds.classes, ds.wnids)]


def _image_set(root: Path, files: list[Path], labels: list[int], classes: list[str], image_size: int, key: str,
               cache_dir: Path | None = None, crop: float | None = None, interpolation: str = "bilinear"):
    """RGB images at image_size. With a cache_dir, decoded once into a uint8 array file there
    (keyed by every file's path, size, inode, modification and change time, and the preprocessing), then read per
    batch: memory follows the batch, not the folder."""
    import hashlib
    import json
    import os

    from failfade.progress import progress

    y = torch.tensor(labels)
    if cache_dir is None:
        return torch.stack([torch.from_numpy(_decode(f, image_size, crop, key, interpolation).astype(np.float32) / 255.0)
                            for f in files]), y, classes
    # version 2: torchvision's resize and crop arithmetic and the weights' interpolation (a cache
    # decoded by the earlier arithmetic differs by up to 5-11 grey levels per pixel on photographs);
    # version 3: 16-bit greyscale scaled to 8 bits, where it was clipped at 255 (_decode). Any change
    # to what _decode writes must bump it, or a folder decoded before is served with the old pixels.
    pre = {"size": image_size, "crop": crop, "version": 3} if not crop else \
        {"size": image_size, "crop": crop, "interpolation": interpolation, "version": 3}
    h = hashlib.sha256(json.dumps(pre).encode())
    for f in files:  # a file moved or swapped keeps its size and mtime, not its inode or ctime
        st = f.stat()
        h.update(os.fsencode(f.resolve()))  # bytes: a name that is not UTF-8 hashes too
        h.update(f"\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_ctime_ns}\n".encode())
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"images-{h.hexdigest()[:20]}.npy"
    if not path.is_file():
        _remove_orphans(path)
        tmp = path.with_suffix(f".tmp{_host()}-{os.getpid()}.npy")
        try:  # written row by row with plain writes: memory holds one image, not the file
            with open(tmp, "wb") as out:
                header = {"descr": "|u1", "fortran_order": False, "shape": (len(files), 3, image_size, image_size)}
                np.lib.format.write_array_header_2_0(out, header)
                for f in progress(files, desc=f"decode {root.name}", unit="img"):
                    out.write(np.ascontiguousarray(_decode(f, image_size, crop, key, interpolation)).tobytes())
            os.replace(tmp, path)  # complete or absent: a killed run leaves no half cache behind
        finally:
            tmp.unlink(missing_ok=True)
        _superseded(path, root, pre)
    return ImageArray(path), y, classes


def _superseded(path: Path, root: Path, pre: dict) -> None:
    """Record what `path` caches (a sidecar .json: the folder and the preprocessing) and name the
    earlier caches of the same folder at the same preprocessing, which its changed files made
    stale: at ImageNet scale each is gigabytes. They are named, not deleted: a run started before
    the folder changed may still be reading one."""
    import json
    import logging

    me = {"root": str(Path(root).resolve()), "preprocessing": pre}
    path.with_suffix(".json").write_text(json.dumps(me))
    stale = []
    for side in path.parent.glob("images-*.json"):
        npy = side.with_suffix(".npy")
        if npy == path or not npy.is_file():
            continue
        try:
            if json.loads(side.read_text()) == me:
                stale.append(npy)
        except (OSError, ValueError):
            continue
    if stale:
        size = sum(f.stat().st_size for f in stale) / 2 ** 30
        logging.getLogger("failfade").warning(
            "%s: %d earlier image cache%s of %s at the same preprocessing (%.2f GiB) no longer match%s its files: "
            "%s; delete %s (and the .json beside it) once no run reads %s", path.parent, len(stale),
            "" if len(stale) == 1 else "s", root, size, "es" if len(stale) == 1 else "", ", ".join(f.name for f in sorted(stale)),
            "it" if len(stale) == 1 else "them", "it" if len(stale) == 1 else "them")


def _host() -> str:
    import re
    import socket

    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"


def _remove_orphans(path: Path) -> None:
    """Delete the partial files that decoding runs on this host left behind when killed (SIGKILL,
    a scheduler's time limit, the OOM killer skip the cleanup): `images-<key>.tmp<host>-<pid>.npy`
    whose process is gone. Another host's file is left alone: it may be a live run on a shared disk."""
    import os

    prefix = f"{path.stem}.tmp{_host()}-"
    for f in path.parent.glob(f"{path.stem}.tmp*.npy"):
        pid = f.name[len(prefix):-len(".npy")] if f.name.startswith(prefix) else ""
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            f.unlink(missing_ok=True)
        except PermissionError:  # alive, another user's
            pass
