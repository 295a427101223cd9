"""Unit 3: quantization. How few bits can each weight keep before the model gets worse?

A model stores every weight as a 32-bit (or 16-bit) float. *Quantization* stores each
weight as a small integer code instead, a k-bit number q in 0 .. 2**k - 1, plus a couple of
floats that say how codes map back to numbers. Fewer bits mean a smaller file and less
memory traffic, and a less exact model. In this unit you

1. count how many bytes a model needs at a given bit width,
2. round a tensor to k bits with *uniform min-max* quantization (one scale per tensor),
3. quantize a whole model (a copy: the original must stay as it was),
4. measure perplexity against the number of bits.

We *simulate* quantization ("fake quantization"): each weight is rounded to one of its
2**k allowed values and stored back as an ordinary float, so the model runs unchanged but
computes exactly what a k-bit model would.

The scheme, for one tensor w and k bits::

    lo, hi = w.min(), w.max()
    levels = 2**k - 1                         # the number of steps between lo and hi
    scale  = (hi - lo) / levels               # the size of one step
    q      = round((w - lo) / scale)          # the integer code, 0 .. levels
    w_hat  = q * scale + lo                   # the value the model computes with

``lo`` is the *zero point*: code 0 means ``lo``, not 0.0. Each weight moves by at most
``scale / 2``.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

FULL_PRECISION = 32  # bits=32 means "not quantized": keep the float32 weights as they are


def model_size_bytes(num_params: int, bits: int) -> int:
    """How many bytes ``num_params`` numbers take when each is stored with ``bits`` bits.

    Args:
        num_params: how many numbers (int >= 0), e.g. ``model.num_parameters()``.
        bits: bits per number (int), e.g. 32 for float32, 16 for bfloat16, 4 for a 4-bit model.

    Returns:
        The size in bytes (int). A byte is 8 bits; when ``num_params * bits`` is not a whole
        number of bytes, round UP (a file cannot hold half a byte).

    Pitfall: bits and bytes differ by a factor of 8. A 1,000-parameter float32 model is
    4,000 bytes, not 32,000.

    Hint: ``math.ceil`` of the total number of bits divided by 8.
    """
    raise NotImplementedError("model_size_bytes: your code here")


def quantized_model_size_bytes(model: torch.nn.Module, bits: int) -> int:
    """Bytes of a real ``bits``-bit file of ``model``, quantized one tensor at a time.

    What such a file holds, parameter by parameter (``model.parameters()``; a tied matrix
    is yielded once and counted once):

    * a 2-D parameter (a linear weight or the embedding) with n entries: ``bits`` bits per
      entry, plus its ``lo`` and ``scale`` stored as two 16-bit floats (32 bits per matrix);
    * a 1-D parameter (RMSNorm gains, biases): not quantized, 16 bits per entry;
    * ``bits == 32`` means "not quantized at all": every entry of every parameter at 32 bits.

    Args:
        model: a minillm ``Transformer`` (any ``torch.nn.Module`` works).
        bits: 1 .. 16, or 32.

    Returns:
        Bytes (int): the total number of bits over all parameters, divided by 8, rounded up
        once at the end.

    Pitfall: the 1-D tensors and the (lo, scale) pairs are small but not free; leave them out
    and your answer is a little too small.
    """
    raise NotImplementedError("quantized_model_size_bytes: your code here")


def quantize_tensor(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Round ``w`` to ``bits``-bit uniform min-max levels and back: the "fake-quantized" tensor.

    One (lo, scale) pair for the WHOLE tensor (whatever its shape)::

        lo, hi = w.min(), w.max()
        levels = 2**bits - 1
        scale  = (hi - lo) / levels
        q      = round((w - lo) / scale), then clamp to 0 .. levels
        w_hat  = q * scale + lo

    Exact conventions (the grader checks them):

    * compute in float32 (``w.float()``) and return a tensor of ``w``'s shape and dtype;
    * round half to even, as ``torch.round`` does;
    * a constant tensor (hi == lo) comes back unchanged (use scale = 1 so you never divide by 0);
    * ``bits == 32`` means "not quantized": return ``w`` itself.

    Args:
        w: a float tensor of any shape.
        bits: int, 1 .. 16 (or 32).

    Returns:
        A tensor shaped like ``w`` holding at most ``2**bits`` distinct values, all of the
        form ``lo + q * scale``; every entry within ``scale / 2`` of the original.

    Pitfall: forgetting the zero point. ``round(w / scale) * scale`` puts the levels at
    multiples of ``scale`` instead of starting at ``lo``: it wastes levels on values the tensor
    never takes and needs codes outside 0 .. levels.

    Hint: ``torch.round``, ``.clamp(0, levels)``, and ``.to(w.dtype)`` at the end.
    """
    raise NotImplementedError("quantize_tensor: your code here")


