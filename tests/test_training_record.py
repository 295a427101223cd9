"""`minillm train` and `finetune` write a training record, so that scoring commands leave out (or flag)
the texts a model saw; a folder without one is reported as unknown, never as held out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from minillm import data
from minillm.cli import main
from minillm.training.finetune import examples_from_pairs, finetune
from minillm.training.provenance import RECORD_FILE, read_record, text_hash, without_training_texts
from minillm.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TINY_S = ROOT / "data" / "models" / "tiny-s"
QUICK = ["--steps", "2", "--hidden", "16", "--intermediate", "32", "--warmup", "1", "--layers", "1", "--heads", "2", "--kv-heads", "1",
         "--context", "32", "--batch-size", "4", "--vocab-size", "300"]


def test_train_cli_records_its_documents_and_scaling_leaves_them_out(tmp_path, capsys):
    out = tmp_path / "my-model"
    main(["train", "--out", str(out), "--no-progress", *QUICK])
    stories = data.bundled_texts("stories")
    record = read_record(out)
    assert record is not None, f"train wrote no {RECORD_FILE}"
    # Default split: the last ceil(10%) of the 68 bundled stories validate; the rest are trained on.
    n_val = 7
    assert record.hashes == {text_hash(t) for t in stories[:-n_val]}
    assert not any(record.seen(stories[-n_val:]))

    source, message = without_training_texts([str(out), str(TINY_S)], data.bundled_source("stories"))
    assert len(source) == n_val and "my-model" in message
    assert source.texts == stories[-n_val:]


def test_folder_without_record_is_unknown_not_held_out(tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(TINY_S, bare)
    (bare / RECORD_FILE).unlink()
    source, message = without_training_texts([str(bare), str(TINY_S)], data.bundled_source("stories"))
    assert len(source) == 20                      # tiny-s's record leaves out its 48 training stories
    assert "no model here trained on" not in source.label
    assert f"unknown for bare: no {RECORD_FILE}" in source.label
    assert "bare" in message and "unknown" in message


def test_finetune_record_adds_the_replies_to_the_base_record(tmp_path):
    stories = data.bundled_texts("stories")
    pairs = [(f"Tell story {i}.", s) for i, s in enumerate(stories[-4:])]
    config = TrainConfig(context=32, batch_size=4, steps=1, warmup_steps=1, eval_every=1, val_fraction=0.25)
    finetune(TINY_S, examples_from_pairs(pairs), config, tmp_path / "ft", progress=False)
    record = read_record(tmp_path / "ft")
    base = read_record(TINY_S)
    # The first 3 pairs train (the last validates); their replies and the base's documents are recorded.
    assert record.seen(stories[-4:]) == [True, True, True, False]
    assert base.hashes <= record.hashes
    assert json.loads((tmp_path / "ft" / RECORD_FILE).read_text())["description"].count(str(TINY_S)) == 1


def test_a_text_is_seen_by_its_paragraphs_however_a_file_is_split(tmp_path):
    """A record of one two-paragraph document: the document, either long paragraph alone, and a text that
    holds one of them are seen; a text that shares only a short line ("The end.") is not."""
    from minillm.training.provenance import HeldOut, write_record

    first = "Tom found a red ball under the big old tree."
    second = "He gave the ball to his sister and she laughed."
    write_record(tmp_path, [f"{first}\n\n{second}\n\nThe end."], "one story",
                 held_out=HeldOut("two new ones", ["Mia had a kite.\n\nThe end."]))
    record = read_record(tmp_path)
    texts = [f"{first}\n\n{second}\n\nThe end.", first, f"  {second}\n", f"A new start here.\n\n{second}",
             "Mia had a kite.\n\nThe end.", "The end. Of a different text, written as one paragraph."]
    assert record.seen(texts) == [True, True, True, True, False, False]
    assert record.held_out == {text_hash("Mia had a kite.\n\nThe end.")}
    with_trained = HeldOut("one trained on", [f"Something else.\n\n{first}"])
    with pytest.raises(ValueError, match=r"1 of the held-out texts \(one trained on\) are among the training"):
        write_record(tmp_path, [first], "one", held_out=with_trained)
