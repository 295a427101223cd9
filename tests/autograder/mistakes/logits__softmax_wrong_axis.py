"""Softmax over the wrong axis: normalising the (n, vocab) logits over positions (dim=0)
instead of over the vocabulary (dim=-1). Every value is still in [0, 1], but each COLUMN
sums to 1 instead of each row, so the rows are not next-token distributions."""


def next_token_distributions(model, tokenizer, text):
    ids = torch.tensor([tokenizer.encode(text)], dtype=torch.long)
    with torch.no_grad():
        logits = model(ids)[0]
    return torch.softmax(logits, dim=0)
