"""What every figure of the kit shares: how it is made and saved, log axes that read as plain numbers,
and the power-law axes (a quantity against model size, log-log) of the scaling and sweep figures.

Figures are made with matplotlib's ``Figure()`` directly rather than with ``pyplot``: no window
opens, no backend has to be chosen, and whatever backend you picked for your own plots is left
alone. Each ``*_figure`` function of the ``plots_*`` modules builds and returns a
:class:`matplotlib.figure.Figure` (so you can look inside it: its axes, lines and texts); each
``plot_*`` function draws the same figure and saves it as a PNG with :func:`save_figure`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, Locator, LogFormatter, MaxNLocator, NullFormatter

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from minillm.experiments.results import PowerLaw

DPI = 150


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save ``fig`` as a PNG at ``path`` (its folder made if needed), at ``DPI``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def human_count(n: float) -> str:
    """1_234_567 -> '1.23M', 260_000 -> '260K' (three significant digits)."""
    for scale, unit in [(1e9, "B"), (1e6, "M"), (1e3, "K")]:
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


class PlainLogFormatter(LogFormatter):
    """Log-axis tick labels as plain numbers (0.8, 20), not 8e-01 or 2 x 10^1.

    LogFormatter still decides which ticks get a label (so minor ticks do not crowd);
    only the text of a label changes."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:.4g}" if super().__call__(x, pos) else ""


class LogTicks(Locator):
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


def log_y(ax: Axes) -> None:
    """Log-scale y axis with plain tick labels (see :class:`LogTicks`); minor ticks unlabelled."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogTicks())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:.4g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def power_law_axes(ax: Axes, n: np.ndarray, fit: PowerLaw | None, name: str, room: tuple[float, float]) -> None:
    """Make ``ax`` the axes of a power law in model size: both log, and the fit drawn on them.

    x: non-embedding parameters N, ticked at the models' own sizes ``n`` and read as 22.7K or
    1.31B (log-axis minor labels would crowd), from ``n.min() / room[0]`` to ``n.max() * room[1]``
    (room for the points' labels). y: log, plain numbers. ``fit`` (``name = A · N^k``, where
    ``name`` says what it predicts: "ppl", "bits/byte") is a straight line on these axes, drawn
    dashed over the models' size range, its legend label saying from how many models it comes.
    """
    if fit is not None:
        xs = np.geomspace(n.min(), n.max(), 100)
        points = " (exact through 2 points)" if fit.points == 2 else f" ({fit.points} models)"
        ax.plot(xs, fit.predict(xs), "--", color="C3",
                label=f"fit: {name} = {fit.coefficient:.3g} · N^{fit.exponent:.3f}{points}")
    ax.set_xscale("log")
    ax.set_xticks(n, [human_count(v) for v in n])
    ax.xaxis.set_minor_formatter(NullFormatter())
    log_y(ax)
    ax.set_xlim(n.min() / room[0], n.max() * room[1])
    ax.set_xlabel("non-embedding parameters N (log scale)")
    ax.grid(True, which="both", alpha=0.25)


def spread_labels(values: list[float], gap: float) -> list[float]:
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
