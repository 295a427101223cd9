"""A Qwen2 / Llama decoder-only transformer, top to bottom.

    token ids
      -> embed_tokens                       one vector per token
      -> DecoderBlock x num_hidden_layers   each: x + Attention(RMSNorm(x)), then x + MLP(RMSNorm(x))
      -> norm                               a last RMSNorm
      -> lm_head                            one score (logit) per vocabulary entry
    logits

Qwen2 and Llama are the same family: Qwen2 adds a bias to the query, key and value
projections, that is all. Module names match the Hugging Face checkpoints
(``layers.0.self_attn.q_proj`` ...), so every tensor in a ``model.safetensors`` file has
an obvious home here. Shapes in comments use: batch, seq (new tokens), past (tokens
already in the KV cache), n_heads, n_kv_heads, head_dim, hidden, vocab.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from minillm.errors import InputError
from minillm.models.config import ModelConfig


class RMSNorm(nn.Module):
    """Scale each vector to unit root-mean-square, then by a learned per-channel gain.

    The statistics are computed in float32 even for bfloat16/float16 models, as the
    reference implementation does: squaring small numbers in 16 bits loses them.
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE): rotate pairs of channels by position-dependent angles.

    Channel i of the first half of a head is paired with channel i of the second half
    (the "half-split" layout of Hugging Face checkpoints) and rotated by the angle
    ``position * theta ** (-2i / head_dim)``.
    """

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # positions: (batch, seq) integer positions -> cos, sin: (batch, 1, seq, head_dim)
        # The angles are computed in float32 whatever the model's dtype: large positions
        # times small frequencies need the precision.
        exponents = torch.arange(0, self.head_dim, 2, device=positions.device).float() / self.head_dim
        inv_freq = 1.0 / (self.theta**exponents)                  # (head_dim/2,)
        angles = positions[..., None].float() * inv_freq          # (batch, seq, head_dim/2)
        angles = torch.cat([angles, angles], dim=-1)[:, None]     # (batch, 1, seq, head_dim)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (batch, heads, seq, head_dim); cos, sin: (batch, 1, seq, head_dim)
    return x * cos + rotate_half(x) * sin


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Grouped-query attention: each key/value head serves ``n_rep`` query heads.

    (batch, n_kv_heads, seq, head_dim) -> (batch, n_kv_heads * n_rep, seq, head_dim)
    """
    if n_rep == 1:
        return x
    b, n_kv, s, d = x.shape
    return x[:, :, None].expand(b, n_kv, n_rep, s, d).reshape(b, n_kv * n_rep, s, d)


class KVCache:
    """Keys and values of the tokens seen so far, so that generation computes each token once.

    Preallocated for ``max_len`` positions: ``keys[layer]`` is (batch, n_kv_heads, max_len,
    head_dim); the first ``length`` positions are filled.
    """

    def __init__(self, config: ModelConfig, batch: int, max_len: int, dtype: torch.dtype, device):
        shape = (batch, config.num_key_value_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.max_len = max_len
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new (batch, n_kv_heads, seq, head_dim) keys/values of one layer and
        return all of them so far: (batch, n_kv_heads, past + seq, head_dim)."""
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """How much each query looks at each key: softmax(q k^T / sqrt(head_dim), masked).

    q: (batch, n_heads, seq, head_dim); k: (batch, n_kv_heads, past + seq, head_dim), where
    n_kv_heads divides n_heads (grouped-query attention: each key head is repeated for its group
    of query heads); mask: (batch or 1, 1, seq, past + seq) booleans, True where a query may look,
    or None. Returns (batch, n_heads, seq, past + seq) probabilities, each row summing to 1. The
    softmax runs in float32 whatever the model's dtype, as in the reference.
    """
    k = repeat_kv(k, q.shape[1] // k.shape[1])                      # (batch, n_heads, past + seq, head_dim)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5          # (batch, n_heads, seq, past + seq)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))           # a hidden key gets weight exactly 0
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Scaled dot-product attention: each query's output is the average of the values, weighted
    by :func:`attention_weights`. q, k, mask as there; v: (batch, n_kv_heads, past + seq, head_dim)
    -> (batch, n_heads, seq, head_dim)."""
    weights = attention_weights(q, k, mask)                         # (batch, n_heads, seq, past + seq)
    return weights @ repeat_kv(v, q.shape[1] // v.shape[1])         # (batch, n_heads, seq, head_dim)


class Attention(nn.Module):
    """Causal self-attention with grouped-query heads and rotary positions."""

    # The attention() above; minillm.models.packed.use_grouped_attention swaps in a version that
    # does not copy the keys and values for every query head, and minillm.inference.inspect.trace,
    # for one call, a version that also keeps the attention_weights().
    attend = staticmethod(attention)

    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        q_width, kv_width = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, q_width, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_width, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_width, bias=config.attention_bias)
        self.o_proj = nn.Linear(q_width, config.hidden_size, bias=config.o_proj_bias)

    def forward(self, x, cos, sin, mask: torch.Tensor | None, cache: KVCache | None) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)     # (batch, n_heads, seq, head_dim)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (batch, n_kv_heads, seq, head_dim)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (batch, n_kv_heads, seq, head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)                  # (batch, n_kv_heads, past + seq, head_dim)
        y = self.attend(q, k, v, mask)                             # (batch, n_heads, seq, head_dim)
        y = y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)  # (batch, seq, hidden)
        return self.o_proj(y)


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, seq, hidden) -> same
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderBlock(nn.Module):
    """Pre-norm residual block: attention, then MLP, each added to the residual stream."""

    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask, cache) -> torch.Tensor:  # (batch, seq, hidden) -> same
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


