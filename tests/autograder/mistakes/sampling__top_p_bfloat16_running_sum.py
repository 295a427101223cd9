"""Mistake: top_p_filter takes the softmax and the running sum in the dtype of the logits.

``logits.softmax(-1)`` on bfloat16 logits gives bfloat16 probabilities, and their running sum
is rounded to steps of about 0.002-0.004 near 0.5-1: whether a token's "sum before it" is below
p is then decided by rounding, and the nucleus gains or loses a token. The contract sums the
probabilities in float32 (or better).
"""


def top_p_filter(logits, p):
    import torch
    probs = logits.softmax(dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs
    drop_sorted = before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))
