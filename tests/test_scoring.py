"""Scoring: the shift by one, perplexity's definition, batching, windows, context, parity.

References are independent of minillm.inference.scoring: transformers' own loss with labels, the
published numbers in ../shared/data/README.md, a model built by hand whose predictions are
known exactly, and log_softmax over a plain forward pass of minillm's model (which the
parity tests already tie to transformers). Tolerances: per-token log-probs across batching,
padding and windows move only by float32 summation order, like logits (see
test_model_parity): 5e-5 absolute.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

import minillm
from minillm.inference.scoring import encode_for_scoring, perplexity, score, score_many
from checkpoints import load_reference, make_checkpoint, make_tokenizer

STORY = ("Once upon a time, a small fox named Pip found a red kite in the tall grass. "
         "\"Is it yours?\" asked the owl. Pip shook his head and ran to find its owner. ")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random Qwen2 checkpoint with a BPE tokenizer trained on the bundled stories."""
    folder = tmp_path_factory.mktemp("tiny-scoring")
    make_checkpoint(folder, "qwen2", seed=7, vocab=320, heads=4, kv_heads=2, max_positions=512)
    make_tokenizer(folder, vocab_size=320)
    return minillm.load_model(folder), minillm.load_tokenizer(folder), folder


def _direct_logprobs(model, ids: list[int]) -> torch.Tensor:
    """log p(ids[i] | ids[:i]) for i >= 1 from one plain forward pass: (len(ids) - 1,)."""
    logits = model(torch.tensor([ids]))[0].float()
    return torch.log_softmax(logits[:-1], dim=-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]


def test_perplexity_equals_exp_of_transformers_loss(tiny):
    model, tok, folder = tiny
    ref = load_reference(folder)
    for text in [STORY, STORY * 3, "Tom said \"hi\" to Ann.\nShe waved."]:
        ids = torch.tensor([tok.encode(text)])
        with torch.no_grad():
            loss = ref(ids, labels=ids).loss.item()
        assert perplexity(model, tok, text) == pytest.approx(math.exp(loss), rel=1e-5)


def test_rows_are_shifted_by_one_and_carry_top_k(tiny):
    model, tok, _ = tiny
    result = score(model, tok, STORY, top_k=4)
    ids = tok.encode(STORY)
    direct = _direct_logprobs(model, ids)
    assert result.n_tokens == len(ids) - 1                      # no BOS: the first token is not scored
    assert [r.position for r in result.rows] == list(range(1, len(ids)))
    assert [r.token_id for r in result.rows] == ids[1:]
    assert torch.allclose(torch.tensor([r.logprob for r in result.rows]), direct, atol=5e-5)
    assert result.total_nll == pytest.approx(-direct.sum().item(), rel=1e-5)
    expected = torch.softmax(model(torch.tensor([ids]))[0, :-1].float(), dim=-1).topk(4)   # (n, 4)
    for row, probs, top_ids in zip(result.rows, expected.values.tolist(), expected.indices.tolist()):
        assert [t for _, t, _ in row.top] == top_ids
        assert [p for _, _, p in row.top] == pytest.approx(probs, abs=1e-6)
        assert [s for s, _, _ in row.top] == [tok.token_text(t) for t in top_ids]
        assert row.surprise == -row.logprob


def test_bits_per_byte_counts_the_bytes_of_scored_tokens(tiny):
    model, tok, _ = tiny
    text = "Café Zoë — naïve über 🦊 fox."
    result = score(model, tok, text)
    first = tok.decode(tok.encode(text)[:1])
    assert result.n_bytes == len(text.encode()) - len(first.encode())
    assert result.bits_per_byte == pytest.approx(result.total_nll / math.log(2) / result.n_bytes)


@pytest.fixture(scope="module")
def many_texts():
    words = STORY.split()
    return [" ".join(words[: 3 + (7 * i) % len(words)]) for i in range(9)] + [STORY * 2]


