"""report.html: the scaling experiment's report as a web page a browser opens from disk.

The page holds the same tables and stories as report.md (the costliest tokens too), the figures (linked by their file names, so the
folder can be moved or zipped as a whole) and the largest model's hardest story with every
token shaded by its surprise, by the kit's one colour rule
(:func:`minillm.inference.display.surprise_fraction`: white at 0 nats to red at ``MAX_SURPRISE``;
hover over a token for its surprise and probability). It is rendered with jinja2 with
autoescaping on: story text and token strings are escaped, never read as HTML.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from minillm.experiments.results import PairedDifference, ScalingResults, StoryResult
from minillm.inference.scoring import TextScore
from minillm.checkpoint.hub import display_name
from minillm.inference.display import MAX_SURPRISE, surprise_rgb

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def shaded_tokens(score: TextScore) -> list[dict]:
    """The text of ``score`` as pieces for the page: the unscored start, then one per scored token
    with its surprise (nats), probability and background colour (CSS rgb, white = 0 nats)."""
    pieces = []
    first = score.rows[0]
    if first.context:
        pieces.append(dict(text=first.context, color="rgb(217,217,217)", title="not scored", scored=False))
    for row in score.rows:
        r, g, b = surprise_rgb(row.surprise)
        pieces.append(dict(text=row.token, color=f"rgb({r},{g},{b})",
                           title=f"surprise {row.surprise:.2f} nats, p = {row.prob:.3g}", scored=True))
    return pieces


def write_scaling_html(results: ScalingResults, ranked: list[StoryResult], diffs: list[PairedDifference], out: Path,
                       fit_text: str, costliest: list[dict], by_token: list[dict], n_stories: int = 3) -> Path:
    """Write ``out/report.html`` from the results (the figures must already be in ``out``).

    ``ranked``: the largest model's story rows, hardest first; ``diffs``: each model against
    the next smaller one; ``fit_text``: the power law in words; ``costliest`` and ``by_token``:
    the largest model's costliest single tokens and the token strings carrying the most total
    loss (as in report.md); ``n_stories``: how many hardest and easiest stories to show."""
    largest = results.summaries[-1].model
    hardest = ranked[0]
    figures = [(name, caption) for name, caption in [
        ("perplexity_vs_size.png", "Perplexity against model size"),
        ("bits_per_byte_vs_size.png", "Bits per byte against model size (fair across tokenizers)"),
        ("per_story.png", "Each story's perplexity across the models"),
        ("length_confound.png", "Perplexity against story length"),
    ] if (out / name).is_file()]
    html = _environment().get_template("scaling_report.html").render(
        label=results.source.label, protocol=results.protocol, warnings=results.warnings,
        summaries=results.summaries, fit_text=fit_text, diffs=diffs, shared_tokenizer=results.shared_tokenizer,
        largest=display_name(largest), hardest=hardest, hardest_pieces=shaded_tokens(results.scores[largest][hardest.story]),
        harder=ranked[1:n_stories], easiest=ranked[::-1][:n_stories], stories=results.stories,
        costliest=costliest, by_token=by_token, figures=figures, max_surprise=MAX_SURPRISE,
        full_colour="rgb({},{},{})".format(*surprise_rgb(MAX_SURPRISE)), display_name=display_name)
    path = out / "report.html"
    path.write_text(html, encoding="utf-8")
    return path
