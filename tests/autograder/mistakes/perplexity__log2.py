"""Log base 2 instead of e: surprises computed with log2 (bits), then exponentiated with exp
as if they were nats. The loss is off by a factor 1/ln 2 and the perplexity is wrong."""


def token_loss(logits, target_id):
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    return float(-logprobs[target_id] / math.log(2))


def surprise_table(model, tokenizer, text):
    ids = tokenizer.encode(text)
    with torch.no_grad():
        logits = model(torch.tensor([ids], dtype=torch.long))[0].float()
    return [(tokenizer.token_text(ids[i]), token_loss(logits[i - 1], ids[i])) for i in range(1, len(ids))]