def test_results_do_not_depend_on_batch_size_or_padding_side(tiny, many_texts):
    model, tok, _ = tiny
    one_by_one = [score(model, tok, t) for t in many_texts]
    for options in [dict(batch_tokens=4096), dict(batch_tokens=300, padding_side="left"),
                    dict(batch_tokens=4096, padding_side="left")]:
        together = score_many(model, tok, many_texts, **options)
        for alone, batched in zip(one_by_one, together):
            assert batched.text == alone.text and batched.n_tokens == alone.n_tokens
            lp_alone = torch.tensor([r.logprob for r in alone.rows])
            lp_batch = torch.tensor([r.logprob for r in batched.rows])
            assert torch.allclose(lp_alone, lp_batch, atol=5e-5)


def test_vocabulary_slices_change_nothing(tiny, many_texts):
    model, tok, _ = tiny
    wide = score_many(model, tok, many_texts, slice_mb=64)      # the whole vocabulary in one slice
    narrow = score_many(model, tok, many_texts, slice_mb=0.001)  # slices of 100 entries: 3 and a part
    for a, b in zip(wide, narrow):
        assert [r.logprob for r in a.rows] == pytest.approx([r.logprob for r in b.rows], abs=1e-6)
        for ra, rb in zip(a.rows, b.rows):
            assert [t[1] for t in ra.top] == [t[1] for t in rb.top]
            assert [t[2] for t in ra.top] == pytest.approx([t[2] for t in rb.top], abs=1e-6)


def test_sliding_windows_equal_the_full_pass_when_the_text_fits(tiny):
    model, tok, _ = tiny
    n = len(tok.encode(STORY * 2))
    full = score(model, tok, STORY * 2)
    exact_fit = score(model, tok, STORY * 2, window=n, stride=n // 3)
    assert exact_fit.protocol == "whole text in one pass"
    assert [r.logprob for r in exact_fit.rows] == pytest.approx([r.logprob for r in full.rows], abs=5e-5)


def test_sliding_windows_score_each_token_once_with_its_window_context(tiny):
    model, tok, _ = tiny
    text = STORY * 4
    ids = tok.encode(text)
    window, stride = 64, 24
    result = score(model, tok, text, window=window, stride=stride)
    assert [r.position for r in result.rows] == list(range(1, len(ids)))
    assert "sliding windows of 64 tokens, stride 24" in result.protocol
    # Independent reference: rescore each window with a plain forward pass.
    expected = {}
    scored_until, start = 1, 0
    while scored_until < len(ids):
        end = min(start + window, len(ids))
        lps = _direct_logprobs(model, ids[start:end])
        for pos in range(max(scored_until, start + 1), end):
            expected[pos] = lps[pos - start - 1].item()
            assert pos - start >= min(pos, window - stride)          # enough context
        scored_until = max(scored_until, end)
        start += stride
    assert [r.logprob for r in result.rows] == pytest.approx([expected[p] for p in sorted(expected)], abs=5e-5)


def test_context_conditioned_scores_are_the_slice_of_the_full_pass(tiny):
    model, tok, _ = tiny
    context, text = "The owl lived in an old oak.", " One night she saw a fox with a kite."
    result = score(model, tok, text, context=context)
    ids = tok.encode(context) + tok.encode(text, add_special_tokens=False)
    start = len(tok.encode(context))
    direct = _direct_logprobs(model, ids)[start - 1 :]
    assert result.n_tokens == len(ids) - start
    assert result.token_ids == ids
    assert torch.allclose(torch.tensor([r.logprob for r in result.rows]), direct, atol=5e-5)
    assert result.n_bytes == len(text.encode())
    assert "only the text after the context is scored" in result.protocol


def test_chat_context_puts_the_prompt_in_the_template(shared_data, tmp_path):
    import gzip
    import shutil

    folder = tmp_path / "qwen-tok"
    folder.mkdir()
    (folder / "tokenizer.json").write_bytes(gzip.decompress((shared_data / "qwen2.5-tokenizer" / "tokenizer.json.gz").read_bytes()))
    shutil.copy(shared_data / "qwen2.5-tokenizer" / "tokenizer_config.json", folder)
    tok = minillm.load_tokenizer(folder)
    ids, start = encode_for_scoring(tok, "Once upon a time, a dragon.", "Write a story about a dragon.", chat=True)
    prompt = tok.decode(ids[:start])
    assert prompt.endswith("<|im_start|>user\nWrite a story about a dragon.<|im_end|>\n<|im_start|>assistant\n")
    assert ids[start:] == tok.encode("Once upon a time, a dragon.", add_special_tokens=False)


def _perfect_predictor(folder, vocab=16):
    """A 0-layer Llama that predicts token (i + 1) mod vocab after token i with probability ~1.

    Embedding = identity, so the final RMSNorm gives sqrt(vocab) * onehot(i); the LM head's
    row j is 100 * onehot(j - 1), so the logit of i + 1 is 400 and every other logit is 0.
    """
    config = dict(model_type="llama", vocab_size=vocab, hidden_size=vocab, intermediate_size=8,
                  num_hidden_layers=0, num_attention_heads=2, num_key_value_heads=2, rms_norm_eps=1e-6,
                  max_position_embeddings=256, tie_word_embeddings=False)
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"model.embed_tokens.weight": torch.eye(vocab), "model.norm.weight": torch.ones(vocab),
               "lm_head.weight": 100 * torch.eye(vocab).roll(1, dims=0)}, folder / "model.safetensors")
    vocab_json = {f"t{i}": i for i in range(vocab)}
    tokenizer = {"version": "1.0", "added_tokens": [], "normalizer": None,
                 "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None,
                 "decoder": None, "model": {"type": "WordLevel", "vocab": vocab_json, "unk_token": "t0"}}
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    (folder / "tokenizer_config.json").write_text("{}")
    return minillm.load_model(folder), minillm.load_tokenizer(folder)


