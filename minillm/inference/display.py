"""HTML for Jupyter: tokens shaded by how surprising they were, next-token tables and the logit lens.

Jupyter shows an object through its ``_repr_html_`` method when it has one; the result
types of :mod:`minillm.inference.scoring` and :mod:`minillm.inference.inspect` call the functions
here. Every piece of text (tokens can be ``<``, ``&`` or a quote) goes through ``html.escape``.

Two shadings. **Surprise** follows the kit's one colour rule for tokens (:func:`surprise_fraction`),
which report.html uses too: a fixed scale from white at 0 nats to the full red at ``MAX_SURPRISE``
nats. **Probabilities** (next-token tables, the logit lens) are shaded in proportion to the
largest probability in the table: they compare candidates for one position, not texts.
"""

from __future__ import annotations

from html import escape

# The one colour rule for a token's surprise, everywhere in the kit: the fraction
# min(surprise, MAX_SURPRISE) / MAX_SURPRISE of SURPRISE_RGB over white. A fixed scale, rather than
# one stretched to each text's most surprising token, keeps the shading comparable between models,
# texts and runs: a text the model finds easy stays pale instead of looking as alarming as a hard
# one. 10 nats is p ~ 1 in 22,000; the full colour is a mid red, not near-black, so that black
# text stays readable on it.
MAX_SURPRISE = 10.0
SURPRISE_RGB = (217, 38, 31)      # red: surprise (nats)
PROBABILITY_RGB = "40, 110, 200"  # blue: probability


def surprise_fraction(nats: float) -> float:
    """How much of the full red a token of surprise ``nats`` gets: 0 (white) at 0 nats, rising
    linearly to 1 at ``MAX_SURPRISE`` nats and beyond."""
    return max(0.0, min(1.0, nats / MAX_SURPRISE))


def surprise_rgb(nats: float) -> tuple[int, int, int]:
    """The opaque colour of a token of surprise ``nats``: :func:`surprise_fraction` of the red over white."""
    f = surprise_fraction(nats)
    return tuple(round(255 + f * (c - 255)) for c in SURPRISE_RGB)


def shade(value: float, largest: float, rgb: str) -> str:
    """A CSS background whose opacity is ``value / largest`` (0 when ``largest`` is 0), 3 decimals."""
    alpha = max(0.0, min(1.0, value / largest)) if largest > 0 else 0.0
    return f"background: rgba({rgb}, {alpha:.3f})"


def surprise_shade(nats: float) -> str:
    """A CSS background for a token of surprise ``nats``: the red at opacity :func:`surprise_fraction`,
    3 decimals (over a white page, the colour :func:`surprise_rgb`)."""
    r, g, b = SURPRISE_RGB
    return f"background: rgba({r}, {g}, {b}, {surprise_fraction(nats):.3f})"


def probability_text(p: float) -> str:
    """A probability with 3 significant digits, in scientific notation below 0.001:
    0.136, 0.0576, 7.65e-08 (a fixed 4 decimals would print 0.0000 for most tokens of a
    50k-token vocabulary)."""
    return f"{p:.2e}" if 0 < p < 1e-3 else f"{p:.3g}"


def _token(text: str) -> str:
    """A token made visible: escaped, with spaces and newlines shown as the symbols ␣ and ⏎."""
    return escape(text.replace(" ", "\u2423").replace("\n", "\u23ce"))


def surprise_html(context: str, tokens: list[tuple[str, float, float, str]], summary: str) -> str:
    """A scored text: the tokens inline, each shaded by its surprise (:func:`surprise_fraction`),
    then one row per token.

    Args:
        context: text shown in grey before the scored tokens (the unscored part), or "".
        tokens: ``(token, surprise in nats, probability, the model's top guess or "")`` per scored token.
        summary: one line above the table (e.g. the perplexity), plain text.
    """
    inline = "".join(f'<span title="surprise {s:.2f} nats" style="{surprise_shade(s)}">'
                     f"{escape(t)}</span>" for t, s, _, _ in tokens)
    rows = "".join(f'<tr><td>{i}</td><td style="{surprise_shade(s)}"><code>{_token(t)}</code></td>'
                   f"<td>{s:.3f}</td><td>{probability_text(p)}</td><td><code>{_token(guess)}</code></td></tr>"
                   for i, (t, s, p, guess) in enumerate(tokens, start=1))
    return (f"<div><p>{escape(summary)}</p>"
            f'<p style="white-space: pre-wrap; line-height: 1.6"><span style="color: gray">{escape(context)}</span>'
            f"{inline}</p>"
            "<table><thead><tr><th>#</th><th>token</th><th>surprise (nats)</th><th>probability</th>"
            f"<th>model's top guess</th></tr></thead><tbody>{rows}</tbody></table></div>")


def top_k_html(after: str, rows: list[tuple[str, int, float, float]]) -> str:
    """A next-token table: ``(token, id, logit, probability)`` per row, most likely first,
    each probability cell shaded in proportion to the top probability."""
    largest = max((p for *_, p in rows), default=0.0)
    body = "".join(f"<tr><td>{rank}</td><td><code>{_token(t)}</code></td><td>{i}</td><td>{logit:.3f}</td>"
                   f'<td style="{shade(p, largest, PROBABILITY_RGB)}">{probability_text(p)}</td></tr>'
                   for rank, (t, i, logit, p) in enumerate(rows, start=1))
    return (f"<div><p>The {len(rows)} most likely tokens after <code>{escape(after)}</code></p>"
            "<table><thead><tr><th>rank</th><th>token</th><th>id</th><th>logit</th><th>probability</th></tr></thead>"
            f"<tbody>{body}</tbody></table></div>")


def lens_html(token: str, position: int, rows: list[tuple[str, list[tuple[str, int, float]]]]) -> str:
    """A logit-lens table: one row per layer, ``(label, [(token, id, probability), ...])`` with the
    most likely first; each cell shaded in proportion to the largest probability in the table."""
    largest = max((p for _, top in rows for *_, p in top), default=0.0)
    width = max((len(top) for _, top in rows), default=0)
    body = "".join(f"<tr><td>{escape(label)}</td>"
                   + "".join(f'<td title="id {i}" style="{shade(p, largest, PROBABILITY_RGB)}"><code>{_token(t)}</code> '
                             f"{probability_text(p)}</td>" for t, i, p in top) + "</tr>"
                   for label, top in rows)
    ranks = "".join(f"<th>#{r}</th>" for r in range(1, width + 1))
    return (f"<div><p>The logit lens after token {position} <code>{_token(token)}</code>: the most likely next "
            "tokens if the model stopped after each block</p>"
            f"<table><thead><tr><th>layer</th>{ranks}</tr></thead><tbody>{body}</tbody></table></div>")
