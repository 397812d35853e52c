"""The summarization family: corpus, text transforms, data files, model loading through path:,
and scoring against the reference. Models are tiny (built from configs, saved with save_pretrained)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from failfade import FailfadeError
from failfade.concepts import Axis, ConceptSpace
from failfade.config import validate
from failfade.tasks.summarization.corpus import FACTS, facts_kept, make_corpus
from failfade.tasks.summarization.data import load_splits
from failfade.tasks.summarization.transforms import TRANSFORMS, perturb, perturb_cell

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPACE = ConceptSpace([Axis("typo", "typo", (0.0, 0.1, 0.3)), Axis("distractors", "distractors", (0.0, 2.0)),
                      Axis("buried", "buried", (0.0, 4.0))])


# --- corpus ------------------------------------------------------------------------------------------

def test_corpus_is_seeded_and_references_state_the_facts():
    a, b, c = make_corpus(50, 0), make_corpus(50, 0), make_corpus(50, 1)
    assert [r.document for r in a] == [r.document for r in b]
    assert [r.document for r in a] != [r.document for r in c]
    for r in a:
        assert all(facts_kept(r.reference, r.facts).values())
        assert set(r.facts) == set(FACTS)
        assert r.facts["name"] in r.key and r.facts["number"] in r.count


def test_facts_kept_matches_whole_words():
    facts = {"role": "mayor", "name": "li chen", "event": "closed a factory", "city": "oslo", "day": "monday",
             "number": "42"}
    kept = facts_kept("mayor li chen closed a factory in oslo on monday with 420 workers .", facts)
    assert kept == {"role": True, "name": True, "event": True, "city": True, "day": True, "number": False}


# --- transforms -----------------------------------------------------------------------------------------

def test_identity_cell_is_the_document():
    r = make_corpus(5, 0)
    for i, rep in enumerate(r):
        assert perturb_cell(SPACE, rep, 0, 0, i) == rep.document


def test_transforms_are_deterministic_per_query():
    rep = make_corpus(3, 0)[1]
    cell = SPACE.n_cells - 1
    assert perturb_cell(SPACE, rep, cell, 7, 1) == perturb_cell(SPACE, rep, cell, 7, 1)
    assert perturb_cell(SPACE, rep, cell, 7, 1) != perturb_cell(SPACE, rep, cell, 8, 1)
    assert perturb_cell(SPACE, rep, cell, 7, 1) != perturb_cell(SPACE, rep, cell, 7, 2)


def test_typo_rate_reaches_its_level_and_protects_the_facts():
    reps = make_corpus(200, 0)
    rng = np.random.default_rng(0)
    changed = editable = 0
    for rep in reps:
        out = perturb(rep, {"typo": 0.3}, rng).split()
        words = rep.document.split()
        assert len(out) == len(words)
        protected = set(rep.facts["name"].split()) | {rep.facts[k] for k in ("city", "day", "number", "role")}
        for w, o in zip(words, out):
            if w in protected or not w.isalpha() or len(w) < 3:
                assert w == o
            else:
                editable += 1
                changed += w != o
    # each edit changes the word except a repeat/insert that happens to reproduce it (rare)
    assert 0.25 < changed / editable <= 0.31


def test_distractors_and_burial_add_sentences_where_documented():
    rep = make_corpus(1, 3)[0]
    rng = np.random.default_rng(0)
    n = rep.document.count(" .")
    assert perturb(rep, {"distractors": 3}, rng).count(" .") == n + 3
    buried = perturb(rep, {"buried": 4}, rng)
    assert buried.count(" .") == n + 4 and not buried.startswith(rep.key)
    assert buried.index(rep.key) > 0 and buried.endswith(" ".join(rep.fillers))


def test_an_unknown_transform_for_the_task_is_named():
    from failfade.pipeline import space_of

    exp = validate(summarization_config(Path("fb.csv")))["experiments"]["r"]
    exp["concepts"][0]["transform"] = "rotate"
    with pytest.raises(FailfadeError, match=r"concepts\[0\].transform: unknown transform 'rotate'; known: \['buried'"):
        space_of(exp)
    assert set(TRANSFORMS) == {"typo", "distractors", "buried"}


# --- data files --------------------------------------------------------------------------------------------

def test_jsonl_and_csv_sources(tmp_path):
    rows = [{"document": f"doc {i} says something .", "summary": f"sum {i} ."} for i in range(20)]
    jl = tmp_path / "d.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = load_splits({"source": f"jsonl:{jl}", "heldout_fraction": 0.2, "validation_fraction": 0.1}, 0)
    assert (len(s.train), len(s.heldout), len(s.validation)) == (14, 4, 2)
    assert all(r.facts == {} for r in s.heldout)
    cs = tmp_path / "d.csv"
    cs.write_text("document,summary\n" + "".join(f"\"doc {i}, long\",sum {i}\n" for i in range(10)))
    s = load_splits({"source": f"csv:{cs}", "heldout_fraction": 0.2}, 0)
    assert len(s.heldout) == 2 and s.heldout[0].document.startswith("doc ")


def test_a_document_given_twice_is_kept_once(tmp_path, caplog):
    """A repeated document could land in both the training and the held-out split."""
    rows = [{"document": f"doc {i % 10} says something .", "summary": f"sum {i} ."} for i in range(20)]
    rows[3]["document"] = "  " + rows[3]["document"]  # the same text once stripped
    jl = tmp_path / "d.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with caplog.at_level("WARNING", logger="failfade"):
        s = load_splits({"source": f"jsonl:{jl}", "heldout_fraction": 0.2}, 0)
    docs = [r.document for r in s.train + s.heldout]
    assert len(docs) == len(set(docs)) == 10 and not set(r.document for r in s.train) & set(r.document for r in s.heldout)
    assert {r.reference for r in s.train + s.heldout} == {f"sum {i} ." for i in range(10)}  # the first of each
    assert "d.jsonl: 10 repeated document(s) dropped (the first of each kept), 10 left" in caplog.text
    jl.write_text("\n".join(json.dumps(r) for r in rows[:1] * 5) + "\n")
    with pytest.raises(FailfadeError, match=r"d.jsonl has 1 distinct document\(s\); at least 3 are needed to split"):
        load_splits({"source": f"jsonl:{jl}", "heldout_fraction": 0.2}, 0)


def test_a_data_file_edited_in_place_gets_a_new_digest(tmp_path):
    """The outcome cache is keyed by the held-out documents' digest (SummarizationTask.data_digest),
    not only by the config's path: an edited file must not reuse outcomes scored on the old text."""
    from failfade.tasks.summarization.data import digest

    rows = [{"document": f"doc {i} says something .", "summary": f"sum {i} ."} for i in range(20)]
    jl = tmp_path / "d.jsonl"
    data = {"source": f"jsonl:{jl}", "heldout_fraction": 0.2}
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    before = digest(load_splits(data, 0).heldout)
    assert digest(load_splits(data, 0).heldout) == before  # same file: same key, the cache is reused
    held = load_splits(data, 0).heldout[0].document
    rows = [dict(r, summary="another summary .") if r["document"] == held else r for r in rows]
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert digest(load_splits(data, 0).heldout) != before


