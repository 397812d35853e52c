"""Model sources, the safetensors + card format, and running a model under test."""

from __future__ import annotations

import copy
import json
import re
import socket

import pytest
import torch
from torch import nn

from failfade import FailfadeError
from failfade.tasks.classification.models import (
    CARD,
    WEIGHTS,
    DigitsCNN,
    ModelSource,
    ModelUnderTest,
    check_card_input,
    last_linear,
    load_model,
    resolve_source,
    save_model,
)

KEY = "experiments.digits.model.source"


# --- ModelSource.parse --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text,kind,target,detail",
    [
        ("builtin:digits-cnn", "builtin", "digits-cnn", None),
        ("torchvision:resnet18:IMAGENET1K_V1", "torchvision", "resnet18", "IMAGENET1K_V1"),
        ("torchvision:resnet18:none", "torchvision", "resnet18", "none"),
        ("hf:owner/name@rev", "hf", "owner/name", "rev"),
        ("hf:owner/name", "hf", "owner/name", None),
        ("path:/x", "path", "/x", None),
        ("path:relative/dir:with:colons", "path", "relative/dir:with:colons", None),
    ],
)
def test_parse_sources(text, kind, target, detail):
    s = ModelSource.parse(text)
    assert (s.kind, s.target, s.detail) == (kind, target, detail)


@pytest.mark.parametrize(
    "text,reason",
    [
        ("ftp:server/model", "unknown model source kind 'ftp'"),
        ("torchvision:resnet18", "expected torchvision:<arch>:<weights-enum>"),
        ("torchvision:resnet18:", "expected torchvision:<arch>:<weights-enum>"),
        ("torchvision::IMAGENET1K_V1", "expected torchvision:<arch>:<weights-enum>"),
        ("torchvision:resnet18:a:b", "expected torchvision:<arch>:<weights-enum>"),
        ("hf:justaname", "expected hf:<owner>/<name>[@revision]"),
        ("hf:a/b/c", "expected hf:<owner>/<name>[@revision]"),
        ("hf:@main", "expected hf:<owner>/<name>[@revision]"),
        ("builtin:resnet", "unknown builtin model 'resnet'"),
        ("digits-cnn", "is not a model source"),
        ("path:", "needs a file or folder"),
    ],
)
def test_parse_errors_name_the_key(text, reason):
    with pytest.raises(FailfadeError) as ei:
        ModelSource.parse(text, key=KEY)
    msg = str(ei.value)
    assert msg.startswith(KEY + ":")
    assert reason in msg


@pytest.mark.parametrize("text", ["hf:/name", "hf:owner/"])
def test_parse_hf_empty_owner_or_name(text):
    with pytest.raises(FailfadeError, match="expected hf:<owner>/<name>"):
        ModelSource.parse(text, key=KEY)


def test_parse_non_string():
    with pytest.raises(FailfadeError, match="model.source"):
        ModelSource.parse(None)


# --- save / load ------------------------------------------------------------------------------

CARD_DIGITS = {
    "arch": "digits-cnn",
    "classes": [str(i) for i in range(10)],
    "input": {"channels": 1, "size": 32, "mean": [0.0], "std": [1.0]},
}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = DigitsCNN()
    out = tmp_path / "model"
    card = save_model(model, CARD_DIGITS, out)
    return model, card, out


