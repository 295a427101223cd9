"""minillm: a readable Qwen2/Llama decoder for seeing what is inside an LLM."""

from .config import ModelConfig
from .generate import generate, next_token_distribution, sample_next_token, top_k_filter, top_p_filter
from .loading import load_model
from .model import KVCache, Transformer
from .scoring import NextTokens, TextScore, TokenScore, next_tokens, perplexity, score, score_many
from .tokenizer import Tokenizer, load_tokenizer

__all__ = [
    "KVCache", "ModelConfig", "NextTokens", "Transformer", "generate", "load_model", "next_token_distribution",
    "next_tokens",
    "TextScore", "TokenScore", "Tokenizer", "load_tokenizer", "perplexity", "sample_next_token", "score",
    "score_many", "top_k_filter", "top_p_filter",
]
