"""Mistake: most_likely_next_token returns the probability as a 0-d tensor (``probs[best]``), not a
Python float.

The number is right and prints almost the same (``tensor(0.0312)``), but the contract says a Python
float: a tensor does not go into json.dump, compares oddly in ``==`` on lists, and drags its dtype along.
"""


def most_likely_next_token(model, tokenizer, text):
    import torch
    probs = torch.softmax(next_token_logits(model, tokenizer, text).float(), dim=-1)
    best = int(torch.argmax(probs))
    return tokenizer.token_text(best), probs[best]