def _images(n=4, size=32, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_save_writes_card_with_sha(saved):
    _, card, out = saved
    assert (out / WEIGHTS).is_file() and (out / CARD).is_file()
    on_disk = json.loads((out / CARD).read_text())
    assert on_disk == card
    import hashlib

    assert card["sha256"] == hashlib.sha256((out / WEIGHTS).read_bytes()).hexdigest()
    # the bytes depend on torch's thread count (it follows --cores): the card says which wrote them
    assert card["written_with"] == {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    assert card["weights"] == WEIGHTS
    assert card["classes"] == CARD_DIGITS["classes"]


def test_save_load_round_trip_identical_outputs(saved):
    model, _, out = saved
    loaded = load_model(out)
    x = _images()
    model.eval()
    with torch.no_grad():
        expected = model(x)
    # bit-identical against the same model in the same (channels_last) inference path ...
    assert torch.equal(loaded.logits(x), ModelUnderTest(copy.deepcopy(model), dict(CARD_DIGITS)).logits(x))
    # ... and equal up to float reordering against the plain module
    assert torch.allclose(loaded.logits(x), expected, atol=1e-5)
    for name, t in model.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[name], t)


def test_flipped_bytes_fail_sha_check(saved):
    _, _, out = saved
    w = out / WEIGHTS
    data = bytearray(w.read_bytes())
    for i in range(len(data) - 40, len(data) - 30):  # inside the tensor data, past the header
        data[i] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(FailfadeError) as ei:
        load_model(out)
    assert str(w) in str(ei.value)
    assert "sha256" in str(ei.value) and "corrupt" in str(ei.value)


def test_truncated_file_pinned_by_its_card_is_unreadable(saved):
    import hashlib

    _, _, out = saved
    w = out / WEIGHTS
    w.write_bytes(w.read_bytes()[: len(w.read_bytes()) // 2])
    card = json.loads((out / CARD).read_text())
    card["sha256"] = hashlib.sha256(w.read_bytes()).hexdigest()
    (out / CARD).write_text(json.dumps(card))
    with pytest.raises(FailfadeError) as ei:
        load_model(out)
    assert str(w) in str(ei.value)
    assert "cannot be read as safetensors" in str(ei.value)


@pytest.mark.parametrize("sha256", [None, "", "0" * 63, "F" * 64])
def test_a_card_that_pins_no_weights_is_refused(saved, sha256):
    """A card without a sha256, or an empty one, loaded whatever weights lay beside it."""
    _, _, out = saved
    card = json.loads((out / CARD).read_text())
    card.pop("sha256") if sha256 is None else card.update(sha256=sha256)
    (out / CARD).write_text(json.dumps(card))
    with pytest.raises(FailfadeError) as ei:
        load_model(out)
    assert str(ei.value) == f"{out / CARD}: sha256 must be the sha256 of {WEIGHTS} (64 hex digits), got {sha256!r}"


def test_missing_card(saved):
    _, _, out = saved
    (out / CARD).unlink()
    with pytest.raises(FailfadeError) as ei:
        load_model(out)
    assert str(out / CARD) in str(ei.value) and "missing" in str(ei.value)


def test_missing_weights(saved):
    _, _, out = saved
    (out / WEIGHTS).unlink()
    with pytest.raises(FailfadeError) as ei:
        load_model(out)
    assert str(out / WEIGHTS) in str(ei.value) and "missing" in str(ei.value)


def test_card_not_json(saved):
    _, _, out = saved
    (out / CARD).write_text("{not json")
    with pytest.raises(FailfadeError) as ei:
        load_model(out)
    assert str(out / CARD) in str(ei.value) and "not valid JSON" in str(ei.value)


def test_weights_for_another_arch(tmp_path):
    out = tmp_path / "m"
    save_model(DigitsCNN(num_classes=10), CARD_DIGITS, out)
    card = json.loads((out / CARD).read_text())
    card["classes"] = ["a", "b", "c"]  # head of 3 classes, weights for 10
    (out / CARD).write_text(json.dumps(card))
    with pytest.raises(FailfadeError) as ei:
        load_model(out)
    assert str(out / WEIGHTS) in str(ei.value) and "do not fit arch 'digits-cnn'" in str(ei.value)


def test_unknown_arch_in_card(tmp_path):
    out = tmp_path / "m"
    save_model(DigitsCNN(), dict(CARD_DIGITS, arch="lenet"), out)
    with pytest.raises(FailfadeError) as ei:
        load_model(out)
    assert str(ei.value).startswith(f"{out / CARD}: cannot build arch 'lenet' (ValueError: known: digits-cnn or torchvision:")


@pytest.mark.parametrize("key, value, said", [
    ("sha256", 5, "sha256 must be a sha256 (64 hex digits), got 5"),
    ("classes", "0123456789", "classes must be a list of class names, got '0123456789'"),
])
def test_a_hand_edited_card_value_of_the_wrong_type_is_named(tmp_path, key, value, said):
    """A string of classes loaded as 10 classes, a numeric sha256 failed as a TypeError."""
    out = tmp_path / "m"
    save_model(DigitsCNN(), CARD_DIGITS, out)
    card = json.loads((out / CARD).read_text())
    card[key] = value
    (out / CARD).write_text(json.dumps(card))
    with pytest.raises(FailfadeError) as ei:
        load_model(out)
    assert str(ei.value) == f"{out / CARD}: {said}"


@pytest.mark.parametrize("edit,said", [
    (lambda c: c["input"].pop("mean"), "input lacks ['mean']"),
    (lambda c: c["input"].update(size="big"), "input.size must be a positive whole number, got 'big'"),
    (lambda c: c["input"].update(size=16.5), "input.size must be a positive whole number, got 16.5"),
    (lambda c: c["input"].update(std=[0]), "input.std must be positive"),
    (lambda c: c["input"].update(mean=[0.1, 0.2, 0.3]), "input.mean must be a finite number or 1 of them"),
    (lambda c: c["input"].update(mean=float("nan")), "input.mean must be a finite number"),
    (lambda c: c["input"].update(channels=2), "input.channels must be 1 or 3"),
    (lambda c: c.update(arch=7), "arch must be an architecture name (a string), got 7"),
])
def test_a_hand_written_cards_input_section_is_checked(saved, edit, said):
    """A `path:` model's card is written by hand: a missing mean was a KeyError traceback, std 0 made
    every logit non-finite in silence, a mean of the wrong length failed inside a convolution later."""
    _, _, out = saved
    card = json.loads((out / CARD).read_text())
    edit(card)
    (out / CARD).write_text(json.dumps(card))
    with pytest.raises(FailfadeError) as ei:
        load_model(out)
    assert f"{out / CARD}: {said}" in str(ei.value)


def test_hand_written_card_forms_that_broadcast_still_load(saved):
    """A scalar mean/std, or one value for every channel, and a size written 16.0 worked before the
    card check and must still (the check is for what fails or silently breaks)."""
    _, _, out = saved
    card = json.loads((out / CARD).read_text())
    for inp in ({"mean": 0.5, "std": 0.25}, {"mean": [0.5], "std": [0.25], "size": float(card["input"]["size"])}):
        (out / CARD).write_text(json.dumps(card | {"input": card["input"] | inp}))
        mut = load_model(out)
        assert torch.isfinite(mut.logits(torch.rand(2, card["input"]["channels"], 8, 8))).all()


# --- running a model ---------------------------------------------------------------------------

def test_logits_and_features_penultimate_width(saved):
    model, _, out = saved
    mut = load_model(out)
    x = _images(5)
    logits, feats = mut.logits_and_features(x)
    assert logits.shape == (5, 10)
    assert feats.shape == (5, 64)
    # the features are what the classifier sees: classifier(features) == logits
    assert torch.allclose(mut.module.classifier(feats), logits, atol=1e-5)
    assert torch.allclose(feats, mut.module.features(x), atol=1e-6)
    assert torch.all(feats >= 0)  # after the ReLU
    assert mut.head is mut.module.classifier
    # the hook is removed afterwards
    assert len(mut.head._forward_hooks) == 0


def test_scoring_forward_is_a_frozen_snapshot_with_the_eager_decisions(saved):
    _, _, out = saved
    mut = load_model(out)
    x = _images(300, seed=3)
    fast = mut.scoring_forward(x[:2])
    assert isinstance(fast, torch.jit.ScriptModule)  # not a silent fall-back to the eager module
    with torch.inference_mode():
        got, want = fast(mut.preprocess(x)), mut.logits(x)
        assert torch.allclose(got, want, atol=1e-5)
        assert torch.equal(got.argmax(1), want.argmax(1))
        assert fast(mut.preprocess(x[:7])).shape == (7, 10)  # any batch size, not the traced one
        # a snapshot: training the module afterwards does not reach it
        for p in mut.module.parameters():
            p.add_(1.0)
        assert torch.allclose(fast(mut.preprocess(x[:5])), got[:5], atol=1e-5)


def test_scoring_forward_is_eager_off_cpu_fp32(saved):
    _, _, out = saved
    mut = load_model(out, precision="bf16")
    assert mut.scoring_forward(_images(2)) is mut.module


class _Branchy(DigitsCNN):
    def forward(self, x):
        if float(x.mean()) > 0.5:  # data-dependent Python control flow: tracing keeps one branch
            return super().forward(x)
        return -super().forward(x)


class _Untraceable(DigitsCNN):
    def forward(self, x):
        return {"logits": super().forward(x), "name": "not a tensor"}  # the tracer refuses str outputs


@pytest.mark.parametrize("cls,reason", [(_Branchy, "disagrees"), (_Untraceable, "tracing failed")])
def test_scoring_forward_falls_back_to_the_module(cls, reason):
    mut = ModelUnderTest(cls(), dict(CARD_DIGITS))
    x = torch.cat([_images(1, seed=1) * 0.1, _images(2, seed=2) * 0.1 + 0.9])  # means on both sides of 0.5
    with pytest.warns(UserWarning, match=reason):
        assert mut.scoring_forward(x) is mut.module


def test_preprocess_normalises_resizes_and_expands():
    card = {"arch": "digits-cnn", "classes": ["a", "b"],
            "input": {"channels": 3, "size": 16, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 1.0]}}
    mut = ModelUnderTest(DigitsCNN(num_classes=2, in_channels=3), card)
    x = torch.full((2, 1, 8, 8), 0.75)
    y = mut.preprocess(x)
    assert y.shape == (2, 3, 16, 16)
    assert torch.allclose(y[:, 0], torch.full((2, 16, 16), 1.0))
    assert torch.allclose(y[:, 1], torch.full((2, 16, 16), 0.5))
    assert torch.allclose(y[:, 2], torch.full((2, 16, 16), 0.25))


def test_last_linear_requires_a_linear():
    with pytest.raises(FailfadeError, match="no nn.Linear"):
        last_linear(nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU()))


# --- resolve_source ----------------------------------------------------------------------------

@pytest.fixture
def keep_hub_dir(monkeypatch):
    # resolve_source points torch.hub at the resources dir; restore the global afterwards
    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)


