"""Unit 1, logits: next-token logits, probabilities, the most likely token, a top-k table.

The reference is the minillm model itself: ``tiny_model(ids)`` gives the logits, checked
against transformers in the library's own tests. Texts are fresh slices of the bundled
stories, drawn from the grader seed.
"""

from __future__ import annotations

import random

import pytest
import torch
from grading import (GradingError, Unchanged, expect_close, expect_float, expect_shape, random_text, show_token,
                     show_tokens)

pytestmark = pytest.mark.logits

OBJECTIVES = {
    "LOG-1": "Run the model on a text and read the next-token logits at the last position",
    "LOG-2": "Turn logits into next-token probability distributions (softmax over the vocabulary)",
    "LOG-3": "Find the most likely next token and its probability",
    "LOG-4": "Build a top-k table of next tokens with their probabilities",
    "LOG-5": "Handle edge cases: a one-token text, a long text, no autograd graph",
}

# A whole forward pass in float32: kernels differ across CPU (oneDNN/BLAS), CUDA and Apple
# silicon and so does the rounding, about 1e-6 relative per layer. 1e-4 leaves room for that
# and still catches every real mistake (which changes logits by 1e-2 or more).
LOGITS_TOL = dict(atol=1e-4, rtol=1e-4)
# Probabilities are in [0, 1]: an absolute tolerance of 1e-5 covers the rounding above.
PROB_TOL = dict(atol=1e-5, rtol=1e-4)


def _rng(grader_seed: int, salt: str) -> random.Random:
    return random.Random(f"{grader_seed}-logits-{salt}")


def _checked(fn, *args):
    """``fn(*args)``, failing when the call changed the model's weights or torch's global random state
    (reading logits must leave both alone)."""
    inputs = Unchanged("the model's weights", *args, rng=True)
    got = fn(*args)
    inputs.check(f"{getattr(fn, '__name__', 'your function')}(model, ...)")
    return got


def _ref_logits(model, tokenizer, text: str) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tokenizer.encode(text)]))[0].float()   # (n, vocab)


SPACE = "\u2581"       # "▁", SentencePiece's mark for a space


@pytest.fixture(scope="module")
def sentencepiece_tokenizer(tmp_path_factory, story_texts, tiny_model_config):
    """A SentencePiece-style (Llama, stories260K) tokenizer trained here on the kit's own stories, with
    the tiny model's vocabulary size so the tiny model can read its ids: a space becomes "▁" and the
    text gets one in front; <unk>, <s>, </s>, then the 256 byte tokens <0x00>..<0xFF> for byte
    fallback, then the learned pieces. Its decoder strips the leading space of a text, so
    ``decode([id])`` of a word-initial piece loses the space that ``token_text(id)`` keeps.
    (Built from data/texts, never ../shared: students grade offline.)"""
    import json
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from minillm import load_tokenizer
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    learned = tiny_model_config.vocab_size - len(specials) - len(byte_tokens)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never")
    tokenizer.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(),
                                           decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=len(specials) + learned, special_tokens=specials,
                                  limit_alphabet=learned // 2, show_progress=False)
    tokenizer.train_from_iterator(list(story_texts), trainer)
    # Put the byte tokens into the model's vocabulary (ids 3..258), the learned pieces after them.
    raw = json.loads(tokenizer.to_str())
    pieces = [t for t, _ in sorted(raw["model"]["vocab"].items(), key=lambda kv: kv[1]) if t not in specials]
    raw["model"]["vocab"] = {t: i for i, t in enumerate(specials + byte_tokens + pieces)}
    folder = tmp_path_factory.mktemp("sentencepiece_tokenizer")
    (folder / "tokenizer.json").write_text(json.dumps(raw), encoding="utf-8")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "add_bos_token": False, "add_eos_token": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    loaded = load_tokenizer(folder)
    assert loaded.vocab_size <= tiny_model_config.vocab_size, "autograder: SentencePiece fixture too large"
    return loaded


