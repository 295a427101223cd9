"""Mistake: quantize_tensor rounds the caller's tensor in place.

``x = w.float()`` is NOT a copy when w is already float32: it returns w itself, so the in-place
``sub_``/``div_``/``round_`` overwrite the tensor the caller passed in. The returned values are
right; the caller's weights are gone.
"""


def quantize_tensor(w, bits):
    import torch
    if bits == FULL_PRECISION:
        return w
    levels = 2**bits - 1
    x = w.float()
    lo, hi = x.min().item(), x.max().item()
    scale = (hi - lo) / levels if hi > lo else 1.0
    x.sub_(lo).div_(scale).round_().clamp_(0, levels).mul_(scale).add_(lo)
    return x.to(w.dtype)
