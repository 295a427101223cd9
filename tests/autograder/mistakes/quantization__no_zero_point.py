"""No zero point: ``round(w / scale) * scale`` puts the levels at multiples of the step instead
of starting them at the tensor's minimum ``lo``, so the levels do not cover [lo, hi] as the
min-max scheme does (and the codes fall outside 0 .. 2**bits - 1)."""


def quantize_tensor(w, bits):
    if bits == FULL_PRECISION:
        return w
    levels = 2**bits - 1
    x = w.float()
    lo, hi = x.min(), x.max()
    scale = (hi - lo) / levels if hi > lo else torch.ones_like(lo)
    return (torch.round(x / scale) * scale).to(w.dtype)
