"""Mistake: the top-k table shows tokenizer.decode([id]) instead of tokenizer.token_text(id).

On a byte-level BPE tokenizer (GPT-2, Qwen2) the two agree, so the mistake passes there; a
SentencePiece-style decoder (Llama, stories260K) strips the space at the start of a text, so
decoding one word-initial token alone turns " the" into "the".
"""


def predict_next_tokens(model, tokenizer, text, k):
    import torch
    probs = torch.softmax(next_token_logits(model, tokenizer, text).float(), dim=-1)
    top = torch.topk(probs, k)
    return [(tokenizer.decode([i]), p) for i, p in zip(top.indices.tolist(), top.values.tolist())]
