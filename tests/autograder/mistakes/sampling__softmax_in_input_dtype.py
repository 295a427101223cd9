"""Mistake: softmax_with_temperature computes in the dtype of the logits it is given.

With float32 logits nothing shows. With bfloat16 logits (what a model loaded in bfloat16 gives)
every exp, the row sum and the division are rounded to about 3 significant digits, and the
probabilities come back as bfloat16: rows no longer sum to 1 to float32 precision, and a
probability of 0.1234 reads 0.1235. The contract asks for float32 probabilities whatever the
floating dtype of the logits.
"""


def softmax_with_temperature(logits, temperature):
    import torch
    scaled = logits / temperature
    shifted = scaled - scaled.max(dim=-1, keepdim=True).values
    weights = torch.exp(shifted)
    return weights / weights.sum(dim=-1, keepdim=True)
