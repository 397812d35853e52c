"""Image classification: failure = predicted index ≠ label index (never class-name matching).

Δ = 1 − p(true class), recorded for every query; ε (`failure` rule) is the argmax mismatch, so a
query fails exactly when the model's top-1 index differs from the label index.
"""

from __future__ import annotations

import numpy as np
import torch

from failfade.concepts import ConceptSpace
from failfade.tasks.classification.data import ImageSet
from failfade.tasks.classification.models import ModelUnderTest
from failfade.tasks import Outcomes, standardize
from failfade.tasks.classification.transforms import apply


class ClassificationTask:
    def __init__(self, mut: ModelUnderTest, inputs: ImageSet, space: ConceptSpace, batch_size: int = 256):
        # batch_size: scoring chunk. Larger chunks lose on CPU once activations leave the cache
        # (digits CNN: 0.07 ms/img at 256, 0.28 ms/img at 4096), whatever the number of explorers.
        self.mut = mut
        self.model_sha256 = mut.card.get("sha256")
        self.inputs = inputs
        self.space = space
        self.batch_size = batch_size
        self.n_inputs = len(inputs)
        self.n_cells = space.n_cells
        self.labels = inputs.labels.numpy()
        # The explorer's observation: the model's own penultimate features of the clean input.
        feats = [mut.logits_and_features(inputs.images[s : s + batch_size])[1] for s in range(0, self.n_inputs, batch_size)]
        self.observations = standardize(torch.cat(feats).cpu().numpy())

    def render(self, input_ids, cells) -> torch.Tensor:
        return apply(self.space, self.inputs.images[torch.as_tensor(np.asarray(input_ids))], cells)

    @torch.no_grad()
    def score(self, input_ids, cells) -> Outcomes:
        input_ids, cells = np.asarray(input_ids), np.asarray(cells)
        preds, deltas = [], []
        for s in range(0, len(input_ids), self.batch_size):
            x = self.render(input_ids[s : s + self.batch_size], cells[s : s + self.batch_size])
            probs = torch.softmax(self.mut.logits(x), dim=1).cpu()
            y = torch.as_tensor(self.labels[input_ids[s : s + self.batch_size]])
            preds.append(probs.argmax(1).numpy())
            deltas.append((1.0 - probs.gather(1, y[:, None])[:, 0]).numpy())
        pred = np.concatenate(preds)
        return Outcomes(pred, np.concatenate(deltas).astype(np.float32), pred != self.labels[input_ids])
