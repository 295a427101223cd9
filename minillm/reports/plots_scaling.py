"""Figures of the scaling experiment (``minillm scaling``): how perplexity falls as models grow.

* :func:`scaling_figure`: perplexity per token (or bits per byte) against non-embedding
  parameters, log-log, one point per model with its 95% bootstrap interval over stories, and the
  fitted power law ``perplexity = A * N**k`` as a straight line.
* :func:`per_story_figure`: every story's perplexity across the models, smallest to largest,
  so that the stories a larger model finds harder stand out.
* :func:`length_confound_figure`: each story's perplexity against its length in tokens, with
  each model's trend line: short stories give the model less context.

(The largest model's hardest story, each token shaded by its surprise, is in report.html:
:mod:`minillm.reports.report`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from minillm.checkpoint.hub import display_name
from minillm.errors import InputError
from minillm.reports.plot_axes import PlainLogFormatter, human_count, log_y, power_law_axes, save_figure, spread_labels

if TYPE_CHECKING:
    from minillm.experiments.results import ModelSummary, PowerLaw, StoryResult


def scaling_figure(summaries: list[ModelSummary], fit: PowerLaw | None, metric: str = "perplexity",
                   data_label: str = "", note: str | None = None) -> Figure:
    """One point per model: ``metric`` against model size, both axes log.

    x: non-embedding parameters N (log, ticked at the models' sizes). y: ``metric``, "perplexity"
    (per scored token, no unit) or "bits_per_byte" (bits per UTF-8 byte of text), log. Error bars
    span the bootstrap 95% interval over stories. ``fit``, when given, is drawn as a straight line
    on the log-log axes over the models' size range; it must have been fitted on ``metric``.
    ``data_label`` (what was scored) goes into the title; ``note`` is printed under the axes.
    """
    if metric not in ("perplexity", "bits_per_byte"):
        raise InputError(f"metric must be 'perplexity' or 'bits_per_byte'; got {metric!r}.")
    ppl = metric == "perplexity"
    if fit is not None and fit.metric != metric:
        raise InputError(f"the fit is in {fit.metric} but the figure shows {metric}: fit the metric you plot.")
    n = np.array([s.non_embedding_params for s in summaries], dtype=float)
    y = np.array([getattr(s, metric) for s in summaries])
    low = np.array([s.ppl_ci_low if ppl else s.bpb_ci_low for s in summaries])
    high = np.array([s.ppl_ci_high if ppl else s.bpb_ci_high for s in summaries])

    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.add_subplot()
    # clip: a bootstrap percentile interval can miss its own point estimate by a rounding error
    ax.errorbar(n, y, yerr=np.clip([y - low, high - y], 0, None), fmt="o", color="C0", ecolor="0.4", capsize=4,
                label="models (bars: 95% bootstrap interval over stories)")
    for s, xi, yi in zip(summaries, n, y):
        ax.annotate(display_name(s.model), (xi, yi), xytext=(7, 4), textcoords="offset points", fontsize=9)
    power_law_axes(ax, n, fit, "ppl" if ppl else "bits/byte", room=(2, 4))   # room for the name labels on the right
    ax.set_ylabel("perplexity per token (log scale)" if ppl else "bits per byte (log scale)")
    ax.set_title(("Perplexity" if ppl else "Bits per byte") + " against model size (lower is better)"
                 + (f"\n{data_label}" if data_label else ""), fontsize=11)
    fig.legend(fontsize=8, loc="outside lower center")       # below the axes: never over a point
    if note:
        ax.text(0.5, 0.02, note, transform=ax.transAxes, ha="center", va="bottom", fontsize=8, color="C3")
    return fig


def plot_scaling(summaries: list[ModelSummary], fit: PowerLaw | None, path: str | Path,
                 metric: str = "perplexity", data_label: str = "", note: str | None = None) -> Path:
    """Save :func:`scaling_figure` as a PNG at ``path``; returns the path."""
    return save_figure(scaling_figure(summaries, fit, metric, data_label, note), path)


def per_story_figure(rows: list[StoryResult], summaries: list[ModelSummary], labelled: int = 5,
                     data_label: str = "") -> Figure:
    """Each story's perplexity across the models, smallest model on the left.

    x: the models in order of size, each ticked with its name and non-embedding parameters.
    y: perplexity per token (no unit), log.

    One thin line per story: grey when the largest model finds it easier than the smallest
    does, orange when it finds it harder. The ``labelled`` stories the largest model finds
    hardest, and every orange one, carry their story id (file#index) at the right, spread
    apart so that labels never overlap. The thick line is each model's corpus perplexity.
    """
    models = sorted(summaries, key=lambda s: s.non_embedding_params)
    column = {s.model: i for i, s in enumerate(models)}
    lines: dict[int, list[tuple[int, float]]] = {}          # story -> [(model column, perplexity)]
    ids: dict[int, str] = {}
    for r in sorted(rows, key=lambda r: column[r.model]):
        lines.setdefault(r.story, []).append((column[r.model], r.perplexity))
        ids[r.story] = r.story_id
    harder = sorted((s for s, pts in lines.items() if pts[-1][1] > pts[0][1]),
                    key=lambda s: lines[s][-1][1] / lines[s][0][1], reverse=True)
    hardest = sorted(lines, key=lambda s: lines[s][-1][1], reverse=True)[:labelled]

    fig = Figure(figsize=(max(7.0, 1.6 * len(models) + 4), 5.8), layout="constrained")
    ax = fig.add_subplot()
    for story, pts in sorted(lines.items()):
        x, y = zip(*pts)
        if story in harder:
            ax.plot(x, y, color="C1", lw=1.2, alpha=0.9)
        else:
            ax.plot(x, y, color="0.6", lw=0.7, alpha=0.5)
    ax.plot(range(len(models)), [s.perplexity for s in models], "o-", color="C0", lw=3, label="corpus perplexity")
    log_y(ax)
    named = list(dict.fromkeys(hardest + harder[:labelled]))
    ends = [lines[s][-1][1] for s in named]
    spans = np.log10([min(p for pts in lines.values() for _, p in pts), max(p for pts in lines.values() for _, p in pts)])
    gap = max(0.045 * (spans[1] - spans[0]), 0.02)                                 # label height, log10 units
    last = len(models) - 1
    for story, y_end, y_label in zip(named, ends, spread_labels(list(np.log10(ends)), gap)):
        ax.annotate(ids[story], (last, y_end), xytext=(last + 0.25, 10**y_label), textcoords="data", fontsize=7,
                    color="C1" if story in harder else "0.25", va="center",
                    arrowprops=dict(arrowstyle="-", color="0.6", lw=0.5))
    easier = len(lines) - len(harder)
    ax.plot([], [], color="0.6", lw=0.7,
            label=f"a story, easier for the largest model than for the smallest ({easier})")
    ax.plot([], [], color="C1", lw=1.2,
            label=f"a story, harder for the largest model than for the smallest ({len(harder)})")
    ax.plot([], [], " ", label=f"labels: story id (file#index from 0) of the {len(hardest)} stories "
                               f"{display_name(models[-1].model)} finds hardest, and of those that got harder")
    ticks = [f"{display_name(s.model)}\n{human_count(s.non_embedding_params)} params" for s in models]
    ax.set_xticks(range(len(models)), ticks, fontsize=8)
    ax.set_xlim(-0.3, last + 0.9)                        # room on the right for the story ids
    ax.set_xlabel("model, smallest to largest (non-embedding parameters)")
    ax.set_ylabel("perplexity per token (log scale)")
    ax.set_title("Per-story perplexity across model sizes" + (f"\n{data_label}" if data_label else ""), fontsize=11)
    ax.grid(True, axis="y", which="both", alpha=0.25)
    fig.legend(fontsize=8, loc="outside lower center")
    return fig


def plot_per_story(rows: list[StoryResult], summaries: list[ModelSummary], path: str | Path,
                   data_label: str = "") -> Path:
    """Save :func:`per_story_figure` as a PNG at ``path``; returns the path."""
    return save_figure(per_story_figure(rows, summaries, data_label=data_label), path)


def length_trend(tokens: list[float], perplexities: list[float]) -> tuple[float, float, float]:
    """(slope, intercept, Pearson r) of log10(perplexity) against log10(tokens); r is nan for < 3 stories."""
    x, y = np.log10(np.asarray(tokens, dtype=float)), np.log10(np.asarray(perplexities, dtype=float))
    if len(x) < 2 or np.ptp(x) == 0:
        return float("nan"), float("nan"), float("nan")
    slope, intercept = np.polyfit(x, y, deg=1)
    r = float(np.corrcoef(x, y)[0, 1]) if len(x) >= 3 and np.ptp(y) > 0 else float("nan")
    return float(slope), float(intercept), r


def length_confound_figure(rows: list[StoryResult], data_label: str = "") -> Figure:
    """Each story's perplexity against its length, one colour per model, with each model's
    least-squares trend line and the correlation r of the two logs.

    x: story length in scored tokens, log. y: the story's perplexity per token (no unit), log.

    Why look: early tokens are predicted from little context, so a story's length may move its
    perplexity whatever the model. Whether it does here is for the data to say: the figure
    draws the trend and its r, and asserts nothing; |r| near 0 means no linear trend.
    """
    sizes = {r.model: r.non_embedding_params for r in rows}
    fig = Figure(figsize=(7, 5.2), layout="constrained")
    ax = fig.add_subplot()
    for i, model in enumerate(sorted(sizes, key=sizes.get)):
        mine = [r for r in rows if r.model == model]
        tokens, ppl = [r.tokens for r in mine], [r.perplexity for r in mine]
        slope, intercept, r = length_trend(tokens, ppl)
        ax.scatter(tokens, ppl, s=18, alpha=0.75, color=f"C{i}",
                   label=f"{display_name(model)} ({human_count(sizes[model])} params): "
                         + (f"r = {r:+.2f}, slope {slope:+.2f}" if not np.isnan(r) else "too few stories for r"))
        if not np.isnan(slope):
            xs = np.geomspace(min(tokens), max(tokens), 50)
            ax.plot(xs, 10 ** (intercept + slope * np.log10(xs)), color=f"C{i}", lw=1.2, ls="--")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
    ax.xaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))
    log_y(ax)
    ax.set_xlabel("story length (scored tokens, log scale)")
    ax.set_ylabel("perplexity per token (log scale)")
    ax.set_title("Story perplexity against story length" + (f"\n{data_label}" if data_label else ""), fontsize=11)
    ax.grid(True, which="both", alpha=0.25)
    ax.plot([], [], color="0.3", ls="--", label="dashed: least-squares line of log perplexity on log length; "
                                                "r: correlation of the two logs, slope: of the line")
    fig.legend(fontsize=8, loc="outside lower center", ncols=1)
    return fig


def plot_length_confound(rows: list[StoryResult], path: str | Path, data_label: str = "") -> Path:
    """Save :func:`length_confound_figure` as a PNG at ``path``; returns the path."""
    return save_figure(length_confound_figure(rows, data_label), path)
