"""Mistake: rms_norm normalises its input in place (``x *= ...``) before applying the gain.

The returned tensor is right, but the caller's x is overwritten: in a decoder block x is the
residual stream, which the block adds back after attention, so the in-place write corrupts it.
"""


def rms_norm(x, weight, eps):
    import torch
    x *= torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)
    return x * weight