def test_torchvision_random_init(tmp_path, keep_hub_dir):
    module, card = resolve_source(ModelSource.parse("torchvision:resnet18:none"), tmp_path)
    assert isinstance(module, nn.Module)
    assert card["arch"] == "torchvision:resnet18"
    assert card["input"]["channels"] == 3 and card["input"]["size"] == 224
    assert len(card["classes"]) == 1000
    assert last_linear(module).out_features == 1000
    assert not (tmp_path / "torch" / "checkpoints").exists()  # nothing was downloaded


def test_torchvision_weights_offline_fail_names_key(tmp_path, keep_hub_dir, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    # offline and with an empty hub cache, nothing can succeed (no silent fallback to random weights)
    with pytest.raises(FailfadeError) as ei:
        resolve_source(ModelSource.parse("torchvision:resnet18:IMAGENET1K_V1", KEY), tmp_path, key=KEY)
    assert str(ei.value).startswith(KEY + ": cannot fetch torchvision weights resnet18:IMAGENET1K_V1"), str(ei.value)


class _RunsCode:
    """A pickle that creates `marker` when it is unpickled with weights_only=False."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _offline(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "getaddrinfo", offline)


def test_a_pickle_planted_in_the_torch_hub_cache_runs_no_code(tmp_path, keep_hub_dir, monkeypatch):
    """torchvision's get_model(weights=...) unpickles the cached checkpoint with weights_only=False:
    a file planted in resources/torch/checkpoints ran its code when the model stage read it."""
    _offline(monkeypatch)
    marker = tmp_path / "pwned"
    cached = tmp_path / "torch" / "checkpoints" / "resnet18-f37072fd.pth"  # the IMAGENET1K_V1 file name
    cached.parent.mkdir(parents=True)
    torch.save({"fc.weight": _RunsCode(marker)}, cached)
    with pytest.raises(FailfadeError) as ei:
        resolve_source(ModelSource.parse("torchvision:resnet18:IMAGENET1K_V1", KEY), tmp_path, key=KEY)
    assert not marker.exists()
    assert str(ei.value).startswith(f"{KEY}: {cached}: refused, the checkpoint of resnet18:IMAGENET1K_V1 holds more "
                                    "than tensors"), str(ei.value)


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
def test_a_cached_torchvision_checkpoint_loads_as_plain_tensors(tmp_path, keep_hub_dir, monkeypatch, arch):
    """The checkpoint loads into the architecture built without weights (densenet's old 'norm.1'
    keys renamed as torchvision's builder renames them), offline, from the hub cache."""
    import torchvision

    _offline(monkeypatch)
    weights = torchvision.models.get_model_weights(arch)["IMAGENET1K_V1"]
    torch.manual_seed(7)
    state = torchvision.models.get_model(arch).state_dict()
    # as the published densenet files are: 'norm.1' keys, and no num_batches_tracked (older than it)
    old = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2.") if "denselayer" in k else k: v
           for k, v in state.items() if not ("denselayer" in k and k.endswith("num_batches_tracked"))}
    cached = tmp_path / "torch" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    torch.save(old, cached)
    module, card = resolve_source(ModelSource.parse(f"torchvision:{arch}:IMAGENET1K_V1", KEY), tmp_path, key=KEY)
    assert card["classes"] == list(weights.meta["categories"])
    assert all(torch.equal(v, state[k]) for k, v in module.state_dict().items())


def test_pretrained_googlenet_is_built_as_its_weights_expect(tmp_path, keep_hub_dir, monkeypatch):
    """torchvision's builder gives GoogLeNet's and Inception v3's weights `transform_input=True`
    (their inputs renormalised inside the model); built without weights and loaded from the
    checkpoint, they lacked it, in the model stage and in every stage that rebuilds the model from
    its card, so every prediction was made on wrongly scaled inputs. Fine-tuning them crashed on
    the named tuple their auxiliary heads return in train mode."""
    import torchvision

    from failfade.tasks.classification.models import builder_kwargs, main_logits

    _offline(monkeypatch)
    weights = torchvision.models.get_model_weights("googlenet")["IMAGENET1K_V1"]
    torch.manual_seed(7)
    state = torchvision.models.get_model("googlenet", aux_logits=True, init_weights=False).state_dict()
    cached = tmp_path / "torch" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    module, card = resolve_source(ModelSource.parse("torchvision:googlenet:IMAGENET1K_V1", KEY), tmp_path, key=KEY)
    assert card["build"] == {"aux_logits": False, "transform_input": True} and module.transform_input
    assert module.aux1 is None and module.aux2 is None  # as torchvision leaves its pretrained GoogLeNet
    save_model(module, card, tmp_path / "m")
    mut = load_model(tmp_path / "m")
    assert mut.module.transform_input
    # torchvision's own pretrained model (transform_input set by its builder) gives the same logits
    reference = torchvision.models.googlenet(weights=None, transform_input=True, init_weights=False).eval()  # aux heads kept
    reference.load_state_dict(state)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(mut.module(mut.preprocess(x)), reference(mut.preprocess(x)), atol=1e-5)
    # no auxiliary heads: train mode gives the logits (one image too), as fine-tuning needs
    assert mut.module.train()(mut.preprocess(x)).shape == (2, 1000)
    assert mut.module.train()(mut.preprocess(x[:1])).shape == (1, 1000)
    # random weights keep their auxiliary heads out too; a model that has them gives its main head's logits
    aux = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False).train()
    assert main_logits(aux(x)).shape == (2, 1000) and isinstance(aux(x), tuple)
    # random weights keep torchvision's defaults; ViT's SWAG weights their larger image size
    assert builder_kwargs("googlenet", None) == {"aux_logits": False}
    assert builder_kwargs("vit_b_16", torchvision.models.ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1) == {"image_size": 384}
    assert builder_kwargs("vit_b_16", torchvision.models.ViT_B_16_Weights.IMAGENET1K_V1) == {}  # the default 224 px
    assert builder_kwargs("maxvit_t", torchvision.models.MaxVit_T_Weights.IMAGENET1K_V1) == {}
    assert builder_kwargs("resnet50", torchvision.models.ResNet50_Weights.IMAGENET1K_V2) == {}
    good = json.loads((tmp_path / "m" / "model.json").read_text())
    # a card's build (a path: or hf: card is written by someone else) sets only what failfade writes
    for build, said in (([], "build must be a mapping"),
                        ({"weights_backbone": "IMAGENET1K_V2"}, "build.weights_backbone: not an argument failfade sets"),
                        ({"transform_input": "no"}, "build.transform_input must be true or false, got 'no'"),
                        ({"image_size": 0}, "build.image_size must be a positive whole number"),
                        ({"input_size": [224]}, "build.input_size must be two positive whole numbers")):
        with pytest.raises(FailfadeError, match=re.escape(said)):
            check_card_input(good | {"build": build}, "model.json")
    with pytest.raises(FailfadeError, match="build is for torchvision architectures, not 'digits-cnn'"):
        check_card_input(good | {"arch": "digits-cnn"}, "model.json")
    (tmp_path / "m" / "model.json").write_text(json.dumps(good | {"arch": "torchvision:fcn_resnet50", "build": {}}))
    with pytest.raises(FailfadeError, match="cannot build arch 'torchvision:fcn_resnet50'.*no image classifier"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "model.json").write_text(json.dumps(good))
    # a card the model stage wrote before `build` existed is refused, naming the rebuild
    card_path = tmp_path / "m" / "model.json"
    stale = json.loads(card_path.read_text()) | {"source": "torchvision:googlenet:IMAGENET1K_V1"}
    stale.pop("build")
    card_path.write_text(json.dumps(stale))
    with pytest.raises(FailfadeError, match=r"model.json: torchvision:googlenet:IMAGENET1K_V1 needs build: "
                                            r"\{'aux_logits': False, 'transform_input': True\}.*--forcerun model"):
        load_model(tmp_path / "m")
    # a card with the right transform but its auxiliary heads (written earlier, or random weights
    # before build existed) loads as it is: the heads change no output in eval mode
    for source, build in (("torchvision:googlenet:IMAGENET1K_V1", {"transform_input": True}),
                          ("torchvision:googlenet:none", None)):
        card = stale | {"source": source} | ({"build": build} if build else {})
        (tmp_path / "aux").mkdir(exist_ok=True)
        aux_module = torchvision.models.googlenet(weights=None, init_weights=False, **(build or {}))
        save_model(aux_module, card, tmp_path / "aux")
        assert load_model(tmp_path / "aux").module.aux1 is not None
    # a source that is not torchvision weights (a model trained elsewhere): the card's build decides
    card_path.write_text(json.dumps(stale | {"source": "my own training", "build": {"aux_logits": False}}))
    assert not load_model(tmp_path / "m").module.transform_input


