"""Mistake: quantized_model_size_bytes rounds each tensor up to whole bytes, instead of the total once.

A file packs the codes of all tensors one after another, so only the end of the file is padded to a
byte. Rounding per tensor adds up to a byte per matrix whose codes do not fill their last byte; the
docstring says: the total number of bits, divided by 8, rounded up once at the end.
"""


def quantized_model_size_bytes(model, bits):
    import math
    total = 0
    for p in model.parameters():
        if bits == FULL_PRECISION:
            total += math.ceil(32 * p.numel() / 8)
        elif p.dim() == 2:
            total += math.ceil((bits * p.numel() + 2 * 16) / 8)
        else:
            total += math.ceil(16 * p.numel() / 8)
    return total
