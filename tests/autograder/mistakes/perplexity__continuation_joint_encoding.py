"""Mistake: continuation_perplexity encodes context + continuation as ONE string and scores the last
len(encode(continuation)) tokens.

When the continuation starts with a space the two encodings agree on a byte-level BPE, so the usual
examples pass; when the boundary falls inside a word the joint encoding merges across it and the
scored tokens are not the continuation's tokens.
"""


def continuation_perplexity(model, tokenizer, context, continuation):
    import math
    import torch
    ids = torch.tensor([tokenizer.encode(context + continuation)], dtype=torch.long)
    n = len(tokenizer.encode(continuation))
    with torch.no_grad():
        logits = model(ids)[0].float()
    logprobs = torch.log_softmax(logits[-n - 1 : -1], dim=-1)
    nll = -logprobs[torch.arange(n), ids[0, -n:]]
    return math.exp(float(nll.double().mean()))
