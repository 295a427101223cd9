"""Reading the wrong position: taking ``logits[0, 0]`` (the prediction after the FIRST token)
instead of ``logits[0, -1]`` (the prediction after the whole text)."""


def next_token_logits(model, tokenizer, text):
    ids = torch.tensor([tokenizer.encode(text)], dtype=torch.long)
    with torch.no_grad():
        return model(ids)[0, 0]
