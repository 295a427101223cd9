"""GPT-2, top to bottom: the decoder of ``minillm.models.qwen2`` as OpenAI first built it (2019).

    token ids
      -> wte + wpe                 one vector per token, plus one learned vector per position
      -> Block x n_layer           each: x + Attention(LayerNorm(x)), then x + MLP(LayerNorm(x))
      -> ln_f                      a last LayerNorm
      -> lm_head                   one score (logit) per vocabulary entry (the wte matrix again)
    logits

Read it beside ``minillm/models/qwen2.py`` (Qwen2 / Llama): the skeleton is the same, pre-norm
residual blocks of attention then MLP. What changed between GPT-2 and Qwen2:

=====================  ===================================  ==================================
                       GPT-2 (this file)                    Qwen2 / Llama (qwen2.py)
=====================  ===================================  ==================================
normalisation          LayerNorm: subtract the mean,        RMSNorm: divide by the root mean
                       divide by the std, gain and bias     square, gain only
positions              a learned vector per position        rotary embeddings (RoPE) turn
                       (wpe), added to the token vector     queries and keys inside attention
                       once; n_positions is a hard limit
MLP                    c_proj(gelu(c_fc(x))), 4x wide       SwiGLU: down(silu(gate(x)) * up(x))
attention heads        multi-head: every query head has     grouped-query: several query heads
                       its own key and value head           share one key/value head
biases                 everywhere                           q, k, v only (Qwen2) or none (Llama)
=====================  ===================================  ==================================

Module names match the Hugging Face checkpoints (``h.0.attn.c_attn`` ...). Two quirks of
those files are undone by the loader (``minillm.checkpoint.weights``), not here: the projections were
saved by a "Conv1D" layer that stores its weight transposed, (in, out), and the keys of the
decoder stack may or may not start with ``transformer.``. ``c_attn`` is one projection that
makes queries, keys and values at once; it is split into three here.

The attention itself (scaled dot-product with a causal mask), the causal mask with padding
and the KV cache are those of ``minillm.models.qwen2``: multi-head attention is grouped-query
attention with one query head per key/value head. Shapes in comments use: batch, seq (new
tokens), past (tokens already in the KV cache), n_head, head_dim, n_embd, vocab.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from minillm.errors import InputError
from minillm.models.config import GPT2Config
from minillm.models.qwen2 import KVCache, Transformer, attention, causal_mask, check_cache_and_mask


class LayerNorm(nn.Module):
    """Normalise each vector to mean 0 and variance 1, then scale and shift it by a learned
    per-channel gain (``weight``) and ``bias``:

        y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias     (var: the biased variance)

    RMSNorm (Qwen2) skips the mean and the bias: y = x / sqrt(mean(x**2) + eps) * weight.
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        # F.layer_norm computes the formula above in one pass, with the rounding of
        # transformers' nn.LayerNorm (a hand-written version differs by ~1e-7 per layer).
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """GELU, x * Phi(x) with Phi the standard normal CDF, in the tanh approximation GPT-2 was
    trained with (transformers calls it "gelu_new"). Elementwise, shape unchanged.

    A smooth ReLU: about 0 for x << 0, about x for x >> 0, slightly negative near -0.75.
    """
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class Attention(nn.Module):
    """Causal multi-head self-attention; positions were already added to the input."""

    # minillm.models.qwen2.attention; packed.py swaps in a leaner version, inspect.trace one that keeps the weights.
    attend = staticmethod(attention)

    def __init__(self, config: GPT2Config, layer: int):
        super().__init__()
        self.layer = layer
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)    # queries, keys and values at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: KVCache | None) -> torch.Tensor:
        b, t, width = x.shape
        q, k, v = self.c_attn(x).split(width, dim=-1)              # 3 x (batch, seq, n_embd)
        q = q.view(b, t, self.n_head, self.head_dim).transpose(1, 2)  # (batch, n_head, seq, head_dim)
        k = k.view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)                  # (batch, n_head, past + seq, head_dim)
        y = self.attend(q, k, v, mask)                             # (batch, n_head, seq, head_dim)
        y = y.transpose(1, 2).reshape(b, t, width)                 # (batch, seq, n_embd)
        return self.c_proj(y)