@pytest.mark.parametrize("name, text, message", [
    ("bad.jsonl", '{"document": "a", "summary": "b"}\n{"document": 3}\n', r"bad.jsonl:2: needs string fields"),
    ("broken.jsonl", '{"document": "a", "summary": "b"}\nnot json\n', r"broken.jsonl:2: not valid JSON"),
    ("cols.csv", "text,summary\na,b\n", r"cols.csv:1: missing column\(s\) \['document'\]"),
    ("empty.csv", "document,summary\na,b\n,c\n", r"empty.csv:3: empty document or summary"),
    # the record's first line, after a quoted document that spans three lines (enumerate said 4)
    ("multi.csv", 'document,summary\n"one\ntwo\nthree",s\nb,c\nd,\n', r"multi.csv:6: empty document or summary"),
    ("dup.csv", "document,summary,summary\na,b,c\n", r"dup.csv:1: repeated column\(s\) \['summary'\]"),
    # an unquoted comma moved "killing 3 people" into the summary and dropped the real one
    ("comma.csv", "document,summary\na,b\nA fire broke out, killing 3,Fire kills 3\n",
     r"comma.csv:3: 3 fields where the header has 2; a field with a comma must be quoted"),
    # an unclosed quote swallowed every row after it into one summary
    ("quote.csv", 'document,summary\na,b\nc,"d\ne,f\ng,h\n', r"quote.csv:3: not a valid CSV record \(.*\); a quoted field must close"),
    ("dup.jsonl", '{"document": "a", "summary": "b", "summary": "c"}\n', r"dup.jsonl:1: repeated field\(s\) \['summary'\]"),
    ("blank.jsonl", '{"document": "a", "summary": "b"}\n{"document": " ", "summary": "b"}\n',
     r"blank.jsonl:2: empty document or summary"),
    # JSON's escape of half a surrogate pair: read as a str that no tokenizer takes (it crashed training)
    ("surrogate.jsonl", '{"document": "a", "summary": "b"}\n{"document": "c", "summary": "bad \\ud800 x"}\n',
     r"surrogate.jsonl:2: summary is not valid Unicode \(a lone surrogate escape at character 4\)"),
])
def test_bad_data_files_are_named_by_line(tmp_path, name, text, message):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    kind = "jsonl" if name.endswith("jsonl") else "csv"
    with pytest.raises(FailfadeError, match=message):
        load_splits({"source": f"{kind}:{p}", "heldout_fraction": 0.2}, 0)


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_a_file_not_in_utf8_is_named_by_line_and_byte(tmp_path, kind):
    rows = [("doc one .", "s ."), ("doc two .", "s ."), ("the café opened .", "s .")]
    text = ("document,summary\n" + "".join(f"{d},{r}\n" for d, r in rows) if kind == "csv"
            else "".join(json.dumps({"document": d, "summary": r}, ensure_ascii=False) + "\n" for d, r in rows))
    p = tmp_path / f"cp1252.{kind}"
    p.write_bytes(text.encode("cp1252"))
    line = 4 if kind == "csv" else 3
    byte = text.encode("cp1252").index("é".encode("cp1252"))
    with pytest.raises(FailfadeError, match=rf"cp1252.{kind}:{line}: not UTF-8 \(byte {byte}: b'\\xe9'\)"):
        load_splits({"source": f"{kind}:{p}", "heldout_fraction": 0.2}, 0)
    p.write_bytes(b"\xef\xbb\xbf" + text.encode("cp1252"))  # after a byte-order mark: the same line, 3 bytes on
    with pytest.raises(FailfadeError, match=rf"cp1252.{kind}:{line}: not UTF-8 \(byte {byte + 3}: b'\\xe9'\)"):
        load_splits({"source": f"{kind}:{p}", "heldout_fraction": 0.2}, 0)


def test_a_csv_document_over_128_kib_loads(tmp_path):
    import csv

    long = "word " * 60_000  # 300 KB in one quoted field: over Python's default csv field limit
    p = tmp_path / "long.csv"
    p.write_text("document,summary\n" + f'"{long}",s .\n' + "".join(f"doc {i} .,s {i} .\n" for i in range(9)))
    before = csv.field_size_limit()
    reports = load_splits({"source": f"csv:{p}", "heldout_fraction": 0.2}, 0)
    docs = [r.document for r in reports.train + reports.heldout]
    assert long.strip() in docs and len(docs) == 10
    assert csv.field_size_limit() == before  # the process-wide limit is restored


def test_a_csv_record_the_reader_refuses_is_named_by_file_and_line(tmp_path, monkeypatch):
    from failfade.tasks.summarization import data

    monkeypatch.setattr(data, "CSV_FIELD_LIMIT", 100)
    p = tmp_path / "big.csv"
    p.write_text("document,summary\na,b\nc,d\n" + f'"{"x" * 200}",s\n')
    with pytest.raises(FailfadeError, match=r"big.csv:4: not a valid CSV record \(field larger than field limit"):
        load_splits({"source": f"csv:{p}", "heldout_fraction": 0.2}, 0)


