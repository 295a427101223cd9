"""Applying the temperature after the softmax: ``softmax(logits) / T`` instead of
``softmax(logits / T)``. The rows no longer sum to 1, and once a sampler normalises them
again (torch.multinomial does) the temperature has no effect at all."""


def softmax_with_temperature(logits, temperature):
    shifted = logits.float() - logits.float().max(dim=-1, keepdim=True).values
    weights = torch.exp(shifted)
    return weights / weights.sum(dim=-1, keepdim=True) / temperature


def sample(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits.float()
    if top_k is not None:
        scaled = top_k_filter(scaled, top_k)
    if top_p is not None:
        scaled = top_p_filter(scaled, top_p)
    probs = softmax_with_temperature(scaled, temperature)
    return torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]