@pytest.mark.graded(points=3, objective="LOG-1", level="P")
def test_next_token_logits(student, tiny_model, tiny_tokenizer, story_texts, grader_seed):
    fn = student.function("logits", "next_token_logits")
    rng = _rng(grader_seed, "next")
    for _ in range(3):
        text = random_text(rng, story_texts, 20, 200)
        got = _checked(fn, tiny_model, tiny_tokenizer, text)
        expect_shape(got, (tiny_model.config.vocab_size,), f"next_token_logits(model, tokenizer, {text!r})")
        ref = _ref_logits(tiny_model, tiny_tokenizer, text)
        expected = ref[-1]
        if isinstance(got, torch.Tensor) and torch.allclose(got.float(), ref[0],
                                                            **LOGITS_TOL) and len(tiny_tokenizer.encode(text)) > 1:
            raise GradingError(
                f"next_token_logits(model, tokenizer, {text!r}) returned the logits of the FIRST position. "
                "The prediction for the token after the whole text is at the last position, index -1.")
        expect_close(got, expected, f"next_token_logits(model, tokenizer, {text!r})", **LOGITS_TOL)


@pytest.mark.graded(points=3, objective="LOG-2", level="P")
def test_next_token_distributions(student, tiny_model, tiny_tokenizer, story_texts, grader_seed):
    fn = student.function("logits", "next_token_distributions")
    rng = _rng(grader_seed, "dist")
    for _ in range(3):
        text = random_text(rng, story_texts, 30, 200)
        n = len(tiny_tokenizer.encode(text))
        what = f"next_token_distributions(model, tokenizer, {text!r})"
        got = _checked(fn, tiny_model, tiny_tokenizer, text)
        expect_shape(got, (n, tiny_model.config.vocab_size), what)
        row_sums = torch.as_tensor(got).detach().double().sum(-1)
        # A sum of ~320 float32 probabilities: rounding stays far below 1e-4.
        expect_close(row_sums, torch.ones(n), f"{what}: the sum of each row (each row is one distribution "
                     "over the vocabulary, so it must sum to 1; did the softmax run over the wrong dimension?)",
                     atol=1e-4, rtol=0)
        expected = torch.softmax(_ref_logits(tiny_model, tiny_tokenizer, text), dim=-1)
        expect_close(got, expected, what, **PROB_TOL)


@pytest.mark.graded(points=2, objective="LOG-3", level="P")
def test_most_likely_next_token(student, tiny_model, tiny_tokenizer, story_texts, grader_seed):
    fn = student.function("logits", "most_likely_next_token")
    rng = _rng(grader_seed, "best")
    for _ in range(3):
        text = random_text(rng, story_texts, 20, 200)
        what = f"most_likely_next_token(model, tokenizer, {text!r})"
        got = _checked(fn, tiny_model, tiny_tokenizer, text)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise GradingError(f"{what} should return a tuple (token, probability); got {got!r}.")
        token, prob = got
        probs = torch.softmax(_ref_logits(tiny_model, tiny_tokenizer, text)[-1], dim=-1)
        best = int(torch.argmax(probs))
        expected_token = tiny_tokenizer.token_text(best)
        if token != expected_token:
            hint = ""
            if token == tiny_tokenizer.id_to_token(best):
                hint = " You returned the raw vocabulary entry; use tokenizer.token_text(id) to get the text."
            elif isinstance(token, int) or (isinstance(token, torch.Tensor) and token.numel() == 1):
                hint = " You returned the token id; return the token as text, tokenizer.token_text(id)."
            raise GradingError(f"{what}: expected the token {show_token(expected_token, best)}, got {token!r}.{hint}")
        if isinstance(prob, (int, float, torch.Tensor)) and float(prob) > 1.0:
            raise GradingError(f"{what}: the probability {float(prob):.4g} is above 1: did you return the logit?")
        expect_close(prob, probs[best], f"{what}: the probability of {show_token(expected_token, best)}", **PROB_TOL)
        expect_float(prob, f"{what}: the probability")                       # the contract: a Python float


