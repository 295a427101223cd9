"""The same Qwen2 / Llama decoder as ``minillm.models.qwen2``, and GPT-2 as ``minillm.models.gpt2``, in plain
NumPy: no torch at all.

Every step of the forward pass is one short function on arrays, so you can read (and
print, and poke at) the whole computation:

    token ids  (batch, seq)
      -> embedding lookup                          (batch, seq, hidden)
      -> decoder_block x num_hidden_layers         x + attention(rms_norm(x)), then x + mlp(rms_norm(x))
      -> rms_norm                                  (batch, seq, hidden)
      -> x @ lm_head.T                             (batch, seq, vocab)
    logits

Weights are kept in a plain dict under the names the checkpoint file uses
(``model.layers.0.self_attn.q_proj.weight`` ...). A linear layer's weight has shape
(out_features, in_features), so applying it is ``x @ W.T (+ b)``.
Everything is computed in float32. There is no KV cache and no padding: each call
recomputes the whole sequence, which is slow but simple.

GPT-2 (``model_type: gpt2``, :func:`gpt2_forward`) differs in four places: learned position
vectors added to the token vectors instead of rotary embeddings, LayerNorm instead of
RMSNorm, a GELU MLP instead of SwiGLU, and every attention head with its own keys and
values. Its projection weights are kept as the file stores them, (in, out) ("Conv1D"),
so applying one is ``x @ W + b``; its names get the ``transformer.`` prefix when the file
has none.

This module imports nothing from torch, nor from the rest of minillm (whose package
``__init__`` imports torch), so it can be copied and read on its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import safe_open

# ---------------------------------------------------------------------------------------
# Reading a checkpoint folder: config.json + model.safetensors (or shards)
# ---------------------------------------------------------------------------------------


def read_config(folder: str | Path) -> dict:
    """The numbers the forward pass needs, read from ``folder/config.json``.

    Fills in the defaults Hugging Face uses when a key is absent (e.g. ``head_dim`` is
    ``hidden_size // num_attention_heads``), and refuses settings that would change the math.
    """
    raw = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    if raw.get("model_type") == "gpt2":
        return _read_gpt2_config(raw)
    if raw.get("model_type") not in ("qwen2", "llama"):
        raise ValueError(f"model_type {raw.get('model_type')!r} is not supported: only qwen2, llama and gpt2.")
    rope = raw.get("rope_parameters") or {}  # newer transformers nest rope_theta here
    if raw.get("rope_scaling") or rope.get("rope_type", "default") != "default":
        raise ValueError("rope scaling is not implemented here: only plain rotary embeddings.")
    if raw.get("use_sliding_window") or raw.get("hidden_act", "silu") != "silu":
        raise ValueError("only full causal attention and the silu (SwiGLU) MLP are implemented here.")
    heads = raw["num_attention_heads"]
    return {
        "model_type": raw["model_type"],
        "vocab_size": raw["vocab_size"],
        "hidden_size": raw["hidden_size"],
        "num_hidden_layers": raw["num_hidden_layers"],
        "num_attention_heads": heads,
        "num_key_value_heads": raw.get("num_key_value_heads") or heads,
        "head_dim": raw.get("head_dim") or raw["hidden_size"] // heads,
        "rope_theta": float(rope.get("rope_theta", raw.get("rope_theta", 10000.0))),
        "rms_norm_eps": float(raw.get("rms_norm_eps", 1e-6)),
        "tie_word_embeddings": bool(raw.get("tie_word_embeddings", False)),
    }


def _read_gpt2_config(raw: dict) -> dict:
    """The numbers GPT-2's forward pass needs, under GPT-2's config.json names."""
    if raw.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError("only GPT-2's GELU (tanh approximation, 'gelu_new') is implemented here.")
    if (not raw.get("scale_attn_weights", True) or raw.get("scale_attn_by_inverse_layer_idx")
            or raw.get("reorder_and_upcast_attn")):
        raise ValueError("only GPT-2's plain attention scaling, 1 / sqrt(head_dim), is implemented here.")
    return {
        "model_type": "gpt2",
        "vocab_size": raw["vocab_size"],
        "n_positions": raw["n_positions"],
        "n_embd": raw["n_embd"],
        "n_layer": raw["n_layer"],
        "n_head": raw["n_head"],
        "layer_norm_epsilon": float(raw.get("layer_norm_epsilon", 1e-5)),
        "tie_word_embeddings": bool(raw.get("tie_word_embeddings", True)),
    }


def _read_bfloat16(path: Path, name: str) -> np.ndarray:
    """Read one bfloat16 tensor from a safetensors file as float32 (NumPy has no bfloat16).

    A safetensors file is: 8 bytes (little-endian length N of the header), N bytes of
    JSON header ({name: {"dtype", "shape", "data_offsets": [begin, end]}}), then the raw data.
    bfloat16 is simply the top 16 bits of a float32, so shifting those bits back into
    the high half of a 32-bit word gives the float32 value exactly.
    """
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        info = json.loads(f.read(header_len))[name]
    begin, end = info["data_offsets"]
    bits = np.fromfile(path, dtype="<u2", count=(end - begin) // 2, offset=8 + header_len + begin)
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])


def load_weights(folder: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint in ``folder`` as a float32 array, keyed by its file name.

    Reads ``model.safetensors``, or the shards listed in ``model.safetensors.index.json``
    (``{"weight_map": {tensor name: shard file}}``).
    """
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        outside = [f for f in files if Path(f).is_absolute() or ".." in Path(f).parts]
        if outside:   # an index may only name files its own folder holds
            raise ValueError(f"{index} lists shard(s) outside {folder}: {outside}. Download the index again.")
    else:
        files = ["model.safetensors"]
    weights = {}
    for file in files:
        with safe_open(folder / file, framework="numpy") as f:
            for name in f.keys():
                if f.get_slice(name).get_dtype() == "BF16":
                    weights[name] = _read_bfloat16(folder / file, name)
                else:
                    weights[name] = f.get_tensor(name).astype(np.float32)
    return weights


def load_numpy_model(folder: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """``(weights, config)`` for :func:`forward`, from a checkpoint folder.

    A tied checkpoint (``tie_word_embeddings``) stores no ``lm_head.weight``: the
    embedding matrix is used for the output too, so it is put under both names.
    """
    config = read_config(folder)
    weights = load_weights(folder)
    embedding = "model.embed_tokens.weight"
    if config["model_type"] == "gpt2":
        # "transformer." in front of every name but the head; old files' attention-mask
        # buffers (attn.bias, attn.masked_bias) are not weights.
        weights = {name if name.startswith(("transformer.", "lm_head.")) else "transformer." + name: w
                   for name, w in weights.items() if not name.endswith((".attn.bias", ".attn.masked_bias"))}
        embedding = "transformer.wte.weight"
    if config["tie_word_embeddings"]:
        weights["lm_head.weight"] = weights[embedding]
    return weights, config


# ---------------------------------------------------------------------------------------
# The math, one concept per function
# ---------------------------------------------------------------------------------------


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """``x @ weight.T + bias``: (..., in) -> (..., out), with weight (out, in)."""
    y = x @ weight.T
    return y if bias is None else y + bias


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """Scale each vector to root-mean-square 1, then by a learned gain per channel.

    x: (..., hidden); weight: (hidden,) -> (..., hidden).
    """
    rms = np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)  # (..., 1)
    return weight * (x / rms)


def rope_cos_sin(positions: np.ndarray, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Cosines and sines of the rotary angles: positions (seq,) -> cos, sin (seq, head_dim).

    Channel pair i (channel i and channel i + head_dim/2) turns by
    ``position * theta ** (-2i / head_dim)``: fast for the first pairs, slow for the last.
    Computed in float32 as the reference implementation does.
    """
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)  # (head_dim/2,)
    angles = positions.astype(np.float32)[:, None] * inv_freq                          # (seq, head_dim/2)
    angles = np.concatenate([angles, angles], axis=-1)                                 # (seq, head_dim)
    return np.cos(angles), np.sin(angles)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate each (first-half, second-half) channel pair of every head by its angle.

    x: (batch, heads, seq, head_dim); cos, sin: (seq, head_dim) -> same shape as x.
    In 2-D, rotating (a, b) by angle t gives (a cos t - b sin t, b cos t + a sin t).
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = np.concatenate([-x2, x1], axis=-1)  # "rotate_half": (x1, x2) -> (-x2, x1)
    return x * cos + rotated * sin


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(x) / sum(exp(x)) along ``axis``, shape unchanged.

    Subtracting the maximum first changes nothing mathematically but keeps exp() from
    overflowing; an entry of -inf gets weight exactly 0.
    """
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Causal scaled dot-product attention: softmax(q k^T / sqrt(head_dim) + mask) v.

    q: (batch, n_heads, seq, head_dim); k, v: (batch, n_kv_heads, seq, head_dim)
    -> (batch, n_heads, seq, head_dim).
    Grouped-query attention: with fewer key/value heads, each one serves
    n_heads // n_kv_heads consecutive query heads. The causal mask stops position i
    from looking at any later position j > i.
    """
    n_rep = q.shape[1] // k.shape[1]
    k = np.repeat(k, n_rep, axis=1)                               # (batch, n_heads, seq, head_dim)
    v = np.repeat(v, n_rep, axis=1)
    scores = q @ k.swapaxes(-1, -2) * q.shape[-1] ** -0.5        # (batch, n_heads, seq, seq)
    seq = q.shape[2]
    future = np.triu(np.ones((seq, seq), dtype=bool), k=1)        # True above the diagonal: j > i
    scores = np.where(future, -np.inf, scores)
    return softmax(scores, axis=-1) @ v                           # (batch, n_heads, seq, head_dim)


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x), elementwise (also called "swish")."""
    with np.errstate(over="ignore"):  # exp(-x) may overflow to inf for very negative x: the result is then -0
        return x / (1.0 + np.exp(-x))


def swiglu_mlp(x: np.ndarray, gate: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x)).

    x: (..., hidden); gate, up: (intermediate, hidden); down: (hidden, intermediate)
    -> (..., hidden).
    """
    return linear(silu(linear(x, gate)) * linear(x, up), down)


def decoder_block(
    x: np.ndarray, weights: dict[str, np.ndarray], layer: int, config: dict, cos: np.ndarray, sin: np.ndarray
) -> np.ndarray:
    """One pre-norm residual block: x + attention(rms_norm(x)), then x + mlp(rms_norm(x)).

    x: (batch, seq, hidden) -> (batch, seq, hidden); cos, sin: (seq, head_dim).
    Biases are used when the checkpoint has them (Qwen2: q, k, v; Llama with
    attention_bias: q, k, v and o).
    """
    p = f"model.layers.{layer}."
    w = lambda name: weights.get(p + name)  # noqa: E731  (None when absent, e.g. a bias)
    batch, seq, _ = x.shape
    n_heads, n_kv, head_dim = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]

    h = rms_norm(x, w("input_layernorm.weight"), config["rms_norm_eps"])
    q = linear(h, w("self_attn.q_proj.weight"), w("self_attn.q_proj.bias"))    # (batch, seq, n_heads * head_dim)
    k = linear(h, w("self_attn.k_proj.weight"), w("self_attn.k_proj.bias"))    # (batch, seq, n_kv * head_dim)
    v = linear(h, w("self_attn.v_proj.weight"), w("self_attn.v_proj.bias"))
    q = q.reshape(batch, seq, n_heads, head_dim).transpose(0, 2, 1, 3)         # (batch, n_heads, seq, head_dim)
    k = k.reshape(batch, seq, n_kv, head_dim).transpose(0, 2, 1, 3)            # (batch, n_kv, seq, head_dim)
    v = v.reshape(batch, seq, n_kv, head_dim).transpose(0, 2, 1, 3)
    y = attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v)        # (batch, n_heads, seq, head_dim)
    y = y.transpose(0, 2, 1, 3).reshape(batch, seq, n_heads * head_dim)       # heads side by side again
    x = x + linear(y, w("self_attn.o_proj.weight"), w("self_attn.o_proj.bias"))

    h = rms_norm(x, w("post_attention_layernorm.weight"), config["rms_norm_eps"])
    return x + swiglu_mlp(h, w("mlp.gate_proj.weight"), w("mlp.up_proj.weight"), w("mlp.down_proj.weight"))


def forward(weights: dict[str, np.ndarray], config: dict, input_ids: np.ndarray) -> np.ndarray:
    """Raw next-token logits for every position: input_ids (seq,) or (batch, seq) -> (batch, seq, vocab).

    ``logits[b, i]`` scores the token that follows ``input_ids[b, i]``.
    """
    input_ids = np.asarray(input_ids)
    if input_ids.ndim == 1:
        input_ids = input_ids[None]                                 # (1, seq)
    if input_ids.ndim != 2 or input_ids.size == 0 or not np.issubdtype(input_ids.dtype, np.integer):
        raise ValueError(f"input_ids must be a non-empty integer array (seq,) or (batch, seq); got {input_ids.shape}")
    if input_ids.min() < 0 or input_ids.max() >= config["vocab_size"]:
        raise ValueError(f"token ids must lie in 0..{config['vocab_size'] - 1}")
    if config["model_type"] == "gpt2":
        return gpt2_forward(weights, config, input_ids)

    x = weights["model.embed_tokens.weight"][input_ids]             # (batch, seq, hidden): one row per token
    positions = np.arange(input_ids.shape[1])                       # (seq,): 0, 1, 2, ...
    cos, sin = rope_cos_sin(positions, config["head_dim"], config["rope_theta"])
    for layer in range(config["num_hidden_layers"]):
        x = decoder_block(x, weights, layer, config, cos, sin)
    x = rms_norm(x, weights["model.norm.weight"], config["rms_norm_eps"])
    head = weights.get("lm_head.weight", weights["model.embed_tokens.weight"])  # tied: reuse the embedding
    return linear(x, head)                                          # (batch, seq, vocab)


# ---------------------------------------------------------------------------------------
# GPT-2: what changes
# ---------------------------------------------------------------------------------------


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """Mean 0 and variance 1 for each vector, then a learned gain and bias per channel.

    x: (..., hidden); weight, bias: (hidden,) -> (..., hidden). RMSNorm skips the mean and the bias.
    """
    mean = np.mean(x, axis=-1, keepdims=True)                      # (..., 1)
    var = np.mean((x - mean) ** 2, axis=-1, keepdims=True)         # the biased variance
    return weight * (x - mean) / np.sqrt(var + eps) + bias


def gelu_new(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), elementwise."""
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def conv1d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """GPT-2's "Conv1D" projection, a linear layer with the weight stored (in, out): x @ W + b."""
    return x @ weight + bias


def gpt2_block(x: np.ndarray, weights: dict[str, np.ndarray], layer: int, config: dict) -> np.ndarray:
    """x + attention(layer_norm(x)), then x + mlp(layer_norm(x)): (batch, seq, n_embd) -> same."""
    p = f"transformer.h.{layer}."
    w = lambda name: weights[p + name]  # noqa: E731
    batch, seq, width = x.shape
    n_head, eps = config["n_head"], config["layer_norm_epsilon"]
    head_dim = width // n_head

    h = layer_norm(x, w("ln_1.weight"), w("ln_1.bias"), eps)
    qkv = conv1d(h, w("attn.c_attn.weight"), w("attn.c_attn.bias"))   # (batch, seq, 3 * n_embd)
    q, k, v = np.split(qkv, 3, axis=-1)                                 # queries, keys, values side by side
    q, k, v = (t.reshape(batch, seq, n_head, head_dim).transpose(0, 2, 1, 3) for t in (q, k, v))
    y = attention(q, k, v)                                              # (batch, n_head, seq, head_dim)
    y = y.transpose(0, 2, 1, 3).reshape(batch, seq, width)
    x = x + conv1d(y, w("attn.c_proj.weight"), w("attn.c_proj.bias"))

    h = layer_norm(x, w("ln_2.weight"), w("ln_2.bias"), eps)
    h = gelu_new(conv1d(h, w("mlp.c_fc.weight"), w("mlp.c_fc.bias")))  # (batch, seq, 4 * n_embd)
    return x + conv1d(h, w("mlp.c_proj.weight"), w("mlp.c_proj.bias"))


def gpt2_forward(weights: dict[str, np.ndarray], config: dict, input_ids: np.ndarray) -> np.ndarray:
    """GPT-2's logits: input_ids (batch, seq) -> (batch, seq, vocab). At most n_positions tokens."""
    seq = input_ids.shape[1]
    if seq > config["n_positions"]:
        raise ValueError(f"{seq} tokens exceed GPT-2's n_positions={config['n_positions']}: wpe has no row past it.")
    x = weights["transformer.wte.weight"][input_ids] + weights["transformer.wpe.weight"][:seq]  # (batch, seq, n_embd)
    for layer in range(config["n_layer"]):
        x = gpt2_block(x, weights, layer, config)
    x = layer_norm(x, weights["transformer.ln_f.weight"], weights["transformer.ln_f.bias"],
                   config["layer_norm_epsilon"])
    return linear(x, weights["lm_head.weight"])                        # (batch, seq, vocab)


def read_eos_token_ids(folder: str | Path) -> tuple[int, ...]:
    """The ids that end generation: ``eos_token_id`` (one id or a list) of ``generation_config.json``,
    else of ``config.json``, else none; the rule ``minillm.generate`` follows by default."""
    for name in ("generation_config.json", "config.json"):
        path = Path(folder) / name
        eos = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id") if path.is_file() else None
        if eos is not None:
            return (eos,) if isinstance(eos, int) else tuple(eos)
    return ()


class NumpyModel:
    """Convenience wrapper: ``NumpyModel(folder)(input_ids)`` gives logits (batch, seq, vocab)."""

    def __init__(self, folder: str | Path):
        self.weights, self.config = load_numpy_model(folder)
        self.eos_token_ids = read_eos_token_ids(folder)

    def __call__(self, input_ids: np.ndarray) -> np.ndarray:
        return forward(self.weights, self.config, input_ids)

    def generate(self, input_ids, max_new_tokens: int, eos_token_id: int | tuple[int, ...] | None = None) -> list[int]:
        """Greedy decoding of one sequence: the ids (prompt included), each new token the argmax.

        Stops after ``max_new_tokens`` or right after an end id (kept in the result), as
        ``minillm.generate`` does: ``eos_token_id`` (one id or several); by default (None) the
        checkpoint's (:func:`read_eos_token_ids`); ``()`` never stops early.
        Without a KV cache every step reruns the whole sequence: fine for tiny models.
        """
        if eos_token_id is None:
            eos_token_id = self.eos_token_ids
        stop = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id)
        ids = [int(i) for i in np.asarray(input_ids).reshape(-1)]
        for _ in range(max_new_tokens):
            logits = self(np.array(ids))[0, -1]                     # (vocab,): scores for the next token
            ids.append(int(np.argmax(logits)))
            if ids[-1] in stop:
                break
        return ids
