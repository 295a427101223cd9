"""Top-p that drops the token crossing p: a token is removed when the running sum INCLUDING it
exceeds p, so the kept set adds up to less than p (and is empty when the top token alone is
above p)."""


def top_p_filter(logits, p):
    probs = softmax_with_temperature(logits, 1.0)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    drop_sorted = sorted_probs.cumsum(dim=-1) > p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)