class MLP(nn.Module):
    """Feed-forward: c_proj(gelu(c_fc(x))), through a hidden layer 4x as wide (n_inner)."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.intermediate_size)
        self.c_proj = nn.Linear(config.intermediate_size, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, seq, n_embd) -> same
        return self.c_proj(gelu_new(self.c_fc(x)))


class Block(nn.Module):
    """Pre-norm residual block: attention, then MLP, each added to the residual stream."""

    def __init__(self, config: GPT2Config, layer: int):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, config.layer_norm_epsilon)
        self.attn = Attention(config, layer)
        self.ln_2 = LayerNorm(config.n_embd, config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x, mask, cache) -> torch.Tensor:  # (batch, seq, n_embd) -> same
        x = x + self.attn(self.ln_1(x), mask, cache)
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    """The whole GPT-2: token ids in, raw next-token logits out. Same interface as
    ``minillm.models.qwen2.Transformer`` (``embed_tokens`` and ``layers`` name ``wte`` and ``h``)."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)    # token embeddings
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)   # position embeddings
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = LayerNorm(config.n_embd, config.layer_norm_epsilon)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.wte.weight  # one matrix reads tokens in and writes them out

    @property
    def embed_tokens(self) -> nn.Embedding:
        """The token embedding, under the name minillm.models.qwen2.Transformer uses."""
        return self.wte

    @property
    def layers(self) -> nn.ModuleList:
        """The blocks, under the name minillm.models.qwen2.Transformer uses."""
        return self.h

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Raw logits for every position: (batch, seq) ids -> (batch, seq, vocab).

        ``logits[b, i]`` scores the token that follows ``input_ids[b, i]``. ``attention_mask``
        (batch, past + seq), 1 for real tokens and 0 for padding, lets rows of unequal length
        share a batch (left or right padding): each row's logits equal those of the row run
        alone. ``cache`` holds earlier tokens' keys and values (see :meth:`new_cache`).
        """
        return self.lm_head(self.hidden_states(input_ids, attention_mask, cache))

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """The hidden states after ``ln_f``, (batch, seq) -> (batch, seq, n_embd), before lm_head.

        Raises ValueError for ids outside the vocabulary and for sequences longer than
        ``n_positions``: the position table has no row for them.
        """
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

        x = self.wte(input_ids) + self.wpe(positions)            # (batch, seq, n_embd)
        for block in self.h:
            x = block(x, mask, cache)
        if cache is not None:
            cache.length += seq
        return self.ln_f(x)

    _check_ids = Transformer._check_ids     # ids must be integers inside the vocabulary

    def _check_length(self, total: int, cache, attention_mask, batch: int) -> None:
        limit = self.config.n_positions
        if total > limit:
            raise InputError(
                f"sequence of {total} tokens is longer than GPT-2's context (n_positions={limit}): its "
                "position table wpe has no row past that. Score long texts in windows "
                f"(minillm.inference.scoring's window= option) or keep prompt + new tokens <= {limit}."
            )
        check_cache_and_mask(total, cache, attention_mask, batch)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty KV cache for ``batch`` rows of up to ``max_len`` tokens."""
        weight = self.wte.weight
        return KVCache(self.config, batch, max_len, weight.dtype, weight.device)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Parameter count (a tied LM head counted once); ``non_embedding`` leaves out both
        embedding tables, wte and wpe, as the scaling-law papers count N (Kaplan et al. 2020)."""
        total = sum(p.numel() for p in self.parameters())  # parameters() yields a tied matrix once
        return total - self.wte.weight.numel() - self.wpe.weight.numel() if non_embedding else total
