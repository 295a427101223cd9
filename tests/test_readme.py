"""The README says what the code does: its `minillm` commands use options that exist, and the numbers it
quotes (the grader's points, defaults, the shipped family's perplexities) are the code's and the models'."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

import minillm
from minillm.cli import build_parser


ROOT = Path(__file__).resolve().parents[1]


README = (ROOT / "README.md").read_text(encoding="utf-8")


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


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
