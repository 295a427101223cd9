"""The fast CPU path (opt-in): linear weights in oneDNN's blocked layout, fused attention.

Generating one token reads every weight of the model once, so decoding speed is set by how
fast the matrix-vector products stream weights from memory. On a 2-core AVX-512 machine,
``F.linear`` with a one-row input streams bfloat16 weights at ~18 GB/s of the ~34 GB/s the
memory gives; the same product on a weight reordered once into oneDNN's blocked layout
streams at ~31 GB/s, and larger inputs gain too. The math is the same (bfloat16 results are
bit-identical; float32 ones differ only in summation order, ~1e-6 relative).

The price: a packed weight is an opaque tensor (it cannot be printed, indexed or trained),
so this is opt-in, for inference: ``load_model(..., packed=True)`` or ``pack_linears(model)``.
A tied LM head is left alone: packing it would need a second copy of the embedding matrix.
Where oneDNN cannot pack (no mkldnn build, float16 without AVX512-FP16, a GPU), the model is
left unchanged and ``pack_linears`` returns 0.

``use_fused_attention`` replaces the explicit attention of ``minillm.model`` by PyTorch's
``scaled_dot_product_attention``: the same softmax(q k^T / sqrt(d)) v in one kernel that never
writes out the (seq x seq) scores. Batches of 10 x 200 tokens run ~7% faster in bfloat16; the
results differ from the explicit version only by float rounding (~1e-5 on logits in float32),
which is why the readable path, bit-identical to transformers' eager attention, stays the default.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model import Transformer


class PackedLinear(nn.Module):
    """``y = x W^T + b`` like nn.Linear, with W held in oneDNN's layout for one-row inputs."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # batch_size=1: the layout is tuned for decoding's one-token products.
        packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1)
        self.weight = nn.Parameter(packed, requires_grad=False)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in_features) -> (..., out_features)
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


def can_pack(dtype: torch.dtype, device: torch.device | str = "cpu") -> bool:
    """Whether this machine's PyTorch can pack ``dtype`` weights on ``device``."""
    if torch.device(device).type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:  # float16 needs AVX512-FP16 or AVX-NE-CONVERT; ask oneDNN rather than guess
        probe = nn.Linear(16, 16, bias=False).to(dtype)
        PackedLinear(probe)(torch.ones(1, 16, dtype=dtype))
    except (RuntimeError, AttributeError):
        return False
    return True


@torch.no_grad()
def pack_linears(model: Transformer) -> int:
    """Replace the model's nn.Linear layers by PackedLinear, in place; returns how many."""
    weight = model.embed_tokens.weight
    if not can_pack(weight.dtype, weight.device):
        return 0
    tied_head = model.lm_head if model.config.tie_word_embeddings else None
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear) and m is not tied_head]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, PackedLinear(linear))
    return len(targets)


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """minillm.model.attention in one fused kernel; same arguments and shapes:
    (batch, n_heads, seq, head_dim) -> (batch, n_heads, seq, head_dim), mask True = may look."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def use_fused_attention(model: Transformer) -> None:
    """Make every attention layer of ``model`` use :func:`fused_attention`, in place."""
    for block in model.layers:
        block.self_attn.attend = fused_attention
