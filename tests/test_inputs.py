"""The library's choices behind the commands (minillm.experiments.inputs, minillm.inference.generate's
streaming), callable from a notebook, and the line the command draws: the kit's own errors get one
line, anything else (a bug) its traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import minillm
from minillm import data
from minillm.cli import main
from minillm.cli.args import in_flags
from minillm.cli.training import TRAIN_FLAGS
from minillm.course.family import SHAPES
from minillm.errors import InputError
from minillm.experiments import inputs
from minillm.inference.generate import stream

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_S = Path(__file__).resolve().parents[1] / "data" / "models" / "tiny-s"


def test_the_offline_fallback_is_the_shipped_family_and_turns_downloads_off(offline_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    said = []
    models, family = inputs.pick_models(None, offline=True, say=said.append)
    assert os.environ["HF_HUB_OFFLINE"] == "1"            # set by the library, not by the command
    assert family and [Path(m).name for m in models] == list(SHAPES) == list(data.SHIPPED_FAMILY)
    assert all((Path(m) / "config.json").is_file() for m in models)
    assert "offline= is set" in said[0] and "--offline" in in_flags(said[0], {"offline": "--offline"})
    assert inputs.pick_models(["a", "b"], say=said.append) == (["a", "b"], False) and len(said) == 1


def test_training_texts_name_the_parameter_and_the_command_its_flag(tmp_path):
    with pytest.raises(InputError, match=r"data=.*missing\.txt: no such file") as err:
        inputs.training_texts([tmp_path / "missing.txt"])
    assert in_flags(str(err.value), TRAIN_FLAGS).startswith(f"--data {tmp_path / 'missing.txt'}: no such file")
    assert "data=" not in in_flags(str(err.value), TRAIN_FLAGS)
    assert inputs.training_texts() == data.bundled_texts("stories")


def test_stream_writes_the_text_of_what_generate_returns():
    model, tok = minillm.load_model(TINY_S), minillm.load_tokenizer(TINY_S)
    ids = tok.encode("Once upon a time, Lily")
    pieces: list[str] = []
    new = stream(model, tok, ids, pieces.append, max_new_tokens=15, eos_token_id=())
    assert new == minillm.generate(model, ids, max_new_tokens=15, eos_token_id=())   # greedy: the same ids
    assert "".join(pieces) == tok.decode(ids + new, skip_special_tokens=True) + "\n"
    assert pieces[0].startswith("Once upon a time, Lily") and len(pieces) > 2     # written as it came


def test_main_reports_the_kits_errors_and_lets_bugs_through(monkeypatch, capsys):
    import minillm.cli.models as commands

    def fails(error):
        def load(*args, **kwargs):
            raise error
        return load

    monkeypatch.setattr(commands, "load_model_and_tokenizer", fails(InputError("bad_input=3: give 4")))
    assert main(["logits", "somewhere", "Once"]) == 1
    assert capsys.readouterr().err == "minillm logits: error: bad_input=3: give 4\n"
    monkeypatch.setattr(commands, "load_model_and_tokenizer", fails(ValueError("not enough values to unpack")))
    with pytest.raises(ValueError, match="not enough values"):   # a bug: its traceback, not one line
        main(["logits", "somewhere", "Once"])
