"""Figures for the scaling experiment, drawn with matplotlib's object-oriented API.

Each ``*_figure`` function builds and returns a :class:`matplotlib.figure.Figure` (so you
can look inside it: its axes, lines and texts); each ``plot_*`` function draws the same
figure and saves it as a PNG, returning the path. Figures are made with ``Figure()``
directly rather than with ``pyplot``: no window opens, no backend has to be chosen, and
whatever backend you picked for your own plots is left alone.

The figures:

* :func:`plot_scaling`: perplexity (or bits per byte) against model size, log-log, with a
  fitted power law ``perplexity = A * N**k``.
* :func:`plot_per_story`: every story's perplexity across the models, smallest to largest.
* :func:`plot_length_confound`: perplexity against story length; short stories give the
  model less context, so they tend to look harder.
* :func:`plot_token_surprise`: a text with each token shaded by how surprised the model was.
"""

from __future__ import annotations

import math
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, Locator, LogFormatter, MaxNLocator, NullFormatter

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from minillm.experiments.results import (
        ConditionSummary,
        ModelSummary,
        PairedDifference,
        PowerLaw,
        QuantizationResult,
        StoryResult,
    )
    from minillm.inference.scoring import TextScore

DPI = 150
# Surprise colours: 0 nats (the token was certain) is white, MAX_SURPRISE nats (p ~ 1 in 22,000)
# and beyond is the darkest red. A fixed scale, rather than one stretched to each text's worst
# token, keeps the shading comparable between models and stories. The scale ends at a mid
# red, not near-black, so that black text stays readable on it.
MAX_SURPRISE = 10.0
SURPRISE_CMAP = LinearSegmentedColormap.from_list("surprise", [(1, 1, 1), (0.85, 0.15, 0.12)])
UNSCORED_COLOR = "0.85"
MONO_FONT = "DejaVu Sans Mono"    # ships with matplotlib; every character is 0.602 em wide
MONO_ADVANCE_EM = 1233 / 2048


def short_name(model: str) -> str:
    """'Qwen/Qwen2.5-0.5B' -> 'Qwen2.5-0.5B'; a folder path -> its last part."""
    return model.rstrip("/").rsplit("/", 1)[-1]


def human_count(n: float) -> str:
    """1_234_567 -> '1.23M', 260_000 -> '260K' (three significant digits)."""
    for scale, unit in [(1e9, "B"), (1e6, "M"), (1e3, "K")]:
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


