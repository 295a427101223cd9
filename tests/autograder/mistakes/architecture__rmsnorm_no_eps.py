"""Mistake: RMSNorm without eps.

``x / sqrt(mean(x**2))`` looks right for ordinary activations, but eps is part of the
model: for small activations (mean square comparable to eps) the result is far off, and
for an all-zero vector it divides by zero.
"""


def rms_norm(x, weight, eps):
    return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True)) * weight
