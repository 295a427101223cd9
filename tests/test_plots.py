"""The figures of minillm.reports.plots_*, drawn from small hand-made results (no model needed)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from minillm.experiments.results import ModelSummary, StoryResult
from minillm.experiments.scaling import fit_power_law
from minillm.checkpoint.hub import display_name
from minillm.reports import plot_axes, plots_conditions, plots_scaling, plots_training

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def summary(name: str, n: int, ppl: float) -> ModelSummary:
    """A model row with an asymmetric interval: -10% / +15% (perplexity), -5% / +8% (bits per byte)."""
    bpb = ppl / 10
    return ModelSummary(model=name, params=2 * n, non_embedding_params=n, stories=6, tokens=600,
                        mean_nll=float(np.log(ppl)), perplexity=ppl, ppl_ci_low=0.9 * ppl, ppl_ci_high=1.15 * ppl,
                        bits_per_byte=bpb, bpb_ci_low=0.95 * bpb, bpb_ci_high=1.08 * bpb)


@pytest.fixture
def summaries() -> list[ModelSummary]:
    return [summary("org/tiny-1M", 10**6, 20.0), summary("org/small-10M", 10**7, 12.0),
            summary("/models/big-100M", 10**8, 8.0)]


@pytest.fixture
def rows(summaries) -> list[StoryResult]:
    """6 stories per model; story 4 gets harder with size, the rest easier. Shorter stories score worse."""
    out = []
    for s in summaries:
        for story in range(6):
            tokens = 40 + 60 * story
            ppl = s.perplexity * (1 + 20 / tokens) * (s.non_embedding_params / 1e6) ** (0.3 if story == 4 else 0)
            out.append(StoryResult(s.model, s.params, s.non_embedding_params, story, f"s.txt#{story}", tokens,
                                   4 * tokens, tokens * float(np.log(ppl)), float(np.log(ppl)), ppl,
                                   float(np.log2(ppl)) / 4, "no"))
    return out


def assert_png(path, expected) -> None:
    assert path == expected
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5000


def test_every_plot_writes_a_png(tmp_path, summaries, rows):
    fit = fit_power_law([s.non_embedding_params for s in summaries], [s.perplexity for s in summaries])
    assert_png(plots_scaling.plot_scaling(summaries, fit, tmp_path / "ppl.png"), tmp_path / "ppl.png")
    bpb = plots_scaling.plot_scaling(summaries, None, tmp_path / "bpb.png", metric="bits_per_byte")
    assert_png(bpb, tmp_path / "bpb.png")
    assert_png(plots_scaling.plot_per_story(rows, summaries, tmp_path / "story.png"), tmp_path / "story.png")
    assert_png(plots_scaling.plot_length_confound(rows, tmp_path / "length.png"), tmp_path / "length.png")


def test_scaling_is_log_log_with_the_fitted_power_law(summaries):
    fit = fit_power_law([s.non_embedding_params for s in summaries], [s.perplexity for s in summaries])
    ax = plots_scaling.scaling_figure(summaries, fit).axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    [line] = [ln for ln in ax.get_lines() if ln.get_label().startswith("fit:")]
    x, y = line.get_xdata(), line.get_ydata()
    assert x.min() == pytest.approx(1e6) and x.max() == pytest.approx(1e8)
    np.testing.assert_allclose(y, fit.predict(x), rtol=1e-12)
    assert line.get_label() == f"fit: ppl = {fit.coefficient:.3g} · N^{fit.exponent:.3f} (3 models)"
    assert {t.get_text() for t in ax.texts} == {"tiny-1M", "small-10M", "big-100M"}


def test_scaling_error_bars_span_the_bootstrap_interval(summaries):
    intervals = [("perplexity", "ppl_ci_low", "ppl_ci_high"), ("bits_per_byte", "bpb_ci_low", "bpb_ci_high")]
    for metric, low, high in intervals:
        ax = plots_scaling.scaling_figure(summaries, None, metric=metric).axes[0]
        data_line, _, (bars,) = ax.containers[0].lines
        np.testing.assert_allclose(data_line.get_ydata(), [getattr(s, metric) for s in summaries])
        spans = [(seg[0][0], min(seg[0][1], seg[1][1]), max(seg[0][1], seg[1][1])) for seg in bars.get_segments()]
        expected = [(s.non_embedding_params, getattr(s, low), getattr(s, high)) for s in summaries]
        np.testing.assert_allclose(spans, expected, rtol=1e-12)
        assert not [ln for ln in ax.get_lines() if ln.get_label().startswith("fit:")]


def test_scaling_notes_an_exact_two_point_fit_and_rejects_unknown_metrics(summaries):
    two = summaries[:2]
    fit = fit_power_law([s.non_embedding_params for s in two], [s.perplexity for s in two])
    labels = [ln.get_label() for ln in plots_scaling.scaling_figure(two, fit).axes[0].get_lines()]
    assert any(label.endswith("(exact through 2 points)") for label in labels)
    with pytest.raises(ValueError, match="metric"):
        plots_scaling.scaling_figure(summaries, fit, metric="loss")


def test_per_story_lines_run_from_small_to_large(rows, summaries):
    ax = plots_scaling.per_story_figure(rows, list(reversed(summaries))).axes[0]
    assert ax.get_yscale() == "log"
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["tiny-1M", "small-10M", "big-100M"]
    [corpus] = [ln for ln in ax.get_lines() if ln.get_label() == "corpus perplexity"]
    np.testing.assert_allclose(corpus.get_ydata(), [20.0, 12.0, 8.0])
    story_lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("_") and len(ln.get_xdata())]
    assert len(story_lines) == 6
    harder = [ln for ln in story_lines if ln.get_color() == "C1"]
    assert len(harder) == 1 and harder[0].get_ydata()[-1] > harder[0].get_ydata()[0]
    # labelled: the 5 hardest for the largest model and the one that got harder, by their ids
    texts = ax.texts
    assert {t.get_text() for t in texts} == {"s.txt#4", "s.txt#0", "s.txt#1", "s.txt#2", "s.txt#3"}
    assert next(t for t in texts if t.get_text() == "s.txt#4").get_color() == "C1"
    fig = ax.figure
    FigureCanvasAgg(fig).draw()     # lay the figure out as savefig does, to measure where texts landed
    boxes = [t.get_window_extent() for t in texts]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])     # labels apart
    assert not fig.legends[0].get_window_extent().overlaps(ax.get_window_extent())        # legend off the axes
    assert "/" not in ax.get_title() and "big-100M" in ax.get_xticklabels()[2].get_text()


def test_spread_keeps_labels_a_gap_apart_and_centred():
    ys = [1.0, 1.01, 1.02, 3.0]
    out = plot_axes.spread_labels(ys, 0.1)
    s = sorted(out)
    assert all(b - a >= 0.1 - 1e-12 for a, b in zip(s, s[1:]))
    assert [sorted(range(4), key=lambda i: out[i])] == [sorted(range(4), key=lambda i: ys[i])]   # order kept
    assert np.mean(out) == pytest.approx(np.mean(ys))


def test_length_confound_scatters_one_colour_per_model(rows):
    fig = plots_scaling.length_confound_figure(rows, data_label="6 made-up stories")
    ax = fig.axes[0]
    # the title says what is plotted and on what, and asserts no finding
    assert ax.get_yscale() == "log" and ax.get_title() == "Story perplexity against story length\n6 made-up stories"
    # each model's trend line and correlation, computed here independently with numpy
    for i, model in enumerate(["org/tiny-1M", "org/small-10M", "/models/big-100M"]):
        mine = [r for r in rows if r.model == model]
        x, y = np.log10([r.tokens for r in mine]), np.log10([r.perplexity for r in mine])
        slope, intercept = np.polyfit(x, y, 1)
        r = np.corrcoef(x, y)[0, 1]
        [trend] = [ln for ln in ax.get_lines() if ln.get_color() == f"C{i}"]
        xs = trend.get_xdata()
        np.testing.assert_allclose(np.log10(trend.get_ydata()), intercept + slope * np.log10(xs), rtol=1e-9)
        assert f"r = {r:+.2f}, slope {slope:+.2f}" in ax.collections[i].get_label()
    assert len(ax.collections) == 3
    points = ax.collections[0].get_offsets()
    first = [r for r in rows if r.model == "org/tiny-1M"]
    np.testing.assert_allclose(points, [(r.tokens, r.perplexity) for r in first])
    assert len({tuple(c.get_facecolor()[0]) for c in ax.collections}) == 3


def test_helpers():
    assert display_name("Qwen/Qwen2.5-0.5B") == "Qwen2.5-0.5B" and display_name("ckpt/dir/") == "dir"
    assert plots_conditions.base_name("data/models/tiny-m-instruct") == "tiny-m"
    assert [plot_axes.human_count(n) for n in (950, 260_000, 1_234_567, 3e9)] == ["950", "260K", "1.23M", "3B"]


def test_importing_plots_leaves_pyplot_alone():
    code = ("import sys, minillm.reports.plots_scaling, minillm.reports.plots_training, minillm.reports.plots_conditions,"
            " minillm.reports.plots_quantization; assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_titles_name_models_without_their_paths(summaries, rows):
    for fig in (plots_scaling.scaling_figure(summaries, None, data_label="6 stories"), plots_scaling.per_story_figure(rows, summaries),
                plots_scaling.length_confound_figure(rows)):
        words = [t.get_text() for ax in fig.axes for t in [ax.title, *ax.texts, *ax.get_xticklabels()]]
        words += [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        assert not [w for w in words if "/models/" in w or "org/" in w]


def test_conditions_figure_draws_each_condition_and_the_paired_ratios():
    from minillm.experiments.results import ConditionSummary, PairedDifference

    summaries = [ConditionSummary(m, f"k={k}", 10, 500, ppl, 0.9 * ppl, 1.1 * ppl, 2.0, 1.9, 2.1)
                 for m, base in [("org/a", 50.0), ("org/b", 30.0)] for k, ppl in enumerate([base, base * 0.9])]
    diffs = [PairedDifference(m, "k=0", "k=1", 10, -0.1, -0.15, -0.05, 0.9, 0.86, 0.95, 9)
             for m in ("a", "b")]
    fig = plots_conditions.conditions_figure(summaries, diffs, title="t", xlabel="k", baseline="k=0")
    left, right = fig.axes
    assert [t.get_text() for t in left.get_xticklabels()] == ["k=0", "k=1"]
    assert [c.lines[0].get_ydata().tolist() for c in left.containers] == [[50.0, 45.0], [30.0, 27.0]]
    assert [c.lines[0].get_ydata().tolist() for c in right.containers] == [[0.9], [0.9]]
    assert list(right.get_lines()[-1].get_ydata()) == [1.0, 1.0]                      # the "no change" line
    # The paired panel has no empty column for the baseline (its ratio to itself is the dashed line).
    assert [t.get_text() for t in right.get_xticklabels()] == ["k=1"]
    assert [round(float(x)) for c in right.containers for x in c.lines[0].get_xdata()] == [0, 0]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b"]


def test_bits_per_byte_plot_draws_its_own_fit_and_keeps_the_legend_off_the_points(summaries):
    fit = fit_power_law([s.non_embedding_params for s in summaries], [s.bits_per_byte for s in summaries],
                        metric="bits_per_byte")
    fig = plots_scaling.scaling_figure(summaries, fit, metric="bits_per_byte", data_label="6 stories")
    ax = fig.axes[0]
    [line] = [ln for ln in ax.get_lines() if ln.get_label().startswith("fit: bits/byte")]
    np.testing.assert_allclose(line.get_ydata(), fit.predict(line.get_xdata()), rtol=1e-12)
    FigureCanvasAgg(fig).draw()
    assert not fig.legends[0].get_window_extent().overlaps(ax.get_window_extent())
    with pytest.raises(ValueError, match="fit the metric you plot"):
        plots_scaling.scaling_figure(summaries, fit, metric="perplexity")


def test_plots_imports_only_the_result_types():
    """Data flows one way: experiments -> result rows -> plots; plots never imports an experiment."""
    import ast
    import inspect

    from minillm.reports import plots_quantization

    imported = set()
    for module in (plot_axes, plots_scaling, plots_training, plots_conditions, plots_quantization):
        tree = ast.parse(inspect.getsource(module))
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    from_experiments = {m for m in imported if m and m.startswith("minillm.experiments")}
    assert from_experiments == {"minillm.experiments.results"}, from_experiments


def test_conditions_figure_pairs_a_base_model_with_its_instruct_variant():
    from minillm.experiments.results import ConditionSummary

    models = ["org/m-1B", "org/m-2B", "org/m-1B-Instruct", "org/m-2B-Instruct"]
    summaries = [ConditionSummary(m, c, 5, 100, 10.0, 9.0, 11.0, 1.0, 0.9, 1.1) for m in models for c in ("a", "b")]
    fig = plots_conditions.conditions_figure(summaries, [], title="t", xlabel="x")
    lines = [c.lines[0] for c in fig.axes[0].containers]
    assert [ln.get_color() for ln in lines] == ["C0", "C1", "C0", "C1"]
    assert [ln.get_marker() for ln in lines] == ["o", "o", "s", "s"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["m-1B", "m-1B-Instruct", "m-2B", "m-2B-Instruct"]


def test_log_axes_label_the_stretch_above_100():
    """Perplexities of 120-180 sit between the decades 100 and 1000: a tick there must carry a label
    (matplotlib's default log ticks label none between 100 and 200)."""
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    ax.plot([0, 1], [28, 180])
    plot_axes.log_y(ax)
    FigureCanvasAgg(ax.figure).draw()
    low, high = ax.get_ylim()
    shown = [float(t.get_text()) for t in ax.get_yticklabels() if t.get_text() and low <= t.get_position()[1] <= high]
    assert any(100 < y <= 180 for y in shown) and any(y < 100 for y in shown)
    assert plot_axes.LogTicks().tick_values(0.5, 5e4) == [1, 10, 100, 1000, 10000]   # wide ranges stay sparse


def test_a_narrow_bits_per_byte_axis_still_has_labelled_ticks():
    """One model whose bits per byte lie within 1.98-2.08 (a twentieth of a decade): the y axis of
    bits_per_byte_vs_size.png carried one label (2) or none; it needs several, evenly spaced."""
    one = [ModelSummary(model="tiny-s", params=98704, non_embedding_params=49552, stories=20, tokens=470,
                        mean_nll=3.92, perplexity=50.5, ppl_ci_low=47.4, ppl_ci_high=54.4, bits_per_byte=2.030,
                        bpb_ci_low=1.987, bpb_ci_high=2.076)]
    fig = plots_scaling.scaling_figure(one, None, "bits_per_byte")
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    shown = [float(t.get_text()) for t in ax.get_yticklabels() if t.get_text() and low <= t.get_position()[1] <= high]
    assert len(shown) >= 3 and shown == sorted(shown)
    steps = np.diff(shown)
    assert np.allclose(steps, steps[0])                  # round numbers, evenly spaced (2, 2.02, 2.04, ...)
