"""Rough edges a new user hits: empty text, the MLP baseline's folders, `minillm surprise`,
`--help` defaults, progress bars (TQDM_DISABLE, notebooks), torch.compile without graph breaks,
and the README's numbers and commands."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import minillm
from minillm.cli import build_parser, main
from minillm.models.mlp_lm import MLPLanguageModel
from checkpoints import load_reference, make_checkpoint, make_tokenizer

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
LOAD_PROGRESS = ("import importlib.util\n"
                 f"spec = importlib.util.spec_from_file_location('progress', {str(ROOT / 'minillm' / 'progress.py')!r})\n"
                 "progress = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(progress)\n")


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


def _readme_commands() -> list[list[str]]:
    """Every `minillm ...` command in the README (code blocks and inline code), as words."""
    lines, in_block = [], False
    for line in README.splitlines():
        if line.startswith("```"):
            in_block = not in_block
        elif in_block:
            lines.append(re.sub(r"^.*&& ", "", line.split("#")[0].strip()))
    lines += re.findall(r"`(minillm [^`]+)`", README)
    return [re.findall(r'"[^"]*"|\S+', line)[1:] for line in lines if line.startswith("minillm ")]


def test_readme_commands_use_options_that_exist():
    commands, checked = _subcommands(), 0
    for words in _readme_commands():
        assert words[0] in commands, words
        options = {o for a in commands[words[0]]._actions for o in a.option_strings}
        for word in words[1:]:
            word = word.strip("[]")
            if word.startswith("--"):
                assert word in options, f"README: minillm {words[0]} {word} is not an option"
                checked += 1
    assert checked > 30


def test_readme_numbers_match_the_code():
    # The grader's maximum: the README's points column, its TOTAL line and its JSON example all equal
    # the points the graded tests carry.
    graded = {}
    for path in (ROOT / "tests" / "autograder").glob("test_grade_*.py"):
        source = path.read_text(encoding="utf-8")
        unit = re.search(r"pytestmark = pytest\.mark\.(\w+)", source).group(1)
        graded[unit] = sum(int(p) for p in re.findall(r"graded\(points=(\d+)", source))
    table = {}
    for line in README.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)]      # cells of a table row; "\|" is not a border
        if len(cells) > 4 and cells[1] in graded:
            # "3 (P) + 2 (E)" is 5 points, "8 (6 P + 2 E)" is 8: drop the parentheses, add what is left.
            table[cells[1]] = table.get(cells[1], 0) + sum(map(int, re.findall(r"\d+", re.sub(r"\([^)]*\)", "", cells[3]))))
    assert table == graded
    total = sum(graded.values())
    assert re.search(r"TOTAL\s+\d+/(\d+)", README).group(1) == str(total)
    assert f'"max_score": {total}' in README
    # Defaults the README quotes.
    subs = _subcommands()
    assert "`--timeout` seconds (default 300)" in README.replace("\n", " ") and \
        subs["grade"].get_default("timeout") == 300
    train_defaults = subs["train"]
    assert f"`--eval-every` steps ({train_defaults.get_default('eval_every')})" in README.replace("\n", " ")
    assert train_defaults.get_default("sample_every") == 0 and "(off unless given)" in README


def test_progress_bars_honour_tqdm_disable_and_no_progress():
    # tqdm reads TQDM_* variables when it is imported, hence a fresh process; it loads progress.py
    # alone (the module needs only tqdm), not the whole package with torch, to start fast.
    code = (LOAD_PROGRESS +
            "list(progress.progress_bar(range(3), desc='bar-on'))\n"
            "list(progress.progress_bar(range(3), enabled=False, desc='bar-off'))\n")
    env = dict(os.environ)
    env.pop("TQDM_DISABLE", None)
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stderr
    assert "bar-on" in shown and "bar-off" not in shown
    hidden = subprocess.run([sys.executable, "-c", code], env={**env, "TQDM_DISABLE": "1"}, capture_output=True,
                            text=True, check=True).stderr
    assert "bar-on" not in hidden
    # The library draws bars through this helper only.
    for path in (ROOT / "minillm").rglob("*.py"):
        if path.name != "progress.py":
            assert "tqdm" not in path.read_text(encoding="utf-8"), path


def test_a_notebook_without_ipywidgets_gets_text_bars_and_no_warning():
    import nbclient   # the test extra's: nbclient (with nbformat) and ipykernel
    import nbformat

    try:
        import ipywidgets  # noqa: F401
        pytest.skip("ipywidgets is installed here: bars are widgets, the case tested is its absence")
    except ImportError:
        pass
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(
        "import warnings\nwarnings.simplefilter('always')\n" + LOAD_PROGRESS +
        "x = list(progress.progress_bar(range(3), desc='in-notebook'))")]
    nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3").execute()
    text = "".join(o.get("text", "") for o in notebook.cells[0].outputs)
    assert "in-notebook" in text and "3/3" in text            # a text bar
    assert "IProgress" not in text and "Warning" not in text


def test_the_input_check_stays_out_of_compiled_graphs(tiny):
    model = minillm.load_model(tiny)
    ids = torch.randint(0, 320, (2, 16), generator=torch.Generator().manual_seed(0))
    explained = torch._dynamo.explain(model)(ids)     # traces as torch.compile would, without compiling
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    with pytest.raises(ValueError, match="outside this model's vocabulary"):
        model(torch.tensor([[5, 320]]))                 # eager calls still check the ids' range


def test_readme_family_numbers_are_what_the_shipped_models_score():
    """"perplexity falls with size, 68.0 -> 49.4 -> 42.2" on the held-out bundled stories (the
    catalogue's count of mistakes is checked by test_autograder.test_readme_catalogue_matches_the_folder)."""
    from minillm.course.family import FAMILY_DIR, SHAPES, held_out_stories

    quoted = re.search(r"perplexity falls\s+with\s+size,\s+(\d+\.\d)\s+->\s+(\d+\.\d)\s+->\s+(\d+\.\d)", README).groups()
    stories = held_out_stories()
    for name, number in zip(SHAPES, quoted):
        model, tok = minillm.load_model(FAMILY_DIR / name), minillm.load_tokenizer(FAMILY_DIR / name)
        results = minillm.score_many(model, tok, stories, top_k=0)
        pooled = sum(r.total_nll for r in results) / sum(r.n_tokens for r in results)
        assert f"{torch.tensor(pooled).exp().item():.1f}" == number, name


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
