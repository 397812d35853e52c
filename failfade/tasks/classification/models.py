"""Models under test: where they come from, how they are stored (safetensors + a JSON card), and
how they are run (preprocessing, logits, penultimate features).

Sources (config key `model.source`):
  builtin:digits-cnn                   a small CNN trained here, seeded, on the train split
  torchvision:<arch>:<weights-enum>    torchvision weights (`none` = random init), cached in resources/
  hf:<repo_id>[@revision]              a Hugging Face repo holding a failfade model dir (model.json + model.safetensors)
  path:<file-or-dir>                   a failfade model dir, or its model.safetensors / model.json
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from failfade import FailfadeError
from failfade.numerics import flush_denormals
from failfade.tasks.classification.sources import ModelSource
from failfade.tasks.storage import CARD, WEIGHTS, read_card_json, read_checked_card, write_card


class DigitsCNN(nn.Module):
    """Three conv blocks and a two-layer head; `classifier` is the last layer."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(), nn.Linear(16 * w, 64), nn.ReLU(),
        )
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ModelUnderTest:
    """A classifier plus what it needs to see inputs the way it was trained."""

    module: nn.Module
    card: dict
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"  # fp32, or bf16/fp16 autocast for the forward pass (config `precision`)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")
        # Perturbed inputs (low contrast, blur) produce denormal floats, which CPUs compute 10-100x
        # slower, in scoring and in fine-tuning alike; flushing them to zero changes no prediction.
        # Process-wide: the other families keep denormals while they compute (failfade/numerics.py).
        flush_denormals()
        # channels_last: ~3x faster convolutions on CPU (oneDNN) and the tensor-core layout on GPU
        self.module.eval().to(self.device, memory_format=torch.channels_last)
        inp = self.card["input"]
        self.size = int(inp["size"])
        self.channels = int(inp["channels"])
        self.mean = torch.tensor(inp["mean"], device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(inp["std"], device=self.device).view(1, -1, 1, 1)
        self.head = last_linear(self.module)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device)
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def logits_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured = {}
        hook = self.head.register_forward_hook(lambda m, i, o: captured.__setitem__("f", i[0]))
        try:
            logits = self.module(self.preprocess(images))
        finally:
            hook.remove()
        return logits.float(), captured["f"].float().flatten(1)

    def autocast(self):
        """bf16/fp16 autocast on the model's device (CPU autocast too), or nothing for fp32."""
        dtype = PRECISIONS[self.precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    @torch.inference_mode()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        with self.autocast():
            return self.module(x).float()

    def scoring_forward(self, sample: torch.Tensor):
        """The forward pass that exploration's scoring calls, given ≥ 2 inputs to build it on.

        On a CPU in fp32: a snapshot of the module traced, frozen and optimised for inference
        (oneDNN with convolution + ReLU fused and weights pre-packed): the digits CNN runs 89 -> 29
        µs per image at batch 256 on 2 cores; torchvision models at 224 px gain 0-25%. Logits agree
        with the eager module to ~1e-8 (tests compare every decision). Elsewhere (a GPU, bf16/fp16)
        or if tracing fails: the module itself. The snapshot does not follow later changes to
        `module`, so only a model that is no longer trained may be scored through it. This is the
        one place that uses TorchScript (deprecated upstream): a move to torch.export touches only it.
        """
        if self.device.type != "cpu" or self.precision != "fp32":
            return self.module
        import copy
        import warnings

        x = self.preprocess(sample)
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer notices
                # a copy: frozen constants would otherwise alias some of the module's parameters
                traced = torch.jit.trace(copy.deepcopy(self.module), x[:1], check_trace=False)
                graph = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
                # checked on another batch size than the traced one: a graph that baked in the
                # batch size or one branch of data-dependent control flow is not used
                same = torch.allclose(graph(x), self.module(x), rtol=1e-4, atol=1e-4)
        except Exception as err:  # an architecture TorchScript cannot trace: score it eagerly
            warnings.warn(f"scoring {self.card.get('arch')} eagerly, tracing failed: {err}")
            return self.module
        if not same:
            warnings.warn(f"scoring {self.card.get('arch')} eagerly: its traced graph disagrees with the module")
            return self.module
        return graph


def last_linear(module: nn.Module) -> nn.Linear:
    last = None
    for m in module.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise FailfadeError(f"{type(module).__name__} has no nn.Linear layer to use as the classifier head")
    return last


def build_architecture(card: dict) -> nn.Module:
    arch = card["arch"]
    n = len(card["classes"])
    if arch == "digits-cnn":
        return DigitsCNN(num_classes=n, in_channels=int(card["input"]["channels"]))
    if arch.startswith("torchvision:"):
        import torchvision

        name = arch.split(":", 1)[1]
        if name not in classifiers():  # a detection or video builder loads backbone weights its own way
            raise ValueError(f"torchvision has no image classifier {name!r}")
        build = dict(card.get("build") or {})
        if "input_size" in build:  # MaxViT's (h, w), a list in JSON
            build["input_size"] = tuple(build["input_size"])
        return torchvision.models.get_model(name, weights=None, num_classes=n, **build)
    raise ValueError("known: digits-cnn or torchvision:<name>")  # load_model names the card


def classifiers() -> list[str]:
    """torchvision's image classifiers (torchvision.models itself, not its detection, segmentation,
    video or quantized submodules: their builders load backbone weights through torchvision's own
    unpickling loader)."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


# the builder arguments a card's `build` may set (what builder_kwargs writes), each with its check
BUILD_KEYS = {
    "transform_input": (lambda v: isinstance(v, bool), "true or false"),
    "aux_logits": (lambda v: isinstance(v, bool), "true or false"),
    "image_size": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive whole number"),
    "input_size": (lambda v: isinstance(v, list) and len(v) == 2
                   and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v), "two positive whole numbers"),
}


def builder_kwargs(arch: str, weights) -> dict:
    """What torchvision's builder sets from the weights it is given (get_model(weights=...)), which
    building without them and loading their checkpoint must set too (the card's `build`, read back
    by build_architecture): GoogLeNet's and Inception v3's weights expect `transform_input` (their
    ImageNet-normalised input renormalised inside the model, as the original weights were trained;
    without it every prediction is made on wrongly scaled inputs), ViT's SWAG weights their
    `image_size`, MaxViT's its `input_size`. failfade builds GoogLeNet and Inception v3 without their
    auxiliary heads, with any weights (torchvision drops GoogLeNet's from its pretrained model and
    keeps Inception's): they are training aids, which in train mode made the model return a tuple,
    and Inception's failed on a batch of one image. Their weights are left out of the checkpoint."""
    if arch in ("googlenet", "inception_v3"):
        return {"aux_logits": False} | ({"transform_input": True} if weights is not None else {})
    if weights is None:
        return {}
    # only where they differ from the builder's default (224): a card of 224 px weights needs none
    if arch.startswith("vit_") and int(weights.meta["min_size"][0]) != 224:
        return {"image_size": int(weights.meta["min_size"][0])}
    if arch.startswith("maxvit") and [int(v) for v in weights.meta["min_size"]] != [224, 224]:
        return {"input_size": [int(v) for v in weights.meta["min_size"]]}
    return {}


def check_build(card: dict, where: str) -> None:
    """A card of torchvision weights whose builder sets arguments that change outputs (GoogLeNet,
    Inception v3, ViT at another size than 224 px) must carry them in `build`: one written before failfade kept them builds a model fed
    wrongly normalised inputs (or one whose weights do not fit), so it is refused, naming the rebuild."""
    source = card.get("source")
    if not (isinstance(source, str) and source.startswith("torchvision:")):
        return
    import torchvision

    try:
        src = ModelSource.parse(source)
        weights = (None if src.detail.lower() in ("none", "random")
                   else torchvision.models.get_model_weights(src.target)[src.detail])
    except (FailfadeError, KeyError, ValueError):
        return  # not a source this torchvision knows: the card's arch alone decides
    # what changes the outputs; the auxiliary heads (aux_logits) do not, in eval mode
    def outputs(build):
        return {k: v for k, v in (build or {}).items() if k != "aux_logits"}

    want = builder_kwargs(src.target, weights)
    if outputs(want) and outputs(card.get("build")) != outputs(want):
        raise FailfadeError(f"{where}: {source} needs build: {want} (what torchvision's builder sets for these "
                            f"weights), the card has {card.get('build')!r}: it was written before failfade kept them; "
                            "rebuild the model (failfade run --forcerun model, or --forcerun <its model.json>)")


def main_logits(out) -> torch.Tensor:
    """A classifier's logits: GoogLeNet and Inception v3 in train mode return a named tuple with
    their auxiliary heads' outputs too (`logits` first); fine-tuning uses the main head's."""
    return out.logits if isinstance(out, tuple) and hasattr(out, "logits") else out


def save_model(module: nn.Module, card: dict, out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS))
    return write_card(card, out_dir)


def check_card_input(card: dict, where: str) -> None:
    """A card's `arch` and `input` section, checked before anything is built from them (a `path:`
    model's card is written by hand): a missing `mean` was a KeyError, `std: [0]` made every logit
    non-finite without a word, a `mean` of the wrong length failed later inside a convolution."""
    if not isinstance(card.get("arch"), str):
        raise FailfadeError(f"{where}: arch must be an architecture name (a string), got {card.get('arch')!r}")
    build = card.get("build", {})
    if not isinstance(build, dict):
        raise FailfadeError(f"{where}: build must be a mapping of the architecture's arguments (as "
                            f"transform_input: true), got {build!r}")
    if build and not card["arch"].startswith("torchvision:"):
        raise FailfadeError(f"{where}: build is for torchvision architectures, not {card['arch']!r}")
    for k, v in build.items():
        if k not in BUILD_KEYS:
            raise FailfadeError(f"{where}: build.{k}: not an argument failfade sets (known: {', '.join(BUILD_KEYS)})")
        ok, what = BUILD_KEYS[k]
        if not ok(v):
            raise FailfadeError(f"{where}: build.{k} must be {what}, got {v!r}")
    inp = card.get("input")
    if not isinstance(inp, dict):
        raise FailfadeError(f"{where}: input must be a mapping with size, channels, mean and std, got {inp!r}")
    missing = [k for k in ("size", "channels", "mean", "std") if k not in inp]
    if missing:
        raise FailfadeError(f"{where}: input lacks {missing} (size, channels, mean and std are needed)")
    def number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    for k in ("size", "channels"):
        v = inp[k]
        if not (number(v) and v == int(v) and v >= 1):
            raise FailfadeError(f"{where}: input.{k} must be a positive whole number, got {v!r}")
    if inp["channels"] not in (1, 3):
        raise FailfadeError(f"{where}: input.channels must be 1 or 3, got {inp['channels']!r}")
    for k in ("mean", "std"):  # one number for every channel, or one per channel
        v = inp[k]
        values = v if isinstance(v, list) else [v]
        if not (len(values) in (1, inp["channels"]) and all(number(x) for x in values)):
            raise FailfadeError(f"{where}: input.{k} must be a finite number or {inp['channels']} of them (one per "
                                f"channel), got {v!r}")
        if k == "std" and any(x <= 0 for x in values):
            raise FailfadeError(f"{where}: input.std must be positive (a division), got {v!r}")
    # the weights' own resize-then-crop (optional): what the data is decoded by for this model
    if inp.get("crop") is not None and not (number(inp["crop"]) and 0 < inp["crop"] <= 1):
        raise FailfadeError(f"{where}: input.crop must be a number in (0, 1] (crop size / resize size, "
                            f"224/256 = 0.875), got {inp['crop']!r}")
    if "interpolation" in inp:
        from torchvision.transforms import InterpolationMode

        known = [m.value for m in InterpolationMode]
        if inp["interpolation"] not in known:
            raise FailfadeError(f"{where}: input.interpolation must be one of {known}, got {inp['interpolation']!r}")


def load_model(model_dir: Path, device: str | torch.device = "cpu", precision: str = "fp32") -> ModelUnderTest:
    """Load a failfade model dir; a missing, tampered or truncated file fails with its path named."""
    model_dir = Path(model_dir)
    weights_path = model_dir / WEIGHTS
    card = read_checked_card(model_dir, f"{CARD} and {WEIGHTS}", ("arch", "classes", "input"))
    check_card_input(card, str(model_dir / CARD))
    check_build(card, str(model_dir / CARD))
    try:
        module = build_architecture(card)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # torchvision: unknown name; a malformed card entry
        raise FailfadeError(f"{model_dir / CARD}: cannot build arch {card['arch']!r} ({type(e).__name__}: {e})") from None
    try:
        state = load_file(str(weights_path))
    except Exception as e:  # safetensors raises several types for truncated or garbage files
        raise FailfadeError(f"{weights_path}: corrupt checkpoint, cannot be read as safetensors ({e})") from e
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise FailfadeError(f"{weights_path}: weights do not fit arch {card['arch']!r}: {str(e)[:300]}") from e
    return ModelUnderTest(module, card, torch.device(device), precision)


def resolve_source(source: ModelSource, resources: Path, key: str = "model.source",
                   seed: int = 0) -> tuple[nn.Module, dict] | Path:
    """Obtain a non-builtin model: returns a model dir (path/hf) or a (module, card) pair (torchvision,
    built under `seed`, the experiment's: `torchvision:<arch>:none` weights are drawn from it)."""
    if source.kind == "path":
        p = Path(source.target)
        if p.is_file():
            p = p.parent
        if not (p / CARD).is_file():
            raise FailfadeError(f"{key}: {source.target} is not a failfade model dir (no {CARD} there)")
        return p
    if source.kind == "hf":
        try:
            from huggingface_hub import snapshot_download

            local = snapshot_download(
                repo_id=source.target, revision=source.detail, cache_dir=str(resources / "hf"),
                allow_patterns=[CARD, WEIGHTS],
            )
        except Exception as e:
            raise FailfadeError(f"{key}: cannot download hf:{source.target} ({type(e).__name__}: {str(e)[:200]})") from e
        return Path(local)
    if source.kind == "torchvision":
        return _torchvision(source, resources, key, seed)
    raise FailfadeError(f"{key}: {source.kind}: sources are built by the workflow, not resolved")


def card_preprocessing(inp) -> tuple[float, str] | None:
    """(crop, interpolation) a card's `input` section records (a copy of torchvision weights), else None."""
    if not isinstance(inp, dict) or not inp.get("crop"):
        return None
    return float(inp["crop"]), str(inp.get("interpolation", "bilinear"))


def weights_preprocessing(source_text: str) -> tuple[float, str] | None:
    """(crop_size / resize_size, interpolation) of a model's own evaluation preprocessing, e.g.
    (224 / 232, "bilinear") for ResNet-50 V2, (480 / 480, "bicubic") for EfficientNetV2-L: a
    torchvision: source's from its weights enum's metadata (no download), a path: folder's from its
    card (which failfade writes for torchvision weights), else None (random weights, hf:, builtin:)."""
    if not isinstance(source_text, str):
        return None
    try:
        source = ModelSource.parse(source_text)
    except FailfadeError:
        return None
    if source.kind == "path":
        try:
            folder = Path(source.target)
            if folder.is_file():  # path:<dir>/model.safetensors or model.json, as resolve_source takes it
                folder = folder.parent
            inp = read_card_json(folder / CARD, "its card").get("input", {})
        except (FailfadeError, OSError, ValueError, AttributeError):
            return None
        return card_preprocessing(inp)
    if source.kind != "torchvision":
        return None
    import torchvision

    try:
        t = torchvision.models.get_model_weights(source.target)[source.detail].transforms()
        return float(t.crop_size[0]) / float(t.resize_size[0]), t.interpolation.value
    except (KeyError, ValueError, AttributeError, IndexError):
        return None


def _torchvision(source: ModelSource, resources: Path, key: str, seed: int = 0):
    import torchvision

    arch, weights_name = source.target, source.detail
    if arch not in classifiers():
        other = " (it has one by that name, not an image classifier)" if arch in torchvision.models.list_models() else ""
        raise FailfadeError(f"{key}: torchvision has no image classifier {arch!r}{other}")
    if weights_name.lower() in ("none", "random"):
        weights = None
        classes = [str(i) for i in range(1000)]
        mean, std, size = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], 224
        extra = {}
    else:
        try:
            weights = torchvision.models.get_model_weights(arch)[weights_name]
        except KeyError as e:
            raise FailfadeError(f"{key}: {arch} has no weights {weights_name!r}") from e
        classes = list(weights.meta["categories"])
        t = weights.transforms()
        mean, std, size = list(t.mean), list(t.std), int(t.crop_size[0])
        # the weights' resize-then-crop, kept in the card: a copy loaded through path: is fed alike
        extra = {"crop": float(t.crop_size[0]) / float(t.resize_size[0]), "interpolation": t.interpolation.value}
    torch.hub.set_dir(str(resources / "torch"))
    build = builder_kwargs(arch, weights)
    card = {
        "arch": f"torchvision:{arch}",
        "classes": classes,
        "input": {"channels": 3, "size": size, "mean": mean, "std": std, **extra},
        **({"build": build} if build else {}),
    }
    # built as build_architecture rebuilds it from the card, its initial weights drawn from the
    # experiment's seed (`none`: they are the model under test) without moving the global generator
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build_architecture(card)
    if weights is not None:
        state = _torchvision_state(weights, key, f"{arch}:{weights_name}")
        if build.get("aux_logits") is False:  # the checkpoint keeps the auxiliary heads, which are not built
            state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2.", "AuxLogits."))}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise FailfadeError(f"{key}: torchvision weights {arch}:{weights_name} do not fit the architecture "
                                f"built without them: {str(e)[:300]}") from e
    return module, card


# densenet checkpoints predate the ban on '.' in module names ('norm.1' for 'norm1'); torchvision's
# densenet builder renames these keys, so loading the checkpoint here does too
_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _torchvision_state(weights, key: str, what: str) -> dict:
    """A torchvision weights enum's checkpoint, unpickled with weights_only=True. torchvision's own
    loader (get_model(weights=...)) unpickles it with weights_only=False, so a file planted in the
    hub cache (resources/torch/checkpoints/) ran its code; check_hash only verifies a download, a
    cached file is read as it is."""
    import pickle

    try:
        state = weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except pickle.UnpicklingError as e:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
        raise FailfadeError(f"{key}: {cached}: refused, the checkpoint of {what} holds more than tensors "
                            f"(unpickling it could run code; delete it to download it again): {str(e)[:200]}") from None
    except Exception as e:
        raise FailfadeError(f"{key}: cannot fetch torchvision weights {what} ({type(e).__name__}: {str(e)[:200]})") from e
    return {_DENSENET_OLD_KEY.sub(r"\1\2", k): v for k, v in state.items()}
