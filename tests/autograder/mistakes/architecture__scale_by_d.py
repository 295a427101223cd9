"""Mistake: attention scores divided by head_dim instead of sqrt(head_dim).

The scores become too small, the softmax too flat: every token attends almost uniformly.
"""


def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / q.shape[-1]              # MISTAKE: not sqrt(head_dim)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v
