"""Unit 2, perplexity: token loss, the surprise table, perplexity of a text, of a continuation
and of a corpus.

The reference is minillm's scoring (``minillm.inference.scoring``), bound here at import time; during
the student's calls those functions are forbidden (the ``forbid`` fixture), since they are
the answer. The model is a trained one, tiny-s (``trained_model``: data/models/tiny-s, 1,024-token
vocabulary), and the texts are fresh slices, drawn from the grader seed, of the stories it never
trained on (``held_out_texts``), short enough for its 128-token context: the perplexities a student
reads in a message are those of a real, if small, model (mostly 30 to 400), not of random weights.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from grading import GradingError, Unchanged, expect_close, expect_float, random_text, show_tokens

from minillm.inference.scoring import perplexity as ref_perplexity
from minillm.inference.scoring import score as ref_score
from minillm.inference.scoring import score_many as ref_score_many

pytestmark = pytest.mark.perplexity

OBJECTIVES = {
    "PPL-1": "Compute the loss (surprise, in nats) of one target token from a row of logits",
    "PPL-2": "Score every token of a text with the logits of the position before it",
    "PPL-3": "Compute the perplexity of a text as exp(mean NLL) over its scored tokens",
    "PPL-4": "Score a continuation given a context, without scoring the context",
    "PPL-5": "Pool NLLs over a corpus of texts for the corpus perplexity",
    "PPL-6": "Compute the loss stably for extreme logits (log-sum-exp)",
}

LIBRARY_SCORING = (
    "minillm.inference.scoring.score", "minillm.inference.scoring.score_many", "minillm.inference.scoring.perplexity",
    "minillm.score", "minillm.score_many", "minillm.perplexity",
)

# One log-sum-exp over a few hundred float32 terms: rounding ~1e-6 relative; 1e-5 is safe.
LOSS_TOL = dict(atol=1e-5, rtol=1e-5)
# Surprises come out of a whole forward pass in float32 (kernels and rounding differ across
# CPU/CUDA/Apple silicon, ~1e-6 relative per layer) and a log-softmax: 1e-4 absolute is safe,
# while the mistakes this unit is about change surprises by 1e-1 or more.
SURPRISE_TOL = dict(atol=1e-4, rtol=1e-4)
# A perplexity is exp(mean surprise): the same 1e-4 relative.
PPL_TOL = dict(atol=0.0, rtol=1e-4)


def _rng(grader_seed: int, salt: str) -> random.Random:
    return random.Random(f"{grader_seed}-perplexity-{salt}")


def _fits(tokenizer, model, text: str) -> bool:
    """At least 3 tokens, and no more than the model's context (minillm's scoring cuts a longer text
    into windows, which a single forward pass, the exercise, does not)."""
    return 3 <= len(tokenizer.encode(text)) <= model.config.max_position_embeddings


def _texts(rng, stories, count, tokenizer, model, lo=30, hi=250):
    texts = []
    while len(texts) < count:
        text = random_text(rng, stories, lo, hi)
        if _fits(tokenizer, model, text):
            texts.append(text)
    return texts


@pytest.mark.graded(points=3, objective="PPL-1", level="P")
def test_token_loss(student, grader_seed):
    fn = student.function("perplexity", "token_loss")
    gen = torch.Generator().manual_seed(grader_seed)
    for trial in range(5):
        vocab = int(torch.randint(5, 400, (1,), generator=gen))
        logits = torch.randn(vocab, generator=gen) * 3.0
        target = int(torch.randint(0, vocab, (1,), generator=gen))
        expected = F.cross_entropy(logits.double()[None], torch.tensor([target]))
        got = fn(logits.clone(), target)
        what = f"token_loss(logits of shape ({vocab},), target_id={target})"
        expect_float(got, what)
        if isinstance(got, (int, float)) and math.isfinite(got) and abs(got - float(expected) / math.log(2)) < 1e-4:
            raise GradingError(f"{what}: you returned the loss in bits (log base 2); use the natural log (nats).")
        if isinstance(got, (int, float)) and abs(got + float(expected)) < 1e-4:
            raise GradingError(f"{what}: you returned log p (negative); the loss is -log p, a number >= 0.")
        expect_close(got, expected, what, **LOSS_TOL)


@pytest.mark.graded(points=4, objective="PPL-2", level="P")
def test_surprise_table(student, forbid, trained_model, trained_tokenizer, held_out_texts, grader_seed):
    rng = _rng(grader_seed, "table")
    texts = _texts(rng, held_out_texts, 3, trained_tokenizer, trained_model)
    refs = [ref_score(trained_model, trained_tokenizer, t, top_k=0) for t in texts]
    forbid(*LIBRARY_SCORING)
    fn = student.function("perplexity", "surprise_table")
    for text, ref in zip(texts, refs):
        n = len(ref.token_ids)
        what = f"surprise_table(model, tokenizer, {text!r})"
        got = fn(trained_model, trained_tokenizer, text)
        if not isinstance(got, (list, tuple)):
            raise GradingError(f"{what} should return a list of (token, surprise) tuples; got {type(got).__name__}.")
        if len(got) == n:
            raise GradingError(f"{what}: {n} rows for a text of {n} tokens. The first token is never scored "
                               f"(nothing comes before it): return n - 1 = {n - 1} rows, for tokens 1..n-1.")
        if len(got) != n - 1:
            raise GradingError(f"{what}: expected {n - 1} rows (tokens 1..n-1 of {n}), got {len(got)}.")
        tokens = [row[0] for row in got]
        expected_tokens, expected_ids = [r.token for r in ref.rows], [r.token_id for r in ref.rows[:8]]
        if tokens != expected_tokens:
            raise GradingError(f"{what}: the tokens should be tokens 1..n-1 of the text, as "
                               f"tokenizer.token_text(id):\n  expected {show_tokens(expected_tokens[:8], expected_ids)}..."
                               f"\n  got      {show_tokens(tokens[:8])}...")
        surprises = [row[1] for row in got]
        expect_float(surprises[0], f"{what}: the surprise of row 0")       # the contract: Python floats
        expect_close(surprises, [r.surprise for r in ref.rows], f"{what}: the surprises (nats)", **SURPRISE_TOL)


@pytest.mark.graded(points=4, objective="PPL-3", level="P")
def test_compute_perplexity(student, forbid, trained_model, trained_tokenizer, held_out_texts, grader_seed):
    rng = _rng(grader_seed, "ppl")
    # At least 60 characters (~20 tokens): a fragment of a few tokens can score above the vocabulary size.
    texts = _texts(rng, held_out_texts, 3, trained_tokenizer, trained_model, lo=60, hi=300)
    refs = [ref_score(trained_model, trained_tokenizer, t, top_k=0) for t in texts]
    forbid(*LIBRARY_SCORING)
    fn = student.function("perplexity", "compute_perplexity")
    for text, ref in zip(texts, refs):
        what = f"compute_perplexity(model, tokenizer, {text!r})"
        got = fn(trained_model, trained_tokenizer, text)
        value = expect_float(got, what)
        if abs(value - ref.perplexity) > 1e-3 * value and abs(value - 2 ** ref.mean_nll) < 1e-3 * value:
            raise GradingError(f"{what}: you computed 2 ** (mean surprise in nats); use exp(), or surprises in bits.")
        expect_close(got, ref.perplexity, what, **PPL_TOL)


@pytest.mark.graded(points=4, objective="PPL-4", level="M")
def test_continuation_perplexity(student, forbid, trained_model, trained_tokenizer, held_out_texts, grader_seed):
    rng = _rng(grader_seed, "cont")
    cases = []
    while len(cases) < 3:
        text = random_text(rng, held_out_texts, 80, 300)
        # A continuation of >= 40 characters: a few tokens alone can score above the vocabulary size.
        spaces = [i for i, c in enumerate(text) if c == " " and 20 <= i <= len(text) - 40]
        if not spaces or not _fits(trained_tokenizer, trained_model, text):
            continue
        cut = rng.choice(spaces)
        context, continuation = text[:cut], text[cut:]
        cases.append((context, continuation,
                       ref_perplexity(trained_model, trained_tokenizer, continuation, context=context),
                       ref_perplexity(trained_model, trained_tokenizer, context + continuation)))
    context_length = trained_model.config.max_position_embeddings
    # A boundary that does not fall before a space (inside a word, or right after a space): the
    # contract encodes the two parts separately and joins the ids, which here differs from encoding
    # the whole text at once. The expected value is computed in the test from that definition.
    while len(cases) < 4:
        text = random_text(rng, held_out_texts, 80, 300)
        inside = [i for i in range(20, len(text) - 40) if text[i] != " " and text[i - 1] != " "]
        if not inside:
            continue
        cut = rng.choice(inside)
        context, continuation = text[:cut], text[cut:]
        prefix, cont = trained_tokenizer.encode(context), trained_tokenizer.encode(continuation)
        if prefix + cont == trained_tokenizer.encode(text) or len(prefix + cont) > context_length:
            continue                                # a cut on a token boundary, or too long for the model
        with torch.no_grad():
            logits = trained_model(torch.tensor([prefix + cont]))[0].double()
        nll = -torch.log_softmax(logits[len(prefix) - 1 : -1], dim=-1)[torch.arange(len(cont)), torch.tensor(cont)]
        cases.append((context, continuation, math.exp(float(nll.mean())), None))
    forbid(*LIBRARY_SCORING)
    fn = student.function("perplexity", "continuation_perplexity")
    for context, continuation, expected, whole in cases:
        what = f"continuation_perplexity(model, tokenizer, {context!r}, {continuation!r})"
        inputs = Unchanged("the model's weights", trained_model)
        got = fn(trained_model, trained_tokenizer, context, continuation)
        inputs.check("continuation_perplexity(model, ...)")
        value = expect_float(got, what)
        if whole is not None and abs(value - whole) < 1e-4 * whole and abs(value - expected) > 1e-4 * expected:
            raise GradingError(f"{what}: {value:.6g} is the perplexity of context + continuation together. "
                               f"Score only the continuation's tokens (expected {expected:.6g}).")
        expect_close(got, expected, what, **PPL_TOL)


@pytest.mark.graded(points=4, objective="PPL-5", level="M")
def test_corpus_perplexity(student, forbid, trained_model, trained_tokenizer, held_out_texts, grader_seed):
    rng = _rng(grader_seed, "corpus")
    # Lengths that differ (~20 and ~80 tokens), drawn again until pooling and averaging the perplexities
    # differ by 1% or more, so that the mean of perplexities never passes for the corpus perplexity.
    while True:
        texts = (_texts(rng, held_out_texts, 2, trained_tokenizer, trained_model, lo=40, hi=80)
                 + _texts(rng, held_out_texts, 2, trained_tokenizer, trained_model, lo=220, hi=320))
        rng.shuffle(texts)
        refs = ref_score_many(trained_model, trained_tokenizer, texts, top_k=0)
        expected = math.exp(sum(r.total_nll for r in refs) / sum(r.n_tokens for r in refs))
        mean_of_ppl = sum(r.perplexity for r in refs) / len(refs)
        if abs(mean_of_ppl - expected) > 0.01 * expected:
            break
    forbid(*LIBRARY_SCORING)
    fn = student.function("perplexity", "corpus_perplexity")
    what = f"corpus_perplexity(model, tokenizer, texts) for {len(texts)} texts of " \
           f"{[r.n_tokens + 1 for r in refs]} tokens"
    got = fn(trained_model, trained_tokenizer, list(texts))
    value = expect_float(got, what)
    if abs(value - mean_of_ppl) < 1e-4 * mean_of_ppl and abs(value - expected) > 1e-4 * expected:
        raise GradingError(f"{what}: {value:.6g} is the mean of the per-text perplexities. Pool instead: the total "
                           f"surprise of all scored tokens over their total count, then exp() (expected {expected:.6g}).")
    expect_close(got, expected, what, **PPL_TOL)


@pytest.mark.graded(points=2, objective="PPL-6", level="E")
def test_token_loss_extreme_logits(student, grader_seed):
    fn = student.function("perplexity", "token_loss")
    gen = torch.Generator().manual_seed(grader_seed + 1)
    vocab = int(torch.randint(50, 300, (1,), generator=gen))
    # Logits in the thousands: exp() overflows float32, and the target's probability
    # (about e^-1000) underflows to 0, so log(softmax(...)) gives inf.
    logits = torch.randn(vocab, generator=gen) * 1000.0
    for target in (int(torch.argmin(logits)), int(torch.argmax(logits)), int(torch.randint(0, vocab, (1,), generator=gen))):
        expected = F.cross_entropy(logits.double()[None], torch.tensor([target]))
        what = f"token_loss(logits of magnitude ~1000, shape ({vocab},), target_id={target})"
        got = fn(logits.clone(), target)
        # Float32 log-sum-exp of values ~1e3: absolute rounding ~1e-4, relative ~1e-7.
        expect_close(got, expected, what, atol=1e-3, rtol=1e-5)