def test_jsonl_documents_may_hold_unicode_line_separators(tmp_path):
    p = tmp_path / "sep.jsonl"
    rows = [{"document": f"first part\u2028second part {i} .\u0085end", "summary": f"s {i} ."} for i in range(5)]
    p.write_text("\ufeff" + "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    s = load_splits({"source": f"jsonl:{p}", "heldout_fraction": 0.2}, 0)
    assert len(s.train) + len(s.heldout) == 5 and all("\u2028" in r.document for r in s.train)


def test_unknown_source_and_missing_file_name_the_key(tmp_path):
    with pytest.raises(FailfadeError, match=r"data.source: unknown data source 'parquet:x'"):
        load_splits({"source": "parquet:x", "heldout_fraction": 0.2}, 0)
    with pytest.raises(FailfadeError, match=r"data.source: .*nope.jsonl does not exist"):
        load_splits({"source": f"jsonl:{tmp_path / 'nope.jsonl'}", "heldout_fraction": 0.2}, 0)


@pytest.mark.parametrize("task, section, value, said", [
    ("summarization", "model", "builtin:tiny-t6", "model.source: unknown builtin summarizer 'tiny-t6'"),
    ("summarization", "data", "builtinreports", "data.source: unknown data source 'builtinreports'"),
    ("summarization", "data", "csv:", "data.source: unknown data source 'csv:'"),
    ("generation", "model", "builtin:digitz", "model.source: unknown builtin text-to-image model 'digitz'"),
    ("generation", "model", "stable-diffusion", "model.source: 'stable-diffusion' is not a model source"),
    ("classification", "data", "imagefolder:", "data.source: 'imagefolder:' names no folder"),
])
def test_a_source_typo_is_named_when_the_config_is_read(task, section, value, said):
    """Classification checked its sources' forms up front; the text tasks waited for the model stage."""
    import failfade.config

    concepts = {"summarization": [{"name": "typo", "transform": "typo", "levels": [0, 0.1]}],
                "generation": [{"name": "digit", "transform": "word", "levels": ["one", "two"]}],
                "classification": [{"name": "rotation", "transform": "rotate", "levels": [0, 10]}]}[task]
    exp = {"task": task, "concepts": concepts, "feedback": "f.csv", section: {"source": value}}
    if task == "generation":
        exp["data"] = {"template": "{digit}"}
    with pytest.raises(FailfadeError, match=rf"^config: experiments\.x\.{said}"):
        failfade.config.validate({"experiments": {"x": exp}})


def test_a_clip_judge_from_a_builtin_is_refused_when_the_config_is_read():
    import failfade.config

    exp = {"task": "generation", "concepts": [{"name": "digit", "transform": "word", "levels": ["one", "two"]}],
           "data": {"template": "{digit}"}, "feedback": "f.csv", "model": {"judge": "clip", "judge_source": "builtin:digits"}}
    with pytest.raises(FailfadeError, match=r"experiments\.x\.model\.judge_source: the CLIP judge needs hf:"):
        failfade.config.validate({"experiments": {"x": exp}})


# --- models through path:, and scoring ----------------------------------------------------------------------

def summarization_config(feedback: Path, source: str = "builtin:tiny-t5") -> dict:
    return {"experiments": {"r": {
        "task": "summarization", "seed": 0,
        "data": {"n_documents": 60, "heldout_fraction": 0.2, "validation_fraction": 0.1},
        "model": {"source": source, "train_steps": 3, "batch_size": 4, "max_new_tokens": 8},
        "concepts": [{"name": "typo", "levels": [0, 0.3]}, {"name": "distractors", "levels": [0, 2]}],
        "explore": {"budget": 32, "num_agents": 8}, "feedback": str(feedback), "mitigate": {"steps": 2, "batch_size": 4},
    }}}


def save_tiny(kind: str, folder: Path) -> Path:
    from transformers import BartConfig, BartForConditionalGeneration

    from failfade.tasks.summarization.models import tiny_t5, train_tokenizer

    tok = train_tokenizer([r.document + " " + r.reference for r in make_corpus(50, 0)], vocab_size=300)
    if kind == "t5":
        model = tiny_t5(tok, 0)
    else:
        torch.manual_seed(0)
        cfg = BartConfig(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                         decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=256,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
                         decoder_start_token_id=tok.eos_token_id, forced_eos_token_id=tok.eos_token_id)
        model = BartForConditionalGeneration(cfg)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_a_save_pretrained_folder_loads_through_path_and_scores(tmp_path, kind):
    from failfade.pipeline import build_task, stage_model

    folder = save_tiny(kind, tmp_path / kind)
    exp = validate(summarization_config(tmp_path / "fb.csv", f"path:{folder}"))["experiments"]["r"]
    card = stage_model(exp, tmp_path / "model", tmp_path / "res")
    assert card["source"] == f"path:{folder}" and 0 <= card["heldout_clean_rouge_l"] <= 1
    assert (tmp_path / "model" / "model.safetensors").is_file() and len(card["sha256"]) == 64
    task = build_task(exp, tmp_path / "model")
    assert task.observations.shape[0] == task.n_inputs == card["heldout_inputs"]
    out = task.score(np.array([0, 1, 2, 0]), np.array([0, 3, 3, 0]))
    # the identity cell reproduces the clean output: no ROUGE lost, no failure
    assert out.delta[0] == pytest.approx(0.0, abs=1e-6) and not out.failure[0]
    np.testing.assert_array_equal(out.failure, out.delta > exp["model"]["epsilon"])
    assert out.delta[0] == out.delta[3]


def test_more_input_tokens_than_the_model_has_positions_is_named(tmp_path):
    """BART's learned positions end at max_position_embeddings (256 here): a longer input crashed
    inside torch's embedding with an IndexError; T5's relative positions have no such end."""
    from failfade.pipeline import stage_model

    folder = save_tiny("bart", tmp_path / "bart")
    for key, value in (("max_input_tokens", 300), ("max_new_tokens", 257)):
        exp = validate(summarization_config(tmp_path / "fb.csv", f"path:{folder}"))["experiments"]["r"]
        exp["model"][key] = value
        with pytest.raises(FailfadeError, match=rf"model.{key}: {value} is more positions than this "
                                                r"BartForConditionalGeneration has \(its config's max_position_embeddings is 256\)"):
            stage_model(exp, tmp_path / "model", tmp_path / "res")
    exp = validate(summarization_config(tmp_path / "fb.csv", f"path:{save_tiny('t5', tmp_path / 't5')}"))["experiments"]["r"]
    exp["model"]["max_input_tokens"] = 300
    assert stage_model(exp, tmp_path / "model", tmp_path / "res")["heldout_inputs"] > 0


def test_a_folder_that_is_not_a_model_is_named(tmp_path):
    from failfade.pipeline import stage_model

    (tmp_path / "empty").mkdir()
    exp = validate(summarization_config(tmp_path / "fb.csv", f"path:{tmp_path / 'empty'}"))["experiments"]["r"]
    with pytest.raises(FailfadeError, match=r"model.source: .*empty is not a model folder written by save_pretrained"):
        stage_model(exp, tmp_path / "model", tmp_path / "res")
    exp["model"]["source"] = "builtin:gpt-9"
    with pytest.raises(FailfadeError, match=r"model.source: unknown builtin summarizer 'gpt-9'"):
        stage_model(exp, tmp_path / "model", tmp_path / "res")


def test_tampered_weights_are_refused(tmp_path):
    from failfade.pipeline import build_task, stage_model

    folder = save_tiny("t5", tmp_path / "t5")
    exp = validate(summarization_config(tmp_path / "fb.csv", f"path:{folder}"))["experiments"]["r"]
    stage_model(exp, tmp_path / "model", tmp_path / "res")
    w = tmp_path / "model" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(FailfadeError, match="corrupt checkpoint"):
        build_task(exp, tmp_path / "model")


def test_an_unreadable_generation_config_is_named(tmp_path):
    """transformers reads a broken generation_config.json as absent and decodes with defaults
    (another start token, other lengths): the summaries would change without a word."""
    from failfade.pipeline import build_task, stage_model

    folder = save_tiny("t5", tmp_path / "t5")
    exp = validate(summarization_config(tmp_path / "fb.csv", f"path:{folder}"))["experiments"]["r"]
    stage_model(exp, tmp_path / "model", tmp_path / "res")
    gen = tmp_path / "model" / "generation_config.json"
    assert gen.is_file()
    build_task(exp, tmp_path / "model")  # intact: loads
    gen.write_text(gen.read_text()[:25])
    with pytest.raises(FailfadeError, match=rf"{re.escape(str(gen))} cannot be read .*fall back to defaults"):
        build_task(exp, tmp_path / "model")


def test_builtin_model_trains_and_mitigation_writes_a_model(tmp_path):
    from failfade.pipeline import stage_mitigate, stage_model

    exp = validate(summarization_config(tmp_path / "fb.csv"))["experiments"]["r"]
    card = stage_model(exp, tmp_path / "model", tmp_path / "res")
    assert card["arch"] == "T5ForConditionalGeneration" and card["train_inputs"] == 42
    plan = {"fix": [{"cell": 1, "weight": 1.0}, {"cell": 3, "weight": 2.0}], "accept": []}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    new = stage_mitigate(exp, tmp_path / "model", tmp_path / "plan.json", tmp_path / "mit")
    assert new["parent_sha256"] == card["sha256"] and new["sha256"] != card["sha256"]
    assert new["mitigation"]["fix_cells"] == [1, 3]


def test_the_paper_summarizer_config_is_valid():
    from failfade.config import load

    cfg = load(Path(__file__).resolve().parent.parent / "config" / "paper.yaml")
    text = {k: e for k, e in cfg["experiments"].items() if e["task"] == "summarization"}
    assert {e["model"]["source"] for e in text.values()} == {
        "hf:Falconsai/text_summarization", "hf:facebook/bart-large-cnn"}
    assert all(e["model"]["num_beams"] == 4 for e in text.values())  # the anchor gives both the paper's settings


def test_the_gallery_shows_both_summaries(tmp_path, monkeypatch):
    import polars as pl

    from failfade import plots
    from failfade.pipeline import family_of, stage_model

    exp = validate(summarization_config(tmp_path / "fb.csv"))["experiments"]["r"]
    stage_model(exp, tmp_path / "model", tmp_path / "res")
    shown = []
    monkeypatch.setattr(plots, "text_gallery", lambda rows, path, title: shown.extend(rows))
    queries = pl.DataFrame({"input_id": [1], "cell": [3], "failure": [True], "delta": [0.4], "prediction": [2]})
    modes = pl.DataFrame({"mode": [1], "cells": ["3"], "description": ["typo = 0.3 and distractors = 2"]})
    family_of(exp).gallery(exp, queries, modes, tmp_path / "g.png", 1, tmp_path / "model")
    (name, lines), = shown
    assert name.startswith("mode 1") and any(x.startswith("summary of the clean document: ") for x in lines)
    assert any(x.startswith("summary of the perturbed document: ") for x in lines)
    assert lines[-1] == "ROUGE-L lost: 0.40; key facts lost: 2"
    assert lines[0].startswith("clean document: ") and "{+" in lines[1]  # typo 0.3: some words are edited


def test_edits_are_marked_word_by_word():
    from failfade.tasks.summarization.transforms import mark_edits

    assert mark_edits("the event drew 802 students .", "in rome . the evnt drew 802 students .") == (
        "{+in rome .+} the [-event-] {+evnt+} drew 802 students .")
    assert mark_edits("a b c", "a b c") == "a b c"
    assert mark_edits("a b c", "a c") == "a [-b-] c"


def test_lora_mitigation_trains_only_the_adapters(tmp_path):
    from safetensors.torch import load_file

    from failfade.pipeline import stage_mitigate, stage_model

    cfg = summarization_config(tmp_path / "fb.csv")
    cfg["experiments"]["r"]["mitigate"].update(lora_rank=4, distill=0.0)
    exp = validate(cfg)["experiments"]["r"]
    stage_model(exp, tmp_path / "model", tmp_path / "res")
    (tmp_path / "plan.json").write_text(json.dumps({"fix": [{"cell": 3, "weight": 1.0}], "accept": []}))
    stage_mitigate(exp, tmp_path / "model", tmp_path / "plan.json", tmp_path / "mit")
    before, after = load_file(str(tmp_path / "model" / "model.safetensors")), load_file(str(tmp_path / "mit" / "model.safetensors"))
    assert set(before) == set(after)  # merged: the same architecture, no adapter tensors left
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith((".q.weight", ".v.weight")) for k in changed), changed
    torch.rand(7)  # the global generator moved on: the adapters' initial weights must not follow it
    stage_mitigate(exp, tmp_path / "model", tmp_path / "plan.json", tmp_path / "again")
    again = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert all(torch.equal(after[k], again[k]) for k in after)  # same config and seed, same weights
    exp["mitigate"]["lora_targets"] = ["q_proj"]
    with pytest.raises(FailfadeError, match=r"mitigate.lora_targets: \['q_proj'\] name no module"):
        stage_mitigate(exp, tmp_path / "model", tmp_path / "plan.json", tmp_path / "mit2")
    # targets are matched as peft matches them: a dotted name was refused as naming no module, and a
    # block that is no layer (an attention module) came out as peft's traceback
    import copy

    from failfade.tasks.summarization import models

    model = models.load(tmp_path / "model")[0]
    wrapped = models.with_lora(copy.deepcopy(model), 2, ["SelfAttention.q"], 0)
    assert sum("lora_A" in n for n, _ in wrapped.named_parameters()) == 4  # 2 encoder + 2 decoder blocks
    with pytest.raises(FailfadeError, match=r"mitigate.lora_targets: \['SelfAttention'\]: .*\(name linear layers"):
        models.with_lora(copy.deepcopy(model), 2, ["SelfAttention"], 0)


