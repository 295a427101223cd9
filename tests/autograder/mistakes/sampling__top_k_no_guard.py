"""Mistake: top_k_filter calls torch.topk(logits, k) even when k is larger than the vocabulary.

``torch.topk`` raises "selected index k out of range" when k exceeds the size of the last
dimension; the contract says k >= vocab keeps every token. With k exactly equal to the
vocabulary the call works, so only a k LARGER than the vocabulary shows the mistake.
"""


def top_k_filter(logits, k):
    import torch
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))
