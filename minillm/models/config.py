"""The model's hyperparameters, read from a checkpoint's own ``config.json``.

Keys keep Hugging Face's names so that a student can put this file next to a
``config.json`` from the hub and see where every number comes from. Two layouts
exist in the wild and both are read:

* hub configs (older ``transformers``): ``rope_theta`` and ``torch_dtype`` at the top level;
* current ``transformers``: ``rope_parameters = {"rope_type": "default", "rope_theta": ...}``
  and ``dtype``.

GPT-2 checkpoints name the same numbers differently (``n_embd`` for ``hidden_size``,
``n_layer``, ``n_head``, ``n_positions``...): :class:`GPT2Config` keeps those names and
offers the Qwen2 names as properties, so code that only asks "how wide, how deep, how
long a context" works on both. :func:`load_config` reads a ``config.json`` and returns
the right one of the two, going by its ``model_type``.

Anything that would make the model compute something this implementation does not
(rope scaling, a sliding window that hides keys from some layer, GPT-2 with another
activation, another architecture) is refused with a message instead of being silently
ignored; settings that only look unusual but compute the same numbers in ``transformers`` (a
sliding window switched on for no layer, ``attention_bias: false`` in a Qwen2 config) are accepted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from minillm.errors import InputError

SUPPORTED_MODEL_TYPES = ("qwen2", "llama")   # ModelConfig; "gpt2" has its own GPT2Config


class ConfigError(InputError):
    """config.json is missing, unreadable, or describes a model minillm does not compute."""


@dataclass(frozen=True)
class ModelConfig:
    model_type: str            # "qwen2" or "llama"
    vocab_size: int            # rows of the embedding table
    hidden_size: int           # d_model: width of the residual stream
    intermediate_size: int     # width of the SwiGLU hidden layer
    num_hidden_layers: int     # number of decoder blocks
    num_attention_heads: int   # query heads
    num_key_value_heads: int   # key/value heads (grouped-query attention when fewer)
    head_dim: int              # width of one head (hidden_size // heads unless given)
    rope_theta: float          # base of the rotary frequencies
    rms_norm_eps: float        # epsilon inside RMSNorm
    max_position_embeddings: int  # longest sequence the model was built for
    tie_word_embeddings: bool  # LM head shares the embedding matrix
    attention_bias: bool       # q/k/v projections have a bias (Qwen2: yes, Llama: no)
    torch_dtype: str | None = None  # dtype the checkpoint was saved in, e.g. "bfloat16"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    @property
    def o_proj_bias(self) -> bool:
        """Llama's attention_bias also puts a bias on the output projection; Qwen2's does not."""
        return self.attention_bias and self.model_type == "llama"

    @property
    def n_rep(self) -> int:
        """How many query heads share one key/value head."""
        return self.num_attention_heads // self.num_key_value_heads

    @classmethod
    def from_dict(cls, raw: dict, where: str = "config.json") -> "ModelConfig":
        """Build a config from the parsed ``config.json``; ``where`` names it in errors."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} holds a JSON {type(raw).__name__}, not an object: a config.json is one "
                              '{"key": value, ...} object (model_type, hidden_size, ...). Copy it from the model\'s hub page.')
        model_type = raw.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"{where}: model_type {model_type!r} is not supported; minillm computes "
                f"{', '.join(SUPPORTED_MODEL_TYPES)} and gpt2 decoders only"
                + (" (read a gpt2 config with GPT2Config or load_config)." if model_type == "gpt2" else ".")
            )

        def need(key: str):
            if key not in raw:
                raise ConfigError(f"{where}: missing key {key!r} (needed for model_type {model_type!r}).")
            return raw[key]

        vocab, hidden, intermediate, heads = (_positive_int(key, need(key), where) for key in (
            "vocab_size", "hidden_size", "intermediate_size", "num_attention_heads"))
        layers = _positive_int("num_hidden_layers", need("num_hidden_layers"), where, least=0)
        _refuse_what_we_do_not_compute(raw, where)
        rope = raw.get("rope_parameters") or {}
        rope_theta = _positive_number("rope_parameters.rope_theta" if "rope_theta" in rope else "rope_theta",
                                      rope.get("rope_theta", raw.get("rope_theta", 10000.0)), where)
        # As in transformers, only an absent (or null) key takes the default: a 0 is an error, not "unset".
        kv_heads = _positive_int("num_key_value_heads", _given(raw, "num_key_value_heads", heads), where)
        head_dim = _positive_int("head_dim", _given(raw, "head_dim", hidden // heads), where)
        if heads % kv_heads:
            raise ConfigError(
                f"{where}: num_attention_heads={heads} is not a multiple of "
                f"num_key_value_heads={kv_heads}; grouped-query attention needs it to be."
            )
        if head_dim % 2:
            raise ConfigError(f"{where}: head_dim={head_dim} is odd; rotary embeddings need an even width.")

        # Qwen2 always has q/k/v biases, whatever its config says (transformers' Qwen2Attention
        # ignores attention_bias); Llama has them only when attention_bias says so.
        bias = True if model_type == "qwen2" else bool(raw.get("attention_bias", False))
        return cls(
            model_type=model_type,
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            rope_theta=rope_theta,
            rms_norm_eps=_positive_number("rms_norm_eps", raw.get("rms_norm_eps", 1e-6), where),
            # transformers' defaults when config.json leaves it out: Qwen2Config 32768, LlamaConfig 2048.
            max_position_embeddings=_positive_int("max_position_embeddings", raw.get(
                "max_position_embeddings", 32768 if model_type == "qwen2" else 2048), where),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            attention_bias=bias,
            torch_dtype=raw.get("dtype") or raw.get("torch_dtype"),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_id=raw.get("eos_token_id"),
        )

    def to_dict(self) -> dict:
        """The ``config.json`` contents for this model (the inverse of :meth:`from_dict`).

        Written in the hub layout (``rope_theta`` and ``torch_dtype`` at the top level), which
        both minillm and ``transformers`` read; ``architectures`` names the transformers class.
        """
        raw = {
            "architectures": [{"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[self.model_type]],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "torch_dtype": self.torch_dtype or "float32",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
        }
        if self.model_type == "qwen2":
            raw["use_sliding_window"] = False   # full causal attention in every layer
        return raw

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        """Read a ``config.json`` file (or the folder that holds one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file() and (path.parent / "mlp_config.json").is_file():
            raise ConfigError(
                f"{path.parent} holds one of minillm's own MLP language models (mlp_config.json, from "
                "`minillm train --architecture mlp`), the attention-free baseline; it is not a Hugging Face "
                "checkpoint, so load_model and the minillm logits/generate/surprise/scaling commands, which "
                "run transformer checkpoints, cannot read it. In Python: "
                "minillm.models.mlp_lm.MLPLanguageModel.load(folder)(ids) gives its logits (batch, seq, vocab)."
            )
        if not path.is_file():
            raise ConfigError(
                f"{path} not found: a checkpoint folder needs the config.json that describes the "
                "model (hidden_size, num_hidden_layers, ...). Copy it from the model's hub page."
            )
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path} is not valid JSON: {err}") from err
        return cls.from_dict(raw, where=str(path))


def _given(raw: dict, key: str, default):
    """``raw[key]`` unless it is absent or null, else ``default``."""
    return default if raw.get(key) is None else raw[key]


def _positive_int(key: str, value, where: str, least: int = 1) -> int:
    """``value`` (config.json's ``key``, or its default) as an int, or ConfigError unless it is a whole number >= ``least``.

    Sizes and counts the forward pass builds tensors from: zero or negative ones would give a model that
    computes nothing (or a bare torch shape error), and 64.5 or "64" are typos, not sizes. (Layers may be
    0, as in transformers: embedding, final norm and head alone, a model of the next token given one.)
    """
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or value < least:
        raise ConfigError(f"{where}: {key} is {json.dumps(value)}; it must be a whole number >= {least} (a size or "
                          "a count the model is built from). Copy config.json from the model's hub page.")
    return int(value)


def _positive_number(key: str, value, where: str) -> float:
    """``value`` (config.json's ``key``, or its default) as a float, or ConfigError unless finite and > 0.

    An epsilon <= 0 makes normalisation divide by zero or take the root of a negative number, and a rotary
    base <= 0 (or NaN, which json reads) gives NaN angles: every logit would be NaN.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}: {key} is {json.dumps(value)}; it must be a finite number > 0, or every "
                          "logit is NaN. Copy config.json from the model's hub page.")
    return float(value)


def _refuse_what_we_do_not_compute(raw: dict, where: str) -> None:
    """Raise ConfigError for settings that would change the math of the forward pass."""
    for key in ("rope_parameters", "rope_scaling"):  # new layout, old layout
        rope = raw.get(key)
        if rope and not isinstance(rope, dict):
            raise ConfigError(f"{where}: {key} is {json.dumps(rope)}; it must be an object such as "
                              '{"rope_type": "default", "rope_theta": 10000.0}.')
        if not rope or rope.get("rope_type", rope.get("type", "default")) == "default":
            continue
        raise ConfigError(
            f"{where}: rope scaling ({rope}) is not implemented; "
            "minillm only computes plain rotary embeddings. Remove it only if you know the "
            "model was trained without it."
        )
    if raw.get("model_type") == "qwen2":
        _refuse_sliding_windows_that_bite(raw, where)
    act = raw.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(f"{where}: hidden_act {act!r} is not supported; the SwiGLU MLP uses 'silu'.")
    # Only Llama reads these two; transformers' Qwen2 ignores them, and so do we.
    if raw.get("model_type") == "llama" and raw.get("mlp_bias"):
        raise ConfigError(f"{where}: mlp_bias is true; minillm's SwiGLU MLP has no biases.")
    if raw.get("model_type") == "llama" and raw.get("pretraining_tp", 1) != 1:
        raise ConfigError(f"{where}: pretraining_tp != 1 is not supported.")


def _refuse_sliding_windows_that_bite(raw: dict, where: str) -> None:
    """Refuse a Qwen2 config only if some layer's sliding window would hide a key full attention sees.

    As in transformers: the window exists only when ``use_sliding_window`` is true, and applies to
    the layers ``layer_types`` marks "sliding_attention" (without ``layer_types``: layers
    ``max_window_layers`` and up). A window at least ``max_position_embeddings`` long never
    hides anything. So ``use_sliding_window: true`` with ``max_window_layers`` >= the number of
    layers (some hub configs) is full attention everywhere, and loads.
    """
    window = raw.get("sliding_window") if raw.get("use_sliding_window") else None
    layers = int(raw.get("num_hidden_layers", 0))
    layer_types = raw.get("layer_types") or [
        "sliding_attention" if window is not None and i >= raw.get("max_window_layers", 28) else "full_attention"
        for i in range(layers)
    ]
    unknown = sorted(set(layer_types) - {"full_attention", "sliding_attention"})
    if unknown:
        raise ConfigError(f"{where}: layer_types holds {unknown}; minillm computes full (causal) attention only.")
    sliding = [i for i, kind in enumerate(layer_types) if kind == "sliding_attention"]
    if window is not None and sliding and window < raw.get("max_position_embeddings", 32768):
        raise ConfigError(
            f"{where}: use_sliding_window is true and layers {sliding} attend to only the last "
            f"{window} tokens (sliding_window); minillm computes full causal attention only."
        )


@dataclass(frozen=True)
class GPT2Config:
    """GPT-2's hyperparameters under GPT-2's own ``config.json`` names.

    The properties below give the same numbers under the names :class:`ModelConfig` uses
    (``hidden_size``, ``max_position_embeddings``...), so that scoring, generation and the
    experiments ask one question of either family.
    """

    vocab_size: int                # rows of the embedding table (50257 for OpenAI's GPT-2)
    n_positions: int               # rows of the position table: the longest sequence
    n_embd: int                    # width of the residual stream
    n_layer: int                   # number of blocks
    n_head: int                    # attention heads (every head has its own keys and values)
    n_inner: int | None = None     # width of the MLP's hidden layer; None means 4 * n_embd
    activation_function: str = "gelu_new"  # GELU, tanh approximation
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = True
    torch_dtype: str | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    model_type: str = "gpt2"

    # The same numbers under ModelConfig's names.
    hidden_size = property(lambda self: self.n_embd)
    num_hidden_layers = property(lambda self: self.n_layer)
    num_attention_heads = property(lambda self: self.n_head)
    num_key_value_heads = property(lambda self: self.n_head)   # plain multi-head attention
    max_position_embeddings = property(lambda self: self.n_positions)
    head_dim = property(lambda self: self.n_embd // self.n_head)
    intermediate_size = property(lambda self: self.n_inner or 4 * self.n_embd)

    @classmethod
    def from_dict(cls, raw: dict, where: str = "config.json") -> "GPT2Config":
        """Build a config from a parsed GPT-2 ``config.json``; ``where`` names it in errors."""
        if raw.get("model_type") != "gpt2":
            raise ConfigError(f"{where}: model_type {raw.get('model_type')!r} is not 'gpt2'.")
        missing = [key for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head") if key not in raw]
        if missing:
            raise ConfigError(f"{where}: missing key(s) {missing} (needed for model_type 'gpt2').")
        _refuse_what_gpt2_does_not_compute(raw, where)
        size = {key: _positive_int(key, raw[key], where, least=0 if key == "n_layer" else 1)
                for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")}
        # transformers builds an n_inner-wide MLP whenever it is given
        n_inner = None if raw.get("n_inner") is None else _positive_int("n_inner", raw["n_inner"], where)
        if size["n_embd"] % size["n_head"]:
            raise ConfigError(f"{where}: n_embd={size['n_embd']} is not a multiple of n_head={size['n_head']}.")
        return cls(
            **size,
            n_inner=n_inner,
            activation_function=raw.get("activation_function", "gelu_new"),
            layer_norm_epsilon=_positive_number("layer_norm_epsilon", raw.get("layer_norm_epsilon", 1e-5), where),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", True)),
            torch_dtype=raw.get("dtype") or raw.get("torch_dtype"),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_id=raw.get("eos_token_id"),
        )

    def to_dict(self) -> dict:
        """The ``config.json`` contents (the inverse of :meth:`from_dict`), as transformers writes them."""
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_inner": self.n_inner,
            "activation_function": self.activation_function,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": self.torch_dtype or "float32",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
        }


# GPT-2's activation: GELU with the tanh approximation. transformers names it "gelu_new"
# (the original GPT-2 code) or "gelu_pytorch_tanh" (the same formula, PyTorch's kernel).
GPT2_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")


def _refuse_what_gpt2_does_not_compute(raw: dict, where: str) -> None:
    """Raise ConfigError for GPT-2 settings that would change the math of the forward pass."""
    act = raw.get("activation_function", "gelu_new")
    if act not in GPT2_ACTIVATIONS:
        raise ConfigError(
            f"{where}: activation_function {act!r} is not supported; minillm's GPT-2 computes GELU with "
            f"the tanh approximation ({' or '.join(GPT2_ACTIVATIONS)}), which would give other logits."
        )
    if not raw.get("scale_attn_weights", True):
        raise ConfigError(f"{where}: scale_attn_weights is false; minillm always divides attention scores "
                          "by sqrt(head_dim).")
    if raw.get("scale_attn_by_inverse_layer_idx"):
        raise ConfigError(f"{where}: scale_attn_by_inverse_layer_idx is true (scores of layer i also divided "
                          "by i + 1); minillm's GPT-2 does not compute that.")
    if raw.get("reorder_and_upcast_attn"):
        raise ConfigError(f"{where}: reorder_and_upcast_attn is true (the attention scores computed another way, "
                          "in float32); minillm's GPT-2 does not compute that.")
    if raw.get("add_cross_attention"):
        raise ConfigError(f"{where}: add_cross_attention is true: an encoder-decoder model, not a decoder.")


def load_config(path: str | Path) -> ModelConfig | GPT2Config:
    """Read a ``config.json`` (or the folder that holds one): a GPT2Config for model_type
    "gpt2", a ModelConfig otherwise (which refuses unsupported types)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        return ModelConfig.from_file(path)      # its error says what the file is for
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from err
    if isinstance(raw, dict) and raw.get("model_type") == "gpt2":
        return GPT2Config.from_dict(raw, where=str(path))
    return ModelConfig.from_dict(raw, where=str(path))
