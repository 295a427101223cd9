"""report.html, opened in a real headless Chromium: its tables, images and shaded tokens render."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from minillm.data import bundled_source
from minillm.experiments.scaling import run_scaling
from minillm.reports.files import save_results
from checkpoints import make_checkpoint, make_tokenizer

# A page beside report.html that loads it in a frame and writes what the browser made of it into
# its own DOM, which `chromium --dump-dom` prints (file pages may read each other with
# --allow-file-access-from-files).
PROBE = """<!DOCTYPE html><html><body><pre id="out">not loaded</pre>
<iframe id="f" src="report.html" width="1200" height="800"></iframe>
<script>
document.getElementById("f").addEventListener("load", () => {
  const d = document.getElementById("f").contentDocument;
  const tokens = Array.from(d.querySelectorAll("#hardest-story span.tok"));
  document.getElementById("out").textContent = JSON.stringify({
    tables: Object.fromEntries(Array.from(d.querySelectorAll("table")).map(t => [t.id, t.querySelectorAll("tbody tr").length])),
    images: Array.from(d.images).map(i => [i.getAttribute("src"), i.naturalWidth]),
    tokens: tokens.map(s => [s.textContent, getComputedStyle(s).backgroundColor]),
    title: d.title});
});
</script></body></html>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "Chromium is not installed (Debian: apt-get install -y chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must install it (.ci/run does)")
    pytest.skip(reason)


def test_report_html_renders_tables_images_and_shaded_tokens(tmp_path):
    browser = chromium()
    folders = []
    for name, layers in [("small", 1), ("large", 2)]:
        folder = make_checkpoint(tmp_path / name, "qwen2", seed=layers, vocab=320, layers=layers)
        make_tokenizer(folder, vocab_size=320)
        folders.append(str(folder))
    source = bundled_source("stories", 48, 52)
    source.texts[0] = source.texts[0] + " <b>bold?</b> & <script>alert(1)</script>"   # must show as text
    results = run_scaling(folders, source, progress=False)
    out = tmp_path / "out"
    save_results(results, out)
    (out / "probe.html").write_text(PROBE)
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                          "--virtual-time-budget=5000", "--dump-dom", (out / "probe.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    found = json.loads(re.search(r'<pre id="out">(.*?)</pre>', dom, re.S).group(1).replace("&amp;", "&")
                       .replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"'))
    # The same tables as report.md: 20 costliest tokens, and the 20 token strings of most total loss.
    assert found["tables"] == {"summary": 2, "differences": 1, "costliest": 20, "by-token": 20}
    assert [src for src, _ in found["images"]] == ["perplexity_vs_size.png", "bits_per_byte_vs_size.png",
                                                   "per_story.png", "length_confound.png"]
    assert all(width > 0 for _, width in found["images"])                  # every figure loaded from disk
    largest, hardest = "large", max((r for r in results.rows if r.model == "large"),
                                        key=lambda r: r.perplexity)
    rows = results.scores[largest][hardest.story].rows
    assert [t for t, _ in found["tokens"]] == [r.token for r in rows]     # one span per scored token, in order
    colours = {c for _, c in found["tokens"]}
    assert len(colours) > 5 and all(c.startswith("rgb(") for c in colours)   # shaded, not all alike
    worst = max(range(len(rows)), key=lambda i: rows[i].surprise)
    best = min(range(len(rows)), key=lambda i: rows[i].surprise)
    green = lambda c: int(c.split(",")[1])                                    # the scale runs white -> red
    assert green(found["tokens"][worst][1]) < green(found["tokens"][best][1])
    html = (out / "report.html").read_text()            # jinja2 autoescape: the story's markup is text
    assert html.count("Next hardest:") == 2                                 # the 3 hardest stories, as report.md
    assert str(tmp_path) not in re.sub(r'title="[^"]*"', "", html)           # short names; full path on hover only
    report = (out / "report.md").read_text()
    assert "## Token strings that cost large the most in total" in report and str(tmp_path) not in report
    for table in ("summary.csv", "results.csv"):             # the label is short; the source column keeps the path
        header, first = (out / table).read_text().splitlines()[:2]
        assert header.endswith(",source") and first.startswith("small,") and first.endswith(folders[0])
    assert "<script>alert" not in html and "<b>bold" not in html
    if hardest.story == 0:
        assert "<script>alert(1)</script>" in "".join(t for t, _ in found["tokens"])
    else:
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
