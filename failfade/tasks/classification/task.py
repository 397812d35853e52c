"""Image classification: failure = predicted index ≠ label index (never class-name matching).

Δ = 1 − p(true class), recorded for every query; ε (`failure` rule) is the argmax mismatch, so a
query fails exactly when the model's top-1 index differs from the label index.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from failfade.concepts import ConceptSpace
from failfade.tasks.classification.data import ImageSet, batch_rows
from failfade.tasks.classification.models import ModelUnderTest
from failfade.tasks import Outcomes, standardize
from failfade.tasks.classification.transforms import apply


class ClassificationTask:
    def __init__(self, mut: ModelUnderTest, inputs: ImageSet, space: ConceptSpace, batch_size: int = 256):
        # batch_size: scoring chunk. Larger chunks lose on CPU once activations leave the cache
        # (digits CNN: 0.07 ms/img at 256, 0.28 ms/img at 4096), whatever the number of explorers.
        self.mut = mut
        self.device = mut.device  # where the scoring runs; the PPO learner runs there too
        self.model_sha256 = mut.card.get("sha256")
        self.inputs = inputs
        self.space = space
        # on a CPU the scoring chunk also keeps within a bounded batch of large images (host memory)
        self.batch_size = batch_rows(inputs.images, batch_size) if mut.device.type == "cpu" else batch_size
        self.n_inputs = len(inputs)
        self.n_cells = space.n_cells
        self.labels = inputs.labels.numpy()
        self.data_digest = inputs.digest()  # what the held-out inputs are (the outcome cache's key)
        # what besides the weights, data and concepts decides an outcome (the outcome cache's key):
        # the card's preprocessing and build (an edited mean/std with the same weights reused the old
        # outcomes: 129 of 200 decisions differed), a low-precision forward pass and the device
        # (a GPU's kernels round differently) can flip a borderline decision
        self.settings = {"arch": mut.card.get("arch"), "input": mut.card.get("input")}
        if mut.card.get("build"):  # how the architecture is built (Inception v3's transform_input)
            self.settings["build"] = mut.card["build"]
        if mut.precision != "fp32":
            self.settings["precision"] = mut.precision
        if mut.device.type != "cpu":
            self.settings["device"] = mut.device.type
        # on a GPU the held-out images live there (one copy, from pinned memory), so the concept
        # transforms run on the GPU and a scoring call moves only indices in and decisions out
        self._images = inputs.images
        if mut.device.type != "cpu" and isinstance(inputs.images, torch.Tensor):
            self._images = inputs.images.pin_memory().to(mut.device, non_blocking=True)
        # an ImageArray (a folder decoded to a uint8 file) stays on disk: each batch is read, then
        # moved to the model's device for the transforms
        self._labels_dev = torch.as_tensor(self.labels, device=mut.device)
        self._feature_batch = batch_rows(inputs.images, batch_size)
        # the model is fixed while it is explored: score through its frozen inference graph
        self._forward = mut.scoring_forward(inputs.images[: min(3, self.n_inputs)])

    @functools.cached_property
    def observations(self) -> np.ndarray:
        """The explorer's observation: the model's own penultimate features of each clean input.
        Computed on first use: only exploration needs it, and it is a forward pass over the whole
        held-out split (the audit, probe and shift stages score without it)."""
        images, fb = self.inputs.images, self._feature_batch
        feats = [self.mut.logits_and_features(images[s : s + fb])[1] for s in range(0, self.n_inputs, fb)]
        return standardize(torch.cat(feats).cpu().numpy())

    def render(self, input_ids, cells) -> torch.Tensor:
        idx = torch.as_tensor(np.asarray(input_ids))
        x = self._images[idx.to(self._images.device)]
        return apply(self.space, x.to(self.device, non_blocking=True) if x.device != self.device else x, cells)

    @torch.inference_mode()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The model's logits on rendered images, through the scoring forward pass."""
        with self.mut.autocast():
            return self._forward(self.mut.preprocess(images)).float()

    @torch.inference_mode()
    def score(self, input_ids, cells) -> Outcomes:
        input_ids, cells = np.asarray(input_ids), np.asarray(cells)
        preds, deltas = [], []
        ids_dev = torch.as_tensor(input_ids).to(self._labels_dev.device)
        for s in range(0, len(input_ids), self.batch_size):
            x = self.render(input_ids[s : s + self.batch_size], cells[s : s + self.batch_size])
            probs = torch.softmax(self.logits(x), dim=1)
            y = self._labels_dev[ids_dev[s : s + self.batch_size]]
            preds.append(probs.argmax(1))
            deltas.append(1.0 - probs.gather(1, y[:, None])[:, 0])
        # one device-to-host copy per scoring call, not one per chunk or query
        pred = torch.cat(preds).cpu().numpy()
        delta = torch.cat(deltas).cpu().numpy()
        return Outcomes(pred, delta.astype(np.float32), pred != self.labels[input_ids])
