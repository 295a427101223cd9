"""Quantizing the original model: ``quantized = model`` is a second name for the same object,
not a copy, so the caller's model is overwritten with its quantized weights."""


def quantize_model(model, bits):
    quantized = model
    with torch.no_grad():
        for p in quantized.parameters():
            if p.dim() == 2:
                p.copy_(quantize_tensor(p, bits))
    return quantized
