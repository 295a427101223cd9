"""minillm: readable Qwen2/Llama and GPT-2 decoders for seeing what is inside an LLM.

``from minillm import load_model, score`` works as usual. Each public name is imported from its
module the first time it is used (PEP 562's module ``__getattr__``), so that a program that needs
only a part without PyTorch (the class grader's processes, ``minillm.course.grade``) does not pay
the ~1.4 s of CPU that importing torch costs.
"""

import pkgutil
from importlib import import_module

# Each public name and the module that defines it: the kit's front door, in the order of the README.
_EXPORTS = {
    "load_model": "minillm.checkpoint.loading",
    "Tokenizer": "minillm.checkpoint.tokenizer",
    "load_tokenizer": "minillm.checkpoint.tokenizer",
    "ModelConfig": "minillm.models.config",
    "GPT2Config": "minillm.models.config",
    "Transformer": "minillm.models.qwen2",
    "KVCache": "minillm.models.qwen2",
    "GPT2": "minillm.models.gpt2",
    "score": "minillm.inference.scoring",
    "score_many": "minillm.inference.scoring",
    "perplexity": "minillm.inference.scoring",
    "next_tokens": "minillm.inference.scoring",
    "TextScore": "minillm.inference.scoring",
    "TokenScore": "minillm.inference.scoring",
    "NextTokens": "minillm.inference.scoring",
    "generate": "minillm.inference.generate",
    "stream": "minillm.inference.generate",
    "next_token_distribution": "minillm.inference.generate",
    "sample_next_token": "minillm.inference.generate",
    "top_k_filter": "minillm.inference.generate",
    "top_p_filter": "minillm.inference.generate",
}

__all__ = list(_EXPORTS)

# The package's parts (its folders and top-level modules: README, "Layout"), also imported on first
# use: `import minillm` then `minillm.models.qwen2.Transformer` or `minillm.inspect.trace(...)` works
# as after an eager import.
_PARTS = {part.name for part in pkgutil.iter_modules(__path__)}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
    elif name in _PARTS:
        value = import_module(f"minillm.{name}")
    else:
        raise AttributeError(f"module 'minillm' has no attribute {name!r}")
    globals()[name] = value   # found at once from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
