"""Simulated k-bit weight quantization: how few bits can each weight keep?

A trained model stores every weight as a 16- or 32-bit float. Quantization stores each
weight as a small integer instead, a k-bit *code* q in 0 .. 2**k - 1, plus a few floats per
block of weights that say how codes map back to numbers. Fewer bits mean a smaller file
and less memory traffic per generated token, and a less exact model.

Here the quantization is *simulated* ("fake quantization"): each weight is rounded to the
nearest of its block's 2**k allowed values and then stored back as an ordinary float. The
model is no smaller in memory and runs the same code, but it computes exactly what a real
k-bit model would compute, so its perplexity shows the damage done by those k bits, and
``model_size_bytes`` says how big the real k-bit file would be.

The scheme is *uniform min-max* quantization. For one block of weights::

    lo, hi = min(block), max(block)
    scale  = (hi - lo) / (2**k - 1)            # the step between two allowed values
    q      = round((w - lo) / scale)           # the stored k-bit code, 0 .. 2**k - 1
    w_hat  = q * scale + lo                    # what the model computes with

so the 2**k allowed values are evenly spaced from lo to hi, and each weight moves by at most
scale / 2. The block is what shares one (lo, scale) pair:

* ``"tensor"``: the whole matrix. One outlier stretches hi - lo for everyone, and a row of
  small weights may see all its values rounded to one or two levels.
* ``"channel"``: each output row (dim 0 of an (out, in) weight, one token's vector of the
  embedding). Rows of very different sizes each get their own step.
* ``"group"``: each run of ``group_size`` consecutive weights of a row (along the input dim).
  Smaller blocks have smaller ranges, hence smaller steps and errors, at the price of
  storing more (lo, scale) pairs; group-wise 4-bit with groups of 32-128 is what most
  published 4-bit formats do.

Only the 2-D matrices (linear layers and the embedding) are quantized: they hold nearly all
the parameters. The 1-D tensors (RMSNorm gains, biases) are few and sensitive, and are kept
in full precision, as real formats do.

Size is counted as a real k-bit file would store it: ``bits`` bits per matrix entry, plus
one (lo, scale) pair of 16-bit floats per block, plus the 1-D tensors at 16 bits. ``bits=32``
means "not quantized": everything at 32 bits.
"""

from __future__ import annotations

import copy
import math

import torch

from minillm.errors import InputError
from minillm.models.qwen2 import Transformer

SCHEMES = ("tensor", "channel", "group")
FULL_PRECISION = 32  # ``bits`` value meaning "leave the weights as they are"
PAIR_BITS = 2 * 16   # one (lo, scale) pair per block, each a 16-bit float
VECTOR_BITS = 16     # a full-precision 1-D tensor entry (norm gain, bias) in the k-bit file


