"""What the `minillm` command prints and refuses: readable probabilities for a 50k-token vocabulary,
numeric options refused before any loading, messages that name the flags, the chat prompt shown."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from matplotlib.backends.backend_agg import FigureCanvasAgg

import minillm
from minillm.cli import main
from minillm.inference.display import probability_text
from minillm.checkpoint.hub import SourceError, resolve_source
from minillm.reports.plots_quantization import quantization_figure
from minillm.experiments.results import QuantizationResult
from minillm.inference.scoring import score

from checkpoints import make_gpt2_checkpoint

MODELS = Path(__file__).resolve().parents[1] / "data" / "models"


def test_probability_text_keeps_three_significant_digits():
    assert [probability_text(p) for p in (1.0, 0.13642, 0.05764, 0.0012, 0.000765, 7.654e-8, 0.0)] == \
        ["1", "0.136", "0.0576", "0.0012", "7.65e-04", "7.65e-08", "0"]


@pytest.fixture(scope="module")
def random_gpt2(tmp_path_factory, gpt2_tokenizer_folder) -> Path:
    """A random GPT-2 with the real 50257-token vocabulary: every probability is about 1/50257."""
    folder = make_gpt2_checkpoint(tmp_path_factory.mktemp("gpt2") / "m", seed=3, vocab=50257,
                                  n_embd=16, n_head=2, n_layer=1)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(gpt2_tokenizer_folder / name, folder / name)
    return folder


def test_logits_and_surprise_print_small_probabilities_readably(random_gpt2, capsys):
    text = "Once upon a time"
    ids = minillm.load_tokenizer(random_gpt2).encode(text)
    with torch.no_grad():   # the reference: transformers' own GPT-2
        logits = transformers.GPT2LMHeadModel.from_pretrained(random_gpt2).eval()(torch.tensor([ids])).logits[0]
    probs = logits.softmax(-1)                                                   # (seq, vocab)

    assert main(["logits", str(random_gpt2), text, "--top-k", "3"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    top = torch.topk(probs[-1], 3)
    assert [int(r[-3]) for r in rows] == top.indices.tolist()
    for row, p in zip(rows, top.values.tolist()):
        assert float(row[-1]) > 0                      # was "0.0000"
        assert float(row[-1]) == pytest.approx(p, rel=5e-3)   # 3 significant digits: rounding is < 0.5%

    assert main(["surprise", str(random_gpt2), text, "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()[2:-1]
    assert len(lines) == len(ids) - 1
    tok = minillm.load_tokenizer(random_gpt2)
    for i, line in enumerate(lines):     # pos token id nats bits prob  'top token' p_top
        best = repr(tok.token_text(int(probs[i].argmax()))) + " "
        row_prob, top_prob = line[: line.rindex(best)].split()[-1], line.rsplit(" ", 1)[-1]
        assert float(row_prob) == pytest.approx(probs[i, ids[i + 1]].item(), rel=5e-3)
        assert float(top_prob) == pytest.approx(probs[i].max().item(), rel=5e-3)


@pytest.mark.parametrize("argv, flag", [
    (["quantize", "no-such-model", "--bits", "0"], "--bits"),
    (["quantize", "no-such-model", "--bits", "8", "40"], "--bits"),
    (["quantize", "no-such-model", "--group-size", "0"], "--group-size"),
    (["generate", "no-such-model", "hi", "--top-p", "0"], "--top-p"),
    (["generate", "no-such-model", "hi", "--top-p", "1.5"], "--top-p"),
    (["generate", "no-such-model", "hi", "--max-new-tokens", "-1"], "--max-new-tokens"),
    (["surprise", "no-such-model", "hi", "--top-k", "-2"], "--top-k"),
    (["context", "--max-k", "0"], "--max-k"),                 # was an IndexError after the scoring
    (["train-family", "--tokens", "0"], "--tokens"),            # was refused only after training a tokenizer
    (["sweep", "--out", "no-such-folder", "--tokens", "0"], "--tokens"),
    (["finetune-family", "--steps", "0"], "--steps"),
    (["grade", "no-such-folder", "--time-limit-scale", "-1"], "--time-limit-scale"),   # was a crash per student
])
def test_bad_numbers_are_refused_before_loading(argv, flag, capsys):
    # Had the command run, the missing model would end it with status 1; argparse's refusal is status 2.
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert f"argument {flag}:" in capsys.readouterr().err


def test_generate_messages_name_the_flags(capsys):
    assert main(["generate", str(MODELS / "tiny-m"), "Once", "--max-new-tokens", "5000"]) == 1
    err = capsys.readouterr().err
    assert "--max-new-tokens 5000" in err and "max_new_tokens" not in err


def test_surprise_of_one_text_does_not_number_it(capsys):
    assert main(["surprise", str(MODELS / "tiny-m"), "Once"]) == 1   # one token, and no BOS to predict it from
    err = capsys.readouterr().err
    assert "the text ('Once') leaves no token to score" in err and "text 0" not in err


def test_a_missing_relative_folder_is_called_a_folder(tmp_path, monkeypatch, offline_cache):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    for source in ("models/tiny-x", "./tiny-x", "../tiny-x"):
        with pytest.raises(SourceError, match="no such folder"):
            resolve_source(source)
    with pytest.raises(SourceError, match="hub id") as err:     # org/name with no such local folder: the hub
        resolve_source("someorg/tiny-x")
    assert "no such folder" not in str(err.value)


def test_generate_chat_shows_the_prompt_with_its_markers(capsys):
    folder = MODELS / "tiny-m-instruct"
    rendered = transformers.AutoTokenizer.from_pretrained(folder).apply_chat_template(
        [{"role": "user", "content": "Tell me a story."}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>assistant" in rendered
    assert main(["generate", str(folder), "Tell me a story.", "--chat", "--max-new-tokens", "8",
                 "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(rendered) and len(out.strip()) > len(rendered.strip())


def test_surprise_chat_scores_the_reply_through_the_template(capsys):
    folder, reply, question = MODELS / "tiny-m-instruct", "Once upon a time there was a cat.", "Tell me a story."
    model, tok = minillm.load_model(folder), minillm.load_tokenizer(folder)
    chat, plain = (score(model, tok, reply, context=question, chat=c) for c in (True, False))
    assert abs(chat.total_nll - plain.total_nll) > 0.1       # the template matters for this model
    assert main(["surprise", str(folder), reply, "--context", question, "--chat"]) == 0
    total = capsys.readouterr().out.splitlines()[-1]
    assert float(total.split()[1]) == pytest.approx(chat.total_nll, abs=1e-3)   # printed with 3 decimals
    assert main(["surprise", str(folder), reply, "--chat"]) == 1
    assert "--chat needs --context" in capsys.readouterr().err


def test_quantize_plot_title_fits_in_the_figure():
    rows = [QuantizationResult(bits, "tensor", 1.0, 100, math.log(p), p, 1.0) for bits, p in ((32, 80), (4, 90))]
    label = "tiny-m on 20 bundled texts of data/texts/stories.txt that tiny-m never trained on"
    fig = quantization_figure(rows, label)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    box = fig.axes[0].title.get_window_extent(renderer)
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width
    assert fig.axes[0].get_title().replace("\n", " ").endswith(label)    # wrapped, not cut
