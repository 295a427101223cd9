"""The figure of the experiments that score the same texts under several conditions: the context
experiment (``minillm context``: k = 0..3 earlier stories before each), the categories
(``minillm categories``: stories, news, code...) and the instructions (``minillm instructions``:
each story after five kinds of instruction, base and instruct models side by side).

* :func:`conditions_figure`: each model's perplexity (or bits per byte) per condition, and
  beside it each condition's paired ratio to a baseline condition for the same model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from minillm.checkpoint.hub import display_name
from minillm.reports.plot_axes import log_y, save_figure

if TYPE_CHECKING:
    from minillm.experiments.results import ConditionSummary, PairedDifference


def base_name(model: str) -> str:
    """The display name of the base model an instruct or chat variant was made from:
    'Qwen/Qwen2.5-0.5B-Instruct' -> 'Qwen2.5-0.5B'; 'data/models/tiny-m-instruct' -> 'tiny-m'."""
    return re.sub(r"[-_](instruct|chat|it)$", "", display_name(model), flags=re.IGNORECASE)


def conditions_figure(summaries: list[ConditionSummary], differences: list[PairedDifference], title: str,
                      xlabel: str, data_label: str = "", baseline: str = "", metric: str = "perplexity",
                      connect: bool = True) -> Figure:
    """Two panels over the same conditions, one line (or set of points) per model.

    x, both panels: the conditions, in order of first appearance, named ``xlabel``.
    Left panel, y: each model's pooled ``metric`` per condition, "perplexity" per token (no unit)
    or "bits_per_byte" (bits per UTF-8 byte), log; bars = 95% bootstrap interval over texts.
    Right panel (when ``differences`` are given), y: each condition against ``baseline`` for the
    same model (a difference whose ``group`` is the model's display name), as the perplexity ratio
    B / A (no unit) with its paired 95% interval; below 1 means the condition made the texts more
    predictable. The baseline has no column there (its ratio to itself is 1 by definition: the
    dashed line). A base model and its instruct variant share a colour, the variant drawn with
    squares. ``connect`` joins a model's points with lines (for ordered conditions such as
    k = 0..3, not for categories).
    """
    conditions = list(dict.fromkeys(s.condition for s in summaries))
    models = list(dict.fromkeys(s.model for s in summaries))
    x = {c: i for i, c in enumerate(conditions)}
    compared = [c for c in conditions if any(d.b == c for d in differences)]     # the right panel's columns
    x_diff = {c: i for i, c in enumerate(compared)}
    # A base model and its instruct/chat variant share a colour; the variant is drawn with squares.
    bases = list(dict.fromkeys(base_name(m) for m in models))
    colour = {m: f"C{bases.index(base_name(m))}" for m in models}
    marker = {m: "s" if base_name(m) != display_name(m) else "o" for m in models}
    panels = 2 if differences else 1
    fig = Figure(figsize=(6.5 * panels, 5.2), layout="constrained")
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    ppl = metric == "perplexity"
    offset = 0.08 * (np.arange(len(models)) - (len(models) - 1) / 2)         # models side by side
    for i, model in enumerate(models):
        mine = [s for s in summaries if s.model == model]
        xs = np.array([x[s.condition] for s in mine]) + offset[i]
        y = np.array([s.perplexity if ppl else s.bits_per_byte for s in mine])
        low = np.array([s.ppl_ci_low if ppl else s.bpb_ci_low for s in mine])
        high = np.array([s.ppl_ci_high if ppl else s.bpb_ci_high for s in mine])
        axes[0].errorbar(xs, y, yerr=np.clip([y - low, high - y], 0, None),
                         fmt=marker[model] + ("-" if connect else ""), color=colour[model], capsize=3,
                         label=display_name(model))
        if differences:
            mine_d = [d for d in differences if d.group == display_name(model)]
            xd = np.array([x_diff[d.b] for d in mine_d]) + offset[i]
            r = np.array([d.ratio for d in mine_d])
            axes[1].errorbar(xd, r, yerr=np.clip([r - [d.ratio_ci_low for d in mine_d],
                                                  [d.ratio_ci_high for d in mine_d] - r], 0, None),
                             fmt=marker[model], color=colour[model], capsize=3)
    long_names = max(len(c) for c in conditions) > 12
    for ax, columns in zip(axes, [conditions, compared]):
        ax.set_xticks(range(len(columns)), columns, rotation=20 if long_names else 0,
                      ha="right" if long_names else "center", fontsize=8 if long_names else None)
        ax.set_xlabel(xlabel)
        ax.grid(True, axis="y", which="both", alpha=0.25)
    log_y(axes[0])
    axes[0].set_ylabel(("perplexity per token" if ppl else "bits per byte") + " (log scale)\n"
                       "bars: 95% bootstrap interval over texts")
    if differences:
        axes[1].axhline(1.0, color="0.4", lw=1, ls="--")
        axes[1].set_ylabel(f"perplexity ratio to {baseline}, same model\nbars: paired 95% interval")
        axes[1].set_title(f"Paired change from {baseline} (below 1: lower perplexity)", fontsize=10)
    if differences:
        axes[0].set_title("Each condition on its own", fontsize=10)
    fig.suptitle(title + (f"\n{data_label}" if data_label else ""), fontsize=11)
    handles = dict(zip(axes[0].get_legend_handles_labels()[1], axes[0].get_legend_handles_labels()[0]))
    order = sorted(models, key=lambda m: (bases.index(base_name(m)), marker[m] == "s"))
    paired = len(models) == 2 * len(bases)            # each base with its variant: one legend column each
    fig.legend([handles[display_name(m)] for m in order], [display_name(m) for m in order], fontsize=8,
               loc="outside lower center", ncols=len(bases) if paired else min(len(models), 4))
    return fig


def plot_conditions(summaries: list[ConditionSummary], differences: list[PairedDifference], path: str | Path,
                    **options) -> Path:
    """Save :func:`conditions_figure` as a PNG at ``path``; returns the path."""
    return save_figure(conditions_figure(summaries, differences, **options), path)
