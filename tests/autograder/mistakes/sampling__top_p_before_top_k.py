"""Mistake: sample applies the nucleus (top-p) before top-k.

The contract's order is temperature, then top-k, then top-p: the nucleus is taken over the k
tokens top-k kept, renormalised. Taking the nucleus over the whole vocabulary first and then
keeping k of it can keep more tokens (renormalised over k tokens, the running sum reaches p
sooner). When either filter is used alone the order does not matter.
"""


def sample(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    import torch
    if temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    if top_p is not None:
        scaled = top_p_filter(scaled, top_p)
    if top_k is not None:
        scaled = top_k_filter(scaled, top_k)
    probs = softmax_with_temperature(scaled, 1.0)
    return torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]
