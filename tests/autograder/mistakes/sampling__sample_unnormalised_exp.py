"""Mistake: sample builds its probabilities with a bare exp(logits / temperature) (no max subtracted).

Fine for logits of a few units at temperature 1, but large logits at a low temperature overflow
to inf, inf / inf is NaN, and torch.multinomial refuses the row (or draws garbage).
"""


def sample(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    import torch
    if temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    if top_k is not None:
        scaled = top_k_filter(scaled, top_k)
    if top_p is not None:
        scaled = top_p_filter(scaled, top_p)
    weights = torch.exp(scaled)
    probs = weights / weights.sum(dim=-1, keepdim=True)
    return torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]
