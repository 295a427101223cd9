"""The figure of the quantization experiment (``minillm quantize``): what rounding the weights to
fewer bits costs in perplexity.

* :func:`quantization_figure`: perplexity against bits per weight, one line per rounding scheme
  (per tensor, per channel, per group), the unquantized model as a dashed line.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from minillm.reports.plot_axes import log_y, save_figure

if TYPE_CHECKING:
    from minillm.experiments.results import QuantizationResult


def quantization_figure(rows: list[QuantizationResult], data_label: str = "") -> Figure:
    """Perplexity against bits per weight, one line per scheme, the unquantized model dashed;
    ``data_label`` (what was scored) goes under the title.

    x: bits per weight of the rounded copies (linear). y: perplexity per token (no unit), log.
    """
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for scheme in dict.fromkeys(r.scheme for r in rows if r.bits != 32):
        points = sorted((r.bits, r.perplexity) for r in rows if r.scheme == scheme)
        ax.plot(*zip(*points), marker="o", label=f"per {scheme}" if scheme != "group" else "per group")
    full = [r.perplexity for r in rows if r.bits == 32]
    if full:
        ax.axhline(full[0], color="grey", linestyle="--", label=f"unquantized: {full[0]:.3g}")
    log_y(ax)
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("perplexity (lower is better)")
    # Wrapped: a long data label ("tiny-m on 20 bundled texts that tiny-m never trained on") would
    # run past the figure's right edge on one line.
    ax.set_title("\n".join(["Perplexity against weight precision (uniform min-max rounding)",
                             *textwrap.wrap(data_label, 70)]), fontsize=11)
    ax.legend()
    return fig


def plot_quantization(rows: list[QuantizationResult], path: str | Path, data_label: str = "") -> Path:
    """Save :func:`quantization_figure` as a PNG at ``path``; returns the path."""
    return save_figure(quantization_figure(rows, data_label), path)
