"""The scaling experiment: aggregation, intervals, the power-law fit, and the command end to end."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

import minillm
from minillm.cli import main
from minillm.data import bundled_texts
from minillm.experiments.quantization import perplexity_vs_bits
from minillm.experiments.scaling import (StoryResult, bootstrap_interval, fit_power_law, run_scaling,
                                         summarize)
from minillm.scoring import score
from checkpoints import make_checkpoint, make_tokenizer


def _row(story, tokens, nll):
    return StoryResult("m", 10, 5, story, tokens, 4 * tokens, nll, math.exp(nll / tokens),
                       nll / math.log(2) / (4 * tokens))


def test_corpus_perplexity_is_exp_of_pooled_nll_not_mean_of_perplexities():
    rows = [_row(0, 10, 10 * 1.0), _row(1, 90, 90 * 3.0)]       # per-token NLL 1 and 3 nats
    summary = summarize("m", rows)
    assert summary.mean_nll == pytest.approx((10 + 270) / 100)
    assert summary.perplexity == pytest.approx(math.exp(2.8))
    assert summary.perplexity != pytest.approx((math.e + math.e**3) / 2)
    assert summary.bits_per_byte == pytest.approx(280 / math.log(2) / 400)


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_stories():
    rng = np.random.default_rng(1)
    tokens = rng.integers(50, 300, size=40).astype(float)
    nll = tokens * rng.normal(2.0, 0.3, size=40)
    low, high = bootstrap_interval(nll, tokens, seed=3)
    assert low < nll.sum() / tokens.sum() < high
    assert bootstrap_interval(nll, tokens, seed=3) == (low, high)              # seeded: reproducible
    low4, high4 = bootstrap_interval(np.tile(nll, 4), np.tile(tokens, 4), seed=3)
    assert (high4 - low4) < 0.7 * (high - low)                                # ~1/sqrt(4) as wide
    same = bootstrap_interval(np.full(10, 20.0), np.full(10, 10.0))
    assert same == pytest.approx((2.0, 2.0))


def test_power_law_fit_recovers_a_known_law():
    n = [1e6, 3e6, 1e7, 1e8]
    fit = fit_power_law(n, [50 * x**-0.1 for x in n])
    assert fit.exponent == pytest.approx(-0.1, abs=1e-9)
    assert fit.coefficient == pytest.approx(50, rel=1e-6)
    assert fit.predict(1e9) == pytest.approx(50 * 1e9**-0.1, rel=1e-6)
    assert fit.points == 4
    assert fit_power_law([1e6, 1e6], [3.0, 4.0]) is None


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two random checkpoints of different sizes sharing a tokenizer trained on the stories."""
    folders = []
    for name, layers in [("small", 1), ("large", 3)]:
        folder = make_checkpoint(tmp_path_factory.mktemp(name), "qwen2", seed=layers, vocab=320, layers=layers)
        make_tokenizer(folder, vocab_size=320)
        folders.append(str(folder))
    return folders


def test_run_scaling_scores_every_story_with_every_model(two_models):
    stories = bundled_texts("stories")[:6]
    results = run_scaling(two_models, stories, progress=False)
    assert len(results.rows) == 2 * 6
    assert [s.model for s in results.summaries] == two_models                 # sorted by size
    for folder in two_models:
        model, tok = minillm.load_model(folder), minillm.load_tokenizer(folder)
        for r in (r for r in results.rows if r.model == folder):
            alone = score(model, tok, stories[r.story])
            assert r.tokens == alone.n_tokens and r.nll == pytest.approx(alone.total_nll, rel=1e-5)
            assert r.params == model.num_parameters()
    assert results.fit is not None and results.fit.points == 2


def test_scaling_command_writes_tables_report_and_plots(two_models, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["scaling", "--offline", "--models", *two_models, "--stories", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "power law" in printed and "5 stories from the stories bundled with minillm" in printed
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and set(rows[0]) >= {"model", "params", "non_embedding_params", "story", "tokens",
                                                "nll", "perplexity", "bits_per_byte"}
    with open(out / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [float(s["ppl_ci_low"]) <= float(s["perplexity"]) <= float(s["ppl_ci_high"]) for s in summary] == [True] * 2
    report = (out / "report.md").read_text()
    hardest = max((r for r in rows if r["model"] == two_models[-1]), key=lambda r: float(r["perplexity"]))
    assert bundled_texts("stories")[int(hardest["story"])][:60] in report
    for png in ["perplexity_vs_size", "bits_per_byte_vs_size", "per_story", "length_confound", "hardest_story_tokens"]:
        assert (out / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_perplexity_vs_bits_on_the_real_model(shared_data):
    model = minillm.load_model(shared_data / "stories260K")
    tok = minillm.load_tokenizer(shared_data / "stories260K")
    texts = bundled_texts("stories")[:8]
    rows = perplexity_vs_bits(model, tok, texts, bits_list=(32, 8, 2), schemes=("tensor", "channel"))
    by = {(r.bits, r.scheme): r for r in rows}
    assert [(r.bits, r.scheme) for r in rows] == [(32, "none"), (8, "tensor"), (8, "channel"), (2, "tensor"),
                                                  (2, "channel")]
    full = by[(32, "none")]
    assert full.perplexity == pytest.approx(math.exp(sum(score(model, tok, t).total_nll for t in texts)
                                                     / sum(score(model, tok, t).n_tokens for t in texts)), rel=1e-6)
    assert by[(8, "channel")].perplexity == pytest.approx(full.perplexity, rel=0.02)
    assert by[(2, "tensor")].perplexity > 3 * full.perplexity
    assert by[(8, "tensor")].size_mb < 0.3 * full.size_mb


def test_scaling_without_models_or_network_uses_the_shipped_family(tmp_path, offline_cache, capsys):
    """No --models, nothing cached, offline: the tiny family on the held-out stories, and
    perplexity falls with size (the numbers recorded in data/models/family.csv)."""
    from minillm.family import FAMILY_DIR, HELD_OUT

    assert main(["scaling", "--stories", "50", "--out", str(tmp_path / "out")]) == 0
    said = capsys.readouterr().out
    assert "hf download Qwen/Qwen2.5-0.5B" in said and f"{HELD_OUT} stories from the held-out" in said
    with open(tmp_path / "out" / "summary.csv", newline="") as f:
        summary = {Path(r["model"]).name: float(r["perplexity"]) for r in csv.DictReader(f)}
    with open(FAMILY_DIR / "family.csv", newline="") as f:
        recorded = {r["name"]: float(r["held_out_perplexity"]) for r in csv.DictReader(f)}
    assert summary["tiny-s"] > summary["tiny-m"] > summary["tiny-l"]
    for name, ppl in summary.items():
        assert abs(ppl - recorded[name]) <= 1e-4 * recorded[name]
