"""The shipped model family data/models/tiny-{s,m,l} and the synthetic stories it was trained on."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest
import torch
import transformers

import minillm
from minillm.data import bundled_texts
from minillm.course.family import HELD_OUT, family_texts, held_out_stories
from minillm.data.stories import synthetic_stories
from minillm.training.train import resume

MODELS = Path(__file__).resolve().parents[1] / "data" / "models"
NAMES = ("tiny-s", "tiny-m", "tiny-l")


@pytest.mark.parametrize("name", NAMES)
def test_shipped_model_loads_in_minillm_and_transformers(name):
    folder = MODELS / name
    ours = minillm.load_model(folder)
    ref = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                            attn_implementation="eager").eval()
    tok, ref_tok = minillm.load_tokenizer(folder), transformers.AutoTokenizer.from_pretrained(folder)
    text = held_out_stories()[0]
    ids = tok.encode(text)
    assert ids == ref_tok(text)["input_ids"]
    batch = torch.tensor([ids[: ours.config.max_position_embeddings]])
    with torch.no_grad():
        torch.testing.assert_close(ours(batch), ref(batch).logits, atol=1e-5, rtol=0)


def test_held_out_perplexity_falls_with_size():
    stories = held_out_stories()
    perplexities = []
    for name in NAMES:
        model, tok = minillm.load_model(MODELS / name), minillm.load_tokenizer(MODELS / name)
        scores = minillm.score_many(model, tok, stories, top_k=0)
        perplexities.append(math.exp(sum(s.total_nll for s in scores) / sum(s.n_tokens for s in scores)))
    small, medium, large = perplexities
    assert small > medium > large, perplexities
    with open(MODELS / "family.csv", encoding="utf-8") as f:      # the numbers the README reports
        recorded = {row["name"]: float(row["held_out_perplexity"]) for row in csv.DictReader(f)}
    assert [recorded[name] for name in NAMES] == pytest.approx(perplexities, rel=1e-4)


def test_family_sizes_and_files():
    non_embedding = [minillm.load_model(MODELS / name).num_parameters(non_embedding=True) for name in NAMES]
    assert non_embedding[0] * 4 < non_embedding[1] and non_embedding[1] * 3 < non_embedding[2]
    weights = sum((MODELS / name / "model.safetensors").stat().st_size for name in NAMES)
    assert weights < 8e6
    for name in NAMES:
        assert not (MODELS / name / "trainer_state.safetensors").exists()   # optimizer state is not shipped
        with pytest.raises(ValueError, match="cannot be resumed"):
            resume(MODELS / name, [])


def test_held_out_stories_were_never_trained_on():
    held = held_out_stories()
    assert len(held) == HELD_OUT and held == bundled_texts("stories")[-HELD_OUT:]
    texts, val_texts = family_texts()
    assert not set(held) & set(texts + val_texts)
    assert not set(val_texts) & set(texts)


def test_synthetic_stories_are_deterministic_and_varied():
    stories = synthetic_stories(300, seed=1)
    assert stories == synthetic_stories(300, seed=1)
    assert stories[:10] == synthetic_stories(10, seed=1)
    assert stories != synthetic_stories(300, seed=2)
    assert len(set(stories)) == 300
    words = [len(s.split()) for s in stories]
    assert min(words) < 100 < 150 < max(words)
    assert sum('"' in s for s in stories) > 250                          # most have dialogue
    assert len({s.split(",")[0].split(".")[0] for s in stories}) > 50     # varied openings
    for story in stories:
        assert "{" not in story and "  " not in story
        assert not re.search(r"\b[Aa] [aeiou]", story), story           # "an apple", not "a apple"
