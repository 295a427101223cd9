"""Mistake: softmax_with_temperature divides the caller's logits in place.

``logits.float()`` on a float32 tensor is the same tensor, not a copy, so ``scaled /= temperature``
rewrites the caller's logits: the result is right, but the next use of those logits is not.
"""


def softmax_with_temperature(logits, temperature):
    import torch
    scaled = logits.float()
    scaled /= temperature
    shifted = scaled - scaled.max(dim=-1, keepdim=True).values
    weights = torch.exp(shifted)
    return weights / weights.sum(dim=-1, keepdim=True)
