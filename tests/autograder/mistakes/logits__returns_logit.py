"""Returning the logit instead of the probability: the most likely token is right (softmax
keeps the order) but the number next to it is a raw score, not a probability."""


def most_likely_next_token(model, tokenizer, text):
    logits = next_token_logits(model, tokenizer, text)
    best = int(torch.argmax(logits))
    return tokenizer.token_text(best), float(logits[best])
