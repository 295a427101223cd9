"""Unit 5: the architecture of a Qwen2 / Llama decoder, one piece at a time.

You build the whole forward pass of a real LLM from plain tensor operations:

    token ids (batch, seq)
      -> embedding lookup                      (batch, seq, hidden)
      -> decoder_block x num_hidden_layers     x + attention(rms_norm(x)), then x + mlp(rms_norm(x))
      -> rms_norm                              (batch, seq, hidden)
      -> x @ lm_head.T                         (batch, seq, vocab)
    logits

The weights come as a plain dict under the names the Hugging Face checkpoint files use,
for example ``"model.layers.0.self_attn.q_proj.weight"``. A linear layer's weight has
shape (out_features, in_features), so applying it is ``x @ W.T (+ b)`` (that is what
``torch.nn.functional.linear(x, W, b)`` computes).

Shapes use: batch, seq, hidden, n_heads (query heads), n_kv_heads (key/value heads),
head_dim, vocab. Everything is float32.

Rules of the game: use plain PyTorch (``torch``, ``torch.nn.functional``). Do not call
minillm's model code, nor torch's ready-made ``F.scaled_dot_product_attention`` or
``F.rms_norm``: the point is to write them. The autograder compares your results with
minillm's (which is checked against Hugging Face ``transformers``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def config_dict(config) -> dict:
    """The numbers the forward pass needs, as a plain dict (given to you: not graded).

    ``config`` is either a ``minillm.models.config.ModelConfig`` or a dict with Hugging Face's
    ``config.json`` keys. Missing keys get Hugging Face's defaults (``head_dim`` is
    ``hidden_size // num_attention_heads``, ``num_key_value_heads`` is
    ``num_attention_heads``, ...). Use it as ``cfg = config_dict(config)`` and then
    ``cfg["num_attention_heads"]`` etc.
    """
    if not isinstance(config, dict):
        config = {key: getattr(config, key) for key in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "rope_theta", "rms_norm_eps", "tie_word_embeddings", "vocab_size",
        )}
    heads = int(config["num_attention_heads"])
    rope = config.get("rope_parameters") or {}
    return {
        "vocab_size": config.get("vocab_size"),
        "hidden_size": int(config["hidden_size"]),
        "num_hidden_layers": int(config["num_hidden_layers"]),
        "num_attention_heads": heads,
        "num_key_value_heads": int(config.get("num_key_value_heads") or heads),
        "head_dim": int(config.get("head_dim") or int(config["hidden_size"]) // heads),
        "rope_theta": float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
        "rms_norm_eps": float(config.get("rms_norm_eps", 1e-6)),
        "tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),
    }


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm: scale every vector to unit root-mean-square, then by a learned gain.

    For each vector ``v`` along the LAST dimension (size ``dim``)::

        rms_norm(v) = v / sqrt(mean(v ** 2) + eps) * weight

    Args:
        x: (..., dim) float tensor, e.g. (batch, seq, hidden).
        weight: (dim,) the learned per-channel gain.
        eps: small positive float (e.g. 1e-6) added INSIDE the square root.
    Returns:
        (..., dim), same shape as ``x``.

    Pitfalls: the mean is over the last dimension only (``dim=-1, keepdim=True`` so it
    broadcasts back); ``eps`` goes inside the square root, next to the mean. Unlike
    LayerNorm there is no mean subtraction and no bias.
    Hint: ``torch.rsqrt(t)`` is ``1 / sqrt(t)``.
    """
    # BEGIN SOLUTION
    mean_square = x.pow(2).mean(dim=-1, keepdim=True)          # (..., 1)
    return x * torch.rsqrt(mean_square + eps) * weight
    # END SOLUTION


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The cosines and sines of rotary position embeddings (RoPE), half-split layout.

    Channel ``i`` of the first half of a head (``i < head_dim / 2``) is paired with
    channel ``i + head_dim / 2`` and the pair is rotated by the angle::

        angle[p, i] = positions[p] * theta ** (-2 * i / head_dim)      i = 0 .. head_dim/2 - 1

    Both channels of a pair use the same angle, so the full (seq, head_dim) table is the
    (seq, head_dim/2) table of angles written twice side by side: ``[angles, angles]``.

    Args:
        positions: (seq,) integer positions, e.g. ``torch.arange(seq)``.
        head_dim: even int, width of one attention head.
        theta: float, the RoPE base (``rope_theta`` in config.json, e.g. 10000.0).
    Returns:
        (cos, sin), each (seq, head_dim) float32.

    Pitfall: the halves are CONCATENATED (``torch.cat([a, a], -1)``), not interleaved
    (``repeat_interleave``): Hugging Face checkpoints of Qwen/Llama use the half-split layout.
    Hint: ``torch.arange(0, head_dim, 2)`` gives 2i.
    """
    # BEGIN SOLUTION
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (head_dim/2,)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]                         # (seq, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)                                              # (seq, head_dim)
    return angles.cos(), angles.sin()
    # END SOLUTION


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the query or key vectors ``x`` by their positions' angles (half-split layout).

    Split each head vector in two halves ``x1 = x[..., :head_dim/2]``, ``x2 = x[..., head_dim/2:]``.
    Each pair (x1[i], x2[i]) is rotated by its angle::

        out = x * cos + rotate_half(x) * sin,   where rotate_half(x) = cat([-x2, x1], -1)

    Args:
        x: (batch, heads, seq, head_dim) queries or keys.
        cos, sin: (seq, head_dim) from :func:`rope_cos_sin` (they broadcast over batch and heads).
    Returns:
        (batch, heads, seq, head_dim), same shape as ``x``.

    Pitfall: rotating adjacent pairs (x[0], x[1]), (x[2], x[3]) ... is the layout of the
    original RoPE paper and of Meta's Llama code, NOT of Hugging Face checkpoints; with
    the wrong layout the model still runs but computes nonsense.
    """
    # BEGIN SOLUTION
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos + rotated * sin
    # END SOLUTION


