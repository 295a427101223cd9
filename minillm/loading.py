"""``load_model``: a source (folder or hub id) in, a ready-to-run model out (Transformer or GPT2)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import GPT2Config, ModelConfig, load_config
from .generation_config import GenerationConfig
from .gpt2 import GPT2
from .hub import resolve_source
from .model import Transformer
from .packed import pack_linears, use_grouped_attention
from .tokenizer import Tokenizer, load_tokenizer
from .weights import load_weights, saved_dtype

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(dtype: torch.dtype | str, config: ModelConfig | GPT2Config | None = None,
                folder: Path | None = None) -> torch.dtype:
    """A torch dtype from a dtype or its name.

    ``"auto"`` means the checkpoint's own dtype, as in ``transformers``: the one config.json
    records (``dtype`` or ``torch_dtype``), else the one its weights are stored in (``folder``'s
    safetensors headers), else float32.
    """
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype {dtype} is not supported; use one of {', '.join(DTYPES)}.")
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name == "auto":
        name = (config.torch_dtype if config else None) or (saved_dtype(folder) if folder else None) or "float32"
    if name not in DTYPES:
        saved = f" (the checkpoint's own dtype is {name})" if dtype == "auto" else ""
        raise ValueError(f"dtype {dtype!r}{saved} is not supported; use one of {', '.join(DTYPES)} or 'auto'.")
    return DTYPES[name]


def check_device(device: torch.device | str) -> None:
    """Raise ValueError, naming ``device``, if this torch build or machine cannot put a tensor there
    (``"cuda"`` with a CPU-only torch, a GPU index that does not exist, a misspelled name), before
    any file is read: otherwise the failure would come out of the weight loading, looking like a bad file."""
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:   # torch raises AssertionError for a build without CUDA
        hint = (" This torch build has no CUDA support: install a CUDA build of torch (see pytorch.org), "
                "or use device='cpu'." if "cuda" in str(device) and not torch.backends.cuda.is_built()
                else " Use device='cpu', or a device this machine has.")
        raise ValueError(f"device {str(device)!r} is not available here ({err}).{hint}") from err


def load_model(
    source: str | os.PathLike,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
    packed: bool = False,
) -> Transformer | GPT2:
    """Load a Qwen2, Llama or GPT-2 checkpoint from a local folder or a hub repo id.

    Reads ``config.json`` (its ``model_type`` picks minillm.model.Transformer or
    minillm.gpt2.GPT2, which share one interface) and the safetensors weights (single file
    or shards), converting them to ``dtype`` (float32, bfloat16, float16, or "auto" for the
    checkpoint's own). ``model.generation_config`` holds the checkpoint's generation_config.json
    (the ids that end generation, sampling defaults). The model comes back in eval mode with
    gradients off (call ``model.requires_grad_(True)``
    to train it). ``model(input_ids)`` returns raw logits of shape (batch, seq, vocab).
    ``packed=True`` is the fast inference path (see ``minillm.packed``): linear weights in
    oneDNN's CPU layout, a fused MLP (Qwen2/Llama) and a leaner attention; logits then equal the readable path's up
    to float rounding, and the weights can no longer be inspected or trained.
    """
    check_device(device)
    folder = resolve_source(source)
    config = load_config(folder / "config.json")
    dtype = parse_dtype(dtype, config, folder)
    with torch.device("meta"):          # shapes only; no memory until the weights arrive
        model = GPT2(config) if isinstance(config, GPT2Config) else Transformer(config)
    load_weights(model, folder, dtype, device)
    model.generation_config = GenerationConfig.from_folder(folder, config)   # where generate() stops
    if packed:
        pack_linears(model)
        use_grouped_attention(model)
    return model.eval()


def load_model_and_tokenizer(source: str | os.PathLike, dtype: torch.dtype | str = torch.float32,
                             packed: bool = False) -> tuple[Transformer, Tokenizer]:
    """:func:`load_model` and :func:`~minillm.tokenizer.load_tokenizer` of the same source.

    Raises ValueError, naming both sizes, when the tokenizer has more tokens than the model's
    embedding table has rows: some texts would encode to ids the model has no row for. (Fewer
    tokens than rows is normal: Qwen2.5 pads its 151,665 tokens to 151,936 rows.)
    """
    model, tok = load_model(source, dtype=dtype, packed=packed), load_tokenizer(source)
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(
            f"{source}: the tokenizer has {tok.vocab_size:,} tokens but the model's embedding has only "
            f"{model.config.vocab_size:,} rows (config.json vocab_size), so they do not belong together. "
            "Put the tokenizer files that came with these weights next to config.json."
        )
    return model, tok
