"""Mistake: the softmax subtracts the largest logit of the WHOLE tensor instead of each row's.

Stable for one row, but in a batch whose rows have very different scales, every exp() of a
row far below the global maximum underflows to 0, and that row becomes 0/0 = NaN.
"""


def softmax_with_temperature(logits, temperature):
    import torch
    scaled = logits.float() / temperature
    weights = torch.exp(scaled - scaled.max())
    return weights / weights.sum(dim=-1, keepdim=True)