def quantize_model(model: torch.nn.Module, bits: int) -> torch.nn.Module:
    """A quantized COPY of ``model``: every 2-D parameter goes through ``quantize_tensor``.

    * 2-D parameters (all linear weights and the embedding) are quantized, each with its
      own (lo, scale);
    * 1-D parameters (RMSNorm gains, biases) are kept as they are (few and sensitive);
    * ``model`` itself must be left exactly as it was: experiments compare the two.

    Args:
        model: a minillm ``Transformer``.
        bits: int, 1 .. 16 (32: return an unmodified copy).

    Returns:
        A new model object of the same class whose 2-D weights are quantized.

    Pitfall: ``q = model`` is not a copy, it is a second name for the same object: changing
    ``q``'s weights changes ``model``'s. Use ``copy.deepcopy``.

    Hint: loop over ``copy.named_parameters()``; write with ``p.copy_(...)`` inside
    ``torch.no_grad()`` (a parameter that requires grad refuses in-place writes otherwise).
    """
    raise NotImplementedError("quantize_model: your code here")


@torch.no_grad()
def text_nll(model: torch.nn.Module, tokenizer, text: str) -> tuple[float, int]:
    """Given (not graded): total negative log-likelihood of ``text`` in nats, and how many
    tokens were scored.

    The first token is not scored (nothing comes before it to predict it), so a text of n
    tokens gives n - 1 scored tokens. Its perplexity is ``math.exp(nll / count)``.
    """
    ids = torch.tensor([tokenizer.encode(text)])                  # (1, seq)
    logits = model(ids)[0, :-1].float()                           # (seq - 1, vocab): predictions
    targets = ids[0, 1:]                                          # (seq - 1,): what came next
    nll = F.cross_entropy(logits, targets, reduction="sum")
    return float(nll), int(targets.numel())


def perplexity_vs_bits(model: torch.nn.Module, tokenizer, texts: list[str],
                       bits_list: list[int]) -> list[tuple[int, float]]:
    """Perplexity of a quantized copy of ``model`` on ``texts``, for every bit width.

    For each ``bits`` in ``bits_list`` (in that order): quantize a copy of the model with your
    ``quantize_model``, score every text with ``text_nll``, and compute the CORPUS perplexity

        exp(total NLL over all texts / total scored tokens over all texts)

    Args:
        model: a minillm ``Transformer`` (not modified).
        tokenizer: its minillm ``Tokenizer``.
        texts: list of str.
        bits_list: list of int, e.g. ``[32, 8, 4, 2]``; 32 is the unquantized model.

    Returns:
        A list of ``(bits, perplexity)`` tuples (int, float), one per entry of ``bits_list``.

    Pitfall: the mean of per-text perplexities is not the corpus perplexity: it gives a
    short text as much weight as a long one, and exp is convex. Pool the NLLs and token
    counts first, exponentiate once.
    """
    raise NotImplementedError("perplexity_vs_bits: your code here")
