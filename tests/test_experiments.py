"""The context, instruction and category experiments, on tiny random models (one base, one
instruct-like with a chat template), checked against transformers computed here."""

from __future__ import annotations

import csv
import json
import math
import re

import numpy as np
import pytest
import torch

import minillm
from minillm.cli import main
from minillm.data import bundled_source, read_text_file
from minillm.experiments.context import run_context, split_for_context
from minillm.experiments.instructions import (bundled_prompts, derive_prompts, prompts_for, run_instructions,
                                              uses_chat)
from minillm.experiments.scaling import paired_difference
from minillm.course.family import held_out_stories
from checkpoints import load_reference, make_checkpoint, make_tokenizer

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    folder = make_checkpoint(tmp_path_factory.mktemp("base"), "qwen2", seed=5, vocab=320, layers=1,
                             max_positions=2048)   # whole stories in one window, as transformers sees them
    make_tokenizer(folder, vocab_size=320)
    return str(folder)


@pytest.fixture(scope="module")
def instruct_model(tmp_path_factory):
    """A random model whose tokenizer carries a chat template, as a hub instruct model's does."""
    folder = make_checkpoint(tmp_path_factory.mktemp("tiny-instruct"), "qwen2", seed=6, vocab=320, layers=1,
                             max_positions=2048)
    make_tokenizer(folder, vocab_size=320)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": CHAT_TEMPLATE}))
    return str(folder)


def reference_nll(folder: str, ids: list[int], first_scored: int) -> float:
    """Total NLL (nats) of ids[first_scored:] from transformers' logits over the whole sequence."""
    ref = load_reference(folder)
    with torch.no_grad():
        logits = ref(torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits[:-1], dim=-1)                         # position i-1 predicts token i
    targets = torch.tensor(ids[1:])
    return float(-logp[torch.arange(len(targets)), targets][first_scored - 1:].sum())


def test_split_for_context_keeps_the_continuation_whole():
    story = 'One. "Two!" said Sam. Three? Four and more. Five.'
    sentences, rest = split_for_context(story, 3)
    assert sentences == ["One.", '"Two!" said Sam.', "Three?"] and rest == " Four and more. Five."
    assert split_for_context("Only one. Two.", 3) is None


def test_context_scores_the_same_continuation_tokens_for_every_k(base_model):
    source = bundled_source("stories", 48, 51)
    results = run_context([base_model], source, progress=False)
    tok = minillm.load_tokenizer(base_model)
    for j, story in enumerate(source.texts):
        sentences, continuation = split_for_context(story)
        scored = [results.scores[(base_model, k)][j] for k in range(4)]
        token_ids = [[r.token_id for r in s.rows] for s in scored]
        assert all(t == token_ids[0] for t in token_ids)                       # one token set for k = 0..3
        assert "".join(r.token for r in scored[0].rows) == continuation        # and it is the continuation
        assert token_ids[0] == tok.encode(continuation, add_special_tokens=False)
        for k in (0, 3):                                  # the NLL, from transformers over the whole input
            ids = scored[k].token_ids
            assert tok.decode(ids[: len(ids) - len(token_ids[0])]) == "<|endoftext|>" + " ".join(sentences[3 - k:])
            assert scored[k].total_nll == pytest.approx(reference_nll(base_model, ids, len(ids) - len(token_ids[0])),
                                                        rel=1e-4)   # float32 logits vs float64 softmax
    rows = {(r.text_id, r.condition): r for r in results.rows}
    assert {r.tokens for r in results.rows if r.text_id == "stories.txt#48"} == \
        {rows[("stories.txt#48", "k=0")].tokens}
    assert [(d.group, d.a, d.b) for d in results.differences] == \
        [(base_model.rsplit("/", 1)[-1], "k=0", f"k={k}") for k in (1, 2, 3)]


