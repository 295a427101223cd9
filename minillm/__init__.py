"""minillm: readable Qwen2/Llama and GPT-2 decoders for seeing what is inside an LLM."""

from minillm.checkpoint.loading import load_model
from minillm.checkpoint.tokenizer import Tokenizer, load_tokenizer
from minillm.inference.generate import (generate, next_token_distribution, sample_next_token, stream, top_k_filter,
                                       top_p_filter)
from minillm.inference.scoring import NextTokens, TextScore, TokenScore, next_tokens, perplexity, score, score_many
from minillm.models.config import GPT2Config, ModelConfig
from minillm.models.gpt2 import GPT2
from minillm.models.qwen2 import KVCache, Transformer

__all__ = [
    "GPT2", "GPT2Config", "KVCache", "ModelConfig", "NextTokens", "Transformer", "generate", "load_model",
    "next_token_distribution", "next_tokens",
    "TextScore", "TokenScore", "Tokenizer", "load_tokenizer", "perplexity", "sample_next_token", "score",
    "score_many", "stream", "top_k_filter", "top_p_filter",
]