def test_probe_failures_match_a_task_built_per_probe(tmp_path):
    from failfade.pipeline import family_of, stage_model
    from failfade.probes import check_probes
    from failfade.tasks.summarization.task import SummarizationTask

    exp = validate(summarization_config(tmp_path / "fb.csv"))["experiments"]["r"]
    stage_model(exp, tmp_path / "model", tmp_path / "res")
    fam = family_of(exp)
    spaces = check_probes([{"name": "a", "apply": {"typo": 0.5}}, {"name": "b", "apply": {"distractors": 3}}], fam.transforms)
    grid_task = fam.build_task(exp, tmp_path / "model")
    grid, cells = grid_task.space, grid_task.n_cells
    counts, n = fam.probe_failures(grid_task, spaces)
    assert grid_task.space is grid and grid_task.n_cells == cells > 1  # the task the other stages use keeps its grid
    summarizer, _ = fam.load(exp, tmp_path / "model")
    reports = fam.splits(exp).heldout
    for space, k in zip(spaces, counts):
        task = SummarizationTask(summarizer, reports, space, exp["seed"], exp["model"]["epsilon"])
        assert k.tolist() == task.score(np.arange(n), np.zeros(n, dtype=np.int64)).failure.tolist()


def test_fine_tuning_batches_go_to_the_models_device(tmp_path):
    """train_seq2seq feeds the model on its own device (a GPU under SLURM). No GPU here: the model
    sits on the `meta` device and a pre-hook records where its inputs arrive."""
    from failfade.tasks.summarization import models

    model, tok = models.load_pretrained(save_tiny("t5", tmp_path / "t5"), "k")
    model = model.to("meta")
    seen = []

    def record(module, args, kwargs):
        seen.append({k: v.device.type for k, v in kwargs.items() if isinstance(v, torch.Tensor)})
        raise StopIteration  # one forward pass is enough

    model.register_forward_pre_hook(record, with_kwargs=True)
    with pytest.raises(StopIteration):
        models.train_seq2seq(model, tok, ["a b c d"] * 4, ["a b"] * 4, 1, 1e-3, 2, 16, 0)
    assert seen and set(seen[0].values()) == {"meta"}, seen