def causal_mask(seq_len: int) -> torch.Tensor:
    """Which keys each query may attend to, as BOOLEANS: True = allowed.

    Token ``i`` may look at tokens ``0 .. i`` (itself and the past), never at the future.

    Args:
        seq_len: int >= 1.
    Returns:
        (seq_len, seq_len) bool tensor, ``mask[i, j] = (j <= i)``: True on and below the
        diagonal (row = query position, column = key position).

    Hint: ``torch.tril`` or comparing ``torch.arange`` with itself.
    """
    # BEGIN SOLUTION
    positions = torch.arange(seq_len)
    return positions[None, :] <= positions[:, None]
    # END SOLUTION


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Attention: ``softmax(q @ k^T / sqrt(head_dim), hidden keys removed) @ v``.

    Args:
        q: (batch, heads, seq_q, head_dim) queries.
        k: (batch, heads, seq_k, head_dim) keys.
        v: (batch, heads, seq_k, head_dim) values.
        mask: None (every query sees every key) or a bool tensor that broadcasts to
            (batch, heads, seq_q, seq_k), e.g. (seq_q, seq_k) from :func:`causal_mask`;
            True = the query may look at that key.
    Returns:
        (batch, heads, seq_q, head_dim).

    Pitfalls: divide the scores by ``sqrt(head_dim)``, not by ``head_dim``; the softmax
    runs over the KEYS (the last dimension), so each query's weights sum to 1; a hidden
    key gets score ``-inf`` BEFORE the softmax (so its weight is exactly 0).
    Hint: ``scores.masked_fill(~mask, float("-inf"))``.
    """
    # BEGIN SOLUTION
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])      # (batch, heads, seq_q, seq_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v
    # END SOLUTION


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Grouped-query attention: give each of the ``n_kv_heads`` key/value heads to ``n_rep`` query heads.

    Query head ``h`` uses key/value head ``h // n_rep``. So with 2 KV heads (A, B) and
    ``n_rep = 3`` the result's heads are A, A, A, B, B, B.

    Args:
        x: (batch, n_kv_heads, seq, head_dim) keys or values.
        n_rep: int >= 1, ``n_heads // n_kv_heads``.
    Returns:
        (batch, n_kv_heads * n_rep, seq, head_dim).

    Pitfall: ``x.repeat(1, n_rep, 1, 1)`` tiles the heads as A, B, A, B, A, B: the wrong
    grouping (it only coincides with the right one when n_kv_heads is 1 or n_rep is 1).
    Hint: ``torch.repeat_interleave(x, n_rep, dim=1)``.
    """
    # BEGIN SOLUTION
    return torch.repeat_interleave(x, n_rep, dim=1)
    # END SOLUTION


def swiglu_mlp(x: torch.Tensor, gate_w: torch.Tensor, up_w: torch.Tensor, down_w: torch.Tensor) -> torch.Tensor:
    """The SwiGLU feed-forward layer: ``down(silu(gate(x)) * up(x))``, no biases.

    Args:
        x: (batch, seq, hidden).
        gate_w: (intermediate, hidden) ``mlp.gate_proj.weight``.
        up_w: (intermediate, hidden) ``mlp.up_proj.weight``.
        down_w: (hidden, intermediate) ``mlp.down_proj.weight``.
    Returns:
        (batch, seq, hidden).

    Pitfall: a weight is (out_features, in_features): apply it as ``x @ W.T``
    (``F.linear(x, W)``). silu(z) = z * sigmoid(z) (``F.silu``); it is applied to the
    gate only, and the product with ``up(x)`` is element-wise.
    """
    # BEGIN SOLUTION
    return F.linear(F.silu(F.linear(x, gate_w)) * F.linear(x, up_w), down_w)
    # END SOLUTION


