"""Mistake: top-k keeps exactly k tokens (the indices torch.topk returns), dropping ties.

The contract keeps every logit equal to the k-th largest of its row, so a tie at the k-th place
keeps more than k tokens. Scattering the topk indices into a -inf tensor keeps exactly k and drops
an arbitrary one of the tied tokens.
"""


def top_k_filter(logits, k):
    import torch
    if k >= logits.shape[-1]:
        return logits.clone()
    idx = torch.topk(logits, k, dim=-1).indices
    out = torch.full_like(logits, float("-inf"))
    return out.scatter(-1, idx, logits.gather(-1, idx))