def test_a_perfect_predictor_has_perplexity_one(tmp_path):
    model, tok = _perfect_predictor(tmp_path / "perfect")
    counting = " ".join(f"t{i % 16}" for i in range(5, 45))
    assert perplexity(model, tok, counting) == pytest.approx(1.0, abs=1e-6)
    # Against itself the same model is maximally wrong: scoring the wrong shift would show it.
    repeated = " ".join(["t3"] * 20)
    assert perplexity(model, tok, repeated) > 1e6


def test_stories_are_far_less_perplexing_than_wikipedia(shared_data):
    """The real stories260K (trained on TinyStories): stories vs encyclopedia articles."""
    model = minillm.load_model(shared_data / "stories260K")
    tok = minillm.load_tokenizer(shared_data / "stories260K")
    stories = [p.strip() for p in (shared_data / "text" / "tinystories_validation_head.txt").read_text().split("\n\n")]
    wiki = [p.strip() for p in (shared_data / "text" / "wikitext2_raw_test.txt").read_text().split("\n")
            if len(p.strip()) > 200 and not p.strip().startswith("=")]
    results = {name: score_many(model, tok, texts[:40], top_k=0) for name, texts in [("stories", stories), ("wiki", wiki[:20])]}
    ppl = {name: math.exp(sum(r.total_nll for r in rs) / sum(r.n_tokens for r in rs)) for name, rs in results.items()}
    assert ppl["stories"] < 6 and ppl["wiki"] > 5 * ppl["stories"]


def test_published_perplexity_of_stories260k(shared_data):
    """../shared/data/README.md: 150 paragraphs, each alone with BOS: 14,475 tokens, ppl 4.195."""
    model = minillm.load_model(shared_data / "stories260K")
    tok = minillm.load_tokenizer(shared_data / "stories260K")
    text = (shared_data / "text" / "tinystories_validation_head.txt").read_text()
    paragraphs = [p.strip() for p in text.split("\n\n")][:150]
    results = score_many(model, tok, paragraphs, top_k=0)
    n = sum(r.n_tokens for r in results)
    mean_nll = sum(r.total_nll for r in results) / n
    assert n == 14475
    assert math.exp(mean_nll) == pytest.approx(4.195, abs=5e-4)


@pytest.mark.parametrize("call, message", [
    (lambda m, t: score(m, t, ""), "non-empty string"),
    (lambda m, t: score(m, t, "a"), "no token to score"),
    (lambda m, t: score(m, t, STORY, window=10_000), "window"),
    (lambda m, t: score(m, t, STORY, window=64, stride=64), "stride"),
    (lambda m, t: score_many(m, t, ["a b", "c d"], context=["x"]), "one per text"),
    (lambda m, t: score(m, t, STORY, chat=True), "chat=True needs a context"),
])
def test_bad_arguments(tiny, call, message):
    model, tok, _ = tiny
    with pytest.raises(ValueError, match=message):
        call(model, tok)
