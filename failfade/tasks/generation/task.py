"""Text-to-image scoring: a cell is a prompt, an input is a generation seed, a judge decides.

The concept space fills the slots of a prompt template (`a photo of a {descriptor} {profession}`)
with the words of each axis; a query (seed, cell) generates the cell's prompt from the seed's own
noise and asks the judge about the image. Judges (`judges.py`) return, per image, a prediction
(a class index, or −1), Δ and whether Δ crossed the judge's threshold:

  clip        Δ = 1 − cos(CLIP image embedding, CLIP embedding of the full prompt); a failure when
              the cosine is below `threshold` (the paper: 0.3). The paper's reward was 100·Δ.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from failfade.concepts import ConceptSpace
from failfade.numerics import denormals_kept, keeps_denormals
from failfade.tasks import Outcomes, standardize
from failfade.tasks.generation.pipeline import Sampler, seed_of
from failfade.tasks.generation.prompts import prompt_of

SCORE_CHUNK = 256  # images rendered and judged at once (a 512 px chunk: about 0.8 GB in float32)


@keeps_denormals
class GenerationTask:
    def __init__(self, sampler: Sampler, judge, space: ConceptSpace, template: str, n_inputs: int, seed: int,
                 model_sha256: str | None = None):
        self.sampler, self.judge, self.space, self.template = sampler, judge, space, template
        self.n_inputs, self.n_cells, self.seed = int(n_inputs), space.n_cells, int(seed)
        self.model_sha256 = model_sha256
        self.labels = np.full(self.n_inputs, -1, dtype=np.int64)  # a seed has no reference label
        self.prompts = [prompt_of(space, template, c) for c in range(self.n_cells)]
        self.device = sampler.device

    @functools.cached_property
    def observations(self) -> np.ndarray:
        """The explorer's view of a seed: the judge's embedding of what the seed gives with no
        prompt. Computed on first use: only exploration needs it, and it costs one image per seed
        (the audit, probe and shift stages score without it)."""
        seeds = [seed_of(self.seed, i) for i in range(self.n_inputs)]
        with denormals_kept():
            return standardize(np.concatenate([
                np.asarray(self.judge.embed(self.sampler.generate([""] * len(part), part)))
                for part in (seeds[s : s + SCORE_CHUNK] for s in range(0, len(seeds), SCORE_CHUNK))]))

    def render(self, input_ids, cells) -> torch.Tensor:
        ids, cells = np.asarray(input_ids), np.asarray(cells)
        return self.sampler.generate([self.prompts[int(c)] for c in cells], [seed_of(self.seed, int(i)) for i in ids])

    def score(self, input_ids, cells) -> Outcomes:
        """Rendered and judged SCORE_CHUNK images at a time, so that a call's memory is a chunk's, not
        the call's (the exhaustive truth asks 8,192 pairs at once: 25 GB of 512 px images)."""
        ids, cells = np.asarray(input_ids), np.asarray(cells)
        parts = []
        for s in range(0, max(len(cells), 1), SCORE_CHUNK):
            i, c = ids[s : s + SCORE_CHUNK], cells[s : s + SCORE_CHUNK]
            pred, delta, fail = self.judge(self.render(i, c), [self.prompts[int(k)] for k in c], c)
            parts.append((np.asarray(pred, dtype=np.int64), np.asarray(delta, dtype=np.float32), np.asarray(fail, dtype=bool)))
        return Outcomes(*(np.concatenate([p[k] for p in parts]) for k in range(3)))
