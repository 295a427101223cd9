"""The figures of minillm.plots, drawn from small hand-made results (no model needed)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from minillm import plots
from minillm.experiments.scaling import ModelSummary, StoryResult, fit_power_law
from minillm.scoring import TextScore, TokenScore

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
            out.append(StoryResult(s.model, s.params, s.non_embedding_params, story, tokens, 4 * tokens,
                                   tokens * float(np.log(ppl)), ppl, float(np.log2(ppl)) / 4))
    return out


def text_score(tokens: list[str], surprises: list[float], first: int = 1, context: str = "") -> TextScore:
    """A TextScore by hand: tokens scored from position ``first``, ``context`` the text before them."""
    rows = [TokenScore(first + i, 100 + i, t, context if i == 0 else "", -s) for i, (t, s) in
            enumerate(zip(tokens, surprises))]
    return TextScore("".join(tokens), None, list(range(first + len(tokens))), rows, sum(surprises),
                     len("".join(tokens)), "whole text in one pass")


@pytest.fixture
def story_score() -> TextScore:
    tokens = [" upon", " a", " time", ",", " there", " was", " a", " dragon", ".", "\n", "The", " end", "."]
    surprises = [0.5, 0.1, 0.05, 1.0, 2.0, 0.3, 0.2, 7.5, 0.4, 1.5, 3.0, 0.9, 0.2]
    return text_score(tokens, surprises, first=1, context="Once")


def assert_png(path, expected) -> None:
    assert path == expected
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5000


def test_every_plot_writes_a_png(tmp_path, summaries, rows, story_score):
    fit = fit_power_law([s.non_embedding_params for s in summaries], [s.perplexity for s in summaries])
    assert_png(plots.plot_scaling(summaries, fit, tmp_path / "ppl.png"), tmp_path / "ppl.png")
    bpb = plots.plot_scaling(summaries, None, tmp_path / "bpb.png", metric="bits_per_byte")
    assert_png(bpb, tmp_path / "bpb.png")
    assert_png(plots.plot_per_story(rows, summaries, tmp_path / "story.png"), tmp_path / "story.png")
    assert_png(plots.plot_length_confound(rows, tmp_path / "length.png"), tmp_path / "length.png")
    assert_png(plots.plot_token_surprise(story_score, tmp_path / "sub" / "tokens.png", title="a story"),
               tmp_path / "sub" / "tokens.png")


def test_scaling_is_log_log_with_the_fitted_power_law(summaries):
    fit = fit_power_law([s.non_embedding_params for s in summaries], [s.perplexity for s in summaries])
    ax = plots.scaling_figure(summaries, fit).axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    [line] = [ln for ln in ax.get_lines() if ln.get_label().startswith("fit:")]
    x, y = line.get_xdata(), line.get_ydata()
    assert x.min() == pytest.approx(1e6) and x.max() == pytest.approx(1e8)
    np.testing.assert_allclose(y, fit.predict(x), rtol=1e-12)
    assert line.get_label() == f"fit: ppl = {fit.coefficient:.2g} · N^{fit.exponent:.3f} (3 models)"
    assert {t.get_text() for t in ax.texts} == {"tiny-1M", "small-10M", "big-100M"}


def test_scaling_error_bars_span_the_bootstrap_interval(summaries):
    intervals = [("perplexity", "ppl_ci_low", "ppl_ci_high"), ("bits_per_byte", "bpb_ci_low", "bpb_ci_high")]
    for metric, low, high in intervals:
        ax = plots.scaling_figure(summaries, None, metric=metric).axes[0]
        data_line, _, (bars,) = ax.containers[0].lines
        np.testing.assert_allclose(data_line.get_ydata(), [getattr(s, metric) for s in summaries])
        spans = [(seg[0][0], min(seg[0][1], seg[1][1]), max(seg[0][1], seg[1][1])) for seg in bars.get_segments()]
        expected = [(s.non_embedding_params, getattr(s, low), getattr(s, high)) for s in summaries]
        np.testing.assert_allclose(spans, expected, rtol=1e-12)
        assert not [ln for ln in ax.get_lines() if ln.get_label().startswith("fit:")]


def test_scaling_notes_an_exact_two_point_fit_and_rejects_unknown_metrics(summaries):
    two = summaries[:2]
    fit = fit_power_law([s.non_embedding_params for s in two], [s.perplexity for s in two])
    labels = [ln.get_label() for ln in plots.scaling_figure(two, fit).axes[0].get_lines()]
    assert any(label.endswith("(exact through 2 points)") for label in labels)
    with pytest.raises(ValueError, match="metric"):
        plots.scaling_figure(summaries, fit, metric="loss")


def test_per_story_lines_run_from_small_to_large(rows, summaries):
    ax = plots.per_story_figure(rows, list(reversed(summaries))).axes[0]
    assert ax.get_yscale() == "log"
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["tiny-1M", "small-10M", "big-100M"]
    [corpus] = [ln for ln in ax.get_lines() if ln.get_label() == "corpus perplexity"]
    np.testing.assert_allclose(corpus.get_ydata(), [20.0, 12.0, 8.0])
    story_lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("_") and len(ln.get_xdata())]
    assert len(story_lines) == 6
    harder = [ln for ln in story_lines if ln.get_color() == "C1"]
    assert len(harder) == 1 and harder[0].get_ydata()[-1] > harder[0].get_ydata()[0]
    assert [t.get_text() for t in ax.texts] == ["story 4"]


def test_length_confound_scatters_one_colour_per_model(rows):
    fig = plots.length_confound_figure(rows)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "confound" in ax.get_title()
    assert len(ax.collections) == 3
    points = ax.collections[0].get_offsets()
    first = [r for r in rows if r.model == "org/tiny-1M"]
    np.testing.assert_allclose(points, [(r.tokens, r.perplexity) for r in first])
    assert len({tuple(c.get_facecolor()[0]) for c in ax.collections}) == 3


def token_boxes(fig) -> dict[str, list]:
    """The text axes' background boxes, grouped by gid ('token <position>', 'unscored', 'truncated')."""
    boxes: dict[str, list] = {}
    for patch in fig.axes[0].patches:
        boxes.setdefault(patch.get_gid(), []).append(patch)
    return boxes


