"""Scoring the context too: the continuation's perplexity computed over every token of
context + continuation, so the context's tokens leak into the mean."""


def continuation_perplexity(model, tokenizer, context, continuation):
    ids = tokenizer.encode(context) + tokenizer.encode(continuation)
    with torch.no_grad():
        logits = model(torch.tensor([ids], dtype=torch.long))[0].float()
    logprobs = torch.log_softmax(logits[:-1], dim=-1)
    targets = torch.tensor(ids[1:])
    nll = -logprobs[torch.arange(len(targets)), targets]
    return math.exp(float(nll.mean()))
