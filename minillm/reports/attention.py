"""Attention maps: who looks at whom, drawn with matplotlib's object-oriented API.

:func:`attention_figure` draws the attention probabilities that :func:`minillm.inference.inspect.trace`
recorded: one head of one layer, or every head of a layer in a grid, queries (the token looking)
down the side and keys (the token looked at) along the bottom, 0 white and 1 the darkest blue, the
same scale in every panel. :func:`plot_attention` traces a text and saves the figure as a PNG
(``minillm attention``). Figures are made with ``Figure()`` as in :mod:`minillm.reports.plot_axes`.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.figure import Figure

from minillm.checkpoint.tokenizer import Tokenizer
from minillm.errors import InputError
from minillm.inference.inspect import Trace, trace
from minillm.models.gpt2 import GPT2
from minillm.models.qwen2 import Transformer
from minillm.reports.plot_axes import save_figure

CMAP = "Blues"


def token_label(text: str) -> str:
    """A token made visible on an axis: spaces as ␣, newlines as ⏎."""
    return text.replace(" ", "\u2423").replace("\n", "\u23ce")


def _check_index(value, count: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        raise InputError(f"{name} must be an integer in 0..{count - 1} (this model has {count} {name}s); got {value!r}.")


def attention_figure(run: Trace, tokens: list[str], layer: int, head: int | None = None, row: int = 0) -> Figure:
    """Layer ``layer``'s attention probabilities for batch row ``row`` of ``run``: head ``head``
    alone (with a colour bar), or every head in a grid when ``head`` is None.

    ``tokens``: the text of each of the row's seq tokens (``tok.token_text`` of its ids), the axis
    labels. Padding positions (``run.attention_mask`` 0) are left out. Layers and heads count from 0,
    as ``run.attentions[layer][row, head]``. Raises ValueError for a layer, head or row out of range
    or a ``tokens`` of the wrong length.
    """
    _check_index(layer, len(run.attentions), "layer")
    weights = run.attentions[layer]                                  # (batch, heads, seq, seq)
    _check_index(row, weights.shape[0], "row")
    if head is not None:
        _check_index(head, weights.shape[1], "head")
    if len(tokens) != weights.shape[-1]:
        raise InputError(f"tokens has {len(tokens)} labels for {weights.shape[-1]} positions: give one per token of the row.")
    real = (torch.ones(weights.shape[-1], dtype=torch.bool) if run.attention_mask is None
            else run.attention_mask[row].bool().cpu())
    maps = weights[row].float().cpu()[:, real][:, :, real]            # (heads, real, real)
    labels = [token_label(t) for t, keep in zip(tokens, real.tolist()) if keep]
    heads = [head] if head is not None else list(range(maps.shape[0]))
    cols = math.ceil(math.sqrt(len(heads)))
    rows = math.ceil(len(heads) / cols)
    side = max(2.5, 0.22 * len(labels) + 1.2)                         # inches per panel: room for the labels
    fig = Figure(figsize=(side * cols + (1.2 if head is not None else 0.6), side * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    ticks = range(len(labels))
    for n, ax in enumerate(axes.flat):
        if n >= len(heads):
            ax.set_visible(False)
            continue
        image = ax.imshow(maps[heads[n]].numpy(), cmap=CMAP, vmin=0.0, vmax=1.0)
        ax.set_title(f"layer {layer}, head {heads[n]}", fontsize=9)
        last_row, first_col = n // cols == rows - 1 or n + cols >= len(heads), n % cols == 0
        ax.set_xticks(ticks, labels if last_row else [], rotation=90, fontsize=7)
        ax.set_yticks(ticks, labels if first_col else [], fontsize=7)
        if last_row:
            ax.set_xlabel("key (the token looked at)", fontsize=8)
        if first_col:
            ax.set_ylabel("query (the token looking)", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention probability")
    return fig


def plot_attention(model: Transformer | GPT2, tok: Tokenizer, text: str, path: str | Path, layer: int = 0,
                   head: int | None = None) -> Path:
    """Trace ``text`` through ``model`` and save layer ``layer``'s attention (one head, or all heads
    in a grid) as a PNG at ``path``; returns the path. Raises ValueError for an empty text or a layer
    or head this model does not have (checked before the model runs)."""
    if not isinstance(text, str) or not text:
        raise InputError(f"text must be a non-empty string; got {text!r}.")
    _check_index(layer, len(model.layers), "layer")
    if head is not None:
        _check_index(head, model.config.num_attention_heads, "head")
    ids = tok.encode(text)
    fig = attention_figure(trace(model, torch.tensor([ids])), [tok.token_text(i) for i in ids], layer, head)
    return save_figure(fig, path)
