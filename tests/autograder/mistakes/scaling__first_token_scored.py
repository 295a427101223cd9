"""Counting the first token: dividing the NLL by all n tokens of the story, although the first
one has nothing before it and was never scored (n - 1 predictions)."""


def score_story(model, tokenizer, text):
    ids = torch.tensor([tokenizer.encode(text)])
    with torch.no_grad():
        logits = model(ids)[0, :-1].float()
    nll = F.cross_entropy(logits, ids[0, 1:], reduction="sum")
    return float(nll), ids.shape[1]
