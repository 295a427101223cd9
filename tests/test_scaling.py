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
from minillm.experiments.scaling import bootstrap_interval, fit_power_law, run_scaling, summarize
from minillm.experiments.results import StoryResult
from minillm.inference.scoring import score
from checkpoints import make_checkpoint, make_tokenizer


def _row(story, tokens, nll):
    return StoryResult("m", 10, 5, story, f"t#{story}", tokens, 4 * tokens, nll, nll / tokens, math.exp(nll / tokens),
                       nll / math.log(2) / (4 * tokens), "unknown")


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
    assert [s.source for s in results.summaries] == two_models                # sorted by size
    assert [s.model for s in results.summaries] == [Path(f).name for f in two_models]   # labelled by folder name
    for folder in two_models:
        model, tok = minillm.load_model(folder), minillm.load_tokenizer(folder)
        for r in (r for r in results.rows if r.source == folder):
            alone = score(model, tok, stories[r.story])
            assert r.tokens == alone.n_tokens and r.nll_total == pytest.approx(alone.total_nll, rel=1e-5)
            assert r.nll_mean == pytest.approx(alone.total_nll / alone.n_tokens, rel=1e-5)
            assert r.params == model.num_parameters()
    assert results.fit is not None and results.fit.points == 2


def test_scaling_command_writes_tables_report_and_plots(two_models, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")        # what --offline sets, undone after the test
    out = tmp_path / "out"
    assert main(["scaling", "--offline", "--models", *two_models, "--stories", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Power law" in printed and "Scoring the first 5 bundled texts of data/texts/stories.txt." in printed
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and set(rows[0]) >= {"model", "params", "non_embedding_params", "story", "story_id", "tokens",
                                                "nll_total", "nll_mean", "perplexity", "bits_per_byte",
                                                "seen_in_training"}
    assert [r["story_id"] for r in rows[:5]] == [f"stories.txt#{i}" for i in range(5)]
    with open(out / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [float(s["ppl_ci_low"]) <= float(s["perplexity"]) <= float(s["ppl_ci_high"]) for s in summary] == [True] * 2
    report = (out / "report.md").read_text()
    hardest = max((r for r in rows if r["source"] == two_models[-1]), key=lambda r: float(r["perplexity"]))
    assert bundled_texts("stories")[int(hardest["story"])][:60] in report
    assert f"### Story stories.txt#{hardest['story']}" in report
    for png in ["perplexity_vs_size", "bits_per_byte_vs_size", "per_story", "length_confound"]:
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
    from minillm.course.family import FAMILY_DIR, HELD_OUT

    assert main(["scaling", "--stories", "50", "--out", str(tmp_path / "out")]) == 0
    said = capsys.readouterr().out
    assert "hf download Qwen/Qwen2.5-0.5B" in said and (f"Scoring {HELD_OUT} bundled texts of data/texts/stories.txt that no model here trained on (50 were asked "
                                                           "for, with --stories or its default; there are no more).") in said
    with open(tmp_path / "out" / "summary.csv", newline="") as f:
        summary = {Path(r["model"]).name: float(r["perplexity"]) for r in csv.DictReader(f)}
    with open(FAMILY_DIR / "family.csv", newline="") as f:
        recorded = {r["name"]: float(r["held_out_perplexity"]) for r in csv.DictReader(f)}
    assert summary["tiny-s"] > summary["tiny-m"] > summary["tiny-l"]
    for name, ppl in summary.items():
        assert abs(ppl - recorded[name]) <= 1e-4 * recorded[name]


def _scaling(args, out, capsys):
    assert main(["scaling", *args, "--out", str(out)]) == 0
    with open(out / "results.csv", newline="") as f:
        return capsys.readouterr().out, list(csv.DictReader(f))


def test_category_news_offline_scores_news_and_says_so(tmp_path, offline_cache, capsys):
    """--category news with --offline and no --models (the shipped family): news is scored, and labelled."""
    said, rows = _scaling(["--offline", "--category", "news", "--stories", "2"], tmp_path, capsys)
    assert "Scoring the first 2 bundled texts of data/texts/news.txt." in said
    assert {r["story_id"] for r in rows} == {"news.txt#0", "news.txt#1"} and len(rows) == 6    # 3 models
    assert {r["seen_in_training"] for r in rows} == {"no"}
    assert "Scored: the first 2 bundled texts of data/texts/news.txt." in (tmp_path / "report.md").read_text()


def test_texts_a_model_trained_on_are_left_out_or_flagged(two_models, tmp_path, capsys, monkeypatch):
    """A model folder whose training record names bundled stories 0-2."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")        # what --offline sets, undone after the test
    import shutil

    from minillm.training.provenance import write_record

    folder = tmp_path / "trained"
    shutil.copytree(two_models[0], folder)
    write_record(folder, bundled_texts("stories")[:3], "stories 0-2")
    said, rows = _scaling(["--offline", "--models", str(folder), "--stories", "4"], tmp_path / "a", capsys)
    assert "Left out 3 of the 68 texts, trained on by trained (3 of them; trained/training_data.json)" in said
    assert [r["story_id"] for r in rows] == [f"stories.txt#{i}" for i in (3, 4, 5, 6)]
    results = run_scaling([str(folder)], bundled_texts("stories")[:4], progress=False)      # as --include-seen
    assert [r.seen_in_training for r in results.rows] == ["yes", "yes", "yes", "no"]
    [warning] = results.warnings
    assert warning.startswith("WARNING: 3 of the 4 texts were in the training data")


def test_the_shipped_family_records_what_it_trained_on():
    from minillm.course.family import FAMILY_DIR, SHAPES, held_out_stories
    from minillm.training.provenance import read_record

    stories = bundled_texts("stories")
    for name in [*SHAPES, *(f"{n}-instruct" for n in SHAPES)]:
        record = read_record(FAMILY_DIR / name)
        assert record.seen(stories) == [True] * 48 + [False] * 20
        assert not any(record.seen(held_out_stories()))


def test_local_folders_without_network_do_not_wait_for_the_hub(two_models, tmp_path, monkeypatch, capsys):
    """No --offline, nothing cached, no network: one quick look for the hub, no download retries,
    and the bundled stories, said so."""
    import huggingface_hub

    from minillm import data

    calls = []
    real = huggingface_hub.hf_hub_download

    def spy(*args, **kwargs):
        calls.append(kwargs.get("local_files_only"))
        return real(*args, **kwargs)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    said, rows = _scaling(["--models", *two_models, "--stories", "2"], tmp_path / "out", capsys)
    assert calls == [True]                                    # the cache only: no network request, no retries
    assert "The models are local folders, so using the stories bundled with minillm instead" in said
    assert len(rows) == 4


def test_models_with_different_tokenizers_are_fitted_in_bits_per_byte(tmp_path):
    from minillm.experiments.results import fit_sentence

    folders = []
    for name, layers, vocab in [("a", 1, 300), ("b", 2, 320)]:
        folder = make_checkpoint(tmp_path / name, "qwen2", seed=layers, vocab=vocab, layers=layers)
        make_tokenizer(folder, vocab_size=vocab)
        folders.append(str(folder))
    results = run_scaling(folders, bundled_texts("stories")[:3], progress=False)
    assert not results.shared_tokenizer and results.fit is None
    assert results.bpb_fit.metric == "bits_per_byte"
    bpb = [s.bits_per_byte for s in results.summaries]
    n = [s.non_embedding_params for s in results.summaries]
    assert results.bpb_fit.exponent == pytest.approx(math.log(bpb[1] / bpb[0]) / math.log(n[1] / n[0]))   # 2 points
    assert "different tokenizers" in fit_sentence(results) and "compare them in bits per byte" in fit_sentence(results)


def test_quantize_scores_the_family_on_held_out_stories(tmp_path, capsys):
    from minillm.course.family import FAMILY_DIR

    assert main(["quantize", str(FAMILY_DIR / "tiny-s"), "--bits", "32", "--stories", "3",
                 "--out", str(tmp_path)]) == 0
    said = capsys.readouterr().out
    assert "Left out 48 of the 68 texts" in said and "Scoring the first 3 bundled texts of data/texts/stories.txt that tiny-s never trained on." in said


def test_quantize_texts_takes_a_file_like_the_other_commands(tmp_path, capsys):
    """--texts FILE as in scaling/context, --stories N the count; the old `--texts 3` says what changed."""
    from minillm.course.family import FAMILY_DIR

    paragraphs = ["The cat sat on the mat. It was happy.", "A dog ran in the park. The sun was warm.", "A third one."]
    (tmp_path / "mine.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    assert main(["quantize", str(FAMILY_DIR / "tiny-s"), "--bits", "32", "--texts", str(tmp_path / "mine.txt"),
                 "--stories", "2", "--out", str(tmp_path / "q"), "--no-progress"]) == 0
    assert "Scoring the first 2 paragraphs of mine.txt." in capsys.readouterr().out
    with open(tmp_path / "q" / "quantization.csv", encoding="utf-8") as f:
        row = next(csv.DictReader(f))
    # the unquantized row is the corpus perplexity of exactly the file's first two paragraphs, scored alone
    model, tok = minillm.load_model(FAMILY_DIR / "tiny-s"), minillm.load_tokenizer(FAMILY_DIR / "tiny-s")
    scores = [score(model, tok, text) for text in paragraphs[:2]]
    assert int(row["tokens"]) == sum(s.n_tokens for s in scores)
    # float32 both ways; the sums differ only in the order of additions (~1e-7 relative)
    assert float(row["perplexity"]) == pytest.approx(math.exp(sum(s.total_nll for s in scores) /
                                                              sum(s.n_tokens for s in scores)), rel=1e-5)
    with pytest.raises(SystemExit):
        main(["quantize", str(FAMILY_DIR / "tiny-s"), "--texts", "3"])
    err = capsys.readouterr().err
    assert "'3' is a count, but --texts takes a file of texts" in err and "--stories 3" in err


# Small things a new user met with the scaling command: fewer texts than --stories asked for, and CSVs
# that recorded this machine's folders.

@pytest.mark.usefixtures("one_thread")
def test_fewer_texts_than_stories_asked_for_is_said(tmp_path, capsys):
    from minillm.course.family import FAMILY_DIR
    texts = tmp_path / "twenty.txt"
    texts.write_text("\n\n".join(f"Tom had a red ball, number {i}. He played with it." for i in range(20)))
    assert main(["scaling", "--models", str(FAMILY_DIR / "tiny-s"), "--texts", str(texts), "--stories", "50",
                 "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Scoring 20 paragraphs of twenty.txt (50 were asked for, with --stories or its default; there are no more)." in out
    with open(tmp_path / "out" / "summary.csv") as f:
        assert [row["stories"] for row in csv.DictReader(f)] == ["20"]


@pytest.mark.usefixtures("one_thread")
def test_csvs_record_the_shipped_models_as_typed_not_as_this_machines_folders(tmp_path, offline_cache, monkeypatch,
                                                                             capsys):
    # No --models and no hub: the shipped family stands in, and the source column held /home/.../data/models/tiny-s.
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert main(["scaling", "--offline", "--stories", "2", "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    for name in ("summary.csv", "results.csv"):
        with open(tmp_path / "out" / name) as f:
            sources = {row["source"] for row in csv.DictReader(f)}
        assert sources == {"data/models/tiny-s", "data/models/tiny-m", "data/models/tiny-l"}, name
