"""Unit 4: sampling. Turning the model's logits into a choice of the next token.

At every step a language model gives one *logit* (a raw score) per vocabulary entry for the
next token. Decoding turns those scores into one token id:

1. divide the logits by a *temperature* T and take the softmax: T < 1 sharpens the
   distribution, T > 1 flattens it, T -> 0 approaches "always take the argmax" (greedy);
2. optionally keep only the k most likely tokens (*top-k*) or the smallest set of most
   likely tokens whose probabilities add up to p (*top-p*, nucleus sampling);
3. draw one token from what is left, with a seeded random generator so that results can be
   reproduced;
4. repeat, appending each chosen token to the input (generation).

Shapes: ``vocab`` is the vocabulary size; ``(..., vocab)`` means any number of leading
dimensions (one row of logits per sequence in a batch), the last one being the vocabulary.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")  # the logit of a token that may never be chosen: softmax gives it 0


def softmax_with_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Probabilities ``softmax(logits / temperature)`` along the LAST dimension.

    Args:
        logits: float tensor (..., vocab), float32 or bfloat16 (a model loaded in bfloat16
            gives bfloat16 logits). Entries may be ``-inf`` (forbidden tokens), but at least
            one per row is finite.
        temperature: float > 0.

    Returns:
        float32 tensor (..., vocab), whatever the dtype of ``logits``: every row is >= 0 and
        sums to 1. Compute in float32 (``logits.float()``): bfloat16 keeps only about 3
        significant digits, too few for probabilities.

    Compute it yourself (no ``torch.softmax`` / ``F.softmax``): ``exp`` of each entry divided
    by the row's sum of ``exp``.

    Pitfalls:
      * the temperature divides the LOGITS, before the softmax. Dividing the probabilities
        afterwards gives rows that no longer sum to 1.
      * ``exp(1000.)`` is ``inf``: subtract each row's maximum first (softmax does not change
        when the same number is subtracted from every entry of a row).
      * the vocabulary is the last dimension (``dim=-1``), not the first: a batch of rows
        must not be normalised across rows.
    """
    # BEGIN SOLUTION
    scaled = logits.float() / temperature
    shifted = scaled - scaled.max(dim=-1, keepdim=True).values
    weights = torch.exp(shifted)
    return weights / weights.sum(dim=-1, keepdim=True)
    # END SOLUTION


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row; set every other logit to ``-inf``.

    Args:
        logits: float tensor (..., vocab).
        k: int >= 1. When ``k >= vocab`` nothing is removed.

    Returns:
        A NEW tensor of the same shape and dtype (do not modify ``logits`` in place, and do
        not convert bfloat16 logits to float32: a filter only removes tokens). A logit equal
        to the k-th largest of its row is kept (so ties may keep more than k).

    Hint: ``torch.topk(logits, k, dim=-1).values[..., -1:]`` is the k-th largest logit of
    each row, shaped to broadcast; ``masked_fill`` writes ``-inf`` where a condition holds.
    """
    # BEGIN SOLUTION
    if k >= logits.shape[-1]:
        return logits.clone()
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, NEG_INF)
    # END SOLUTION


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probabilities add
    up to at least ``p``; set every other logit to ``-inf``.

    Sort each row's probabilities from largest to smallest and walk down the list adding
    them up. A token is kept if the tokens BEFORE it (more likely ones) add up to less than
    ``p``; the token whose probability makes the sum reach or cross ``p`` is therefore kept,
    and so is the most likely token always. Example, probabilities [0.5, 0.3, 0.15, 0.05]
    and p = 0.7: sums before each token are [0, 0.5, 0.8, 0.95], so the first two are kept.

    Args:
        logits: float tensor (..., vocab), float32 or bfloat16, already divided by the temperature.
        p: float in (0, 1].

    Returns:
        A new tensor of the same shape and dtype with the dropped tokens' logits at ``-inf``.
        Take the probabilities and their running sum in float32 (your
        ``softmax_with_temperature`` gives float32) even for bfloat16 logits: in bfloat16 the
        sums move in steps of about 0.003, and rounding would decide which tokens are kept.

    Pitfall: dropping where the running sum INCLUDING the token exceeds ``p`` throws away
    the token that crosses ``p``: the kept set then adds up to less than ``p``, and when the
    top token alone is above ``p`` nothing at all is left.

    Ties: when tokens with EQUAL logits sit where the running sum reaches ``p``, which of them
    comes first in the sorted order is arbitrary, so the grader never gives you such a row.
    (``minillm``'s own top_p_filter keeps tied tokens together, as top-k keeps every token equal
    to the k-th; transformers keeps whichever its sort puts first.)

    Hint: ``torch.sort(..., descending=True)`` returns the order; ``cumsum``; then put the
    "drop" flags back into vocabulary order with ``scatter`` (or index with the order).
    """
    # BEGIN SOLUTION
    probs = softmax_with_temperature(logits, 1.0)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs          # probability of the tokens ahead
    drop_sorted = before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)             # back to vocabulary order
    return logits.masked_fill(drop, NEG_INF)
    # END SOLUTION


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Choose one token id per row of ``logits``.

    Steps, in this order:
      1. ``temperature == 0``: greedy, return the argmax of each row (no randomness);
      2. divide the logits by the temperature;
      3. ``top_k`` (if not None): your ``top_k_filter``;
      4. ``top_p`` (if not None): your ``top_p_filter``, on what top-k kept (so with both,
         the nucleus is taken over the k most likely tokens, renormalised);
      5. softmax, then draw one token per row with ``torch.multinomial(probs, 1,
         generator=generator)``.

    Args:
        logits: float tensor (batch, vocab), float32 or bfloat16.
        temperature: float >= 0.
        top_k, top_p: optional filters (None = keep every token).
        generator: a ``torch.Generator`` (seeded by the caller) or None.

    Returns:
        Long tensor (batch,) of token ids.

    Pitfall: draw with the ``generator`` you were given. Seeding the global generator
    (``torch.manual_seed``) inside this function, or ignoring ``generator``, makes runs
    irreproducible or always identical.
    """
    # BEGIN SOLUTION
    if temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    if top_k is not None:
        scaled = top_k_filter(scaled, top_k)
    if top_p is not None:
        scaled = top_p_filter(scaled, top_p)
    probs = softmax_with_temperature(scaled, 1.0)
    return torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]
    # END SOLUTION


def sampling_frequencies(logits: torch.Tensor, n_draws: int, seed: int, temperature: float = 1.0,
                         top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Draw ``n_draws`` tokens from ONE row of logits and return how often each id came up.

    Make a generator with ``torch.Generator().manual_seed(seed)``, draw ``n_draws`` tokens
    with your ``sample`` (all with that one generator), and count.

    Args:
        logits: float tensor (vocab,), one row.
        n_draws: int >= 1.
        seed: int; the same seed must give exactly the same frequencies.
        temperature, top_k, top_p: as in ``sample`` (temperature > 0 here).

    Returns:
        Float tensor (vocab,): the fraction of draws that gave each id (sums to 1). With many
        draws it approaches the sampling distribution: the softmax of the filtered,
        temperature-scaled logits.

    Hint: ``sample`` takes a batch; ``logits.expand(n_draws, -1)`` is n_draws copies of the
    row without copying memory. ``torch.bincount(ids, minlength=vocab)`` counts.
    """
    # BEGIN SOLUTION
    generator = torch.Generator().manual_seed(seed)
    vocab = logits.shape[-1]
    ids = sample(logits.reshape(1, vocab).expand(n_draws, vocab), temperature, top_k, top_p, generator)
    return torch.bincount(ids, minlength=vocab).float() / n_draws
    # END SOLUTION