@pytest.mark.graded(points=3, objective="LOG-4", level="M")
def test_predict_next_tokens(student, tiny_model, tiny_tokenizer, story_texts, grader_seed, sentencepiece_tokenizer):
    fn = student.function("logits", "predict_next_tokens")
    rng = _rng(grader_seed, "topk")
    for _ in range(3):
        text = random_text(rng, story_texts, 20, 200)
        k = rng.randint(2, 12)
        what = f"predict_next_tokens(model, tokenizer, {text!r}, k={k})"
        got = _checked(fn, tiny_model, tiny_tokenizer, text, k)
        if not isinstance(got, (list, tuple)) or len(got) != k:
            raise GradingError(f"{what} should return a list of {k} (token, probability) tuples; got "
                               f"{type(got).__name__} of length {len(got) if hasattr(got, '__len__') else '?'}.")
        if not all(isinstance(row, (tuple, list)) and len(row) == 2 for row in got):
            raise GradingError(f"{what}: every row should be a tuple (token, probability); got {got[:3]!r}...")
        probs = torch.softmax(_ref_logits(tiny_model, tiny_tokenizer, text)[-1], dim=-1)
        top = torch.topk(probs, k)
        expected_tokens = [tiny_tokenizer.token_text(i) for i in top.indices.tolist()]
        tokens = [row[0] for row in got]
        if tokens != expected_tokens:
            if sorted(map(str, tokens)) == sorted(expected_tokens):
                raise GradingError(f"{what}: the right tokens in the wrong order; put the most likely first.\n"
                                   f"  expected {show_tokens(expected_tokens, top.indices.tolist())}\n"
                                   f"  got      {show_tokens(tokens)}")
            raise GradingError(f"{what}: expected the tokens {show_tokens(expected_tokens, top.indices.tolist())}, "
                               f"got {show_tokens(tokens)}.")
        expect_float(got[0][1], f"{what}: the probability in row 0")          # the contract: Python floats
        got_probs = [float(row[1]) for row in got]
        if abs(sum(got_probs) - 1.0) < 1e-4 and abs(float(top.values.sum()) - 1.0) > 1e-3:
            raise GradingError(f"{what}: your {k} probabilities sum to 1: they were re-normalised over the k "
                               "tokens. Take the softmax over the whole vocabulary, then keep the top k.")
        expect_close(got_probs, top.values, f"{what}: the probabilities", **PROB_TOL)
    # The same on a SentencePiece-style tokenizer, with a text whose table holds a word-initial piece:
    # there decode([id]) drops the piece's leading space, and the contract's token_text(id) keeps it.
    sp = sentencepiece_tokenizer
    for _ in range(50):
        text, k = random_text(rng, story_texts, 20, 200), rng.randint(8, 15)
        top = torch.topk(torch.softmax(_ref_logits(tiny_model, sp, text)[-1], dim=-1), k)
        ids = top.indices.tolist()
        if any(sp.token_text(i) != sp.decode([i]) for i in ids):
            break
    expected_tokens = [sp.token_text(i) for i in ids]
    what = f"predict_next_tokens(model, a SentencePiece-style tokenizer, {text!r}, k={k})"
    got = _checked(fn, tiny_model, sp, text, k)
    tokens = [row[0] for row in got] if isinstance(got, (list, tuple)) else got
    if tokens != expected_tokens:
        hint = ""
        if tokens == [sp.decode([i]) for i in ids]:
            hint = (" You decoded each id alone (tokenizer.decode([id])): a SentencePiece decoder strips the "
                    "space at the start of a text, so ' the' comes out as 'the'. Use tokenizer.token_text(id).")
        raise GradingError(f"{what}: expected the tokens {show_tokens(expected_tokens, ids)}, "
                           f"got {show_tokens(tokens)}.{hint}")


@pytest.mark.graded(points=2, objective="LOG-5", level="E")
def test_edge_cases(student, tiny_model, tiny_tokenizer, story_texts, grader_seed):
    fn = student.function("logits", "next_token_logits")
    rng = _rng(grader_seed, "edge")
    # A text of exactly one token: its only position is the last one.
    one = next(t for t in (" the", " was", "The", "a", ".") if len(tiny_tokenizer.encode(t)) == 1)
    got = _checked(fn, tiny_model, tiny_tokenizer, one)
    expect_shape(got, (tiny_model.config.vocab_size,), f"next_token_logits on the one-token text {one!r}")
    expect_close(got, _ref_logits(tiny_model, tiny_tokenizer, one)[-1],
                 f"next_token_logits on the one-token text {one!r}", **LOGITS_TOL)
    # A long text (a whole story or two: several hundred tokens) in one pass.
    i = rng.randrange(len(story_texts) - 1)
    long_text = story_texts[i] + "\n\n" + story_texts[i + 1]
    got = _checked(fn, tiny_model, tiny_tokenizer, long_text)
    expect_close(got, _ref_logits(tiny_model, tiny_tokenizer, long_text)[-1],
                 f"next_token_logits on a text of {len(tiny_tokenizer.encode(long_text))} tokens", **LOGITS_TOL)
    if isinstance(got, torch.Tensor) and got.requires_grad:
        raise GradingError("next_token_logits returned a tensor that requires grad: the forward pass built an "
                           "autograd graph it never needs. Run the model inside `with torch.no_grad():`.")