def _check_args(bits: int, scheme: str, group_size: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= FULL_PRECISION:
        raise InputError(f"bits must be an integer in 1..32 (32: full precision, not quantized); got {bits!r}.")
    if scheme not in SCHEMES:
        raise InputError(f"scheme must be one of {', '.join(map(repr, SCHEMES))}; got {scheme!r}.")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise InputError(f"group_size must be a positive integer (values per group); got {group_size!r}.")


def _check_readable(model: Transformer) -> None:
    if any(p.layout != torch.strided for p in model.parameters()):
        raise InputError(
            "this model's linear weights are packed (load_model(..., packed=True)): oneDNN's "
            "layout is opaque and cannot be quantized or measured. Load it with packed=False."
        )


def _quantize_rows(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Min-max quantize each row of a float64 (blocks, block_len) tensor on its own. Float64 also keeps
    the step of a tiny but nonzero float32 range (down to float32's 1e-45) from underflowing to 0,
    which made 0/0 = NaN codes when this ran in float32."""
    lo = x.amin(dim=1, keepdim=True)                     # (blocks, 1)
    hi = x.amax(dim=1, keepdim=True)
    # A constant row (hi == lo) gets scale 1: its codes are all 0 and it comes back as lo.
    scale = torch.where(hi > lo, (hi - lo) / levels, torch.ones_like(lo))
    q = torch.round((x - lo) / scale).clamp(0, levels)   # integer codes 0 .. levels
    return q * scale + lo


def quantize_tensor(w: torch.Tensor, bits: int, scheme: str = "tensor", group_size: int = 64) -> torch.Tensor:
    """Round ``w`` to ``bits``-bit uniform min-max levels and back: same shape and dtype.

    ``scheme`` picks the blocks that share one (lo, scale): ``"tensor"`` (all of ``w``, any
    shape), ``"channel"`` (each row of a 2-D (out, in) ``w``) or ``"group"`` (each run of
    ``group_size`` values along a row of a 2-D ``w``; when ``in`` is not a multiple of
    ``group_size`` the last group of each row is shorter). Each block comes back with at
    most 2**bits distinct values; a constant block comes back unchanged. The arithmetic is
    float64: it holds every code of up to 31 bits exactly and finds the nearest one (float32
    holds whole numbers only up to 2**24, and its rounding of ``(w - lo) / scale`` is off by
    about 2**(bits - 24) steps: from 14 bits on it picks a wrong code now and then, a weight
    then moving by more than half a step). The result is cast back to
    ``w``'s dtype, so bfloat16 weights keep at most their own 8 significant bits whatever
    ``bits`` says, and float32 weights their 24 (from about 24 bits on, the levels are finer
    than float32 can store). ``bits=32`` returns ``w`` itself, not a copy.
    """
    _check_args(bits, scheme, group_size)
    if bits == FULL_PRECISION:
        return w
    if scheme != "tensor" and w.dim() != 2:
        raise InputError(f"scheme {scheme!r} needs a 2-D (out, in) weight; got shape {tuple(w.shape)}.")
    levels = 2**bits - 1
    x = w.double()
    if scheme == "tensor":
        out = _quantize_rows(x.reshape(1, -1), levels).reshape(w.shape)
    elif scheme == "channel":
        out = _quantize_rows(x, levels)
    else:
        out = torch.cat([_quantize_rows(cols, levels) for cols in x.split(group_size, dim=1)], dim=1)
    return out.to(w.dtype)


def quantization_error(w: torch.Tensor, bits: int, scheme: str = "tensor", group_size: int = 64) -> float:
    """Root-mean-square of ``w - quantize_tensor(w, ...)``, in ``w``'s units (0.0 at 32 bits)."""
    err = w.float() - quantize_tensor(w, bits, scheme, group_size).float()
    return err.pow(2).mean().sqrt().item()


@torch.no_grad()
def quantize_model(model: Transformer, bits: int, scheme: str = "tensor", group_size: int = 64) -> Transformer:
    """A quantized copy of ``model``; ``model`` itself is left untouched.

    Every 2-D parameter (all linear weights and the embedding) goes through
    ``quantize_tensor``; 1-D parameters (RMSNorm gains, biases) stay in full precision. A tied
    LM head is the embedding matrix: it is quantized once and stays tied in the copy.
    ``bits=32`` returns an unmodified copy. Packed models (``packed=True``) are refused.
    """
    _check_args(bits, scheme, group_size)
    _check_readable(model)
    quantized = copy.deepcopy(model)  # deepcopy keeps shared parameters shared
    if bits == FULL_PRECISION:
        return quantized
    for p in quantized.parameters():  # yields a tied matrix once
        if p.dim() == 2:
            p.copy_(quantize_tensor(p, bits, scheme, group_size))
    return quantized


def _num_blocks(shape: torch.Size, scheme: str, group_size: int) -> int:
    """How many (lo, scale) pairs a 2-D (out, in) matrix needs."""
    rows, cols = shape
    if scheme == "tensor":
        return 1
    if scheme == "channel":
        return rows
    return rows * math.ceil(cols / group_size)


def model_size_bytes(model: Transformer, bits: int, scheme: str = "tensor", group_size: int = 64) -> int:
    """Bytes a ``bits``-bit file of ``model`` would need (a tied matrix counted once).

    Matrices: ``bits`` bits per entry plus one pair of 16-bit (lo, scale) per block; 1-D
    tensors: 16 bits per entry. ``bits=32``: every entry at 32 bits. The total in bits is
    rounded up to whole bytes.
    """
    _check_args(bits, scheme, group_size)
    _check_readable(model)
    total_bits = 0
    for p in model.parameters():
        if bits == FULL_PRECISION:
            total_bits += FULL_PRECISION * p.numel()
        elif p.dim() == 2:
            total_bits += bits * p.numel() + PAIR_BITS * _num_blocks(p.shape, scheme, group_size)
        else:
            total_bits += VECTOR_BITS * p.numel()
    return math.ceil(total_bits / 8)


def size_table(
    model: Transformer,
    bits_list: tuple[int, ...] = (32, 16, 8, 6, 4, 3, 2, 1),
    scheme: str = "tensor",
    group_size: int = 64,
) -> list[dict]:
    """One row per bit width: ``{"bits", "scheme", "size_mb" (1 MB = 10**6 bytes), "ratio_vs_32"}``."""
    full = model_size_bytes(model, FULL_PRECISION)
    rows = []
    for bits in bits_list:
        size = model_size_bytes(model, bits, scheme, group_size)
        rows.append({"bits": bits, "scheme": scheme, "size_mb": size / 1e6, "ratio_vs_32": size / full})
    return rows