def causal_mask(seq: int, past: int, attention_mask: torch.Tensor | None, device) -> torch.Tensor | None:
    """Which keys each query may attend to: (batch, 1, seq, past + seq) booleans, True = allowed.

    Returns None when there is nothing to hide: one new token and no padding.
    Padding keys are hidden from every query. A padding *query* is still allowed to see
    itself, so that its (meaningless) output is finite instead of NaN.
    """
    if attention_mask is None and seq == 1:
        return None
    query_pos = torch.arange(past, past + seq, device=device)[:, None]   # (seq, 1)
    key_pos = torch.arange(past + seq, device=device)[None, :]           # (1, past + seq)
    allowed = (key_pos <= query_pos)[None, None]                         # (1, 1, seq, past + seq)
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, None, :]      # (batch, 1, seq, past + seq)
        allowed = allowed | (key_pos == query_pos)
    return allowed


def check_cache_and_mask(total: int, cache: KVCache | None, attention_mask: torch.Tensor | None, batch: int) -> None:
    """The KV cache must have room for ``total`` = past + seq positions, and the attention mask
    must cover all of them: (batch, past + seq)."""
    if cache is not None and total > cache.max_len:
        raise InputError(f"the KV cache holds {cache.max_len} positions but {total} are needed.")
    if attention_mask is not None and tuple(attention_mask.shape) != (batch, total):
        raise InputError(
            f"attention_mask has shape {tuple(attention_mask.shape)}; expected (batch, past + seq) "
            f"= {(batch, total)}."
        )


class Transformer(nn.Module):
    """The whole decoder: token ids in, raw next-token logits out."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.layers = nn.ModuleList(DecoderBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight  # one matrix reads tokens in and writes them out

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Raw logits for every position: (batch, seq) ids -> (batch, seq, vocab).

        ``logits[b, i]`` scores the token that follows ``input_ids[b, i]``.
        ``attention_mask`` (batch, past + seq), 1 for real tokens and 0 for padding, lets
        rows of unequal length share a batch (left or right padding); each row's logits
        then equal those of the row run alone. ``cache`` holds earlier tokens' keys and values.
        """
        return self.lm_head(self.hidden_states(input_ids, attention_mask, cache))

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """The final-normed hidden states, (batch, seq) -> (batch, seq, hidden), before lm_head."""
        input_ids = self._check_ids(input_ids)
        batch, seq = input_ids.shape
        past = cache.length if cache is not None else 0
        self._check_length(past + seq, cache, attention_mask, batch)
        if attention_mask is None:
            positions = torch.arange(past, past + seq, device=input_ids.device).expand(batch, seq)
        else:
            # A row's first real token is position 0, however much left padding precedes it.
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (batch, seq)
        mask = causal_mask(seq, past, attention_mask, input_ids.device)

        x = self.embed_tokens(input_ids)                        # (batch, seq, hidden)
        cos, sin = self.rotary(positions, x.dtype)              # (batch, 1, seq, head_dim)
        for block in self.layers:
            x = block(x, cos, sin, mask, cache)
        if cache is not None:
            cache.length += seq
        return self.norm(x)

    def _check_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor):
            input_ids = torch.as_tensor(input_ids, device=self.embed_tokens.weight.device)
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        if input_ids.numel() == 0:   # before the dtype: torch.tensor([[]]) is float32
            raise InputError("input_ids is empty: give the model at least one token (was the text empty, "
                             "or did it encode to no tokens?).")
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            raise InputError(
                f"input_ids must be integer token ids of shape (batch, seq); got dtype "
                f"{input_ids.dtype} and shape {tuple(input_ids.shape)}."
            )
        if torch.compiler.is_compiling():
            # Reading the ids' values back into Python would break torch.compile's graph in two
            # (training with --compile); the ids a training loop feeds come from the tokenizer.
            return input_ids
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= self.config.vocab_size:
            raise InputError(
                f"input_ids holds token id {low if low < 0 else high}, outside this model's "
                f"vocabulary 0..{self.config.vocab_size - 1}. Was the text encoded with another "
                "model's tokenizer?"
            )
        return input_ids

    def _check_length(self, total: int, cache, attention_mask, batch: int) -> None:
        limit = self.config.max_position_embeddings
        if total > limit:
            raise InputError(
                f"sequence of {total} tokens is longer than the model's context "
                f"(max_position_embeddings={limit}); score long texts in windows."
            )
        check_cache_and_mask(total, cache, attention_mask, batch)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty KV cache for ``batch`` rows of up to ``max_len`` tokens."""
        weight = self.embed_tokens.weight
        return KVCache(self.config, batch, max_len, weight.dtype, weight.device)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Parameter count (a tied LM head counted once); ``non_embedding`` leaves out the embedding."""
        total = sum(p.numel() for p in self.parameters())  # parameters() yields a tied matrix once
        return total - self.embed_tokens.weight.numel() if non_embedding else total