# --- long documents: the perturbation must land inside what the model sees ----------------------------------

def long_document(n_sentences: int = 40) -> str:
    """A real-document stand-in (no fillers, no facts): far longer than a small max_input_tokens."""
    reps = make_corpus(n_sentences, 5)
    return " ".join(r.count if i % 2 else r.key for i, r in enumerate(reps))


@pytest.mark.parametrize("levels", [{"distractors": 1}, {"distractors": 4}, {"buried": 2}, {"typo": 0.3}])
def test_perturbations_of_a_long_document_survive_truncation(tmp_path, levels):
    """A jsonl/csv document is all `key` (Report.fillers == ()): distractors appended after its end
    were cut off by the truncation at model.max_input_tokens, so the perturbed input the model saw
    was the clean one and Δ was exactly 0 on that axis."""
    from failfade.tasks.summarization import models
    from failfade.tasks.summarization.data import _from_pairs
    from failfade.tasks.summarization.task import Summarizer

    model, tok = models.load_pretrained(save_tiny("t5", tmp_path / "t5"), "k")
    summarizer = Summarizer(model, tok, 64, 8, 1)
    (rep,) = _from_pairs([(long_document(), "a summary .")])
    assert len(tok(rep.document).input_ids) > 4 * 64  # far past the truncation
    space = ConceptSpace([Axis(k, k, (0.0, float(v))) for k, v in levels.items()])
    perturbed = perturb_cell(space, rep, 1, 0, 0)
    assert perturbed != rep.document
    clean_ids, perturbed_ids = (summarizer.encode([t])["input_ids"] for t in (rep.document, perturbed))
    assert clean_ids.shape[1] == perturbed_ids.shape[1] == 64
    assert not torch.equal(clean_ids, perturbed_ids)
    if "distractors" in levels:  # the distractors come right after the lead (the first sentence); the rest follows
        from failfade.tasks.summarization.transforms import split_lead

        lead, rest = split_lead(rep.document)
        assert lead == make_corpus(1, 5)[0].key
        assert perturbed.startswith(lead + " ") and perturbed.endswith(" " + rest)
        assert perturbed.count(" .") == rep.document.count(" .") + levels["distractors"]


def test_the_lead_is_the_first_sentence_or_its_first_words():
    from failfade.tasks.summarization.transforms import LEAD_WORDS, split_lead

    assert split_lead('He said "stop." Then he left. Later.') == ('He said "stop."', "Then he left. Later.")
    assert split_lead("(CNN) -- Rain fell! It was wet .") == ("(CNN) -- Rain fell!", "It was wet .")
    words = [f"w{i}" for i in range(3 * LEAD_WORDS)]
    assert split_lead(" ".join(words)) == (" ".join(words[:LEAD_WORDS]), " ".join(words[LEAD_WORDS:]))
    assert split_lead("one short line") == ("one short line", "")
    # the document's own text: its line breaks and spacing stay (a tokenizer may read them)
    assert split_lead("A  first line.\n\nThe  rest\nof it.") == ("A  first line.", "The  rest\nof it.")


# --- the checkpoint's input prefix ("summarize: " for T5) ------------------------------------------------------