class _PlainLogFormatter(LogFormatter):
    """Log-axis tick labels as plain numbers (0.8, 20), not 8e-01 or 2 x 10^1.

    LogFormatter still decides which ticks get a label (so minor ticks do not crowd);
    only the text of a label changes."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:.4g}" if super().__call__(x, pos) else ""


class _LogTicks(Locator):
    """Labelled ticks for a log axis at 1, 2, 5 x 10^k, or denser (1.5, 3, 4, 6, 8 too) when the axis
    spans little more than a decade: every stretch of the axis, e.g. 100 to 180, gets a label
    (matplotlib's LogLocator puts none between 100 and 200). An axis narrower than that (bits per
    byte from 1.98 to 2.08) gets evenly spaced round numbers, as a linear axis would."""

    def __call__(self) -> list[float]:
        return self.tick_values(*self.axis.get_view_interval())

    def tick_values(self, vmin: float, vmax: float) -> list[float]:
        low, high = sorted((vmin, vmax))
        if high <= 0:
            return []
        low = max(low, high * 1e-12)
        decades = math.log10(high / low)
        subs = ((1, 1.5, 2, 3, 4, 5, 6, 8) if decades < 1.3 else (1, 2, 3, 5) if decades < 2.5 else
                (1, 2, 5) if decades < 4 else (1,))
        first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
        ticks = [t for t in (sub * 10.0 ** k for k in range(first, last + 1) for sub in subs) if low <= t <= high]
        if len(ticks) < 3:
            ticks = [t for t in MaxNLocator(nbins=5).tick_values(low, high) if low <= t <= high]
        return ticks


def _log_y(ax: Axes) -> None:
    """Log-scale y axis with plain tick labels (see :class:`_LogTicks`); minor ticks unlabelled."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(_LogTicks())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:.4g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def scaling_figure(summaries: list[ModelSummary], fit: PowerLaw | None, metric: str = "perplexity",
                   data_label: str = "", note: str | None = None) -> Figure:
    """One point per model: ``metric`` against non-embedding parameters, both axes log.

    ``metric`` is "perplexity" (per scored token) or "bits_per_byte". Error bars span the
    bootstrap 95% interval over stories. ``fit``, when given, is drawn as a straight line on
    the log-log axes over the models' size range; it must have been fitted on ``metric``.
    ``data_label`` (what was scored) goes into the title; ``note`` is printed under the axes.
    """
    if metric not in ("perplexity", "bits_per_byte"):
        raise ValueError(f"metric must be 'perplexity' or 'bits_per_byte'; got {metric!r}.")
    ppl = metric == "perplexity"
    if fit is not None and fit.metric != metric:
        raise ValueError(f"the fit is in {fit.metric} but the figure shows {metric}: fit the metric you plot.")
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
        ax.annotate(short_name(s.model), (xi, yi), xytext=(7, 4), textcoords="offset points", fontsize=9)
    if fit is not None:
        xs = np.geomspace(n.min(), n.max(), 100)
        points = " (exact through 2 points)" if fit.points == 2 else f" ({fit.points} models)"
        name = "ppl" if ppl else "bits/byte"
        ax.plot(xs, fit.predict(xs), "--", color="C3",
                label=f"fit: {name} = {fit.coefficient:.3g} · N^{fit.exponent:.3f}{points}")
    ax.set_xscale("log")
    # Ticks at the models' own sizes, read as 22.7K / 1.31B: log-axis minor labels crowd.
    ax.set_xticks(n, [human_count(v) for v in n])
    ax.xaxis.set_minor_formatter(NullFormatter())
    _log_y(ax)
    ax.set_xlim(n.min() / 2, n.max() * 4)          # room for the name labels on the right
    ax.set_xlabel("non-embedding parameters N (log scale)")
    ax.set_ylabel("perplexity per token (log scale)" if ppl else "bits per byte (log scale)")
    ax.set_title(("Perplexity" if ppl else "Bits per byte") + " against model size (lower is better)"
                 + (f"\n{data_label}" if data_label else ""), fontsize=11)
    ax.grid(True, which="both", alpha=0.25)
    fig.legend(fontsize=8, loc="outside lower center")       # below the axes: never over a point
    if note:
        ax.text(0.5, 0.02, note, transform=ax.transAxes, ha="center", va="bottom", fontsize=8, color="C3")
    return fig


def plot_scaling(summaries: list[ModelSummary], fit: PowerLaw | None, path: str | Path,
                 metric: str = "perplexity", data_label: str = "", note: str | None = None) -> Path:
    """Save :func:`scaling_figure` as a PNG at ``path``; returns the path."""
    return _save(scaling_figure(summaries, fit, metric, data_label, note), path)


def _spread(values: list[float], gap: float) -> list[float]:
    """Positions near ``values`` (same order) at least ``gap`` apart: labels that do not overlap.

    Sorted, each one is pushed up to ``gap`` above the one below it; then the group is shifted
    down by the mean push, so that labels stay centred on their points."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    placed: list[float] = []
    for i in order:
        placed.append(values[i] if not placed else max(values[i], placed[-1] + gap))
    shift = float(np.mean([p - values[i] for p, i in zip(placed, order)])) if placed else 0.0
    out = [0.0] * len(values)
    for p, i in zip(placed, order):
        out[i] = p - shift
    return out


def per_story_figure(rows: list[StoryResult], summaries: list[ModelSummary], labelled: int = 5,
                     data_label: str = "") -> Figure:
    """Each story's perplexity across the models, smallest model on the left (log y).

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
    _log_y(ax)
    named = list(dict.fromkeys(hardest + harder[:labelled]))
    ends = [lines[s][-1][1] for s in named]
    spans = np.log10([min(p for pts in lines.values() for _, p in pts), max(p for pts in lines.values() for _, p in pts)])
    gap = max(0.045 * (spans[1] - spans[0]), 0.02)                                 # label height, log10 units
    last = len(models) - 1
    for story, y_end, y_label in zip(named, ends, _spread(list(np.log10(ends)), gap)):
        ax.annotate(ids[story], (last, y_end), xytext=(last + 0.25, 10**y_label), textcoords="data", fontsize=7,
                    color="C1" if story in harder else "0.25", va="center",
                    arrowprops=dict(arrowstyle="-", color="0.6", lw=0.5))
    easier = len(lines) - len(harder)
    ax.plot([], [], color="0.6", lw=0.7,
            label=f"a story, easier for the largest model than for the smallest ({easier})")
    ax.plot([], [], color="C1", lw=1.2,
            label=f"a story, harder for the largest model than for the smallest ({len(harder)})")
    ax.plot([], [], " ", label=f"labels: story id (file#index from 0) of the {len(hardest)} stories "
                               f"{short_name(models[-1].model)} finds hardest, and of those that got harder")
    ticks = [f"{short_name(s.model)}\n{human_count(s.non_embedding_params)} params" for s in models]
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
    return _save(per_story_figure(rows, summaries, data_label=data_label), path)


