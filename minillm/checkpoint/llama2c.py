"""Import Andrej Karpathy's llama2.c checkpoints (the TinyStories models 260K, 15M, 42M, 110M).

llama2.c trains small Llama models in PyTorch and runs them with one file of C. It saves a
model in its own flat binary format instead of a Hugging Face folder:

    model.bin       seven int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len),
                    then every weight as raw float32, one kind at a time for all layers
    tokenizer.bin   int32 longest piece length, then per piece: float32 score, int32 length, UTF-8 bytes

``convert(model_bin, tokenizer_bin, out_dir)`` writes the same model as a Hugging Face Llama
folder (config.json, model.safetensors, tokenizer.json, ...) that ``minillm.load_model``,
``minillm.load_tokenizer`` and ``transformers`` load, with llama2.c's logits and token ids.
Most of it is renaming. Two parts need more:

* Rotary embeddings (RoPE). llama2.c rotates channels (2i, 2i+1) of a head as a pair;
  Hugging Face Llama rotates channel i with channel i + head_dim/2, by the same angle.
  Reordering the rows of the query and key projections (in each head the even rows first,
  then the odd ones) moves every pair to where the other layout expects it. Attention only
  uses dot products q.k, which do not change when both vectors are reordered alike.
* The tokenizer. llama2.c's encoder starts from single characters (unknown ones become
  their UTF-8 bytes, the byte tokens) and repeatedly merges the adjacent pair whose
  concatenation is the vocabulary piece with the highest score, the leftmost on ties.
  The ``tokenizers`` library's BPE instead merges the adjacent pair that comes first in a
  list of merges. Listing, for every piece, every split of it into two pieces, best piece
  score first, makes the library merge the same pairs in the same order (see ``_merges``).

Only the legacy export (llama2.c's ``export.py --version 0``, the format of the published
tinyllamas files) is read; the newer versioned exports are refused with a clear error.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from minillm.checkpoint.safe_io import build_then_move
from minillm.errors import InputError

HEADER_FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
HEADER_BYTES = 4 * len(HEADER_FIELDS)
VERSIONED_MAGIC = 0x616B3432      # first uint32 of llama2.c's "version 1/2" exports ("42ka" on disk)
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")      # ids 0, 1, 2
FIRST_PIECE = len(SPECIAL_TOKENS) + 256        # ids 3..258 are the byte tokens <0x00>..<0xFF>
SPACE = "\u2581"                               # "▁": how SentencePiece-style vocabularies write a space
OUTPUT_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                "tokenizer_config.json")

# llama2.c's per-layer weights (stacked over layers in the file) -> Hugging Face Llama names.
LAYER_NAMES = {
    "rms_att_weight": "input_layernorm.weight",
    "wq": "self_attn.q_proj.weight",
    "wk": "self_attn.k_proj.weight",
    "wv": "self_attn.v_proj.weight",
    "wo": "self_attn.o_proj.weight",
    "rms_ffn_weight": "post_attention_layernorm.weight",
    "w1": "mlp.gate_proj.weight",
    "w2": "mlp.down_proj.weight",
    "w3": "mlp.up_proj.weight",
}


class Llama2cError(InputError):
    """A llama2.c file is missing, truncated, or not in a format this importer reads."""


# ---------------------------------------------------------------------------------------------
# model.bin


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a legacy llama2.c ``model.bin``: its header and its float32 weights.

    The header dict holds the seven ``HEADER_FIELDS`` (``vocab_size`` made positive) and
    ``shared_classifier``: True when the output layer reuses the token embedding (the file
    stores a negative vocab_size and a separate classifier otherwise).
    The weights are numpy arrays memory-mapped from the file, under llama2.c's names
    (kv_dim = n_kv_heads * dim / n_heads):
    token_embedding_table (vocab, dim); stacked over layers: rms_att_weight (n_layers, dim),
    wq (n_layers, dim, dim), wk and wv (n_layers, kv_dim, dim), wo (n_layers, dim, dim),
    rms_ffn_weight (n_layers, dim), w1 and w3 (n_layers, hidden_dim, dim),
    w2 (n_layers, dim, hidden_dim); rms_final_weight (dim,); wcls (vocab, dim) only when
    not shared. The two RoPE tables in the file are skipped: the model computes its own.
    """
    path = Path(path)
    header = _read_header(path)
    shapes = _weight_shapes(header)
    expected = HEADER_BYTES + 4 * sum(math.prod(shape) for shape in shapes.values())
    actual = path.stat().st_size
    if actual != expected:
        fields = ", ".join(f"{k}={header[k]}" for k in HEADER_FIELDS)
        why = ("it is truncated: download or export it again" if actual < expected
               else "it is not a legacy llama2.c model.bin, or its header is damaged")
        raise Llama2cError(
            f"{path} has {actual:,} bytes, but a legacy llama2.c export with its header ({fields}, "
            f"shared classifier: {header['shared_classifier']}) has {expected:,}: {why}."
        )

    flat = np.memmap(path, dtype="<f4", mode="r", offset=HEADER_BYTES)
    weights, start = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        weights[name] = flat[start : start + size].reshape(shape)
        start += size
    del weights["freq_cis_real"], weights["freq_cis_imag"]
    return header, weights


