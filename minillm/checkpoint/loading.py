"""``load_model``: a source (folder or hub id) in, a ready-to-run model out (Transformer or GPT2)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from minillm.checkpoint.generation_config import GenerationConfig
from minillm.checkpoint.hub import resolve_source
from minillm.checkpoint.tokenizer import Tokenizer, load_tokenizer
from minillm.checkpoint.weights import load_weights, saved_dtype
from minillm.errors import InputError
from minillm.models.config import GPT2Config, ModelConfig, load_config
from minillm.models.gpt2 import GPT2
from minillm.models.packed import pack_linears, use_grouped_attention
from minillm.models.qwen2 import Transformer

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
            raise InputError(f"dtype {dtype} is not supported; use one of {', '.join(DTYPES)}.")
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name == "auto":
        name = (config.torch_dtype if config else None) or (saved_dtype(folder) if folder else None) or "float32"
    if name not in DTYPES:
        saved = f" (the checkpoint's own dtype is {name})" if dtype == "auto" else ""
        raise InputError(f"dtype {dtype!r}{saved} is not supported; use one of {', '.join(DTYPES)} or 'auto'.")
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
        raise InputError(f"device {str(device)!r} is not available here ({err}).{hint}") from err


class _SkipInit(TorchFunctionMode):
    """While it is on, the ``torch.nn.init`` functions that layers call in their constructors do
    nothing: the skeleton built on the meta device has shapes only, and every parameter is then
    read from the checkpoint. Initialising meta tensors is not free: PyTorch implements ``normal_``
    (nn.Embedding's init) for them in Python behind a guard that imports its compiler
    (``torch._dynamo``), ~1.5 s of CPU the first time a process loads a model, for numbers nobody
    keeps. (transformers skips initialisation the same way when it loads: its ``no_init_weights``.)"""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]   # the tensor, as the init functions return it
        return func(*args, **kwargs)


def load_model(
    source: str | os.PathLike,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
    packed: bool = False,
) -> Transformer | GPT2:
    """Load a Qwen2, Llama or GPT-2 checkpoint from a local folder or a hub repo id.

    Reads ``config.json`` (its ``model_type`` picks minillm.models.qwen2.Transformer or
    minillm.models.gpt2.GPT2, which share one interface) and the safetensors weights (single file
    or shards), converting them to ``dtype`` (float32, bfloat16, float16, or "auto" for the
    checkpoint's own). ``model.generation_config`` holds the checkpoint's generation_config.json
    (the ids that end generation, sampling defaults). The model comes back in eval mode with
    gradients off (call ``model.requires_grad_(True)``
    to train it). ``model(input_ids)`` returns raw logits of shape (batch, seq, vocab).
    ``packed=True`` is the fast inference path (see ``minillm.models.packed``): linear weights in
    oneDNN's CPU layout, a fused MLP (Qwen2/Llama) and a leaner attention; logits then equal the readable path's up
    to float rounding, and the weights can no longer be inspected or trained.
    """
    check_device(device)
    folder = resolve_source(source)
    config = load_config(folder / "config.json")
    dtype = parse_dtype(dtype, config, folder)
    with torch.device("meta"), _SkipInit():   # shapes only; no memory until the weights arrive
        model = GPT2(config) if isinstance(config, GPT2Config) else Transformer(config)
    load_weights(model, folder, dtype, device)
    model.generation_config = GenerationConfig.from_folder(folder, config)   # where generate() stops
    if packed:
        pack_linears(model)
        use_grouped_attention(model)
    return model.eval()


def load_model_and_tokenizer(source: str | os.PathLike, dtype: torch.dtype | str = torch.float32,
                             packed: bool = False) -> tuple[Transformer | GPT2, Tokenizer]:
    """:func:`load_model` and :func:`~minillm.checkpoint.tokenizer.load_tokenizer` of the same source, checked
    to belong together (:func:`check_tokenizer_fits`): the one place where the kit's commands and
    experiments load the pair."""
    model, tok = load_model(source, dtype=dtype, packed=packed), load_tokenizer(source)
    check_tokenizer_fits(tok, model.config.vocab_size, source)
    return model, tok


# Models may give their embedding table more rows than the tokenizer has tokens ("padding rows",
# never produced by encoding), to round its size for fast matrix products. How real families pad:
#   GPT-2 (50,257), Llama-2 (32,000), stories260K (512), the kit's own models: no padding;
#   nanoGPT: 50,257 -> 50,304 rows (a multiple of 64; 47 spare);
#   T5: 32,100 -> 32,128 (28); Phi-3-mini: 32,011 -> 32,064 (53);
#   Qwen2.5-0.5B/1.5B/3B: 151,665 tokens listed -> 151,936 rows (a multiple of 128; 271 spare, 0.18%);
#   Pythia: 50,277 -> 50,304 ... 50,688 (a multiple of 128 x the tensor-parallel ranks; up to 411, 0.8%);
#   phi-1.5 / phi-2: 50,295 -> 51,200 (905 spare, 1.8%: the most we know of).
# (Numbers from the models' config.json and tokenizer files on the hub, and the maintainers'
# answers in EleutherAI/pythia#68, huggingface/transformers#4875, guidance-ai/guidance#792.) So padding makes the row
# count a multiple of PAD_MULTIPLE and adds fewer than max(PAD_MULTIPLE, rows / PAD_SHARE) rows;
# beyond that the tokenizer is another model's: a 50,257-token GPT-2 tokenizer beside a
# 151,936-row Qwen2.5 model would leave 101,679 rows unused, and its ids mean other words.
PAD_MULTIPLE = 64
PAD_SHARE = 32


def check_tokenizer_fits(tok: Tokenizer, rows: int, source: str | os.PathLike) -> None:
    """Raise ValueError, naming both files and sizes, unless a tokenizer of ``tok.vocab_size``
    tokens can be the one of a model whose embedding has ``rows`` rows: the same size, or fewer
    tokens with padding rows as real models have them (see the comment above this function).

    More tokens than rows would feed the model ids it has no row for; far fewer means the
    tokenizer belongs to another model, and every id would stand for the wrong word.
    """
    tokens, folder = tok.vocab_size, tok.folder
    vocabulary = folder / "tokenizer.json" if (folder / "tokenizer.json").is_file() else folder / "vocab.json"
    sizes = (f"{source}: the tokenizer has {tokens:,} tokens ({vocabulary}) but the model's embedding has "
             f"{'only ' if tokens > rows else ''}{rows:,} rows (vocab_size in {folder / 'config.json'})")
    fix = "Put the tokenizer files that came with these weights next to config.json."
    if tokens > rows:
        raise InputError(f"{sizes}, so some texts would encode to ids the model has no row for. {fix}")
    padding = rows - tokens
    if padding and (rows % PAD_MULTIPLE or padding >= max(PAD_MULTIPLE, rows / PAD_SHARE)):
        raise InputError(
            f"{sizes}: {padding:,} rows that no token uses. Models pad their embedding only a little, to a round "
            f"size (Qwen2.5: 151,665 tokens, 151,936 rows), so this tokenizer is another model's and its ids would "
            f"stand for the wrong words (GPT-2's tokenizer has 50,257 tokens, Llama-2's 32,000, Qwen2.5's "
            f"151,665). {fix}")
