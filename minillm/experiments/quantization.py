"""Quantization vs perplexity: how much does each bit of weight precision buy?

For every bit width and scheme, a quantized copy of the model (see ``minillm.inference.quantize``)
scores the same texts; each row of the result holds the size a real k-bit file would have
and the corpus perplexity, ``exp(total NLL / total tokens)``.
"""

from __future__ import annotations

import math

from minillm.models.qwen2 import Transformer
from minillm.experiments.results import QuantizationResult
from minillm.inference.quantize import model_size_bytes, quantize_model
from minillm.inference.scoring import score_many
from minillm.checkpoint.tokenizer import Tokenizer


def perplexity_vs_bits(model: Transformer, tok: Tokenizer, texts: list[str],
                       bits_list: tuple[int, ...] = (32, 16, 8, 6, 4, 3, 2),
                       schemes: tuple[str, ...] = ("tensor", "channel", "group"), group_size: int = 64,
                       progress: bool = False) -> list[QuantizationResult]:
    """Score ``texts`` with a quantized copy of ``model`` for every bits x scheme (32 bits once)."""
    settings = [(32, "tensor")] * (32 in bits_list) + [(b, s) for b in bits_list if b != 32 for s in schemes]
    rows = []
    for bits, scheme in settings:
        if progress:
            print(f"{bits:>2} bits, {scheme}", flush=True)
        copy = quantize_model(model, bits, scheme, group_size)
        results = score_many(copy, tok, texts, top_k=0)
        del copy
        nll = sum(r.total_nll for r in results)
        tokens = sum(r.n_tokens for r in results)
        n_bytes = sum(r.n_bytes for r in results)
        rows.append(QuantizationResult(
            bits=bits, scheme="none" if bits == 32 else scheme,
            size_mb=model_size_bytes(model, bits, scheme, group_size) / 1e6, tokens=tokens,
            mean_nll=nll / tokens, perplexity=math.exp(nll / tokens), bits_per_byte=nll / math.log(2) / n_bytes,
        ))
    return rows


def quantization_text(rows: list[QuantizationResult]) -> str:
    """A text table of :func:`perplexity_vs_bits`' rows (what ``minillm quantize`` prints)."""
    lines = [f"{'bits':>4} {'scheme':>8} {'size MB':>9} {'perplexity':>11} {'bits/byte':>9}"]
    lines += [f"{r.bits:>4} {r.scheme:>8} {r.size_mb:>9.2f} {r.perplexity:>11.3f} {r.bits_per_byte:>9.4f}" for r in rows]
    return "\n".join(lines)
