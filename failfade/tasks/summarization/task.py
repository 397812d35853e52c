"""Summarization scoring: Δ = ROUGE-L(clean output, reference) − ROUGE-L(perturbed output, reference).

The paper compared the *article* with the perturbed summary (BLEU < 10) and rewarded BLEU ×
length change; failfade scores every output against the **reference** summary with ROUGE-L
(`rouge-score`), and a query fails when the perturbation costs more than ε (`model.epsilon`) of
ROUGE-L F (tokens: runs of letters and digits in any script, CJK characters one by one; on ASCII text
rouge-score's own). `prediction` records how many of the report's key facts that the clean output stated
the perturbed output lost (−1 for documents without facts). Generation is batched: one
`generate` call per chunk of queries, greedy unless `model.num_beams` > 1.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import torch
from rouge_score import rouge_scorer

from failfade import FailfadeError
from failfade.concepts import ConceptSpace
from failfade.numerics import denormals_kept, keeps_denormals
from failfade.tasks import Outcomes, standardize
from failfade.tasks.summarization.corpus import Report, facts_kept
from failfade.tasks.summarization.data import digest
from failfade.tasks.summarization.transforms import perturb_cell


def input_prefix(model) -> str:
    """The text a checkpoint expects before every document: its config's
    task_specific_params["summarization"]["prefix"] ("summarize: " for T5 checkpoints), or "".
    The transformers pipeline that added it is gone (transformers 5), so the Summarizer adds it."""
    params = getattr(model.config, "task_specific_params", None) or {}
    prefix = (params.get("summarization") or {}).get("prefix") if isinstance(params, dict) else None
    return prefix if isinstance(prefix, str) else ""


@keeps_denormals
class Summarizer:
    """A seq2seq model with its generation settings. Every document it encodes (clean or perturbed)
    starts with the model's `prefix` (input_prefix), which counts inside max_input_tokens."""

    def __init__(self, model, tokenizer, max_input_tokens: int, max_new_tokens: int, num_beams: int, batch_size: int = 64):
        # learned (BART) or tabled (Pegasus) positions end at max_position_embeddings: past it, an
        # IndexError from inside torch's embedding, at the first long document; T5's relative ones do not
        limit = getattr(model.config, "max_position_embeddings", None)
        for key, value in (("max_input_tokens", max_input_tokens), ("max_new_tokens", max_new_tokens)):
            if isinstance(limit, int) and value > limit:
                raise FailfadeError(f"model.{key}: {value} is more positions than this {type(model).__name__} has "
                                    f"(its config's max_position_embeddings is {limit}); set it to at most {limit}")
        self.model, self.tokenizer = model, tokenizer
        self.max_input_tokens, self.max_new_tokens, self.num_beams = max_input_tokens, max_new_tokens, num_beams
        self.batch_size = batch_size
        self.prefix = input_prefix(model)

    def encode(self, texts: list[str]):
        dev = next(self.model.parameters()).device
        enc = self.tokenizer([self.prefix + t for t in texts], return_tensors="pt", padding=True, truncation=True,
                             max_length=self.max_input_tokens)
        return {k: v.to(dev) for k, v in enc.items()}

    @torch.no_grad()
    def summarize(self, texts: list[str]) -> list[str]:
        out = []
        for s in range(0, len(texts), self.batch_size):
            ids = self.model.generate(**self.encode(texts[s:s + self.batch_size]), max_new_tokens=self.max_new_tokens,
                                      num_beams=self.num_beams, do_sample=False)
            out += self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [t.strip() for t in out]

    @torch.no_grad()
    def embed(self, texts: list[str]) -> np.ndarray:
        """Mean-pooled encoder states: the explorer's view of a clean document."""
        feats = []
        for s in range(0, len(texts), self.batch_size):
            enc = self.encode(texts[s:s + self.batch_size])
            h = self.model.get_encoder()(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            feats.append(((h * m).sum(1) / m.sum(1)).cpu().numpy())
        return np.concatenate(feats)


# Scripts written without spaces between words: each character is a token (as ROUGE is scored on
# Chinese and Japanese); one word per run of letters and digits elsewhere.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKENS = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")


class _Tokenizer:
    """rouge-score's default tokenizer keeps only [a-z0-9] and drops every other letter, so on
    Cyrillic, Greek or Chinese text every summary scored 0 (and no query could fail) and `comité`
    became `comit`. This one lowercases and keeps every script's letters; on ASCII text its tokens
    are exactly rouge-score's (runs of [a-z0-9]), so English scores are unchanged."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return _TOKENS.findall(text.lower())


_SCORER = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokenizer())


def rouge_l(outputs: list[str], references: list[str]) -> np.ndarray:
    return np.array([_SCORER.score(r, o)["rougeL"].fmeasure for o, r in zip(outputs, references)])


def clean_quality(summarizer: Summarizer, reports: list[Report]) -> float:
    """Mean ROUGE-L F of the model's summaries of the clean documents against the references."""
    return float(rouge_l(summarizer.summarize([r.document for r in reports]), [r.reference for r in reports]).mean())


@keeps_denormals
class SummarizationTask:
    def __init__(self, summarizer: Summarizer, reports: list[Report], space: ConceptSpace, seed: int, epsilon: float,
                 model_sha256: str | None = None):
        self.summarizer, self.reports, self.space = summarizer, reports, space
        self.seed, self.epsilon, self.model_sha256 = seed, epsilon, model_sha256
        self.n_inputs, self.n_cells = len(reports), space.n_cells
        self.labels = np.full(self.n_inputs, -1, dtype=np.int64)
        self.references = [r.reference for r in reports]
        self.data_digest = digest(reports)  # what the held-out documents are (the outcome cache's key)
        self.clean_outputs = summarizer.summarize([r.document for r in reports])
        self.clean_rouge = rouge_l(self.clean_outputs, self.references)

    @functools.cached_property
    def observations(self) -> np.ndarray:
        """The explorer's view of a document: the model's embedding of the clean text. Computed on
        first use: only exploration needs it (the audit, probe and shift stages score without it)."""
        with denormals_kept():
            return standardize(self.summarizer.embed([r.document for r in self.reports]))

    def documents(self, input_ids, cells) -> list[str]:
        return [perturb_cell(self.space, self.reports[i], c, self.seed, i) for i, c in zip(input_ids, cells)]

    def score(self, input_ids, cells) -> Outcomes:
        input_ids, cells = np.asarray(input_ids), np.asarray(cells)
        outputs = self.summarizer.summarize(self.documents(input_ids, cells))
        rouge = rouge_l(outputs, [self.references[i] for i in input_ids])
        delta = self.clean_rouge[input_ids] - rouge
        lost = np.array([self._facts_lost(i, o) for i, o in zip(input_ids, outputs)], dtype=np.int64)
        return Outcomes(lost, delta.astype(np.float32), delta > self.epsilon)

    def _facts_lost(self, i: int, output: str) -> int:
        facts = self.reports[i].facts
        if not facts:
            return -1
        clean, now = facts_kept(self.clean_outputs[i], facts), facts_kept(output, facts)
        return sum(1 for k in clean if clean[k] and not now[k])