class RecordingTokenizer:
    """The tokenizer, recording every batch of texts it is asked to encode."""

    def __init__(self, tok):
        self.tok, self.seen = tok, []

    def __call__(self, texts, **kw):
        self.seen.append(list(texts))
        return self.tok(texts, **kw)

    def __getattr__(self, name):
        return getattr(self.tok, name)


def test_the_checkpoints_prefix_starts_every_encoded_document_inside_the_limit(tmp_path):
    from failfade.tasks.summarization import models
    from failfade.tasks.summarization.task import SummarizationTask, Summarizer

    plain = save_tiny("t5", tmp_path / "plain")
    model, tok = models.load_pretrained(plain, "k")
    assert Summarizer(model, tok, 32, 4, 1).prefix == ""  # the builtin's T5Config has no task_specific_params
    model.config.task_specific_params = {"summarization": {"prefix": "summarize: ", "num_beams": 4}}
    model.save_pretrained(str(tmp_path / "t5"))
    tok.save_pretrained(str(tmp_path / "t5"))
    model, tok = models.load_pretrained(tmp_path / "t5", "k")
    rec = RecordingTokenizer(tok)
    summarizer = Summarizer(model, rec, 32, 4, 1)
    assert summarizer.prefix == "summarize: "
    # inside max_input_tokens: a long document is cut 32 tokens after the prefix's start, not after
    ids = summarizer.encode([long_document()])["input_ids"][0].tolist()
    want = tok("summarize: " + long_document(), truncation=True, max_length=32).input_ids
    assert len(ids) == 32 and ids == want
    assert ids[:len(tok("summarize:").input_ids) - 1] == tok("summarize:").input_ids[:-1]
    # clean and perturbed documents alike
    rec.seen.clear()
    reports = make_corpus(3, 0)
    task = SummarizationTask(summarizer, reports, SPACE, 0, 0.15)
    assert len([t for batch in rec.seen for t in batch]) == 3  # the clean summaries; the embeddings wait for first use
    task.observations  # what exploration reads first: the embeddings
    task.score(np.array([0, 1, 2]), np.array([0, SPACE.n_cells - 1, 5]))
    texts = [t for batch in rec.seen for t in batch]
    assert len(texts) == 3 + 3 + 3  # clean summaries, embeddings, scored queries
    assert all(t.startswith("summarize: ") for t in texts)
    assert texts[-2] == "summarize: " + perturb_cell(SPACE, reports[1], SPACE.n_cells - 1, 0, 1)
    # and fine-tuning trains on the inputs the model will see
    rec.seen.clear()
    models.train_seq2seq(model, rec, ["a b c d"] * 4, ["a b"] * 4, 1, 1e-3, 2, 16, 0, prefix=summarizer.prefix)
    assert rec.seen[0] == ["summarize: a b c d"]  # each distinct text is tokenized once


def test_the_device_keys_the_outcome_cache(tmp_path, monkeypatch):
    """Outcomes scored on a GPU (other kernels, other rounding: a borderline beam or Δ can flip)
    were read back on a CPU and the other way round. No GPU here: the model sits on the `meta`
    device, and the task stands in for the one that would summarize on it."""
    from types import SimpleNamespace

    from failfade import pipeline
    from failfade.tasks.family import family
    from failfade.tasks.summarization import models, task as T

    fam = family("summarization")
    exp = validate(summarization_config(tmp_path / "fb.csv"))["experiments"]["r"]
    model, tok = models.load_pretrained(save_tiny("t5", tmp_path / "t5"), "k")
    monkeypatch.setattr(T, "SummarizationTask", lambda summarizer, reports, space, seed, epsilon, sha256: SimpleNamespace(
        reports=[], model_sha256=sha256, space=space, n_inputs=len(reports), n_cells=space.n_cells,
        labels=np.zeros(len(reports))))

    def on(device):
        summarizer = fam.summarizer(exp, model.to(device), tok)
        monkeypatch.setattr(fam, "load", lambda exp, model_dir: (summarizer, {"sha256": "0" * 64}))
        task = pipeline.build_task(exp, tmp_path / "model", tmp_path / "cache")
        return task.task.settings, task.path.name

    (cpu, cpu_key), (gpu, gpu_key) = on("cpu"), on("meta")
    assert "device" not in cpu and gpu["device"] == "meta"  # the CPU's key is the one it always was
    assert cpu_key != gpu_key


def test_a_prefixed_checkpoint_keys_the_cache_and_fine_tunes_with_its_prefix(tmp_path, monkeypatch):
    from failfade.pipeline import build_task, family_of, stage_model
    from failfade.tasks.summarization import models

    folder = save_tiny("t5", tmp_path / "t5")
    exp = validate(summarization_config(tmp_path / "fb.csv", f"path:{folder}"))["experiments"]["r"]
    stage_model(exp, tmp_path / "plain", tmp_path / "res")
    assert "prefix" not in build_task(exp, tmp_path / "plain").settings  # the builtin's cache key is unchanged
    model, tok = models.load_pretrained(folder, "k")
    model.config.task_specific_params = {"summarization": {"prefix": "summarize: "}}
    model.save_pretrained(str(folder))
    stage_model(exp, tmp_path / "model", tmp_path / "res")
    assert build_task(exp, tmp_path / "model").settings["prefix"] == "summarize: "
    seen = {}

    def record(*args, **kw):
        seen.update(kw)
        raise StopIteration

    monkeypatch.setattr(models, "train_seq2seq", record)
    with pytest.raises(StopIteration):
        family_of(exp).fine_tune(exp, tmp_path / "model", {"fix": [{"cell": 3, "weight": 1.0}]}, tmp_path / "mit")
    assert seen["prefix"] == "summarize: "
    assert seen["freeze_position_bias"] is True  # the config's default reaches the training loop
    exp["mitigate"]["freeze_position_bias"] = False
    with pytest.raises(StopIteration):
        family_of(exp).fine_tune(exp, tmp_path / "model", {"fix": [{"cell": 3, "weight": 1.0}]}, tmp_path / "mit")
    assert seen["freeze_position_bias"] is False


# --- level ranges: typo is a rate, distractors and buried count sentences ----------------------------------------

