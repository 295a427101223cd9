"""Read a checkpoint's tensors from safetensors files into the model.

A checkpoint stores its weights either in one ``model.safetensors`` or in shards listed
by ``model.safetensors.index.json`` (``{"weight_map": {tensor name: shard file}}``).
safetensors files are a JSON header plus raw bytes, so tensors are read one at a time
straight from the (memory-mapped) file and converted to the wanted dtype on the way:
no second full copy of the model is ever built. Pickle files (``pytorch_model.bin``) can
run arbitrary code when loaded and are refused.

Loading is strict: a missing tensor, an unexpected one, or a wrong shape is an error that
names the tensor and the file. The one exception is a short list, per family, of tensors
that older ``transformers`` versions saved although they are not weights
(:data:`NON_WEIGHT_BUFFERS`); they are skipped.

GPT-2 checkpoints have two more quirks: their projections were saved by a "Conv1D" layer
that stores the weight as (in, out), the transpose of ``nn.Linear``'s (out, in), and the
decoder's keys start with ``transformer.`` in files written by ``GPT2LMHeadModel`` but not
in OpenAI's original upload (``wte.weight``, ``h.0.attn.c_attn.weight`` ...). Both spellings load.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from minillm.errors import InputError
from minillm.models.gpt2 import GPT2
from minillm.models.qwen2 import Transformer

INDEX_FILE = "model.safetensors.index.json"
PICKLE_PATTERNS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt")

# Buffers that older transformers versions saved with the weights, although nothing is
# learned in them; they are recomputed, so a loader skips them (checkpoint names, full match).
# Llama and Qwen2 checkpoints by older transformers: the rotary frequencies theta ** (-2i / head_dim).
_ROTARY_INV_FREQ = re.compile(r"(model\.)?layers\.\d+\.self_attn\.rotary_emb\.inv_freq")
NON_WEIGHT_BUFFERS = {
    # GPT-2 (OpenAI's upload, older transformers): the causal mask as a (1, 1, n_positions,
    # n_positions) matrix, and the value masked scores were set to (-1e4).
    "gpt2": re.compile(r"(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)"),
    "llama": _ROTARY_INV_FREQ,
    "qwen2": _ROTARY_INV_FREQ,
}
# GPT-2's Conv1D weights, stored (in, out): transposed on the way in and out.
CONV1D_WEIGHTS = re.compile(r"h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight")


class WeightsError(InputError):
    """The checkpoint's weight files are missing, unsafe, corrupt, or do not fit the config."""


