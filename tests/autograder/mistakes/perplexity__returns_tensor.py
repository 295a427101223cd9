"""Mistake: compute_perplexity returns a 0-d tensor (torch.exp of the mean) instead of a Python float.

The number is right, so printing it looks almost fine (``tensor(41.2)``), but the contract says a
Python float: a tensor breaks json.dump, f-string formats such as ``:.2f`` on some versions, and
keeps the computation's device and graph alive.
"""


def compute_perplexity(model, tokenizer, text):
    import torch
    surprises = torch.tensor([s for _, s in surprise_table(model, tokenizer, text)], dtype=torch.float64)
    return torch.exp(surprises.mean())