@pytest.mark.parametrize("concept, message", [
    ({"name": "buried", "levels": [-3, 0, 4]}, r"concepts\[1\].levels: buried levels are from 0 to 1000, got \[-3, 0, 4\]"),
    ({"name": "distractors", "levels": [-1, 2]}, r"concepts\[1\].levels: distractors levels are from 0 to 1000"),
    ({"name": "distractors", "levels": [0, 1001]}, r"concepts\[1\].levels: distractors levels are from 0 to 1000, got \[0, 1001\]"),
    ({"name": "typing", "transform": "typo", "levels": [0, 0.5, 1.5]}, r"concepts\[1\].levels: typo levels are from 0 to 1, got \[0, 0.5, 1.5\]"),
    ({"name": "buried", "levels": [0, 0.3, 0.6, 1]},
     r"concepts\[1\].levels: buried levels count sentences, so they are whole numbers; got \[0, 0.3, 0.6, 1\]"),
    ({"name": "distractors", "levels": [0.9, 2, 3]}, r"concepts\[1\].levels: distractors levels count sentences"),
    ({"name": "buried", "levels": ["none", "some"]}, r"concepts\[1\].levels: buried takes numbers, got words \['none', 'some'\]"),
    # a document takes one typo rate: a second typo axis silently replaced the first
    ({"name": "heavy_typos", "transform": "typo", "levels": [0, 0.9]},
     r"concepts\[1\].transform: 'typo' is concepts\[0\]'s transform too; a summarization transform can be one axis only"),
])
def test_summarization_levels_out_of_range_or_fractional_counts_are_refused_with_the_config(concept, message):
    cfg = summarization_config(Path("fb.csv"))
    exp = cfg["experiments"]["r"]
    exp["concepts"] = [{"name": "typo", "levels": [0, 0.3]}, concept]
    with pytest.raises(FailfadeError, match=r"config: experiments\.r\." + message):
        validate(cfg)


@pytest.mark.parametrize("apply, message", [
    ({"distractors": 2.5}, r"shift.probes\[0\].apply.distractors: distractors levels count sentences"),
    ({"buried": -2}, r"shift.probes\[0\].apply.buried: buried levels are from 0 to 1000, got -2"),
    ({"buried": 1.0e20}, r"shift.probes\[0\].apply.buried: buried levels are from 0 to 1000, got 1e\+20"),
    ({"typo": 1.2}, r"shift.probes\[0\].apply.typo: typo levels are from 0 to 1, got 1.2"),
])
def test_summarization_probe_levels_are_checked_like_the_grid(apply, message):
    cfg = summarization_config(Path("fb.csv"))
    cfg["experiments"]["r"]["shift"] = {"probes": [{"name": "p", "apply": apply}]}
    with pytest.raises(FailfadeError, match=r"config: experiments\.r\." + message):
        validate(cfg)


def test_whole_number_counts_and_rates_in_range_pass():
    cfg = summarization_config(Path("fb.csv"))
    exp = cfg["experiments"]["r"]
    exp["concepts"] = [{"name": "typo", "levels": [0, 1]}, {"name": "distractors", "levels": [0, 2.0, 4]},
                       {"name": "buried", "levels": [0, 4, 32]}]
    exp["shift"] = {"probes": [{"name": "p", "apply": {"buried": 40, "distractors": 6.0, "typo": 0.5}}]}
    validate(cfg)


# --- fine-tuning's shortcuts: the same batches, the same teacher, less work --------------------------------------

def test_stored_token_ids_pad_to_the_batches_the_tokenizer_makes(tmp_path):
    """_Tokens tokenizes each distinct text once and pads from the stored ids: the batches (ids and
    attention masks, with the prefix, truncated) are the tokenizer's own, for T5 and BART alike."""
    from failfade.tasks.summarization import models

    for kind in ("t5", "bart"):
        _, tok = models.load_pretrained(save_tiny(kind, tmp_path / kind), "k")
        texts = [r.document for r in make_corpus(6, 1)] + ["a b", "a b"]
        stored = models._Tokens(tok, "summarize: ", 24)
        for batch in (texts[:3], texts, texts[5:] + texts[:2]):
            want = tok(["summarize: " + t for t in batch], return_tensors="pt", padding=True, truncation=True, max_length=24)
            got = stored(batch, torch.device("cpu"))
            assert torch.equal(got["input_ids"], want.input_ids) and torch.equal(got["attention_mask"], want.attention_mask)
        assert len(stored.ids) == len(set(texts))
        labels = models._Tokens(tok)(texts[:4], torch.device("cpu"))["input_ids"]  # targets: never truncated
        assert torch.equal(labels, tok(texts[:4], return_tensors="pt", padding=True).input_ids)
        tok.padding_side = "left"  # a tokenizer that pads on the left gets its batches padded there
        left = models._Tokens(tok, "summarize: ", 24)(texts[:3], torch.device("cpu"))
        want = tok(["summarize: " + t for t in texts[:3]], return_tensors="pt", padding=True, truncation=True, max_length=24)
        assert torch.equal(left["input_ids"], want.input_ids) and torch.equal(left["attention_mask"], want.attention_mask)
        right = models._Tokens(tok, side="right")(texts[:4], torch.device("cpu"))["input_ids"]  # labels: always right
        assert torch.equal(right, labels)


def test_the_teachers_stored_answers_are_the_ones_it_gives_per_batch(tmp_path):
    """_TeacherCache: each (clean source, target) pair's log-probabilities computed once, with a
    batch's repeated pairs and pairs first seen in an earlier batch, agree with the teacher's
    answer on the whole padded batch at every target position; beyond its byte budget it stops
    storing and answers per batch."""
    from failfade.tasks.summarization import models

    model, tok = models.load_pretrained(save_tiny("t5", tmp_path / "t5"), "k")
    corpus = make_corpus(5, 2)
    sources, targets = [r.document for r in corpus], [r.reference for r in corpus]
    inputs, outputs = models._Tokens(tok, "", 64), models._Tokens(tok)
    for budget in (1 << 30, 0):
        cache = models._TeacherCache(model, 5, budget)
        for idx in ([0, 1, 1, 3], [3, 2, 0, 4, 4]):
            clean = inputs([sources[i] for i in idx], "cpu")
            labels = outputs([targets[i] for i in idx], "cpu")["input_ids"]
            labels[labels == tok.pad_token_id] = -100
            got = cache([(sources[i], targets[i]) for i in idx], clean, labels)
            with torch.no_grad():
                want = torch.log_softmax(model(**clean, labels=labels).logits, -1)
            mask = labels != -100
            assert got.shape == want.shape
            torch.testing.assert_close(got[mask], want[mask], atol=1e-5, rtol=1e-5)
        assert (len(cache.rows) == 5) if budget else cache.rows is None  # over budget: dropped, per batch
    # rows that would not all fit are dropped at once: 400 pairs at the first batch's bytes a pair, 1 MB
    cache = models._TeacherCache(model, 400, 1 << 20)
    clean, labels = inputs(sources[:4], "cpu"), outputs(targets[:4], "cpu")["input_ids"]
    labels[labels == tok.pad_token_id] = -100
    cache(list(zip(sources[:4], targets[:4])), clean, labels)
    assert cache.rows is None and cache.bytes * 100 > 1 << 20


