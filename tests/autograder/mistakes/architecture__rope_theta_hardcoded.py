"""Mistake: RoPE with the base hard-coded to 10000 instead of the config's rope_theta.

10000 is the original paper's value and many models use it, so the mistake only shows on a
model whose rope_theta differs (Qwen2 uses 1e6, Llama 3 5e5).
"""


def rope_cos_sin(positions, head_dim, theta):
    import torch
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = positions.float()[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()
