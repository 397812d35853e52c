"""Judges of generated images: what decides that a text-to-image query failed.

A judge is called as `judge(images, prompts, cells) -> (prediction, delta, failure)` on (B, C, H, W)
images in [0, 1], and `judge.embed(images)` gives the features the explorer observes.

  ClipJudge  CLIP image–text agreement with the full prompt (transformers `CLIPModel`, the cosine
             computed here from its projected embeddings: torchmetrics' CLIPScore refuses local
             folders). Δ = 1 − cos; failure when cos < threshold (the paper used 0.3).
             With `bias` ({question, classes}), it also answers a question about each image
             zero-shot (the class whose "question.format(class)" text CLIP finds closest, e.g.
             "a photo of a man" / "... woman"): that class index is the query's prediction, and
             the landscape measures bias per cell from those answers (bias.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from failfade import FailfadeError
from failfade.numerics import keeps_denormals


def _tensor(out) -> torch.Tensor:
    """get_*_features return a tensor (transformers 4) or an output whose pooler_output it is (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@keeps_denormals
class ClipJudge:
    def __init__(self, model, processor, threshold: float = 0.3, batch_size: int = 64, bias: dict | None = None):
        self.model, self.processor = model.eval(), processor
        self.threshold, self.batch_size = float(threshold), int(batch_size)
        self.device = next(model.parameters()).device
        self.bias = bias or None
        self._class_text = None

    @classmethod
    def load(cls, folder: Path, key: str, threshold: float, device: torch.device = torch.device("cpu"),
             bias: dict | None = None) -> "ClipJudge":
        from transformers import CLIPModel, CLIPProcessor

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FailfadeError(f"{key}: {folder} is not a CLIP model folder written by save_pretrained (no config.json)")
        try:
            model = CLIPModel.from_pretrained(str(folder), use_safetensors=True)
            processor = CLIPProcessor.from_pretrained(str(folder))
        except Exception as e:
            raise FailfadeError(f"{key}: cannot load a CLIP model and processor from {folder} ({type(e).__name__}: {str(e)[:200]})") from e
        return cls(model.to(device), processor, threshold, bias=bias)

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        x = images if images.shape[1] == 3 else images.expand(-1, 3, -1, -1)  # grey images as RGB
        inputs = self.processor.image_processor(images=list(x), do_rescale=False, return_tensors="pt")
        return inputs["pixel_values"].to(self.device)

    @torch.inference_mode()
    def embed(self, images: torch.Tensor) -> np.ndarray:
        feats = [_tensor(self.model.get_image_features(pixel_values=self._pixels(images[s : s + self.batch_size])))
                 for s in range(0, len(images), self.batch_size)]
        return torch.cat(feats).float().cpu().numpy()

    @torch.inference_mode()
    def attribute(self, images: torch.Tensor) -> np.ndarray:
        """Zero-shot answer per image: the index of the class whose question text is closest."""
        if self._class_text is None:
            texts = [self.bias["question"].format(c) for c in self.bias["classes"]]
            tok = self.processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(self.device)
            self._class_text = F.normalize(_tensor(self.model.get_text_features(
                input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])).float(), dim=-1)
        out = []
        for s in range(0, len(images), self.batch_size):
            img = F.normalize(_tensor(self.model.get_image_features(
                pixel_values=self._pixels(images[s : s + self.batch_size]))).float(), dim=-1)
            out.append((img @ self._class_text.T).argmax(1))
        return torch.cat(out).cpu().numpy().astype(np.int64) if out else np.zeros(0, dtype=np.int64)

    @torch.inference_mode()
    def cosine(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        out = []
        for s in range(0, len(images), self.batch_size):
            text = self.processor.tokenizer(prompts[s : s + self.batch_size], padding=True, truncation=True,
                                            return_tensors="pt").to(self.device)
            r = self.model(input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                           pixel_values=self._pixels(images[s : s + self.batch_size]))
            out.append(F.cosine_similarity(r.text_embeds, r.image_embeds, dim=-1))
        return torch.cat(out).float().cpu().numpy()

    def __call__(self, images: torch.Tensor, prompts: list[str], cells=None):
        cos = self.cosine(images, prompts)
        pred = self.attribute(images) if self.bias else np.full(len(cos), -1, dtype=np.int64)
        return pred, (1.0 - cos).astype(np.float32), cos < self.threshold
