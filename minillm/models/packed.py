"""The fast CPU path (opt-in): linear weights in oneDNN's blocked layout, leaner attention.

Generating one token reads every weight of the model once, so decoding speed is set by how
fast the matrix-vector products stream weights from memory. On a 2-core AVX-512 machine,
``F.linear`` with a one-row input streams bfloat16 weights at ~18 GB/s of the ~34 GB/s the
memory gives; the same product on a weight reordered once into oneDNN's blocked layout
streams at ~31 GB/s, and larger inputs gain a few percent too. The MLP also lets oneDNN do its
elementwise work while each product's result is still in cache: silu on gate(x), and the
product with up(x), instead of two more passes over (seq x intermediate) tensors. The math is
the same; results differ from the readable path only by rounding (bfloat16 intermediates are
rounded once instead of twice; float32 ones differ in summation order, ~1e-6 relative).

The price: a packed weight is an opaque tensor (it cannot be printed, indexed or trained),
so this is opt-in, for inference: ``load_model(..., packed=True)`` or ``pack_linears(model)``.
The LM head is not packed (a tied head would need a second copy of the embedding matrix, and
scoring reads the head's weight a slice of the vocabulary at a time). In float32 its weight is
instead stored column-major: the same (vocab, hidden) tensor, strides (1, vocab), so that the
one-row product streams it as the contiguous (hidden, vocab) matrix it is, in ~7.8 ms instead
of ~12 ms for GPT-2's 50257 x 768 head on this machine (in bfloat16 the row-major layout is the
faster one and stays). A tied embedding shares the re-laid weight: looking up a few rows of it
costs ~1 ms for 256 tokens.
Where oneDNN cannot pack (no mkldnn build, float16 without AVX512-FP16, a GPU), the model is
left unchanged and ``pack_linears`` returns 0.

GPT-2 (``minillm.models.gpt2``) gets the same: packed linear layers, its MLP's GELU (tanh
approximation) done inside the first product, and the leaner attention.

``use_grouped_attention`` replaces the attention of ``minillm.models.qwen2`` (and ``minillm.models.gpt2``) by the same math without
copying every key/value head for each query head of its group: the query heads that share a
key/value head are stacked into one matrix product. PyTorch's fused ``scaled_dot_product_attention``
was measured too: on CPU, for a few hundred tokens, it is about twice as slow as this.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from minillm.models.gpt2 import GPT2
from minillm.models.gpt2 import MLP as GELUMLP
from minillm.models.qwen2 import MLP, Transformer


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

    def silu(self, x: torch.Tensor) -> torch.Tensor:
        """``F.silu(self(x))`` in one call: (..., in_features) -> (..., out_features)."""
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "swish", [], "")

    def gelu(self, x: torch.Tensor) -> torch.Tensor:
        """``minillm.models.gpt2.gelu_new(self(x))`` (GELU, tanh approximation) in one call."""
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "gelu", [], "tanh")

    def times(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """``self(x) * other`` in one call; ``other`` has the output's shape."""
        return torch.ops.mkldnn._linear_pointwise.binary(x, other, self.weight, self.bias, "mul")


class PackedMLP(nn.Module):
    """minillm.models.qwen2.MLP, down(silu(gate(x)) * up(x)), on packed weights with the silu and the
    product done inside the matrix products."""

    def __init__(self, mlp: MLP):
        super().__init__()
        self.gate_proj = PackedLinear(mlp.gate_proj)
        self.up_proj = PackedLinear(mlp.up_proj)
        self.down_proj = PackedLinear(mlp.down_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, seq, hidden) -> same
        return self.down_proj(self.up_proj.times(x, self.gate_proj.silu(x)))


class PackedGELUMLP(nn.Module):
    """minillm.models.gpt2.MLP, c_proj(gelu(c_fc(x))), on packed weights with the GELU done inside c_fc's product."""

    def __init__(self, mlp: GELUMLP):
        super().__init__()
        self.c_fc = PackedLinear(mlp.c_fc)
        self.c_proj = PackedLinear(mlp.c_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, seq, n_embd) -> same
        return self.c_proj(self.c_fc.gelu(x))


