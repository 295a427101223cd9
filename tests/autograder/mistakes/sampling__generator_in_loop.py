"""Mistake: generate creates its seeded generator inside the loop, once per new token.

Every step then draws with the first random number of the same seed: the sequence is still
reproducible, differs from seed to seed and is greedy with top_k=1, so checks of those
properties pass. But it is not the sequence the seed gives with ONE generator used for every
step, which is what the contract asks (and what makes a seed mean the same thing everywhere).
"""


def generate(model, prompt_ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None, seed=None):
    import torch
    ids = list(prompt_ids)
    new_ids = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            logits = model(torch.tensor([ids]))[:, -1]
            next_id = int(sample(logits, temperature, top_k, top_p, generator)[0])
            ids.append(next_id)
            new_ids.append(next_id)
    return new_ids
