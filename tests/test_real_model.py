"""The real pretrained stories260K (llama2.c, trained on TinyStories) against transformers."""

from __future__ import annotations

import pytest
import torch

import minillm
from checkpoints import load_reference

# The sample published with the model (see ../shared/data/README.md): greedy from <s>.
PUBLISHED_SAMPLE = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
    "One day, she saw a big, red ball. She wanted to play with it, but it was too high"
)


@pytest.fixture(scope="module")
def stories(shared_data):
    return shared_data / "stories260K"


@pytest.fixture(scope="module")
def text_ids(shared_data, stories):
    tok = minillm.load_tokenizer(stories)
    paragraphs = (shared_data / "text" / "tinystories_validation_head.txt").read_text().split("\n\n")
    return [tok.encode(p) for p in paragraphs[:8]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logits_equal_transformers_on_real_text(stories, text_ids, dtype):
    ours, ref = minillm.load_model(stories, dtype=dtype), load_reference(stories, dtype)
    for ids in text_ids:
        batch = torch.tensor([ids])
        with torch.no_grad():
            expected = ref(batch).logits
        got = ours(batch)
        if dtype == torch.float32:
            assert (got - expected).abs().max().item() <= 1e-5
        else:
            assert (got.argmax(-1) == expected.argmax(-1)).float().mean().item() >= 0.99


def test_greedy_from_bos_reproduces_the_published_sample(stories):
    model, tok = minillm.load_model(stories), minillm.load_tokenizer(stories)
    new = minillm.generate(model, [tok.bos_token_id], max_new_tokens=60, eos_token_id=tok.eos_token_id)
    assert tok.decode(new).startswith(PUBLISHED_SAMPLE)


def test_greedy_from_once_upon_a_time_continues_the_sample(stories):
    model, tok = minillm.load_model(stories), minillm.load_tokenizer(stories)
    prompt = tok.encode("Once upon a time")
    new = minillm.generate(model, prompt, max_new_tokens=40)
    assert tok.decode(prompt + new, skip_special_tokens=True).startswith(PUBLISHED_SAMPLE[:120])
