"""Logits not shifted by one (the classic off-by-one): scoring token i with ``logits[i]``,
the row computed AFTER seeing token i, instead of ``logits[i - 1]``, the row that predicts it."""


def surprise_table(model, tokenizer, text):
    ids = tokenizer.encode(text)
    input_ids = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        logits = model(input_ids)[0].float()
    logprobs = torch.log_softmax(logits[1:], dim=-1)        # should be logits[:-1]
    targets = input_ids[0, 1:]
    surprise = -logprobs[torch.arange(len(targets)), targets]
    return [(tokenizer.token_text(t), s) for t, s in zip(targets.tolist(), surprise.tolist())]
