"""Mistake: the attention softmax over the QUERIES (dim=-2) instead of the keys (dim=-1).

Each query's attention weights over the keys must sum to 1; normalising each key's column
over the queries instead gives weights that do not, and mixes information across positions.
"""


def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-2)                     # MISTAKE: wrong axis
    return weights @ v
