"""The shipped family on real TinyStories text: the held-out real stories are in no model's training
data however a command splits the file, the family scales on them, and tiny-gpt2 is the TinyStories
paper's GPT-2 with transformers' logits."""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pytest
import tokenizers
import torch
import transformers

import minillm
from minillm.cli import main
from minillm.course.family import (FAMILY_DIR, GPT2_NAME, REAL_SPLIT, SHAPES, family_texts, held_out_real_stories,
                                   held_out_stories, real_split)
from minillm.data import TINYSTORIES_HEAD, TextSource, read_text_file
from minillm.experiments.scaling import paired_difference
from minillm.training.provenance import MIN_PARAGRAPH_WORDS, read_record, text_hash, without_training_texts

SHIPPED = [*SHAPES, GPT2_NAME, *(f"{name}-instruct" for name in SHAPES)]


def test_the_shipped_text_is_the_shared_real_file(shared_data):
    """data/tinystories/validation_head.txt is byte for byte the real TinyStories file of ../shared."""
    shared = shared_data / "text" / "tinystories_validation_head.txt"
    assert hashlib.sha256(TINYSTORIES_HEAD.read_bytes()).digest() == hashlib.sha256(shared.read_bytes()).digest()


def test_at_least_200_real_stories_are_held_out_and_none_is_in_the_training_documents():
    trained, held = real_split()
    assert len(trained) == REAL_SPLIT and held == held_out_real_stories()
    # Stories are not marked in the file; those that begin "Once upon a time" alone are over 200.
    assert sum(p.startswith("Once upon a time") for p in held) >= 200
    assert held[0].startswith("Once upon a time")             # the split falls where a story starts
    texts, val_texts = family_texts()
    everything = "\n<|doc|>\n".join(texts + val_texts)
    # Not even as part of a longer document (lines of under 5 words, such as "The End", occur inside others).
    inside = [p for p in held if len(p.split()) >= MIN_PARAGRAPH_WORDS and p in everything]
    assert inside == [] and sum(len(p.split()) >= MIN_PARAGRAPH_WORDS for p in held) > 1200


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_record_names_the_held_out_sets_and_never_saw_them(name):
    record = read_record(FAMILY_DIR / name)
    held = held_out_real_stories() + held_out_stories()
    assert {text_hash(t) for t in held} <= record.held_out
    assert not any(record.seen(held))
    assert all(record.seen(real_split()[0]))                  # the real paragraphs it did train on


def test_a_file_split_into_stories_keeps_exactly_the_texts_made_of_held_out_paragraphs():
    """The same text grouped four paragraphs to a text (as a file with <|endoftext|> lines would be): a
    text is left out when one of its paragraphs was trained on, kept when all are held out (or are
    a line of under 5 words, such as "The end.", that the training part also holds)."""
    paragraphs = read_text_file(TINYSTORIES_HEAD).texts
    groups = [paragraphs[i:i + 4] for i in range(0, len(paragraphs), 4)]
    source = TextSource("stories", ["\n\n".join(g) for g in groups], [f"#{i}" for i in range(len(groups))])
    kept, _ = without_training_texts([str(FAMILY_DIR / "tiny-s")], source)
    trained = {p for p in real_split()[0] if len(p.split()) >= 5}
    expected = [f"#{i}" for i, g in enumerate(groups) if not trained & set(g)]
    assert kept.ids == expected and len(expected) > 300
    assert len(groups) - len(expected) >= REAL_SPLIT // 4           # every group of trained paragraphs is out


