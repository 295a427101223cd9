"""Mistake: quantize_model returns the model it was given at 32 bits ("nothing to quantize").

The docstring promises an unmodified COPY at 32 bits; returning the original means a caller that
changes or quantizes the result further changes the original model too.
"""


def quantize_model(model, bits):
    import copy
    import torch
    if bits >= 32:
        return model
    quantized = copy.deepcopy(model)
    with torch.no_grad():
        for p in quantized.parameters():
            if p.dim() == 2:
                p.copy_(quantize_tensor(p, bits))
    return quantized