def _read_header(path: Path) -> dict:
    if not path.is_file():
        raise Llama2cError(f"{path} not found: give the path of a llama2.c model file such as stories15M.bin.")
    with open(path, "rb") as f:
        raw = f.read(HEADER_BYTES)
    if len(raw) >= 8 and struct.unpack_from("<I", raw)[0] == VERSIONED_MAGIC:
        version = struct.unpack_from("<i", raw, 4)[0]
        raise Llama2cError(
            f"{path} is a version-{version} llama2.c export (it starts with the magic number 0x616b3432); "
            "only the legacy format is supported so far. Export the checkpoint again with llama2.c's "
            "`python export.py OUT.bin --version 0 --checkpoint ckpt.pt`."
        )
    if len(raw) < HEADER_BYTES:
        raise Llama2cError(
            f"{path} has {len(raw)} bytes, fewer than the {HEADER_BYTES}-byte header of a llama2.c model: "
            "it is truncated or not a llama2.c model.bin."
        )
    header = dict(zip(HEADER_FIELDS, struct.unpack("<7i", raw)))
    header["shared_classifier"] = header["vocab_size"] > 0
    header["vocab_size"] = abs(header["vocab_size"])
    dim, heads, kv_heads = header["dim"], header["n_heads"], header["n_kv_heads"]
    if (min(header.values()) <= 0 or dim % heads or heads % kv_heads or (dim // heads) % 2):
        fields = ", ".join(f"{k}={header[k]}" for k in HEADER_FIELDS)
        raise Llama2cError(
            f"{path} does not start with a valid llama2.c header ({fields}): all must be positive, "
            "dim a multiple of n_heads, n_heads of n_kv_heads, and dim/n_heads even. Is it a llama2.c model.bin?"
        )
    return header


def _weight_shapes(header: dict) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every float32 array in the file, in file order."""
    dim, hidden, layers = header["dim"], header["hidden_dim"], header["n_layers"]
    head_dim = dim // header["n_heads"]
    kv_dim = header["n_kv_heads"] * head_dim
    shapes = {
        "token_embedding_table": (header["vocab_size"], dim),
        "rms_att_weight": (layers, dim),
        "wq": (layers, dim, dim),
        "wk": (layers, kv_dim, dim),
        "wv": (layers, kv_dim, dim),
        "wo": (layers, dim, dim),
        "rms_ffn_weight": (layers, dim),
        "w1": (layers, hidden, dim),
        "w2": (layers, dim, hidden),
        "w3": (layers, hidden, dim),
        "rms_final_weight": (dim,),
        "freq_cis_real": (header["seq_len"], head_dim // 2),
        "freq_cis_imag": (header["seq_len"], head_dim // 2),
    }
    if not header["shared_classifier"]:
        shapes["wcls"] = (header["vocab_size"], dim)
    return shapes


def half_split(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder the rows of stacked q or k projections from interleaved RoPE pairs to half-split.

    w: (n_layers, n_heads * head_dim, dim) -> same shape. In each head, rows 0, 2, 4, ... come
    first, then rows 1, 3, 5, ...: the pair (2i, 2i+1) that llama2.c rotates becomes the pair
    (i, i + head_dim/2) that Hugging Face Llama rotates by the same angle.
    """
    layers, rows, dim = w.shape
    head_dim = rows // n_heads
    return w.reshape(layers, n_heads, head_dim // 2, 2, dim).swapaxes(2, 3).reshape(layers, rows, dim)


def hf_state_dict(header: dict, weights: dict[str, np.ndarray], permute_qk: bool = True) -> dict[str, torch.Tensor]:
    """The weights under Hugging Face Llama names, as float32 torch tensors.

    ``permute_qk=False`` leaves q and k in llama2.c's RoPE layout: the result then loads but
    computes the wrong thing (kept to show that the reordering matters).
    """
    stacked = dict(weights)
    if permute_qk:
        stacked["wq"] = half_split(weights["wq"], header["n_heads"])
        stacked["wk"] = half_split(weights["wk"], header["n_kv_heads"])
    state = {"model.embed_tokens.weight": weights["token_embedding_table"],
             "model.norm.weight": weights["rms_final_weight"]}
    for layer in range(header["n_layers"]):
        for ours, theirs in LAYER_NAMES.items():
            state[f"model.layers.{layer}.{theirs}"] = stacked[ours][layer]
    if not header["shared_classifier"]:
        state["lm_head.weight"] = weights["wcls"]
    return {name: torch.tensor(array) for name, array in state.items()}  # copies out of the memory map


def hf_config(header: dict) -> dict:
    """config.json of the model: llama2.c's fixed choices (RMSNorm eps 1e-5, RoPE theta 10000) written out."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": header["dim"],
        "intermediate_size": header["hidden_dim"],
        "num_hidden_layers": header["n_layers"],
        "num_attention_heads": header["n_heads"],
        "num_key_value_heads": header["n_kv_heads"],
        "vocab_size": header["vocab_size"],
        "max_position_embeddings": header["seq_len"],
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": header["shared_classifier"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "torch_dtype": "float32",
        "use_cache": True,
    }


# ---------------------------------------------------------------------------------------------
# tokenizer.bin


def read_tokenizer(path: str | os.PathLike, vocab_size: int | None = None) -> list[tuple[str, float]]:
    """The pieces of a llama2.c ``tokenizer.bin`` as (text, score), in id order.

    A space is a plain " " in the text. The file does not say how many pieces it holds: give
    ``vocab_size`` (the model's) to catch a file cut at a piece boundary.
    """
    path = Path(path)
    if not path.is_file():
        raise Llama2cError(f"{path} not found: give the path of a llama2.c tokenizer file such as tokenizer.bin.")
    data = path.read_bytes()
    truncated = f"{path} ends in the middle of a piece: it is truncated. Download or export it again."
    if len(data) < 4:
        raise Llama2cError(truncated)
    (max_length,) = struct.unpack_from("<i", data)
    pieces, offset = [], 4
    while offset < len(data):
        if offset + 8 > len(data):
            raise Llama2cError(truncated)
        score, length = struct.unpack_from("<fi", data, offset)
        offset += 8
        if not 0 < length <= max_length:
            raise Llama2cError(
                f"{path}: piece {len(pieces)} claims {length} bytes, outside 1..{max_length} (the longest "
                "piece, from the file's first int32). Is it a llama2.c tokenizer.bin?"
            )
        if offset + length > len(data):
            raise Llama2cError(truncated)
        try:
            pieces.append((data[offset : offset + length].decode("utf-8"), score))
        except UnicodeDecodeError as err:
            raise Llama2cError(f"{path}: piece {len(pieces)} is not valid UTF-8 ({err}).") from err
        offset += length
    if vocab_size is not None and len(pieces) != vocab_size:
        raise Llama2cError(
            f"{path} holds {len(pieces)} pieces but the model has vocab_size={vocab_size}: the file is "
            "truncated or belongs to another model."
        )
    layout = [t.strip() for t, _ in pieces[:3]] + [t for t, _ in pieces[3:FIRST_PIECE]]
    if layout != [*SPECIAL_TOKENS, *(f"<0x{b:02X}>" for b in range(256))]:
        raise Llama2cError(
            f"{path} does not have the layout of a llama2.c SentencePiece vocabulary (ids 0-2 <unk> <s> "
            "</s>, ids 3-258 the byte tokens <0x00>..<0xFF>); this importer cannot convert it."
        )
    return pieces


def convert_tokenizer(path: str | os.PathLike, vocab_size: int | None = None) -> dict:
    """The content of a ``tokenizer.json`` that encodes and decodes exactly as llama2.c does.

    SentencePiece style: the text gets a leading space and every space is written "▁";
    no pre-tokenizer, so the whole text is one BPE "word"; characters missing from the
    vocabulary fall back to byte tokens; BOS ``<s>`` is added in front. Decoding undoes it.
    """
    pieces = read_tokenizer(path, vocab_size)
    names = [*SPECIAL_TOKENS, *(text.replace(" ", SPACE) for text, _ in pieces[len(SPECIAL_TOKENS):])]
    vocab = {name: i for i, name in enumerate(names)}
    if len(vocab) != len(names):
        raise Llama2cError(f"{path} holds the same piece twice (a space and a '▁' are the same here).")
    bos = {"SpecialToken": {"id": "<s>", "type_id": 0}}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, token in enumerate(SPECIAL_TOKENS)
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPACE},
            {"type": "Replace", "pattern": {"String": " "}, "content": SPACE},
        ]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ]},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "<unk>",
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": _merges(pieces),
        },
    }


def _merges(pieces: list[tuple[str, float]]) -> list[list[str]]:
    """Every (left, right) pair of pieces that concatenates to a piece, best merged score first.

    llama2.c tries every adjacent pair whose concatenation is in the vocabulary, so a piece gets
    one merge per way of splitting it into two pieces ("▁the" = "▁t" + "he" = "▁th" + "e"), all
    with the piece's score. A merges list has no ties (each pair has its own rank), so the merges
    of one piece are ranked by where they split, shorter left part first. Where llama2.c merges
    the leftmost of several pairs that make the same piece, the library may merge another one
    first; the tokens still come out the same as long as (1) different pieces have different
    scores, (2) no two different merges of one piece can overlap (pieces A B C with AB = BC),
    and (3) merging one of them cannot let a better-scored piece swallow a token of another.
    The tests check all three for tok512.bin. No fixed list can do better in general: which
    pair llama2.c prefers depends on where it stands in the text.
    Byte tokens and special tokens never merge: llama2.c keeps them as strings like "<0x41>" and
    "\\n<s>\\n" that no pair of pieces spells.
    """
    known = {text for text, _ in pieces[FIRST_PIECE:]}
    ranked = []
    for piece_id, (text, score) in enumerate(pieces[FIRST_PIECE:], start=FIRST_PIECE):
        for split in range(1, len(text)):
            left, right = text[:split], text[split:]
            if left in known and right in known:
                ranked.append((-score, piece_id, split, left, right))
    ranked.sort()
    return [[left.replace(" ", SPACE), right.replace(" ", SPACE)] for *_, left, right in ranked]


# ---------------------------------------------------------------------------------------------
# The whole folder


def convert(model_bin: str | os.PathLike, tokenizer_bin: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write a llama2.c model + tokenizer as a Hugging Face Llama folder; return the folder.

    The folder (created if needed; files of the same names are replaced, others kept) gets the
    ``OUTPUT_FILES``: config.json, generation_config.json, model.safetensors (float32; no
    lm_head.weight when the classifier is shared), tokenizer.json and tokenizer_config.json.
    They are written into a temporary folder beside it, moved into place once all are
    complete: a conversion that fails leaves the folder as it was.
    """
    header, weights = read_checkpoint(model_bin)
    tokenizer = convert_tokenizer(tokenizer_bin, header["vocab_size"])  # both read before anything is written
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise Llama2cError(f"{out} is a file; give the path of a folder to write the checkpoint into.")
    with build_then_move(out, carry_over=True) as partial:
        _write_folder(partial, header, weights, tokenizer)
    return out


def _write_folder(out: Path, header: dict, weights: dict, tokenizer: dict) -> None:
    """The OUTPUT_FILES of a read llama2.c checkpoint (header, weights) and tokenizer, into ``out``."""
    save_file(hf_state_dict(header, weights), out / "model.safetensors", metadata={"format": "pt"})
    _write_json(out / "config.json", hf_config(header))
    _write_json(out / "generation_config.json",
                {"bos_token_id": 1, "eos_token_id": 2, "do_sample": False, "max_length": header["seq_len"]})
    _write_json(out / "tokenizer.json", tokenizer)
    _write_json(out / "tokenizer_config.json", {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "clean_up_tokenization_spaces": False,
        "legacy": False,
        "model_max_length": header["seq_len"],
        "tokenizer_class": "LlamaTokenizerFast",
    })


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
