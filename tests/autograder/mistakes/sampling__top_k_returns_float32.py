"""Mistake: top_k_filter turns the logits into float32 before filtering them.

The kept logits have the right values, but bfloat16 logits come back as a float32 tensor:
twice the memory, and a dtype the caller did not ask for. A filter only removes tokens; the
contract asks for a tensor of the same shape AND dtype as the logits.
"""


def top_k_filter(logits, k):
    import torch
    logits = logits.float()
    if k >= logits.shape[-1]:
        return logits.clone()
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))