def weight_files(folder: Path) -> dict[str, Path]:
    """Map every tensor name in the checkpoint to the safetensors file that holds it."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            raw = json.loads(index.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise WeightsError(f"{index} is not valid JSON ({err}). Download it again.") from err
        weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
        if not isinstance(weight_map, dict):
            raise WeightsError(f"{index} is not a valid index: it needs a 'weight_map' object "
                               '({"tensor name": "shard file", ...}). Download it again.')
        files = {name: _shard_path(folder, shard, index) for name, shard in weight_map.items()}
        for shard in sorted(set(files.values())):
            if not shard.is_file():
                raise WeightsError(f"{index} lists shard {shard.name}, but {shard} is missing. Download it again.")
        return files

    single = folder / "model.safetensors"
    if single.is_file():
        return {name: single for name in _tensor_names(single)}

    pickles = sorted(p.name for pattern in PICKLE_PATTERNS for p in folder.glob(pattern))
    if pickles:
        raise WeightsError(
            f"{folder} holds only pickle weight files ({', '.join(pickles)}). minillm never unpickles "
            "weights: a pickle can run arbitrary code. Convert them once, in a trusted environment, "
            "to model.safetensors (e.g. transformers' save_pretrained(..., safe_serialization=True))."
        )
    raise WeightsError(
        f"{folder} has no model.safetensors (nor {INDEX_FILE} for a sharded checkpoint). "
        "Put the checkpoint's safetensors file(s) next to its config.json."
    )


def _shard_path(folder: Path, shard: object, index: Path) -> Path:
    """``folder / shard`` for a shard file name the index lists, refused unless it names a file
    inside ``folder``: a plain relative path with no ``..`` part, not absolute.

    The check is on the name as written, not on where a symbolic link leads: the Hugging Face
    cache stores every file of a snapshot folder as a link into its ``blobs/`` folder, and the
    links a folder holds are its owner's choice. What an index must not do is reach, by its
    own say, a file its folder does not hold (``../../secret``, ``/etc/passwd``).
    """
    if not isinstance(shard, str) or not shard:
        raise WeightsError(f"{index} lists the shard {shard!r}: a shard must be a file name such as "
                           "'model-00001-of-00002.safetensors'. Download the index again.")
    path = Path(shard)
    if path.is_absolute() or ".." in path.parts or Path(os.path.normpath(shard)).is_absolute():
        raise WeightsError(f"{index} lists the shard {shard!r}, which is outside the checkpoint folder {folder}. "
                           "Shards must be files inside that folder; minillm opens no file elsewhere. "
                           "Download the index again from a source you trust.")
    return folder / path


def _tensor_names(path: Path) -> list[str]:
    try:
        with safe_open(path, framework="pt") as f:
            return list(f.keys())
    except Exception as err:  # safetensors raises its own error type for corrupt headers
        raise unreadable(path, err) from err


# How other files a model folder may hold begin, to say what a file is when it is no safetensors file.
_MAGIC = [(b"PK\x03\x04", "a zip archive (PyTorch's torch.save format, as in pytorch_model.bin)"),
          (b"\x80", "a Python pickle (torch.save's old format)"), (b"GGUF", "a GGUF file (llama.cpp's format)"),
          (b"version https://git-lfs", "a Git LFS pointer, not the file itself (run `git lfs pull` in the clone)"),
          (b"\x89HDF", "an HDF5 file (Keras/TensorFlow weights)"),
          (b"<", "an HTML or XML page (an error or login page saved in place of the file?)"), (b"{", "a JSON file")]


def unreadable(path: Path, err: Exception) -> WeightsError:
    """The error for a weights file safetensors could not read: what the file is, as far as its first bytes tell.

    A safetensors file begins with 8 bytes (the little-endian length of its JSON header), then the header,
    which starts with '{'. A file that begins that way but cannot be read was cut short or damaged; one
    that begins otherwise is another kind of file under a safetensors name."""
    link = f" (a link to {os.path.realpath(path)})" if path.is_symlink() else ""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
        size = path.stat().st_size
    except OSError as os_err:
        return WeightsError(f"{path}{link} could not be opened ({os_err.strerror}).")
    if len(head) > 8 and head[8:9] == b"{":
        return WeightsError(f"{path}{link} could not be read as a safetensors file ({err}). Is it truncated or "
                            "incompletely downloaded? Download it again.")
    kind = next((what for magic, what in _MAGIC if head.startswith(magic)), None)
    if kind is None:
        text = all(byte >= 32 or byte in b"\t\n\r" for byte in head)   # no NUL or control bytes
        kind = "empty" if not head else "text" if text else f"a file that starts with the bytes {head[:8].hex(' ')}"
    return WeightsError(f"{path}{link} is not a safetensors file: it is {kind} ({size:,} bytes). A checkpoint's "
                        "weights are *.safetensors files (they begin with the length of a JSON header); put the "
                        "model's own .safetensors files here.")


SAFETENSORS_FLOATS = {"F64": "float64", "F32": "float32", "BF16": "bfloat16", "F16": "float16",
                      "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def saved_dtype(folder: Path) -> str | None:
    """The dtype the checkpoint's weights are stored in, e.g. ``"bfloat16"``, read from the
    safetensors header alone (no tensor is loaded); None if it holds no floating-point tensor.

    As ``transformers`` does for ``dtype="auto"`` when config.json records no dtype: the dtype
    of the first floating-point tensor (in the first shard, for a sharded checkpoint).
    """
    files = weight_files(folder)
    first = min(files.values())
    try:
        with safe_open(first, framework="pt") as f:
            for name in sorted(n for n, path in files.items() if path == first):
                code = f.get_slice(name).get_dtype()
                if code in SAFETENSORS_FLOATS:
                    return SAFETENSORS_FLOATS[code]
    except Exception as err:
        raise unreadable(first, err) from err
    return None


def checkpoint_name(param_name: str, model_type: str = "qwen2") -> str:
    """Our parameter name -> the name the Hugging Face checkpoint uses for it.

    The decoder stack lives under ``model.`` (GPT-2: ``transformer.``) in Hugging Face
    checkpoints; the LM head does not.
    """
    if param_name.startswith("lm_head."):
        return param_name
    return ("transformer." if model_type == "gpt2" else "model.") + param_name


def _stored_transposed(param_name: str, model_type: str) -> bool:
    """Whether the checkpoint stores this weight as (in, out) (GPT-2's Conv1D)."""
    return model_type == "gpt2" and CONV1D_WEIGHTS.fullmatch(param_name) is not None


def _file_names(files: dict[str, Path], model_type: str, folder: Path) -> dict[str, str]:
    """Map each tensor name, as :func:`checkpoint_name` spells it, to its name in the files;
    known non-weight buffers are left out. Names without the decoder's prefix get it, as transformers
    reads them: GPT-2's without ``transformer.``, a Qwen2/Llama base model's without ``model.``."""
    skip = NON_WEIGHT_BUFFERS.get(model_type)
    prefix = checkpoint_name("", model_type)   # "transformer." or "model."
    names: dict[str, str] = {}
    for name in files:
        if skip is not None and skip.fullmatch(name):
            continue
        # a base model's checkpoint (GPT2Model, Qwen2Model, LlamaModel) has no decoder prefix
        canonical = name if name.startswith((prefix, "lm_head.")) else prefix + name
        if canonical in names:
            raise WeightsError(f"checkpoint in {folder} holds both {names[canonical]!r} and {name!r}: "
                               "one tensor under two names. Keep one of them.")
        names[canonical] = name
    return names


def save_weights(model: Transformer | GPT2, folder: str | Path) -> Path:
    """Write ``model``'s parameters to ``folder/model.safetensors`` under Hugging Face names.

    The inverse of :func:`load_weights`: tensors keep their dtype, a tied LM head is left
    out (it is the embedding matrix), GPT-2's Conv1D weights are written (in, out), and the
    file carries ``{"format": "pt"}`` metadata as ``transformers``' own files do. Returns
    the path of the file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_type = model.config.model_type
    tensors = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        tensor = param.detach().to("cpu")
        if _stored_transposed(name, model_type):
            tensor = tensor.T
        tensors[checkpoint_name(name, model_type)] = tensor.contiguous()
    path = folder / "model.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    return path


def load_weights(model: Transformer | GPT2, folder: Path, dtype: torch.dtype, device: torch.device | str) -> None:
    """Fill every parameter of ``model`` (built on the meta device) from ``folder``'s safetensors."""
    model_type = model.config.model_type
    all_files = weight_files(folder)
    stored_as = _file_names(all_files, model_type, folder)        # checkpoint name -> name in the file
    files = {name: all_files[stored] for name, stored in stored_as.items()}
    tied = model.config.tie_word_embeddings
    expected = {checkpoint_name(n, model_type): n for n, _ in model.named_parameters(remove_duplicate=False)}
    head_copy = None
    if tied:
        # Tied checkpoints (Qwen2.5-0.5B/1.5B/3B, GPT-2) usually ship no lm_head.weight: the
        # embedding matrix serves as the head. Some ship a copy, which must be the same matrix.
        expected.pop("lm_head.weight")
        head_copy = files.pop("lm_head.weight", None)
        embedding = next(checkpoint_name(n, model_type) for n, p in model.named_parameters()
                         if p is model.embed_tokens.weight)            # model.embed_tokens / transformer.wte
        if embedding not in files and head_copy is not None:
            # Only the head was saved (an index or file naming lm_head.weight alone): it is the tied matrix,
            # and transformers ties the embedding to it.
            files[embedding], stored_as[embedding], head_copy = head_copy, stored_as["lm_head.weight"], None

    missing = sorted(set(expected) - set(files))
    if missing == ["lm_head.weight"]:
        raise WeightsError(
            f"checkpoint in {folder} has no lm_head.weight, and config.json says tie_word_embeddings=false (the "
            "output layer is a matrix of its own). transformers would load it with a randomly initialised output "
            "layer (and a warning): its logits would be noise. If this model's output layer is its token "
            "embedding, set tie_word_embeddings to true in config.json; otherwise the file is incomplete."
        )
    if missing:
        where = sorted({files[n].name for n in files}) or ["(no tensors)"]
        raise WeightsError(
            f"checkpoint in {folder} is missing {len(missing)} tensor(s) the config needs, e.g. "
            f"{missing[:3]} (looked in {', '.join(where)}). Does config.json belong to these weights?"
        )
    unexpected = sorted(set(files) - set(expected))
    if unexpected:
        raise WeightsError(
            f"checkpoint in {folder} has {len(unexpected)} tensor(s) the model has no place for, e.g. "
            f"{[stored_as[n] for n in unexpected[:3]]} in {files[unexpected[0]].name}. Does config.json belong "
            "to these weights? (transformers would load the checkpoint without them, with a warning: a model "
            "with fewer layers than the file holds, say; remove them from the file if they are not the model's.)"
        )

    by_file: dict[Path, list[str]] = {}
    for name, path in files.items():
        by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():
        try:
            for name in names:
                # One opening per tensor: the file's memory map, and the pages it brought into
                # this process, go away once the tensor is copied out, so loading peaks at the
                # model plus one tensor rather than the model plus the whole file.
                with safe_open(path, framework="pt") as f:
                    tensor = f.get_tensor(stored_as[name])
                if _stored_transposed(expected[name], model_type):
                    tensor = tensor.T                              # Conv1D's (in, out) -> (out, in)
                _assign(model, expected[name], tensor, path, dtype, device, stored_as[name])
                del tensor
        except WeightsError:
            raise
        except Exception as err:
            raise unreadable(path, err) from err
    if tied:
        model.lm_head.weight = model.embed_tokens.weight
        if head_copy is not None:
            _check_tied_copy(model, head_copy)


def _check_tied_copy(model: Transformer | GPT2, path: Path) -> None:
    with safe_open(path, framework="pt") as f:
        head = f.get_tensor("lm_head.weight")
    embedding = model.embed_tokens.weight
    if head.shape != embedding.shape or not torch.equal(head.to(embedding), embedding):
        raise WeightsError(
            f"config.json says tie_word_embeddings=true, but {path.name} holds an lm_head.weight that "
            "differs from the token embedding (transformers then loads the two apart, as if it were false). "
            "Set tie_word_embeddings to false in config.json if the checkpoint really has its own output matrix."
        )


def _assign(model: nn.Module, param_name: str, tensor: torch.Tensor, path: Path, dtype, device,
            stored_name: str) -> None:
    module_name, _, leaf = param_name.rpartition(".")
    module = model.get_submodule(module_name)
    wanted = getattr(module, leaf).shape
    if tensor.shape != wanted:
        transposed = _stored_transposed(param_name, model.config.model_type)
        raise WeightsError(
            f"tensor {stored_name!r} has shape {tuple(tensor.shape)}{' (transposed from Conv1D)' if transposed else ''} "
            f"in {path.name}, but the config needs {tuple(wanted)}. Does config.json belong to these weights?"
        )
    # copy=True: a tensor read from a safetensors file can still live in the file's memory
    # map, whose small pages stream more slowly than ordinary memory.
    value = tensor.to(device=device, dtype=dtype, copy=True)
    if not _all_finite(value):
        raise WeightsError(
            f"tensor {stored_name!r} in {path} holds NaN or infinite values (as {dtype}), so every "
            "result computed with it would be NaN. If the file is damaged, download it again; if its values are "
            "only too large for float16, load it as float32 or bfloat16."
        )
    setattr(module, leaf, nn.Parameter(value, requires_grad=False))


def _all_finite(tensor: torch.Tensor, chunk: int = 1 << 22) -> bool:
    """No NaN or infinity in ``tensor``, checked in chunks of ``chunk`` values so that the
    check adds a few MB, not a mask as large as the tensor, to the peak memory of loading.

    A NaN or infinity makes its chunk's sum non-finite, so a finite float32 sum clears a chunk
    (about 10x faster than testing each value); only a chunk whose sum is not finite (a bad
    value, or finite values summing past float32's 3.4e38) is tested value by value.
    """
    return all(bool(torch.isfinite(part.sum(dtype=torch.float32))) or bool(torch.isfinite(part).all())
               for part in tensor.reshape(-1).split(chunk))
