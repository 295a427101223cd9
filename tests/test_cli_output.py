"""What the `minillm` command prints and refuses: readable probabilities for a 50k-token vocabulary,
numeric options and an --out in the way refused before any loading, messages that name the flags,
empty text and the MLP baseline's folder named, `surprise` against transformers, every --help option's
default shown, the chat prompt shown."""

from __future__ import annotations

import argparse
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from matplotlib.backends.backend_agg import FigureCanvasAgg

import minillm
from minillm.cli import build_parser, main
from minillm.inference.display import probability_text
from minillm.checkpoint.hub import SourceError, resolve_source
from minillm.reports.plots_quantization import quantization_figure
from minillm.experiments.results import QuantizationResult
from minillm.inference.scoring import score
from minillm.models.mlp_lm import MLPLanguageModel

from checkpoints import load_reference, make_checkpoint, make_gpt2_checkpoint, make_tokenizer

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


@pytest.mark.parametrize("command", [["quantize", "no/such-model"], ["scaling", "--offline", "--models", "no/such-model"],
                                     ["sweep", "--data", "no/such-model"], ["context", "--models", "no/such-model"],
                                     ["categories", "--models", "no/such-model"]])
def test_out_that_is_a_file_is_refused_before_any_model_is_loaded(tmp_path, capsys, command):
    """The model does not exist: an --out checked only after the work would report the model instead."""
    out = tmp_path / "results"
    out.write_text("keep me")
    assert main([*command, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"--out {out} is a file" in err and "no/such-model" not in err
    assert out.read_text() == "keep me"


def test_out_under_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("")
    assert main(["quantize", "no/such-model", "--out", str(tmp_path / "notes.txt" / "results")]) == 1
    assert "notes.txt is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["scaling", "--stories", "-3"], "--stories: must be at least 1, got -3"),
    (["logits", "m", "t", "--top-k", "0"], "--top-k: must be at least 1, got 0"),
    (["generate", "m", "t", "--top-k", "-3"], "--top-k: must be at least 1, got -3"),
    (["generate", "m", "t", "--temperature", "nan"], "--temperature: must be a finite number >= 0, got nan"),
    (["quantize", "m", "--stories", "0"], "--stories: must be at least 1, got 0"),
    (["grade", "subs", "--timeout", "0"], "--timeout: must be greater than 0"),
    (["grade", "subs", "--timeout", "-5"], "--timeout: must be a finite number >= 0, got -5"),
    (["sweep", "--out", "x", "--stories", "0"], "--stories: must be at least 1, got 0"),
])
def test_nonsense_arguments_are_refused_by_argparse(capsys, argv, words):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and words in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edges-tiny")
    make_checkpoint(folder, "qwen2", seed=9, vocab=320)
    make_tokenizer(folder, vocab_size=320)
    return folder


def test_empty_text_gets_its_own_message_everywhere(tiny, capsys):
    for command in ("logits", "generate", "surprise"):
        assert main([command, str(tiny), ""]) == 1
        assert "the text is empty" in capsys.readouterr().err
    model, tok = minillm.load_model(tiny), minillm.load_tokenizer(tiny)
    assert tok.encode("") == []
    with pytest.raises(ValueError, match="input_ids is empty"):
        model(torch.tensor([tok.encode("")]))        # a float32 tensor: the emptiness is what matters
    with pytest.raises(ValueError, match="prompt is empty"):
        minillm.generate(model, tok.encode(""))
    for call in (minillm.score, minillm.perplexity):
        with pytest.raises(ValueError, match="non-empty string"):
            call(model, tok, "")
    with pytest.raises(ValueError, match="context is empty"):
        minillm.score(model, tok, "Once upon a time", context="")
    assert minillm.score_many(model, tok, []) == []


def test_the_mlp_baseline_says_what_it_is(tiny, tmp_path, capsys):
    folder = MLPLanguageModel(vocab_size=320, window=4, embed_dim=8, hidden=16).save(tmp_path / "mlp")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((tiny / name).read_bytes())
    for command in ("logits", "generate", "surprise"):
        assert main([command, str(folder), "Once"]) == 1
        err = capsys.readouterr().err
        assert "MLP language model" in err and "MLPLanguageModel.load" in err and "config.json from" not in err
    # ...and what it says works.
    logits = MLPLanguageModel.load(folder)(torch.tensor([[1, 2, 3]]))
    assert logits.shape == (1, 3, 320)


def test_surprise_prints_each_tokens_surprise_like_transformers(tiny, capsys):
    text = "Once upon a time, a fox ran."
    assert main(["surprise", str(tiny), text, "--top-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    ids = minillm.load_tokenizer(tiny).encode(text)
    with torch.no_grad():
        logits = load_reference(tiny)(torch.tensor([ids])).logits[0]
    logprobs = torch.log_softmax(logits[:-1], -1)
    rows = [line for line in out if re.match(r"^\s+\d+\s", line)]
    assert len(rows) == len(ids) - 1
    for row, position in zip(rows, range(1, len(ids))):
        pos, token_id, nats, bits, prob, alternatives = re.match(
            r"""^\s+(\d+)\s+(?:'.*?'|".*?")\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+(\S+)\s+(.*)$""", row).groups()
        expected = -logprobs[position - 1, ids[position]].item()
        assert (int(pos), int(token_id)) == (position, ids[position])
        # Printed with 3 decimals: 5e-4 of rounding, plus float32 forward passes (5e-5).
        assert float(nats) == pytest.approx(expected, abs=6e-4)
        assert float(bits) == pytest.approx(expected / 0.6931471805599453, abs=6e-4)
        # Probabilities are printed with 3 significant digits: 0.5% of rounding at most.
        assert float(prob) == pytest.approx(torch.exp(torch.tensor(-expected)).item(), rel=5e-3)
        best = [float(p) for p in re.findall(r" ([\d.]+(?:e-\d+)?)(?:,|$)", alternatives)]
        want = torch.softmax(logits[position - 1], -1).topk(2).values.tolist()
        assert best == pytest.approx(want, rel=5e-3)         # the model's top 2, most likely first
    total = float(re.search(r"total ([\d.]+) nats", out[-1]).group(1))
    assert total == pytest.approx(-logprobs.gather(-1, torch.tensor(ids[1:])[:, None]).sum().item(), abs=2e-3)


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_help_option_shows_its_default():
    for name, sub in _subcommands().items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if not action.option_strings or action.nargs == 0:   # flags: off unless given
                continue
            help_text = formatter._get_help_string(action)
            assert action.help and "default" in help_text, f"minillm {name} {action.option_strings[0]}"
        assert "(default: None)" not in sub.format_help(), name


@pytest.mark.parametrize("argv, message, status", [
    (["logits", "Once", "--top-k", "-1"], "--top-k: must be at least 1", 2),        # refused by argparse
    (["surprise", "Once upon", "--top-k", "-1"], "--top-k: must be at least 0", 2),
    (["generate", "Once", "--top-k", "0"], "--top-k: must be at least 1", 2),
])
def test_bad_numbers_get_one_clear_line_and_no_half_output(tiny, capsys, argv, message, status):
    try:
        assert main([argv[0], str(tiny), *argv[1:]]) == status
    except SystemExit as exit_info:
        assert exit_info.code == status
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""     # no prompt printed before the error
