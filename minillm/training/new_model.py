"""A freshly initialised model of the shape a :class:`~minillm.training.config.TrainConfig` describes.

``config.architecture`` picks the model: "transformer", a Qwen2 decoder
(:class:`minillm.models.qwen2.Transformer`); "gpt2" (:class:`minillm.models.gpt2.GPT2`); "mlp", the
attention-free fixed-window baseline (:class:`minillm.models.mlp_lm.MLPLanguageModel`). The
vocabulary size and the end-of-text id come from the tokenizer. Weights are initialised as
Hugging Face does, from a generator seeded with ``config.seed``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from minillm.models.config import GPT2Config, ModelConfig
from minillm.models.gpt2 import GPT2, LayerNorm
from minillm.models.mlp_lm import MLPLanguageModel
from minillm.models.qwen2 import RMSNorm, Transformer
from minillm.training.config import TrainConfig

INIT_STD = 0.02              # std of the normal init of weight matrices (Hugging Face's default)


def model_config(config: TrainConfig, vocab_size: int, eos_id: int) -> ModelConfig:
    """The Qwen2 ModelConfig of the model ``config`` describes (vocabulary from the tokenizer)."""
    return ModelConfig(
        model_type="qwen2", vocab_size=vocab_size, hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_key_value_heads,
        head_dim=config.hidden_size // config.num_attention_heads, rope_theta=config.rope_theta,
        rms_norm_eps=1e-6, max_position_embeddings=config.context,
        tie_word_embeddings=config.tie_word_embeddings, attention_bias=True, torch_dtype="float32",
        bos_token_id=eos_id, eos_token_id=eos_id,
    )


def gpt2_config(config: TrainConfig, vocab_size: int, eos_id: int) -> GPT2Config:
    """The GPT2Config of the model ``config`` describes (vocabulary from the tokenizer)."""
    return GPT2Config(
        vocab_size=vocab_size, n_positions=config.n_positions or config.context, n_embd=config.hidden_size,
        n_layer=config.num_hidden_layers, n_head=config.num_attention_heads,
        tie_word_embeddings=config.tie_word_embeddings, torch_dtype="float32", bos_token_id=eos_id, eos_token_id=eos_id,
    )


def init_weights(model: nn.Module, seed: int) -> None:
    """Initialise like Hugging Face: matrices and embeddings ~ N(0, 0.02), biases 0, norm gains 1.
    GPT-2's projections into the residual stream (``c_proj``) get the std divided by
    sqrt(2 * n_layer), as in the GPT-2 paper, so that the stream's variance does not grow with depth."""
    generator = torch.Generator().manual_seed(seed)
    gains = {id(m.weight) for m in model.modules() if isinstance(m, (RMSNorm, LayerNorm))}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if id(param) in gains:
                param.fill_(1.0)
            elif name.endswith("bias"):
                param.zero_()
            else:
                std = INIT_STD
                if isinstance(model, GPT2) and name.endswith("c_proj.weight"):
                    std /= math.sqrt(2 * model.config.n_layer)
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def build_model(config: TrainConfig, vocab_size: int, eos_id: int) -> nn.Module:
    """A freshly initialised model of ``config.architecture``, float32, in train mode."""
    if config.architecture == "mlp":
        model = MLPLanguageModel(vocab_size, config.mlp_window, config.hidden_size, config.intermediate_size)
    elif config.architecture == "gpt2":
        model = GPT2(gpt2_config(config, vocab_size, eos_id))
    else:
        model = Transformer(model_config(config, vocab_size, eos_id))
    init_weights(model, config.seed)
    return model.train()
