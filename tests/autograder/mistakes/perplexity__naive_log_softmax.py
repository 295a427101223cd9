"""log(softmax(x)) computed naively: exp() of large logits overflows to inf and a tiny
probability underflows to 0, so the loss becomes nan or inf for extreme logits."""


def token_loss(logits, target_id):
    probs = torch.exp(logits) / torch.exp(logits).sum()
    return float(-torch.log(probs[target_id]))