def test_scaling_on_the_real_file_scores_exactly_the_held_out_paragraphs(shared_data, tmp_path, offline_cache, capsys):
    """`minillm scaling --offline --texts <the real file>`: every paragraph a model trained on is left out,
    every held-out one is scored (one model, to keep it quick: all of the family share one record)."""
    path = shared_data / "text" / "tinystories_validation_head.txt"
    out = tmp_path / "out"
    assert main(["scaling", "--offline", "--models", str(FAMILY_DIR / "tiny-s"), "--texts", str(path),
                 "--stories", "5000", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    with open(out / "results.csv", newline="") as f:
        scored = [row["story_id"] for row in csv.DictReader(f)]
    paragraphs = read_text_file(path).texts
    held = set(held_out_real_stories())
    assert scored == [f"{path.name}#{i}" for i, p in enumerate(paragraphs) if p in held]
    assert f"Left out {len(paragraphs) - len(held)} of the {len(paragraphs)} texts" in said


def _scores(name: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(NLL per text in nats, scored tokens per text, scored bytes per text) of a shipped model."""
    model, tok = minillm.load_model(FAMILY_DIR / name), minillm.load_tokenizer(FAMILY_DIR / name)
    rows = minillm.score_many(model, tok, texts, top_k=0)
    return (np.array([r.total_nll for r in rows]), np.array([r.n_tokens for r in rows], dtype=float),
            np.array([r.n_bytes for r in rows], dtype=float))


def test_the_family_scales_on_the_held_out_real_stories_as_family_csv_records():
    """Each Qwen2 model beats the next smaller one on the real held-out stories, with a paired bootstrap
    interval of the perplexity ratio below 1; tiny-gpt2's bits per byte beat tiny-l's; family.csv (the
    numbers the README and data/models/README.md quote) holds what the shipped files give."""
    held = held_out_real_stories()
    scores = {name: _scores(name, held) for name in [*SHAPES, GPT2_NAME]}
    with open(FAMILY_DIR / "family.csv", encoding="utf-8") as f:
        recorded = {row["name"]: row for row in csv.DictReader(f)}
    for name, (nll, tokens, n_bytes) in scores.items():
        assert float(recorded[name]["real_perplexity"]) == pytest.approx(math.exp(nll.sum() / tokens.sum()), rel=1e-4)
        assert float(recorded[name]["real_bits_per_byte"]) == pytest.approx(nll.sum() / math.log(2) / n_bytes.sum(),
                                                                            rel=1e-4)
    names, ratios = list(SHAPES), {}
    for small, large in zip(names, names[1:]):
        diff = paired_difference(scores[small][0], scores[small][1], scores[large][0], scores[large][1])
        assert diff.ratio_ci_high < 1, (small, large, diff)
        ratios[large] = f"perplexity x {diff.ratio:.3f} ({diff.ratio_ci_low:.3f}-{diff.ratio_ci_high:.3f})"
    assert float(recorded[GPT2_NAME]["real_bits_per_byte"]) < float(recorded["tiny-l"]["real_bits_per_byte"])
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    quoted = re.search(r"perplexity falls\s+(\d+\.\d)\s+->\s+(\d+\.\d)\s+->\s+(\d+\.\d),\s+each model ahead", readme)
    assert quoted.groups() == tuple(f"{float(recorded[name]['real_perplexity']):.1f}" for name in SHAPES)
    for name in [*SHAPES, GPT2_NAME]:                          # the README's table of the family
        row = re.search(rf"^\| {name} \|.*$", readme, re.MULTILINE).group(0).replace("**", "")
        ppl, bpb = float(recorded[name]["real_perplexity"]), float(recorded[name]["real_bits_per_byte"])
        assert f"| {ppl:.1f} | {bpb:.3f} |" in row, row
        assert ratios.get(name, "") in row, row


def test_tiny_gpt2_is_the_papers_gpt2_and_gives_transformers_logits(shared_data, tmp_path):
    folder = FAMILY_DIR / GPT2_NAME
    ours = minillm.load_model(folder)
    ref = transformers.GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32).eval()
    config = ref.config
    assert (config.n_embd, config.n_layer, config.n_head, config.vocab_size) == (64, 6, 8, 50257)
    assert 3.5e6 < sum(p.numel() for p in ref.parameters()) < 3.7e6          # the paper's 3.6M
    (tmp_path / "tokenizer.json").write_bytes(gzip.decompress((shared_data / "gpt2-tokenizer" / "tokenizer.json.gz")
                                                              .read_bytes()))
    gpt2 = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))   # the real GPT-2 tokenizer
    text = held_out_real_stories()[0]
    ids = minillm.load_tokenizer(folder).encode(text)
    assert ids == gpt2.encode(text).ids
    batch = torch.tensor([ids[:128]])
    with torch.no_grad():
        torch.testing.assert_close(ours(batch), ref(batch).logits, atol=1e-4, rtol=0)