def test_instructions_through_the_chat_template_score_exactly_the_story(instruct_model, base_model):
    source = bundled_source("stories", 48, 50)
    results = run_instructions([base_model, instruct_model], source, progress=False)
    assert results.chat_models == [instruct_model]                              # by its name and template
    tok = minillm.load_tokenizer(instruct_model)
    prompts = prompts_for(source)
    for j, story in enumerate(source.texts):
        story_ids = tok.encode(story, add_special_tokens=False)
        for condition in ("none", "specific", "mismatched"):
            row = next(r for r in results.rows if r.model == instruct_model and r.condition == condition
                       and r.text_id == source.ids[j])
            assert row.tokens == len(story_ids) and row.prompt == prompts[j][condition]
            assert row.bytes == len(story.encode("utf-8"))                     # bits per byte over the story
            rendered = tok.apply_chat_template([{"role": "user", "content": prompts[j][condition]}],
                                               add_generation_prompt=True)
            ids = tok.encode(rendered, add_special_tokens=False) + story_ids
            assert row.nll_total == pytest.approx(reference_nll(instruct_model, ids, len(ids) - len(story_ids)),
                                                  rel=1e-4)
        base_rows = [r for r in results.rows if r.model == base_model and r.text_id == source.ids[j]]
        assert {r.tokens for r in base_rows} == {len(story_ids)}                 # base: same story tokens
        specific = next(r for r in base_rows if r.condition == "specific")
        ids = tok.encode("<|endoftext|>" + prompts[j]["specific"] + "\n\n", add_special_tokens=False) + story_ids
        assert specific.nll_total == pytest.approx(reference_nll(base_model, ids, len(ids) - len(story_ids)), rel=1e-4)
    assert not uses_chat(base_model, minillm.load_tokenizer(base_model), None)


def test_bundled_prompts_cover_the_held_out_stories_and_paraphrases_avoid_the_keywords():
    prompts = bundled_prompts()
    ids = bundled_source("stories", -20).ids
    assert sorted(prompts) == sorted(ids) and len(held_out_stories()) == 20
    for story_id, p in prompts.items():
        said = set(re.findall(r"[a-z]+", p["paraphrased"].lower()))
        assert not said & {k.lower() for k in p["keywords"]}, story_id
        assert all(k.lower() in p["specific"].lower() for k in p["keywords"]), story_id
    derived = derive_prompts("Tom had a kite. The kite was red. Tom ran with the kite and the kite felt "
                             "happy. Kite flew. Then it rained.")
    assert derived["keywords"] == ["Tom", "kite", "red", "flew"]     # the name, then the words in story order
    assert derived["specific"] == "Write a story about Tom. Use the words kite, red and flew."
    assert derived["paraphrased"] == "Here are some words: flew, red and kite. Tell a tale of Tom with them."


def test_paired_difference_against_a_hand_computation():
    rng = np.random.default_rng(0)
    tokens = rng.integers(50, 100, size=20).astype(float)
    nll_a = tokens * rng.normal(3.0, 0.5, size=20)
    nll_b = nll_a - 0.1 * tokens                                # B is 0.1 nats per token better on every text
    d = paired_difference(nll_a, tokens, nll_b, tokens, "a", "b")
    assert d.mean_nll_diff == pytest.approx(-0.1) and d.ratio == pytest.approx(math.exp(-0.1))
    assert d.ci_low == pytest.approx(-0.1) and d.ci_high == pytest.approx(-0.1)   # paired: no spread at all
    assert d.b_better == 20
    with pytest.raises(ValueError, match="same non-zero number"):
        paired_difference(nll_a, tokens, nll_b[:3], tokens[:3])


def test_categories_score_every_category_and_files(base_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")        # what --offline sets, undone after the test
    texts = tmp_path / "wiki.txt"
    texts.write_text(" = First = \n\n Some text about a town . \n\n = Second = \n\n More text here .\n")
    assert len(read_text_file(texts).texts) == 2
    out = tmp_path / "cat"
    assert main(["categories", "--offline", "--models", base_model, "--stories", "3", "--texts", str(texts),
                 "--out", str(out)]) == 0
    with open(out / "categories_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["condition"] for r in rows] == ["stories", "news", "code", "poetry", "instructions", "wiki.txt"]
    assert (out / "categories.png").read_bytes()[:4] == b"\x89PNG"


def test_context_on_a_bos_tokenizer_scores_the_same_tokens(shared_data):
    """stories260K adds BOS: k = 0 is the continuation after BOS alone, and the token set still holds."""
    folder = str(shared_data / "stories260K")
    results = run_context([folder], bundled_source("stories", 48, 50), progress=False)
    tok = minillm.load_tokenizer(folder)
    for j in range(2):
        scored = [results.scores[(folder, k)][j] for k in range(4)]
        assert scored[0].token_ids[0] == tok.bos_token_id and scored[0].context is None
        assert len({tuple(r.token_id for r in s.rows) for s in scored}) == 1


def test_instructions_help_names_the_models_it_really_uses(capsys):
    """With no --models, `instructions` runs the shipped tiny family, base and instruct, online or not
    (cmd_instructions); its help must say so, not the Qwen defaults of `scaling`."""
    with pytest.raises(SystemExit):
        main(["instructions", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Qwen" not in text
    assert all(name in text for name in ["tiny-s", "tiny-l", "tiny-s-instruct", "tiny-l-instruct"])
    assert "online and offline" in text
