"""Mistake: sampling_frequencies seeds torch's GLOBAL generator (torch.manual_seed) and draws from it.

The frequencies are right and reproducible, but the caller's random numbers now depend on this
function: every later torch.rand / dropout / shuffle in the program is reset to the same sequence.
"""


def sampling_frequencies(logits, n_draws, seed, temperature=1.0, top_k=None, top_p=None):
    import torch
    torch.manual_seed(seed)
    vocab = logits.shape[-1]
    ids = sample(logits.reshape(1, vocab).expand(n_draws, vocab), temperature, top_k, top_p, None)
    return torch.bincount(ids, minlength=vocab).float() / n_draws
