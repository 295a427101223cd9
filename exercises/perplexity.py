"""Unit 2: perplexity. How surprised is the model by a text?

The model's logits at position ``i`` predict token ``i + 1``. The *surprise* (negative
log-likelihood, NLL) of the token that really came next is

    surprise(i + 1) = -log p(ids[i + 1] | ids[0..i])      in nats (natural log)

A text of ``n`` tokens has ``n - 1`` scored tokens: the first token is never scored,
because nothing comes before it to predict it (our tokenizer adds no beginning-of-text
token). The *perplexity* is the exponential of the MEAN surprise over the scored tokens:

    perplexity = exp( (surprise_1 + ... + surprise_{n-1}) / (n - 1) )

A perplexity of 20 means the model was, on average, as unsure as if it picked among 20
equally likely tokens. Lower is better; a model that guesses uniformly scores ``vocab``.

Everything here uses the natural log (``torch.log``, ``math.log``), so surprises are in
*nats*. (Divide by ``log 2`` for bits; perplexity is the same either way only if you
exponentiate with the matching base.)

What you are given: ``model`` (a minillm Transformer: ``model(ids)`` with ids (1, seq) ->
logits (1, seq, vocab)) and ``tokenizer`` (a minillm Tokenizer: ``encode(text)`` -> list of
ids, ``token_text(id)`` -> the token as text). Do not call minillm's own scoring
functions (``minillm.score``, ``minillm.perplexity``, ...): the point is to write them.
"""

from __future__ import annotations

import math

import torch


def token_loss(logits: torch.Tensor, target_id: int) -> float:
    """The surprise ``-log p(target_id)`` of one token under one row of logits, in nats.

    Args:
        logits: float tensor of shape (vocab,): one position's raw scores.
        target_id: int, the id of the token that actually came next (0 <= target_id < vocab).

    Returns:
        A Python float >= 0 (nats).

    Pitfalls:
      * ``torch.log(torch.softmax(logits))`` underflows: a probability of 1e-50 is 0 in
        float32 and its log is -inf. Use the log-sum-exp form instead:
        ``-log p(t) = logsumexp(logits) - logits[t]`` (``torch.logsumexp`` subtracts the
        maximum for you), or ``torch.log_softmax``.
      * natural log (nats), not ``log2``.
    """
    raise NotImplementedError("token_loss: your code here")


def surprise_table(model, tokenizer, text: str) -> list[tuple[str, float]]:
    """The surprise of every scored token of ``text``: one row per token at positions 1..n-1.

    Args:
        model, tokenizer: a minillm model and its tokenizer.
        text: a string that encodes to n >= 2 tokens.

    Returns:
        A list of ``n - 1`` tuples ``(token, surprise)``: ``token`` is
        ``tokenizer.token_text(ids[i])`` and ``surprise`` is ``-log p(ids[i] | ids[0..i-1])``
        in nats (a Python float), for i = 1, ..., n - 1, in order.

    Pitfall (the classic off-by-one): the logits at position ``i - 1`` predict token ``i``.
    Token ``i`` scored with ``logits[i]`` gives plausible-looking but wrong numbers: that
    row was computed after seeing token ``i`` itself.

    Hint: one forward pass for the whole text; ``torch.log_softmax(logits[:-1], dim=-1)``
    then ``.gather`` (or indexing with ``torch.arange``) picks ``ids[1:]``.
    """
    raise NotImplementedError("surprise_table: your code here")


def compute_perplexity(model, tokenizer, text: str) -> float:
    """The perplexity of ``text``: exp(mean surprise over its tokens 1..n-1).

    Args:
        model, tokenizer: as above.
        text: a string that encodes to n >= 2 tokens.

    Returns:
        A Python float >= 1.

    Pitfalls:
      * the first token is not scored: divide by ``n - 1``, not ``n``.
      * exponentiate the MEAN of the surprises (nats) with ``exp``, not the sum, and not
        ``2 **`` (that would need surprises in bits).

    Hint: you wrote ``surprise_table`` already.
    """
    raise NotImplementedError("compute_perplexity: your code here")


def continuation_perplexity(model, tokenizer, context: str, continuation: str) -> float:
    """The perplexity of ``continuation`` when the model has read ``context`` first.

    Only the continuation's tokens are scored; the context only conditions them.

    Args:
        model, tokenizer: as above.
        context: a non-empty string (e.g. "Once upon a time").
        continuation: a non-empty string that follows it (e.g. " there was a cat"; it
            carries its own leading space).

    Returns:
        A Python float >= 1: exp(mean surprise of the continuation's tokens).

    Encode the two parts SEPARATELY and join the id lists:
    ``ids = tokenizer.encode(context) + tokenizer.encode(continuation)``, so that the
    first scored token is exactly the continuation's first token. Every continuation
    token is scored, the first included (the context predicts it). (This is exact for the
    class's byte-level BPE tokenizer when the continuation starts with a space. A
    SentencePiece-style tokenizer such as Llama's would give the continuation encoded alone
    an extra lone "▁" token; ``minillm.score(..., context=...)`` therefore encodes
    context + continuation together and splits them at the character boundary.)

    Pitfall: scoring the context's tokens too gives the perplexity of the whole text, not
    of the continuation; the mean must run over the ``len(continuation ids)`` tokens only.
    """
    raise NotImplementedError("continuation_perplexity: your code here")


def corpus_perplexity(model, tokenizer, texts: list[str]) -> float:
    """The perplexity of a whole corpus of texts, scored one text at a time.

    Each text is scored on its own (its first token unscored, as in compute_perplexity).
    The corpus perplexity pools ALL scored tokens:

        exp( (sum of every scored token's surprise over all texts) / (total scored tokens) )

    Args:
        model, tokenizer: as above.
        texts: a list of strings, each encoding to >= 2 tokens.

    Returns:
        A Python float >= 1.

    Pitfall: the mean of the per-text perplexities is NOT the corpus perplexity: it gives a
    short text as much weight as a long one, and averaging after the exponential overweights
    the hard texts. Add up surprises and token counts first, exponentiate once at the end.
    """
    raise NotImplementedError("corpus_perplexity: your code here")