def decoder_block(x: torch.Tensor, weights: dict, layer: int, config) -> torch.Tensor:
    """One pre-norm decoder block (layer number ``layer``) on positions 0 .. seq-1::

        h = x + o_proj(attention(rope(q_proj(rms_norm(x))), rope(k_proj(...)), v_proj(...)))
        out = h + swiglu_mlp(rms_norm(h))

    Its tensors are ``weights[f"model.layers.{layer}.<name>"]`` for <name> in
    ``input_layernorm.weight``, ``self_attn.{q,k,v,o}_proj.weight``,
    ``post_attention_layernorm.weight`` and ``mlp.{gate,up,down}_proj.weight``. Qwen2 also
    has biases ``self_attn.{q,k,v}_proj.bias`` (Llama does not): add a bias when the dict
    holds one.

    Steps, with n_heads = num_attention_heads, n_kv = num_key_value_heads:
    1. a = rms_norm(x, input_layernorm.weight, rms_norm_eps)
    2. q = a @ Wq.T (+bq) -> (batch, seq, n_heads * head_dim) -> view (batch, seq, n_heads, head_dim)
       -> transpose to (batch, n_heads, seq, head_dim); k and v the same with n_kv heads.
    3. rotate q and k with RoPE for positions 0 .. seq-1 (not v!).
    4. repeat k and v to n_heads heads (:func:`repeat_kv`, n_rep = n_heads // n_kv).
    5. causal attention -> (batch, n_heads, seq, head_dim) -> transpose back and reshape to
       (batch, seq, n_heads * head_dim) -> o_proj; add to x (the residual).
    6. the MLP half: h + swiglu_mlp(rms_norm(h, post_attention_layernorm.weight, eps), ...).

    Args:
        x: (batch, seq, hidden) the residual stream.
        weights: dict[str, Tensor] with Hugging Face tensor names.
        layer: int, which block.
        config: a ModelConfig or a config.json dict; read it with ``config_dict(config)``.
    Returns:
        (batch, seq, hidden).

    Pitfall: after ``transpose`` a tensor is not contiguous: use ``.reshape`` (not ``.view``)
    to merge the heads back. Use your own functions from above.
    """
    # BEGIN SOLUTION
    cfg = config_dict(config)
    n_heads, n_kv, head_dim = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    prefix = f"model.layers.{layer}."
    batch, seq, _ = x.shape

    def project(inp, name, heads):
        out = F.linear(inp, weights[prefix + name + ".weight"], weights.get(prefix + name + ".bias"))
        return out.view(batch, seq, heads, head_dim).transpose(1, 2)   # (batch, heads, seq, head_dim)

    a = rms_norm(x, weights[prefix + "input_layernorm.weight"], cfg["rms_norm_eps"])
    q = project(a, "self_attn.q_proj", n_heads)
    k = project(a, "self_attn.k_proj", n_kv)
    v = project(a, "self_attn.v_proj", n_kv)
    cos, sin = rope_cos_sin(torch.arange(seq), head_dim, cfg["rope_theta"])
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k, v = repeat_kv(k, n_heads // n_kv), repeat_kv(v, n_heads // n_kv)
    y = scaled_dot_product_attention(q, k, v, causal_mask(seq))        # (batch, n_heads, seq, head_dim)
    y = y.transpose(1, 2).reshape(batch, seq, n_heads * head_dim)
    h = x + F.linear(y, weights[prefix + "self_attn.o_proj.weight"], weights.get(prefix + "self_attn.o_proj.bias"))

    m = rms_norm(h, weights[prefix + "post_attention_layernorm.weight"], cfg["rms_norm_eps"])
    return h + swiglu_mlp(
        m,
        weights[prefix + "mlp.gate_proj.weight"],
        weights[prefix + "mlp.up_proj.weight"],
        weights[prefix + "mlp.down_proj.weight"],
    )
    # END SOLUTION


def forward(weights: dict, config, input_ids: torch.Tensor) -> torch.Tensor:
    """The whole model: token ids -> next-token logits.

    1. x = ``weights["model.embed_tokens.weight"][input_ids]``   (batch, seq, hidden)
    2. x = decoder_block(x, weights, layer, config) for layer = 0 .. num_hidden_layers - 1
    3. x = rms_norm(x, ``weights["model.norm.weight"]``, rms_norm_eps)
    4. logits = x @ head.T, where head is ``weights["lm_head.weight"]``, or, when the
       config says ``tie_word_embeddings``, the embedding matrix itself (tied checkpoints
       ship no ``lm_head.weight``).

    Args:
        weights: dict[str, Tensor] with Hugging Face tensor names (float32).
        config: a ModelConfig or a config.json dict; read it with ``config_dict(config)``.
        input_ids: (batch, seq) int64 token ids.
    Returns:
        (batch, seq, vocab) float32 logits; ``logits[b, i]`` scores the token that FOLLOWS
        ``input_ids[b, i]``.

    Pitfall: the embedding is a row lookup (indexing), not a matrix product.
    """
    # BEGIN SOLUTION
    cfg = config_dict(config)
    x = weights["model.embed_tokens.weight"][input_ids]                # (batch, seq, hidden)
    for layer in range(cfg["num_hidden_layers"]):
        x = decoder_block(x, weights, layer, config)
    x = rms_norm(x, weights["model.norm.weight"], cfg["rms_norm_eps"])
    head = weights["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else weights["lm_head.weight"]
    return x @ head.T
    # END SOLUTION