@torch.no_grad()
def generate(model: torch.nn.Module, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None) -> list[int]:
    """Continue ``prompt_ids`` by ``max_new_tokens`` tokens; return only the new ids.

    Loop ``max_new_tokens`` times: run the model on all the ids so far (a (1, seq) long
    tensor), take the logits of the LAST position (the prediction for the next token), choose
    a token with your ``sample``, append it. Do not stop early (no end-of-text handling).

    Args:
        model: a minillm ``Transformer``; ``model(ids)`` gives logits (batch, seq, vocab).
        prompt_ids: list of int, at least one id.
        max_new_tokens: int >= 0.
        temperature: 0 means greedy decoding (always the most likely token): deterministic.
        top_k, top_p: as in ``sample``.
        seed: with sampling, create ONE ``torch.Generator().manual_seed(seed)`` before the loop
            and use it for every step, so that the same seed gives the same tokens (the same
            ones as any other generate that follows these steps).

    Returns:
        list of int, length ``max_new_tokens``.

    Pitfall: ``logits[0, 0]`` is the prediction after the FIRST token; the next token is
    predicted by ``logits[0, -1]``. Re-creating the generator inside the loop repeats the
    same random numbers at every step.
    """
    # BEGIN SOLUTION
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    ids = list(prompt_ids)
    new_ids = []
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids]))[:, -1]                  # (1, vocab)
        next_id = int(sample(logits, temperature, top_k, top_p, generator)[0])
        ids.append(next_id)
        new_ids.append(next_id)
    return new_ids
    # END SOLUTION
