"""Figures of training runs: one run's loss curves, and the experiments that train several models
(``minillm sweep``, ``minillm compare-architectures``, :mod:`minillm.experiments.training`).

* :func:`loss_curves_figure`: one run's training and validation loss against tokens seen
  (``loss_curves.png`` in every checkpoint folder ``minillm train`` and ``finetune`` write).
* :func:`size_sweep_figure`: final validation perplexity against model size, log-log, models
  trained on the same tokens, with a fitted power law.
* :func:`architectures_figure`: validation loss against tokens seen, a transformer beside the
  fixed-window MLP of the same size.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from minillm.reports.plot_axes import human_count, power_law_axes, save_figure

if TYPE_CHECKING:
    from minillm.experiments.results import ArchitectureRow, PowerLaw, SweepResult
    from minillm.training.config import Record


def loss_curves_figure(history: list[Record], title: str = "Training a language model",
                       start_label: str = "untrained") -> Figure:
    """Training and validation loss of one run against training tokens seen.

    x: training tokens seen, log. y: cross-entropy in nats per token.

    The thin line is each step's batch loss, noisy because every batch is different; the thick
    line is its running mean. Dots are the validation loss on held-out documents: when it
    stops following the training loss down, the model has begun to memorise its training text.
    The dotted line is the validation loss at step 0: the untrained model's (about ln(vocabulary
    size)), or for a run started from trained weights (``start_label``: "base model") theirs.
    """
    steps = [r for r in history if r.train_loss is not None]
    vals = [r for r in history if r.val_loss is not None and r.tokens > 0]
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    if steps:
        tokens = np.array([r.tokens for r in steps], dtype=float)
        loss = np.array([r.train_loss for r in steps])
        # Centred running mean over about 2% of the steps (fewer at the ends): unlike a
        # trailing average it does not lag behind the falling loss.
        half, at = max(1, len(loss) // 100), np.arange(len(loss))
        low, high = np.clip(at - half, 0, None), np.clip(at + half + 1, None, len(loss))
        sums = np.concatenate([[0.0], np.cumsum(loss)])
        smooth = (sums[high] - sums[low]) / (high - low)
        ax.plot(tokens, loss, color="C0", lw=0.6, alpha=0.35)
        ax.plot(tokens, smooth, color="C0", lw=2, label="training loss (running mean)")
    if vals:
        ax.plot([r.tokens for r in vals], [r.val_loss for r in vals], "o-", color="C3", ms=4,
                label=f"validation loss (last: {vals[-1].val_loss:.3f})")
    start = [r.val_loss for r in history if r.tokens == 0 and r.val_loss is not None]
    if start:
        ax.axhline(start[0], color="0.5", ls=":", label=f"{start_label}: {start[0]:.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("training tokens seen (log scale)")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8)
    return fig


def plot_loss_curves(history: list[Record], path: str | Path, title: str = "Training a language model",
                     start_label: str = "untrained") -> Path:
    """Save :func:`loss_curves_figure` as a PNG at ``path``; returns the path."""
    return save_figure(loss_curves_figure(history, title, start_label), path)


def size_sweep_figure(results: list[SweepResult], fit: PowerLaw | None) -> Figure:
    """Final validation perplexity against model size, one point per model, all trained on the same
    tokens, each labelled with its name and final loss; ``fit`` (a power law in perplexity) dashed.

    x: non-embedding parameters N (log, ticked at the models' sizes). y: validation perplexity
    = exp(validation loss in nats per token), no unit, log.
    """
    results = sorted(results, key=lambda r: r.non_embedding_params)
    n = np.array([r.non_embedding_params for r in results], dtype=float)
    ppl = np.array([r.val_perplexity for r in results])
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(n, ppl, "o", color="C0", label=f"models, each trained on {human_count(results[0].tokens)} tokens")
    for r, x, y in zip(results, n, ppl):
        ax.annotate(f"{r.name}\nloss {r.val_loss:.3f}", (x, y), xytext=(7, 4), textcoords="offset points", fontsize=8)
    power_law_axes(ax, n, fit, "ppl", room=(1.5, 2.5))
    ax.set_ylabel("validation perplexity = exp(loss) (log scale)")
    ax.set_title("Validation perplexity against model size, same token budget")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def plot_size_sweep(results: list[SweepResult], fit: PowerLaw | None, path: str | Path) -> Path:
    """Save :func:`size_sweep_figure` as a PNG at ``path``; returns the path."""
    return save_figure(size_sweep_figure(results, fit), path)


def architectures_figure(rows: list[ArchitectureRow]) -> Figure:
    """Validation loss against training tokens seen, one line per architecture (same data, same budget),
    its legend giving the architecture's non-embedding parameters and final loss.

    x: training tokens seen, log. y: validation loss in nats per token.
    """
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for i, name in enumerate(dict.fromkeys(r.architecture for r in rows)):
        mine = [r for r in rows if r.architecture == name and r.tokens > 0]
        ax.plot([r.tokens for r in mine], [r.val_loss for r in mine], "o-", ms=3, color=f"C{i}",
                label=f"{name} ({human_count(mine[-1].non_embedding_params)} non-embedding params): "
                      f"{mine[-1].val_loss:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("training tokens seen (log scale)")
    ax.set_ylabel("validation loss (nats per token)")
    ax.set_title("Transformer against a fixed-window MLP, same data and budget")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8)
    return fig


def plot_architectures(rows: list[ArchitectureRow], path: str | Path) -> Path:
    """Save :func:`architectures_figure` as a PNG at ``path``; returns the path."""
    return save_figure(architectures_figure(rows), path)