def test_torchvision_random_weights_follow_the_experiment_seed(tmp_path, keep_hub_dir):
    """`torchvision:<arch>:none` weights are the model under test: drawn from the experiment's seed,
    not from whatever the global generator held, and without moving it."""
    source = ModelSource.parse("torchvision:resnet18:none")

    def weights(seed):
        torch.manual_seed(1234)  # the global generator: no influence, and left where it was
        module, _ = resolve_source(source, tmp_path, seed=seed)
        after = torch.rand(3)
        torch.manual_seed(1234)
        assert torch.equal(after, torch.rand(3))
        return module.state_dict()

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_torchvision_unknown_weights_enum(tmp_path, keep_hub_dir):
    with pytest.raises(FailfadeError) as ei:
        resolve_source(ModelSource.parse("torchvision:resnet18:NOPE"), tmp_path, key=KEY)
    assert str(ei.value).startswith(KEY + ":") and "no weights 'NOPE'" in str(ei.value)


def test_torchvision_unknown_arch(tmp_path):
    with pytest.raises(FailfadeError) as ei:
        resolve_source(ModelSource.parse("torchvision:resnet9000:none"), tmp_path, key=KEY)
    assert str(ei.value).startswith(KEY + ":") and "no image classifier 'resnet9000'" in str(ei.value)
    # a detection model's builder loads backbone weights through torchvision's unpickling loader: refused
    with pytest.raises(FailfadeError, match="no image classifier 'fcn_resnet50' .it has one by that name, not an image classifier"):
        resolve_source(ModelSource.parse("torchvision:fcn_resnet50:none"), tmp_path, key=KEY)


def test_resolve_path_source(saved, tmp_path):
    _, _, out = saved
    assert resolve_source(ModelSource.parse(f"path:{out}"), tmp_path) == out
    assert resolve_source(ModelSource.parse(f"path:{out / WEIGHTS}"), tmp_path) == out
    with pytest.raises(FailfadeError) as ei:
        resolve_source(ModelSource.parse(f"path:{tmp_path / 'nothing'}"), tmp_path, key=KEY)
    assert str(ei.value).startswith(KEY + ":") and "not a failfade model dir" in str(ei.value)


def test_resolve_builtin_is_refused(tmp_path):
    with pytest.raises(FailfadeError, match="built by the workflow"):
        resolve_source(ModelSource.parse("builtin:digits-cnn"), tmp_path)
