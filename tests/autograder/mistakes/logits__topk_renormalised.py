"""Softmax after top-k: keeping the k largest logits and taking the softmax of those alone,
so the table's probabilities sum to 1 and every one of them is overstated."""


def predict_next_tokens(model, tokenizer, text, k):
    logits = next_token_logits(model, tokenizer, text)
    top = torch.topk(logits, k)
    probs = torch.softmax(top.values, dim=-1)
    return [(tokenizer.token_text(i), p) for i, p in zip(top.indices.tolist(), probs.tolist())]