def luminance(patch) -> float:
    r, g, b, _ = patch.get_facecolor()
    return 0.299 * r + 0.587 * g + 0.114 * b


def test_token_surprise_shades_the_most_surprising_token_darkest(story_score):
    fig = plots.token_surprise_figure(story_score)
    boxes = token_boxes(fig)
    scored = {gid: box[0] for gid, box in boxes.items() if gid.startswith("token ")}
    assert len(scored) == len(story_score.rows)
    worst = max(story_score.rows, key=lambda r: r.surprise)
    assert min(scored, key=lambda gid: luminance(scored[gid])) == f"token {worst.position}"
    calmest = min(story_score.rows, key=lambda r: r.surprise)
    assert max(scored, key=lambda gid: luminance(scored[gid])) == f"token {calmest.position}"
    assert "surprise (nats)" in fig.axes[1].get_xlabel()


def test_token_surprise_layout_context_newlines_and_truncation(story_score):
    fig = plots.token_surprise_figure(story_score)
    boxes = token_boxes(fig)
    [unscored] = boxes["unscored"]
    assert unscored.get_xy() == (0, pytest.approx(0.05)) and unscored.get_width() == 4      # "Once", grey
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts[:3] == ["Once", " upon", " a"] and "↵" in texts          # leading spaces kept, newline shown
    newline, after = boxes["token 10"][0], boxes["token 11"][0]               # "\n", then "The"
    assert after.get_x() == 0 and after.get_y() == newline.get_y() + 1

    short = plots.token_surprise_figure(story_score, max_tokens=5)
    assert sum(gid.startswith("token ") for gid in token_boxes(short)) == 5
    assert [t.get_text() for t in short.axes[0].texts][-1] == "…"


def test_token_surprise_wraps_long_text_and_marks_skipped_context():
    score = text_score(["word "] * 40, [1.0] * 40, first=20, context="the last twelve tokens")
    fig = plots.token_surprise_figure(score)
    ax = fig.axes[0]
    assert ax.texts[0].get_text() == "…the last twelve tokens"
    assert max(p.get_x() + p.get_width() for p in ax.patches) <= 90
    assert ax.get_ylim()[0] == 3                                                # 23 + 200 columns on 3 lines


def test_helpers():
    assert plots.short_name("Qwen/Qwen2.5-0.5B") == "Qwen2.5-0.5B" and plots.short_name("ckpt/dir/") == "dir"
    assert [plots.human_count(n) for n in (950, 260_000, 1_234_567, 3e9)] == ["950", "260K", "1.23M", "3B"]


def test_importing_plots_leaves_pyplot_alone():
    code = "import sys, minillm.plots; assert 'matplotlib.pyplot' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
