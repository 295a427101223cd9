"""Normalising over the wrong axis: a softmax over dim 0 (across the rows of a batch) instead of
the last dimension (the vocabulary). A single 1-D row looks right; a batch does not."""


def softmax_with_temperature(logits, temperature):
    scaled = logits.float() / temperature
    shifted = scaled - scaled.max(dim=0, keepdim=True).values
    weights = torch.exp(shifted)
    return weights / weights.sum(dim=0, keepdim=True)
