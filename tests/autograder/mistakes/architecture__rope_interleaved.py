"""Mistake: RoPE in the interleaved layout (the original paper / Meta's Llama code).

Rotating adjacent channel pairs (x0, x1), (x2, x3), ... with angles written
[a0, a0, a1, a1, ...] is a valid RoPE, but not the one Hugging Face Qwen/Llama checkpoints
were trained with: they pair channel i with channel i + head_dim/2 (half-split layout).
"""


def rope_cos_sin(positions, head_dim, theta):
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    angles = torch.repeat_interleave(angles, 2, dim=-1)         # MISTAKE: [a0, a0, a1, a1, ...]
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack([-x_odd, x_even], dim=-1).flatten(-2)  # MISTAKE: rotates adjacent pairs
    return x * cos + rotated * sin
