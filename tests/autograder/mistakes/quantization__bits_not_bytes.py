"""Bits for bytes: the size is the number of BITS (parameters x bits), 8 times too large."""


def model_size_bytes(num_params, bits):
    return num_params * bits


def quantized_model_size_bytes(model, bits):
    total_bits = 0
    for p in model.parameters():
        if bits == FULL_PRECISION:
            total_bits += 32 * p.numel()
        elif p.dim() == 2:
            total_bits += bits * p.numel() + 2 * 16
        else:
            total_bits += 16 * p.numel()
    return total_bits