def length_trend(tokens: list[float], perplexities: list[float]) -> tuple[float, float, float]:
    """(slope, intercept, Pearson r) of log10(perplexity) against log10(tokens); r is nan for < 3 stories."""
    x, y = np.log10(np.asarray(tokens, dtype=float)), np.log10(np.asarray(perplexities, dtype=float))
    if len(x) < 2 or np.ptp(x) == 0:
        return float("nan"), float("nan"), float("nan")
    slope, intercept = np.polyfit(x, y, deg=1)
    r = float(np.corrcoef(x, y)[0, 1]) if len(x) >= 3 and np.ptp(y) > 0 else float("nan")
    return float(slope), float(intercept), r


def length_confound_figure(rows: list[StoryResult], data_label: str = "") -> Figure:
    """Each story's perplexity against its length (scored tokens), both log, one colour per model,
    with each model's least-squares trend line and the correlation r of the two logs.

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
                   label=f"{short_name(model)} ({human_count(sizes[model])} params): "
                         + (f"r = {r:+.2f}, slope {slope:+.2f}" if not np.isnan(r) else "too few stories for r"))
        if not np.isnan(slope):
            xs = np.geomspace(min(tokens), max(tokens), 50)
            ax.plot(xs, 10 ** (intercept + slope * np.log10(xs)), color=f"C{i}", lw=1.2, ls="--")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False))
    ax.xaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False))
    _log_y(ax)
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
    return _save(length_confound_figure(rows, data_label), path)


def _columns(text: str) -> int:
    """Width of ``text`` in monospace columns (wide East Asian characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _layout(pieces: list[tuple[str, object, str]], width: int) -> list[tuple[int, int, str, object, str]]:
    """Place (text, colour, id) pieces on lines of ``width`` columns: (line, column, text, colour, id).

    A newline is drawn as "↵" and ends the line, a tab as "⇥", a carriage return not at all.
    Lines break between words, never inside one: a word (the pieces from one that starts with
    whitespace up to the next such piece) that does not fit moves whole to the next line; only
    a word longer than a whole line is cut.
    """
    segs: list[tuple[str, object, str, bool]] = []            # (text, colour, id, ends its line)
    for text, color, gid in pieces:
        parts = text.replace("\t", "⇥").replace("\r", "").split("\n")
        for k, part in enumerate(parts):
            ends = k < len(parts) - 1
            segs.append((part + ("↵" if ends else ""), color, gid, ends))
    starts = [i == 0 or segs[i - 1][3] or seg[0][:1].isspace() or segs[i - 1][0][-1:].isspace()
              for i, seg in enumerate(segs)]
    placed, line, col = [], 0, 0
    for i, (part, color, gid, ends) in enumerate(segs):
        if starts[i] and col:
            word, j = 0, i                                     # the columns of the word starting here
            while j < len(segs):
                word += _columns(segs[j][0])
                if segs[j][3] or (j + 1 < len(segs) and starts[j + 1]):
                    break
                j += 1
            if col + word > width:
                line, col = line + 1, 0
        while part:
            if col and col + _columns(part) > width:
                line, col = line + 1, 0
            cut = len(part)
            while cut > 1 and _columns(part[:cut]) > width:
                cut -= 1
            placed.append((line, col, part[:cut], color, gid))
            col += _columns(part[:cut])
            part = part[cut:]
        if ends:
            line, col = line + 1, 0
    return placed


def _word_boundary(rows: list, limit: int) -> int:
    """How many of ``rows`` (scored tokens) to show at most ``limit``: cut before a token that starts a
    word (begins with whitespace), so that the shown text never ends mid-word."""
    if len(rows) <= limit:
        return len(rows)
    for n in range(limit, 0, -1):
        if rows[n].token[:1].isspace():
            return n
    return limit


def token_surprise_figure(score: TextScore, title: str = "", max_tokens: int | None = None, width: int = 90,
                          fontsize: float = 9) -> Figure:
    """The text, token by token, each scored token's background shaded by its surprise (nats).

    White is 0 nats (certain), the darkest red ``MAX_SURPRISE`` nats or more. The unscored
    text before the first scored token (a context, or a first token with nothing before it to
    predict it from; at most its last 12 tokens) is grey. Tokens are shown as they are, leading
    spaces included (thin white gaps separate tokens), wrapped at ``width`` columns; a newline
    shows as "↵" and starts a new line, a tab as "⇥". Lines break between words. By default the
    whole text is drawn; with ``max_tokens`` it stops at the last word boundary within that many
    tokens and ends with "…".
    """
    rows = score.rows[: _word_boundary(score.rows, max_tokens or len(score.rows))]
    before = ("…" if rows[0].position > 12 else "") + rows[0].context
    pieces = [(before, UNSCORED_COLOR, "unscored")] if before else []
    norm = Normalize(0, MAX_SURPRISE, clip=True)
    pieces += [(r.token, SURPRISE_CMAP(norm(r.surprise)), f"token {r.position}") for r in rows]
    if len(score.rows) > len(rows):
        pieces.append(("…", "none", "truncated"))
    placed = _layout(pieces, width)
    n_lines = placed[-1][0] + 1 if placed else 1

    char_w, line_h = MONO_ADVANCE_EM * fontsize / 72, 1.6 * fontsize / 72          # inches
    left, right, top, gap, bar_h, bottom = 0.25, 0.25, 0.45 if title else 0.25, 0.2, 0.12, 0.45
    fig_w, text_h = left + width * char_w + right, n_lines * line_h
    fig_h = top + text_h + gap + bar_h + bottom
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((left / fig_w, (bottom + bar_h + gap) / fig_h, width * char_w / fig_w, text_h / fig_h))
    ax.set_xlim(0, width)
    ax.set_ylim(n_lines, 0)
    ax.set_axis_off()
    for line, col, text, color, gid in placed:
        ax.add_patch(Rectangle((col, line + 0.05), _columns(text), 0.9, facecolor=color, edgecolor="white",
                               linewidth=0.6, gid=gid))
        ax.text(col, line + 0.5, text, family=MONO_FONT, fontsize=fontsize, va="center_baseline", ha="left")
    if title:
        fig.suptitle(title, y=1 - 0.12 / fig_h, va="top", fontsize=10)
    cax = fig.add_axes((left / fig_w, bottom / fig_h, 0.4 * width * char_w / fig_w, bar_h / fig_h))
    bar = fig.colorbar(ScalarMappable(norm, SURPRISE_CMAP), cax=cax, orientation="horizontal", extend="max")
    bar.set_label("surprise (nats)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if before:
        # Beside the colour bar: a swatch of the very colour the unscored text sits on, then its meaning.
        x, swatch_w = left + 0.4 * width * char_w + 0.6, 2 * char_w
        fig.add_artist(Rectangle((x / fig_w, bottom / fig_h), swatch_w / fig_w, bar_h / fig_h,
                                 transform=fig.transFigure, facecolor=UNSCORED_COLOR, edgecolor="0.4", linewidth=0.6))
        fig.text((x + swatch_w + 0.08) / fig_w, (bottom + bar_h / 2) / fig_h, "not scored (text the first scored "
                 "token is predicted from)", ha="left", va="center", fontsize=8)
    return fig


def plot_token_surprise(score: TextScore, path: str | Path, title: str = "", max_tokens: int | None = None) -> Path:
    """Save :func:`token_surprise_figure` as a PNG at ``path``; returns the path."""
    return _save(token_surprise_figure(score, title, max_tokens), path)


def quantization_figure(rows: list[QuantizationResult], data_label: str = "") -> Figure:
    """Perplexity (log y) against bits per weight, one line per scheme, the unquantized model dashed;
    ``data_label`` (what was scored) goes under the title."""
    import textwrap

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for scheme in dict.fromkeys(r.scheme for r in rows if r.bits != 32):
        points = sorted((r.bits, r.perplexity) for r in rows if r.scheme == scheme)
        ax.plot(*zip(*points), marker="o", label=f"per {scheme}" if scheme != "group" else "per group")
    full = [r.perplexity for r in rows if r.bits == 32]
    if full:
        ax.axhline(full[0], color="grey", linestyle="--", label=f"unquantized: {full[0]:.3g}")
    _log_y(ax)
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
    return _save(quantization_figure(rows, data_label), path)


if TYPE_CHECKING:
    from minillm.experiments.results import ArchitectureRow, SweepResult
    from minillm.training.config import Record


def loss_curves_figure(history: list[Record], title: str = "Training a language model",
                       start_label: str = "untrained") -> Figure:
    """Training and validation loss (nats per token) against training tokens seen, log x.

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
    return _save(loss_curves_figure(history, title, start_label), path)


def size_sweep_figure(results: list[SweepResult], fit: PowerLaw | None) -> Figure:
    """Final validation perplexity (log) against non-embedding parameters (log), one point per
    model, all trained on the same tokens; ``fit`` (a power law in perplexity) drawn dashed."""
    results = sorted(results, key=lambda r: r.non_embedding_params)
    n = np.array([r.non_embedding_params for r in results], dtype=float)
    ppl = np.array([r.val_perplexity for r in results])
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(n, ppl, "o", color="C0", label=f"models, each trained on {human_count(results[0].tokens)} tokens")
    for r, x, y in zip(results, n, ppl):
        ax.annotate(f"{r.name}\nloss {r.val_loss:.3f}", (x, y), xytext=(7, 4), textcoords="offset points", fontsize=8)
    if fit is not None:
        xs = np.geomspace(n.min(), n.max(), 100)
        ax.plot(xs, fit.predict(xs), "--", color="C3",
                label=f"fit: ppl = {fit.coefficient:.3g} · N^{fit.exponent:.3f} ({fit.points} models)")
    ax.set_xscale("log")
    ax.set_xticks(n, [human_count(v) for v in n])
    ax.xaxis.set_minor_formatter(NullFormatter())
    _log_y(ax)
    ax.set_xlim(n.min() / 1.5, n.max() * 2.5)
    ax.set_xlabel("non-embedding parameters N (log scale)")
    ax.set_ylabel("validation perplexity = exp(loss) (log scale)")
    ax.set_title("Validation perplexity against model size, same token budget")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def plot_size_sweep(results: list[SweepResult], fit: PowerLaw | None, path: str | Path) -> Path:
    """Save :func:`size_sweep_figure` as a PNG at ``path``; returns the path."""
    return _save(size_sweep_figure(results, fit), path)


def architectures_figure(rows: list[ArchitectureRow]) -> Figure:
    """Validation loss (nats per token) against training tokens seen, one line per architecture."""
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
    return _save(architectures_figure(rows), path)


def _base_name(model: str) -> str:
    """'Qwen/Qwen2.5-0.5B-Instruct' -> 'Qwen2.5-0.5B'; 'data/models/tiny-m-instruct' -> 'tiny-m'."""
    return re.sub(r"[-_](instruct|chat|it)$", "", short_name(model), flags=re.IGNORECASE)


def conditions_figure(summaries: list[ConditionSummary], differences: list[PairedDifference], title: str,
                      xlabel: str, data_label: str = "", baseline: str = "", metric: str = "perplexity",
                      connect: bool = True) -> Figure:
    """Two panels over the same conditions (x, in order of first appearance), one line per model.

    Left: each model's pooled ``metric`` ("perplexity" per token or "bits_per_byte") per
    condition, bars = 95% bootstrap interval over texts. Right (when ``differences`` are given):
    each condition against ``baseline`` for the same model (a difference whose ``group`` is the
    model's short name), as the ratio B / A with its paired 95% interval; below 1 means the
    condition made the texts more predictable. The baseline has no column there (its ratio to
    itself is 1 by definition: the dashed line). ``connect``
    joins a model's points with lines (for ordered conditions such as k = 0..3, not for categories).
    """
    conditions = list(dict.fromkeys(s.condition for s in summaries))
    models = list(dict.fromkeys(s.model for s in summaries))
    x = {c: i for i, c in enumerate(conditions)}
    compared = [c for c in conditions if any(d.b == c for d in differences)]     # the right panel's columns
    x_diff = {c: i for i, c in enumerate(compared)}
    # A base model and its instruct/chat variant share a colour; the variant is drawn with squares.
    bases = list(dict.fromkeys(_base_name(m) for m in models))
    colour = {m: f"C{bases.index(_base_name(m))}" for m in models}
    marker = {m: "s" if _base_name(m) != short_name(m) else "o" for m in models}
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
                         label=short_name(model))
        if differences:
            mine_d = [d for d in differences if d.group == short_name(model)]
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
    _log_y(axes[0])
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
    order = sorted(models, key=lambda m: (bases.index(_base_name(m)), marker[m] == "s"))
    paired = len(models) == 2 * len(bases)            # each base with its variant: one legend column each
    fig.legend([handles[short_name(m)] for m in order], [short_name(m) for m in order], fontsize=8,
               loc="outside lower center", ncols=len(bases) if paired else min(len(models), 4))
    return fig


def plot_conditions(summaries: list[ConditionSummary], differences: list[PairedDifference], path: str | Path,
                    **options) -> Path:
    """Save :func:`conditions_figure` as a PNG at ``path``; returns the path."""
    return _save(conditions_figure(summaries, differences, **options), path)
