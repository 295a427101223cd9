"""Chat templates that never finish, or would fill the memory, or fail: one line naming the file, in bounded time.

Each template below hung ``minillm generate --chat`` for ever or ended in a bare traceback before
minillm.checkpoint.chat_template bounded the render. Templates that render normally are checked
against transformers in test_tokenizer.py (the Qwen2.5 template with tools) and test_finetune.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tokenizers import Tokenizer as RawTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

import minillm
from minillm.checkpoint import chat_template
from minillm.checkpoint.tokenizer import TokenizerError
from minillm.cli import main
from checkpoints import make_checkpoint

HI = [{"role": "user", "content": "hi"}]


def write_tokenizer(folder: Path, template: str) -> Path:
    """A small real byte-level BPE tokenizer whose tokenizer_config.json holds ``template``."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = RawTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|eos|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["Once upon a time there was a cat.", "user: hi"] * 5, trainer)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|eos|>", "chat_template": template}))
    return folder


@pytest.fixture
def quick_clock(monkeypatch):
    """Half a second per render instead of RENDER_SECONDS' 5, so that a template that never ends stops soon."""
    monkeypatch.setattr(chat_template, "RENDER_SECONDS", 0.5)


BAD = [
    # (name, template, words the message must hold)
    ("loop-without-output", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "was stopped at line 1: it ran for more than 0.5 s"),
    ("loop-over-a-long-string", "{% set s = 'x' * 1000000 %}\n{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
     "was stopped at line 2: it ran for more than 0.5 s"),
    ("string-repetition", "{{ 'x' * 10**10 }}", "repeating 1 items 10,000,000,000 times"),
    ("list-repetition", "{{ (range(100000)|list) * 100000 }}", "repeating 100,000 items 100,000 times"),
    ("huge-power", "{{ 2 ** 100000000 }}", "has more than 10,000,000 digits"),
    ("doubling-in-a-namespace",
     "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
     "a string joined with '~' would be larger than 10,000,000 characters"),
    ("output-flood", "{% for i in range(100000) %}{% for j in range(100000) %}{{ 'abcdefghij' * 100 }}{% endfor %}"
                     "{% endfor %}", "it wrote more than 10,000,000 characters"),
    ("flood-captured-by-set", "{% for i in range(100000) %}{% set x %}{% for j in range(100000) %}{{ 'a' * 1000 }}"
                              "{% endfor %}{% endset %}{% endfor %}", "it wrote more than 10,000,000 characters"),
    ("wide-method-argument", "{{ 'x'.center(10**9) }}", "a call was given the number 1000000000"),
    ("wide-filter-argument", "{{ 'x'|center(10**9) }}", "the center filter was given the number 1000000000"),
    ("wide-percent-format", "{{ '%999999999s' % 'x' }}", "a format string asks for a field wider than"),
    ("wide-str-format", "{{ '{:>999999999}'.format('x') }}", "a format string asks for a field wider than"),
    ("wide-format-filter", "{{ '%999999999s'|format('x') }}", "a format string asks for a field wider than"),
    ("lipsum", "{{ lipsum(10**6) }}", "asks for more than 100,000 words"),
    ("recursive-macro", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}\n\n{{ f(0) }}",
     "a macro or loop calls itself without end"),
    ("recursive-loop", "{% for m in messages recursive %}{{ loop(messages) }}{% endfor %}",
     "a macro or loop calls itself without end"),
    ("include", "hello\n{% include 'other.jinja' %}", "uses include (line 2): a chat template is a single file"),
    ("import", "{% import 'macros.jinja' as m %}", "uses import (line 1)"),
    ("extends", "{% extends 'base.jinja' %}", "uses extends (line 1)"),
    ("division-by-zero", "{{ messages[0].content }}\n{{ 1 / 0 }}",
     "failed on these messages at line 2: ZeroDivisionError: division by zero"),
    ("undefined-attribute", "{{ foo.bar }}", "failed on these messages at line 1: UndefinedError: 'foo' is undefined"),
    ("unsafe-attribute", "{{ ''.__class__.__mro__ }}", "SecurityError: access to attribute '__class__'"),
    ("refusal", "{{ raise_exception('only user and assistant') }}", "failed on these messages: only user and assistant"),
    ("syntax", "{% for m in messages %}", "is not valid Jinja (line 1)"),
]


@pytest.mark.parametrize("template, words", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_templates_fail_in_bounded_time_with_one_line_naming_the_file(tmp_path, quick_clock, template, words):
    folder = write_tokenizer(tmp_path, template)
    tok = minillm.load_tokenizer(folder)
    start = time.monotonic()
    with pytest.raises(TokenizerError) as err:
        tok.apply_chat_template(HI)
    # 0.5 s of template, plus the slowest single step the caps allow (a 10-million-character string) on a busy machine.
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert message.startswith(f"the chat template in {folder / 'tokenizer_config.json'} ") and "\n" not in message
    assert words in message


def test_templates_within_the_bounds_still_render(tmp_path):
    template = ("{% set ns = namespace(n=0) %}{% for i in range(1000) %}{% set ns.n = ns.n + i %}{% endfor %}"
                "{{ ns.n }} {{ '%5s'|format('ab') }} {{ ('xy' * 3) ~ '!' }} {{ 2 ** 10 }} "
                "{% for m in messages %}{{ m.role }}: {{ m.content }}{% endfor %}"
                # Big numbers as data (tool-call ids, say) are not widths or counts: they pass.
                " {{ '{}'.format(12345678901234) }} {{ 12345678901234|string }} {{ [12345678901234]|map('string')|join }}")
    tok = minillm.load_tokenizer(write_tokenizer(tmp_path, template))
    assert tok.apply_chat_template(HI) == f"{sum(range(1000))}    ab xyxyxy! 1024 user: hi" + " 12345678901234" * 3


def test_generate_chat_with_a_template_that_never_ends_exits_1_in_one_line(tmp_path, quick_clock, capsys):
    """The issue's case: `minillm generate --chat` hung for ever on this template."""
    folder = write_tokenizer(tmp_path / "model", "{% for i in range(100000) %}{% for j in range(100000) %}"
                                                 "{% endfor %}{% endfor %}")
    make_checkpoint(folder, "qwen2", seed=0, vocab=minillm.load_tokenizer(folder).vocab_size)
    capsys.readouterr()
    assert main(["generate", str(folder), "Hi", "--chat", "--max-new-tokens", "2"]) == 1
    err = capsys.readouterr().err
    assert err == (f"minillm generate: error: the chat template in {folder / 'tokenizer_config.json'} was stopped "
                   "at line 1: it ran for more than 0.5 s (a loop that does not end?)\n")
