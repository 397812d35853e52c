"""Seq2seq summarizers: where they come from and how they are stored.

Sources (config key `model.source`):
  builtin:tiny-t5          a 0.7M-parameter T5 built from a `T5Config` and trained here, seeded, on the
                           train split, with a BPE tokenizer trained here (digits split into single tokens)
  hf:<owner>/<name>[@rev]  any seq2seq checkpoint on the Hugging Face hub (t5-small, facebook/bart-large-cnn,
                           Falconsai/text_summarization), downloaded into resources/hf
  path:<dir>               a folder written by `save_pretrained` (model and tokenizer)

The model stage stores every model the same way: `save_pretrained` (model.safetensors, config and
tokenizer files) plus failfade's `model.json` card with the weights' sha256. Loading checks the
digest, reads safetensors only, and never runs remote code.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from failfade import FailfadeError
from failfade.numerics import keeps_denormals
from failfade.tasks import storage
from failfade.tasks.storage import CARD, WEIGHTS, read_checked_card, write_card


def load_pretrained(folder: Path, key: str, device: torch.device = torch.device("cpu")):
    """(model, tokenizer) from a save_pretrained folder; a folder that is not one is named."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    folder = Path(folder)
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise FailfadeError(f"{key}: {folder} is not a model folder written by save_pretrained (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
        # use_kernels=False: transformers 5 otherwise swaps layers for kernels fetched from the Hub (code not
        # in this folder; and model.train() on the `meta` device fails in their kernelize)
        model = AutoModelForSeq2SeqLM.from_pretrained(str(folder), trust_remote_code=False, use_safetensors=True,
                                                      use_kernels=False)
    except Exception as e:  # transformers raises many types for missing or broken files
        raise FailfadeError(f"{key}: cannot load a seq2seq model and tokenizer from {folder} ({type(e).__name__}: {str(e)[:200]})") from e
    gen = folder / "generation_config.json"
    if gen.is_file():  # from_pretrained falls back to defaults, with a log line, when this file is unreadable
        from transformers import GenerationConfig

        try:
            GenerationConfig.from_pretrained(str(folder))
        except Exception as e:
            raise FailfadeError(f"{key}: {gen} cannot be read ({type(e).__name__}: {str(e)[:200]}); the decoding "
                                f"settings it holds would silently fall back to defaults") from e
    return model.to(device).eval(), tokenizer


download = storage.download


def save(model, tokenizer, card: dict, out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return write_card(card, out_dir)


def load(model_dir: Path, device: torch.device = torch.device("cpu")):
    """(model, tokenizer, card) from a model stage's folder; a tampered or missing file is named."""
    model_dir = Path(model_dir)
    card = read_checked_card(model_dir, f"{CARD}, {WEIGHTS} and the tokenizer")
    model, tokenizer = load_pretrained(model_dir, str(model_dir), device)
    return model, tokenizer, card


# --- the builtin model ---------------------------------------------------------------------------------

def train_tokenizer(texts: list[str], vocab_size: int = 800):
    """A BPE tokenizer trained here; digits are single tokens, so numbers can be copied digit by digit."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Digits(individual_digits=True)])
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tiny_t5(tokenizer, seed: int):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=len(tokenizer), d_model=128, d_kv=32, d_ff=256, num_layers=2, num_decoder_layers=2,
                   num_heads=4, dropout_rate=0.0, decoder_start_token_id=tokenizer.pad_token_id,
                   pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return T5ForConditionalGeneration(cfg)


def with_lora(model, rank: int, targets: list[str], seed: int):
    """The model wrapped with peft LoRA adapters (rank `rank`, alpha 2·rank) on the named modules
    (e.g. T5's attention projections `q`, `v`; BART's `q_proj`, `v_proj`); only the adapters train.
    The adapters' random initial weights are drawn from `seed`."""
    from peft import LoraConfig, get_peft_model

    from failfade.tasks import peft_targets

    missing = [t for t, modules in peft_targets.matches(model, targets).items() if not modules]
    if missing:
        raise FailfadeError(f"mitigate.lora_targets: {missing} name no module of {type(model).__name__}")
    torch.manual_seed(seed)
    try:
        return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=list(targets)))
    except ValueError as e:  # a target that is a block (an attention module), not a layer LoRA adapts
        raise FailfadeError(f"mitigate.lora_targets: {list(targets)}: {str(e).splitlines()[0][:200]} (name linear "
                            "layers, e.g. T5's q, v or BART's q_proj, v_proj)") from None


class _Tokens:
    """Each distinct text tokenized once (in batches, as it is first drawn; its ids kept as int32) and
    batches padded from the stored ids with the tokenizer's pad token, on `side` (default: the
    tokenizer's own): the same ids and attention masks as tokenizing every batch, for a share of the
    work (a training run draws the same documents and targets many times)."""

    def __init__(self, tokenizer, prefix: str = "", max_length: int | None = None, side: str | None = None):
        self.tokenizer, self.prefix, self.ids = tokenizer, prefix, {}
        self.kw = {"truncation": True, "max_length": max_length} if max_length else {}
        self.left = (side or tokenizer.padding_side) == "left"

    def __call__(self, texts: list[str], dev) -> dict:
        missing = list(dict.fromkeys(t for t in texts if t not in self.ids))
        if missing:
            for t, ids in zip(missing, self.tokenizer([self.prefix + t for t in missing], **self.kw)["input_ids"]):
                self.ids[t] = np.asarray(ids, dtype=np.int32)
        rows = [self.ids[t] for t in texts]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            cols = slice(width - len(r), width) if self.left else slice(0, len(r))
            ids[i, cols], mask[i, cols] = r, 1
        return {"input_ids": torch.from_numpy(ids).to(dev), "attention_mask": torch.from_numpy(mask).to(dev)}


