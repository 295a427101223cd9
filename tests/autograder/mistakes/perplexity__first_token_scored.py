"""Scoring the first token: looping over every position i = 0..n-1 with ``logits[i - 1]``.
For i = 0 Python's index -1 silently picks the LAST row, so the first token gets a
made-up surprise and the mean runs over n tokens instead of n - 1."""


def surprise_table(model, tokenizer, text):
    ids = tokenizer.encode(text)
    with torch.no_grad():
        logits = model(torch.tensor([ids], dtype=torch.long))[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return [(tokenizer.token_text(ids[i]), -float(logprobs[i - 1, ids[i]])) for i in range(len(ids))]