def test_a_left_padding_tokenizer_distils_as_the_teacher_answers_each_batch(tmp_path, monkeypatch):
    """Labels are padded on the right whatever the tokenizer's side (the stored teacher rows are a
    pair's first positions): with a tokenizer that pads on the left, fine-tuning with the stored
    answers ends where fine-tuning with the teacher asked every batch does. When labels were
    padded on the tokenizer's side, the stored rows sat at the wrong positions (log-probs 9.7 off)."""
    from failfade.tasks.summarization import models

    class PerBatch(models._TeacherCache):  # the teacher asked every batch: the reference
        def __init__(self, teacher, pairs, budget=0):
            super().__init__(teacher, pairs, 0)
            self.rows = None

    corpus = make_corpus(6, 4)
    sources, targets = [r.document for r in corpus], [r.reference for r in corpus]
    ends = []
    for cache in (models._TeacherCache, PerBatch):
        monkeypatch.setattr(models, "_TeacherCache", cache)
        model, tok = models.load_pretrained(save_tiny("t5", tmp_path / cache.__name__), "k")
        teacher, _ = models.load_pretrained(tmp_path / cache.__name__, "k")
        tok.padding_side = "left"
        models.train_seq2seq(model, tok, sources, targets, 4, 1e-2, 4, 64, 0, teacher=teacher, distill=1.0,
                             clean_sources=sources)
        ends.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(ends[0], ends[1], atol=1e-4, rtol=1e-4)


def test_mitigation_keeps_t5s_position_buckets_and_trains_the_rest(tmp_path):
    """freeze_position_bias: the relative position buckets come out as they went in (and trainable
    again afterwards) while the other weights train; off, the buckets train too."""
    from failfade.tasks.summarization import models

    for freeze in (True, False):
        model, tok = models.load_pretrained(save_tiny("t5", tmp_path / f"t5{freeze}"), "k")
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        corpus = make_corpus(8, 3)
        models.train_seq2seq(model, tok, [r.document for r in corpus], [r.reference for r in corpus], 3, 1e-2, 4, 64, 0,
                             freeze_position_bias=freeze)
        buckets = [n for n in before if "relative_attention_bias" in n]
        assert buckets
        moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert (set(buckets) & moved) == (set() if freeze else set(buckets))
        assert "lm_head.weight" in moved or "shared.weight" in moved
        assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(IndexError):  # a run that fails half-way leaves the buckets trainable too
        models.train_seq2seq(model, tok, [r.document for r in corpus], [], 3, 1e-2, 4, 64, 0, freeze_position_bias=True)
    assert all(p.requires_grad for p in model.parameters())


def test_rouge_l_reads_every_script_and_is_rouge_scores_own_on_ascii():
    """rouge-score's default tokenizer dropped every non-ASCII letter: a Russian or Chinese summary
    identical to its reference scored 0, so no query could fail."""
    import random
    import string

    from rouge_score import rouge_scorer

    from failfade.tasks.summarization.task import rouge_l

    rng = random.Random(0)
    chars = string.ascii_letters + string.digits + string.punctuation + " \t\n_"
    texts = ["".join(rng.choice(chars) for _ in range(rng.randint(0, 40))) for _ in range(400)]
    default = rouge_scorer.RougeScorer(["rougeL"])
    want = [default.score(r, o)["rougeL"].fmeasure for o, r in zip(texts[::2], texts[1::2])]
    assert rouge_l(texts[::2], texts[1::2]).tolist() == want
    assert rouge_l(["the mayor opened a bridge"], ["The Mayor opened the bridge ."]).tolist() == [
        default.score("The Mayor opened the bridge .", "the mayor opened a bridge")["rougeL"].fmeasure]
    assert rouge_l(["Москва приняла закон", "Τα νέα"], ["Москва приняла закон", "Τα νέα"]).tolist() == [1.0, 1.0]
    # Chinese and Japanese are scored character by character: one character missing of seven
    assert rouge_l(["北京今天下雨"], ["北京今天下雨了"])[0] == pytest.approx(2 * 6 / 13)
    assert rouge_l(["comité créé"], ["comité créé"])[0] == 1.0 and rouge_l(["comité"], ["comite"])[0] == 0.0


def test_typos_in_a_file_document_keep_its_punctuation_capitals_and_line_breaks():
    """Words with punctuation attached (`bill.`) were never edited, so a file document got fewer
    typos than its rate said; capitals were never swapped; and every line break was lost."""
    from failfade.tasks.summarization.transforms import typo

    text = 'The Senate, on Tuesday, passed the "budget" bill.\n\nNASA officials said (again) it\'s late.'
    words = re.findall(r"\S+", text)
    editable = {"The", "Senate,", "passed", "the", '"budget"', "bill.", "NASA", "officials", "said", "(again)",
                "late."}
    edited = {w: 0 for w in words}
    for seed in range(200):
        out = typo(text, 1.0, {"Tuesday"}, np.random.default_rng(seed))
        assert re.sub(r"\S", "", out) == re.sub(r"\S", "", text)  # the same spaces and line breaks
        for w, o in zip(words, re.findall(r"\S+", out)):
            edited[w] += w != o
            lead, trail = re.match(r"^\W*", w).group(), re.search(r"\W*$", w).group()
            assert o.startswith(lead) and o.endswith(trail) and o[len(lead)] == w[len(lead)], (w, o)
            if w == "NASA":
                assert o.isupper(), o
    # at rate 1 every editable word is edited, always (every edit changes an ASCII word)
    assert all(edited[w] == 200 for w in editable), edited
    assert edited["on"] == edited["it's"] == edited["Tuesday,"] == 0  # short, not all letters, protected
    assert typo(text, 0.0, set(), np.random.default_rng(0)) == text