def can_pack(dtype: torch.dtype, device: torch.device | str = "cpu") -> bool:
    """Whether this machine's PyTorch can pack ``dtype`` weights on ``device``."""
    if torch.device(device).type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:  # float16 needs AVX512-FP16 or AVX-NE-CONVERT; ask oneDNN rather than guess
        probe = PackedLinear(nn.Linear(16, 16, bias=False).to(dtype))
        x = torch.ones(1, 16, dtype=dtype)
        probe.times(x, probe.silu(x)) + probe.gelu(x)
    except (RuntimeError, AttributeError):
        return False
    return True


@torch.no_grad()
def pack_linears(model: Transformer | GPT2) -> int:
    """Replace the model's MLPs by PackedMLP (SwiGLU) or PackedGELUMLP (GPT-2) and its other
    nn.Linear layers but the LM head by PackedLinear, in place; returns how many linear layers
    were packed. A float32 LM head is laid out column-major (:func:`head_column_major`)."""
    weight = model.embed_tokens.weight
    if not can_pack(weight.dtype, weight.device):
        return 0
    fused = 0
    for block in model.layers:
        if isinstance(block.mlp, MLP):
            block.mlp, fused = PackedMLP(block.mlp), fused + 3
        elif isinstance(block.mlp, GELUMLP):
            block.mlp, fused = PackedGELUMLP(block.mlp), fused + 2
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m is not model.lm_head]
    for name in names:  # one at a time, so that each plain weight is freed before the next is packed
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, PackedLinear(getattr(parent, child)))
    if weight.dtype == torch.float32:
        head_column_major(model)
    return len(names) + fused


@torch.no_grad()
def head_column_major(model: Transformer | GPT2) -> None:
    """Store the LM head's (vocab, hidden) weight column-major, in place, with its values and shape
    unchanged; a tied embedding gets the same tensor, so the model still holds one copy."""
    old = model.lm_head.weight
    new = nn.Parameter(old.detach().t().contiguous().t(), requires_grad=old.requires_grad)  # strides (1, vocab)
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.weight is old:
            module.weight = new
    model.lm_head.weight = new


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """minillm.models.qwen2.attention without repeating the keys and values; same arguments and shapes:
    q (batch, n_heads, seq, head_dim), k and v (batch, n_kv_heads, past + seq, head_dim),
    mask (batch or 1, 1, seq, past + seq), True = may look -> (batch, n_heads, seq, head_dim).

    Query heads 0..n_rep-1 share key/value head 0, and so on: stacked, each group's queries
    meet their keys in one product, (n_rep * seq, head_dim) x (head_dim, past + seq). Cheaper
    on the (seq x keys) scores than the readable version: the 1/sqrt(head_dim) goes on the
    queries, the mask is added as 0 / -inf, and the softmax runs in the model's dtype (PyTorch
    computes a bfloat16 softmax in float32 inside and rounds once, at the end).
    """
    batch, n_heads, seq, head_dim = q.shape
    n_kv_heads, keys = k.shape[1], k.shape[2]
    n_rep = n_heads // n_kv_heads
    q = (q * head_dim**-0.5).reshape(batch, n_kv_heads, n_rep * seq, head_dim)
    scores = (q @ k.transpose(-2, -1)).view(batch, n_kv_heads, n_rep, seq, keys)
    if mask is not None:
        bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
        scores += bias[:, :, None]                                     # 0 where allowed, -inf where hidden
    weights = torch.softmax(scores, dim=-1).view(batch, n_kv_heads, n_rep * seq, keys)
    return (weights @ v).view(batch, n_heads, seq, head_dim)


def use_grouped_attention(model: Transformer | GPT2) -> None:
    """Make every attention layer of ``model`` use :func:`grouped_attention`, in place."""
    for module in model.modules():
        if hasattr(module, "attend"):
            module.attend = grouped_attention
