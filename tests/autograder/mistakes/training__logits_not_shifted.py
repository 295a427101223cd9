"""Mistake: next-token loss without the shift.

Scoring ``logits[:, i]`` against ``input_ids[:, i]`` (the token the model has just SEEN)
instead of ``input_ids[:, i + 1]`` trains the model to copy its input: the loss drops
fast and the model learns nothing about what comes next.
"""


def next_token_loss(logits, input_ids):
    vocab = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, vocab).float(), input_ids.reshape(-1))   # MISTAKE: no shift
