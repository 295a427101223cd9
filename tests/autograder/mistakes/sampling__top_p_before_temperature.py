"""Mistake: sample filters the nucleus (top-p) on the raw logits and applies the temperature after.

Top-p depends on the shape of the distribution, and the temperature changes that shape, so the
nucleus must be taken on logits / temperature. Filtering first keeps a larger nucleus below
temperature 1 and a smaller one above it; at temperatures near 1 the two often coincide.
"""


def sample(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    import torch
    if temperature == 0:
        return logits.argmax(dim=-1)
    x = logits.float()
    if top_k is not None:
        x = top_k_filter(x, top_k)
    if top_p is not None:
        x = top_p_filter(x, top_p)
    probs = softmax_with_temperature(x, temperature)
    return torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]
