"""Jupyter's rich display: tokens shaded by surprise and next-token tables, escaped and shaded in
proportion (checked on the HTML itself and on a real shipped model)."""

from __future__ import annotations

import re

import pytest
import torch

from minillm import load_model, load_tokenizer, next_tokens, score
from minillm.inference.display import surprise_html, top_k_html
from minillm.course.family import FAMILY_DIR

ALPHA = re.compile(r"rgba\(\d+, \d+, \d+, ([0-9.]+)\)")


@pytest.fixture(scope="module")
def tiny():
    return load_model(FAMILY_DIR / "tiny-s"), load_tokenizer(FAMILY_DIR / "tiny-s")


def test_surprise_html_escapes_and_shades_in_proportion():
    tokens = [("<b>", 1.0, 0.37, "&"), (" & ", 2.0, 0.14, '"'), ("x", 4.0, 0.02, "<script>")]
    html = surprise_html("<i>ctx</i>", tokens, "3 tokens & more")
    assert "<b>" not in html and "<script>" not in html and "<i>" not in html
    assert "&lt;b&gt;" in html and "&amp;" in html and "&lt;script&gt;" in html and "&lt;i&gt;ctx" in html
    alphas = [float(a) for a in ALPHA.findall(html)]
    # Inline spans, then table cells: surprise / 10 nats (the kit's fixed scale), 3 decimals.
    assert alphas == [0.1, 0.2, 0.4, 0.1, 0.2, 0.4]
    beyond = surprise_html("", [("a", 0.0, 1.0, ""), ("b", 25.0, 1e-11, "")], "")
    assert [float(a) for a in ALPHA.findall(beyond)] == [0.0, 1.0, 0.0, 1.0]     # clipped at 10 nats


def test_one_surprise_colour_for_notebooks_and_report_html():
    """The opaque colour report.html paints equals the notebook's red at the same opacity over white."""
    from minillm.inference.display import SURPRISE_RGB, surprise_rgb

    assert surprise_rgb(0.0) == (255, 255, 255) and surprise_rgb(10.0) == surprise_rgb(40.0) == SURPRISE_RGB
    for nats in (1.0, 2.5, 7.0):
        alpha = float(ALPHA.findall(surprise_html("", [("t", nats, 0.5, "")], ""))[0])
        over_white = tuple(255 * (1 - alpha) + c * alpha for c in SURPRISE_RGB)   # CSS alpha compositing
        assert all(abs(a - b) <= 0.5 for a, b in zip(surprise_rgb(nats), over_white))


def test_top_k_html_escapes_and_shades_in_proportion():
    html = top_k_html("a < b", [("<", 7, 3.0, 0.5), ("&", 9, 2.0, 0.25), (" x", 1, 1.0, 0.05)])
    assert "a &lt; b" in html and "<code>&lt;</code>" in html and "<code>&amp;</code>" in html
    assert [float(a) for a in ALPHA.findall(html)] == [1.0, 0.5, 0.1]
    assert html.count("<tr>") == 4                                       # header + 3 rows


def test_text_score_repr_html_on_a_real_model(tiny):
    model, tok = tiny
    text = "Tom said: 1 < 2 & 3 > 2."
    html = score(model, tok, text)._repr_html_()
    ids = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        surprise = torch.nn.functional.cross_entropy(model(ids)[0, :-1].double(), ids[0, 1:], reduction="none")
    n = len(surprise)
    alphas = [float(a) for a in ALPHA.findall(html)]
    assert len(alphas) == 2 * n and html.count("<tr>") == n + 1
    expected = (surprise / 10.0).clamp(max=1.0).tolist()                # the fixed scale: 10 nats is full red
    # Rounded to 3 decimals in the HTML; surprises from float32 forward passes: 1e-3 covers both.
    assert all(abs(a - e) <= 1e-3 for a, e in zip(alphas[:n], expected))
    assert alphas[:n] == alphas[n:]
    # This vocabulary spells "<", "&" and ">" as tokens of their own: each escaped, inline and in the table.
    for escaped in ("&lt;", "&amp;", "&gt;"):
        assert f">{escaped}</span>" in html and f"<code>{escaped}</code>" in html
    assert "<code><</code>" not in html and ">&</span>" not in html


def test_next_tokens_table(tiny):
    model, tok = tiny
    table = next_tokens(model, tok, "Once upon a", k=4)
    with torch.no_grad():
        logits = model(torch.tensor([tok.encode("Once upon a")]))[0, -1].double()
    top = torch.topk(torch.softmax(logits, -1), 4)
    assert [i for _, i, _, _ in table.rows] == top.indices.tolist()
    assert torch.allclose(torch.tensor([p for *_, p in table.rows], dtype=torch.float64), top.values, rtol=1e-5)
    alphas = [float(a) for a in ALPHA.findall(table._repr_html_())]
    assert alphas[0] == 1.0 and all(abs(a - p / top.values[0].item()) <= 1e-3 for a, p in zip(alphas, top.values.tolist()))
    with pytest.raises(ValueError, match="k must be at least 1"):
        next_tokens(model, tok, "Once", k=0)
    with pytest.raises(ValueError, match="non-empty string"):
        next_tokens(model, tok, "")