class _TeacherCache:
    """The frozen teacher's log-probabilities for each distinct (clean source, target) pair, computed
    once, as the pair is first drawn, while they fit in `budget` bytes. Training draws each document
    many times (800 batches of 32 from 1,700 documents by default: about 0.2 GB for the builtin's
    800-word vocabulary). Once the rows stored so far show that all `pairs` would not fit (a 32,000-
    word vocabulary stores about 8 MB a pair), the stored answers are dropped and each batch's are
    computed with the batch, as before. Labels must be padded on the right (train_seq2seq's are):
    a pair's row is its first (labels != -100) positions."""

    def __init__(self, teacher, pairs: int, budget: int = 1 << 30):
        self.teacher, self.pairs, self.budget, self.rows, self.bytes = teacher, pairs, budget, {}, 0

    @torch.no_grad()
    def __call__(self, keys: list, clean, labels: torch.Tensor) -> torch.Tensor:
        if self.rows is None:  # over budget: answered per batch
            return torch.log_softmax(self.teacher(**clean, labels=labels).logits, -1)
        first = {}  # each pair not seen yet, at its first row in this batch
        for i, k in enumerate(keys):
            if k not in self.rows:
                first.setdefault(k, i)
        missing = list(first.values())
        if missing:
            sel = torch.as_tensor(missing, device=labels.device)
            enc = {k: v[sel] for k, v in clean.items()}
            cols = enc["attention_mask"].bool().any(0)  # the columns these rows use (either padding side)
            enc = {k: v[:, cols] for k, v in enc.items()}
            lab = labels[sel]
            out = torch.log_softmax(self.teacher(**enc, labels=lab).logits, -1)
            for n, i in enumerate(missing):
                row = out[n, : int((lab[n] != -100).sum())].clone()
                self.rows[keys[i]] = row
                self.bytes += row.numel() * row.element_size()
        target = torch.zeros(labels.shape + (self.rows[keys[0]].shape[-1],), device=labels.device)
        for n, k in enumerate(keys):
            row = self.rows[k]
            target[n, : len(row)] = row
        if self.bytes > self.budget or self.bytes / len(self.rows) * self.pairs > 1.1 * self.budget:
            self.rows = None  # full, or bound to be: answered per batch from here on
        return target


@keeps_denormals
def train_seq2seq(model, tokenizer, sources, targets, steps: int, lr: float, batch_size: int, max_input_tokens: int,
                  seed: int, teacher=None, distill: float = 0.0, clean_sources=None, desc: str = "train",
                  prefix: str = "", freeze_position_bias: bool = False) -> list[dict]:
    """AdamW on (source, target) pairs, `steps` batches drawn with a seeded generator; linear decay
    over the last 20% of steps. With a teacher, adds distill × KL(teacher ‖ model) on the clean
    source of each pair (teacher-forced on the target): the model keeps its clean outputs; the
    teacher's answer for a pair is computed once (_TeacherCache).
    `prefix` starts every source as it does when the model summarizes (task.input_prefix).
    `freeze_position_bias`: T5's relative position buckets (`relative_attention_bias`) keep their
    values. With them trainable, torch computes every attention in plain matrix products (the bias
    needs a gradient); frozen, it takes the fused kernel: a mitigation step about 20% faster here."""
    from failfade.progress import progress

    rng = np.random.default_rng(np.random.SeedSequence([seed, 53]))
    torch.manual_seed(seed)
    frozen = [p for name, p in model.named_parameters()
              if freeze_position_bias and "relative_attention_bias" in name and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    decay_from = int(0.8 * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 1.0 if s < decay_from else max(0.0, (steps - s) / max(steps - decay_from, 1)))
    model.train()
    dev = next(model.parameters()).device  # batches go where the model is (a GPU under SLURM)
    # labels padded on the right whatever the tokenizer's side: the loss ignores their -100 tail, and
    # the decoder's inputs (the labels shifted) start at the start token, not after a run of pads
    inputs, outputs = _Tokens(tokenizer, prefix, max_input_tokens), _Tokens(tokenizer, side="right")
    teacher_of = None
    if teacher is not None and distill > 0:
        teacher_of = _TeacherCache(teacher, pairs=len(set(zip(clean_sources, targets))))
    history, t0 = [], time.perf_counter()
    try:
        for step in progress(range(steps), desc=desc, unit="step", leave=False):
            idx = rng.integers(0, len(sources), batch_size)
            enc = inputs([sources[i] for i in idx], dev)
            labels = outputs([targets[i] for i in idx], dev)["input_ids"]
            labels[labels == tokenizer.pad_token_id] = -100
            out = model(**enc, labels=labels)
            loss = out.loss
            if teacher_of is not None:
                clean = inputs([clean_sources[i] for i in idx], dev)
                target = teacher_of([(clean_sources[i], targets[i]) for i in idx], clean, labels)
                student = torch.log_softmax(model(**clean, labels=labels).logits, -1)
                mask = (labels != -100).float()
                kl = (torch.exp(target) * (target - student)).sum(-1)
                loss = loss + distill * (kl * mask).sum() / mask.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % 50 == 0 or step == steps - 1:
                history.append({"step": step, "loss": float(loss.item()), "seconds": time.perf_counter() - t0})
    finally:  # the buckets train again, whatever happened
        for p in frozen:
            p.requires_grad_(True)
    model.eval()
    return history
