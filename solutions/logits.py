"""Unit 1: logits. What a language model actually outputs.

Give a model a text and it answers, for EVERY position of the text, one *logit* (a raw,
unnormalised score) per vocabulary entry: how much it favours each token as the NEXT one.

    text --tokenizer.encode--> ids (n,) --model--> logits (1, n, vocab)

``logits[0, i]`` scores the token that comes after ``ids[i]``; the last row,
``logits[0, -1]``, is the model's prediction for the token after the whole text. The
*softmax* turns a row of logits into probabilities: ``exp(logit) / sum(exp(logits))``,
all >= 0 and summing to 1 over the vocabulary.

What you are given (the grader passes in its own):

* ``model``: a ``minillm`` Transformer. ``model(ids)`` takes a LongTensor of token ids of
  shape (batch, seq) and returns float logits of shape (batch, seq, vocab).
* ``tokenizer``: a ``minillm`` Tokenizer. ``tokenizer.encode(text)`` -> list of int ids;
  ``tokenizer.token_text(id)`` -> the token as text, with its leading space (" cat");
  ``tokenizer.vocab_size`` -> number of tokens.

Work in plain PyTorch. Wrap model calls in ``with torch.no_grad():`` (we only read the
model; no gradients are needed).
"""

from __future__ import annotations

import torch


def next_token_logits(model, tokenizer, text: str) -> torch.Tensor:
    """The model's logits for the token that follows ``text``.

    Args:
        model: a minillm Transformer (call it on a (1, seq) LongTensor of ids).
        tokenizer: its minillm Tokenizer.
        text: a non-empty string.

    Returns:
        A float tensor of shape (vocab,): the LAST position's row of the model's output.
        It must not require gradients (compute it under ``torch.no_grad()``).

    Pitfalls:
      * the model wants a batch: turn the list of ids into a tensor of shape (1, seq),
        e.g. ``torch.tensor([ids])``, and remove the batch dimension from the result.
      * the prediction for the NEXT token is at the last position (index -1), not the first.

    Hint: ``model(input_ids)[0, -1]``.
    """
    # BEGIN SOLUTION
    ids = torch.tensor([tokenizer.encode(text)], dtype=torch.long)   # (1, seq)
    with torch.no_grad():
        logits = model(ids)                                          # (1, seq, vocab)
    return logits[0, -1]                                             # (vocab,)
    # END SOLUTION


def next_token_distributions(model, tokenizer, text: str) -> torch.Tensor:
    """The model's next-token probabilities after EVERY prefix of ``text``.

    Row ``i`` is the distribution of the token that follows tokens ``0..i`` of the text.

    Args:
        model, tokenizer: as above.
        text: a non-empty string of ``n`` tokens.

    Returns:
        A float tensor of shape (n, vocab): every row is >= 0 and sums to 1.

    Pitfall: the softmax must normalise over the VOCABULARY (the last dimension,
    ``dim=-1``). Normalising over positions (``dim=0``) also gives numbers between 0 and
    1, but each column sums to 1 instead of each row: they are not next-token probabilities.

    Hint: ``torch.softmax(logits, dim=-1)`` on the (n, vocab) logits.
    """
    # BEGIN SOLUTION
    ids = torch.tensor([tokenizer.encode(text)], dtype=torch.long)
    with torch.no_grad():
        logits = model(ids)[0]                                       # (n, vocab)
    return torch.softmax(logits.float(), dim=-1)
    # END SOLUTION


def most_likely_next_token(model, tokenizer, text: str) -> tuple[str, float]:
    """The single most likely next token after ``text``, and its probability.

    Args:
        model, tokenizer: as above.
        text: a non-empty string.

    Returns:
        ``(token, probability)``: the token as text (``tokenizer.token_text(id)``, so
        " the" keeps its leading space) and its probability, a Python float in (0, 1].

    Pitfalls:
      * return the PROBABILITY (after the softmax), not the logit.
      * the argmax of the logits and of the probabilities is the same token: the softmax
        keeps the order.

    Hint: ``torch.argmax`` gives the id; ``.item()`` turns a 0-d tensor into a float/int.
    """
    # BEGIN SOLUTION
    probs = torch.softmax(next_token_logits(model, tokenizer, text).float(), dim=-1)
    best = int(torch.argmax(probs))
    return tokenizer.token_text(best), float(probs[best])
    # END SOLUTION


def predict_next_tokens(model, tokenizer, text: str, k: int) -> list[tuple[str, float]]:
    """The ``k`` most likely next tokens after ``text``: a top-k table.

    Args:
        model, tokenizer: as above.
        text: a non-empty string.
        k: how many rows, 1 <= k <= vocab.

    Returns:
        A list of ``k`` tuples ``(token, probability)``, most likely first: token as text
        (``tokenizer.token_text(id)``), probability a Python float. The probabilities are
        those of the full softmax over the whole vocabulary (do not re-normalise the k).

    Pitfall: ``torch.topk`` on the logits gives the right ids, but the softmax must run on
    ALL the logits before you keep k of them; a softmax of the k kept logits alone makes
    them sum to 1 and overstates every probability.

    Hint: ``torch.topk(probs, k)`` returns ``.values`` and ``.indices``, sorted largest first.
    """
    # BEGIN SOLUTION
    probs = torch.softmax(next_token_logits(model, tokenizer, text).float(), dim=-1)
    top = torch.topk(probs, k)
    return [(tokenizer.token_text(i), p) for i, p in zip(top.indices.tolist(), top.values.tolist())]
    # END SOLUTION
