"""minillm: a readable Qwen2/Llama decoder for seeing what is inside an LLM."""

from .config import ModelConfig
from .generate import generate, sample_next_token, top_k_filter, top_p_filter
from .loading import load_model
from .model import KVCache, Transformer
from .tokenizer import Tokenizer, load_tokenizer

__all__ = [
    "KVCache", "ModelConfig", "Transformer", "generate", "load_model",
    "Tokenizer", "load_tokenizer", "sample_next_token", "top_k_filter", "top_p_filter",
]
