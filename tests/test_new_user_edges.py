"""Small things a new user met: fewer texts than --stories asked for, CSVs that recorded this machine's
folders, and a warm-up longer than the run. (The bits-per-byte plot's y labels: test_plots.py.)"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from minillm.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
TINY_S = ROOT / "data" / "models" / "tiny-s"


def test_fewer_texts_than_stories_asked_for_is_said(tmp_path, capsys):
    texts = tmp_path / "twenty.txt"
    texts.write_text("\n\n".join(f"Tom had a red ball, number {i}. He played with it." for i in range(20)))
    assert main(["scaling", "--models", str(TINY_S), "--texts", str(texts), "--stories", "50",
                 "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Scoring 20 paragraphs of twenty.txt (50 were asked for, with --stories or its default; there are no more)." in out
    with open(tmp_path / "out" / "summary.csv") as f:
        assert [row["stories"] for row in csv.DictReader(f)] == ["20"]


def test_csvs_record_the_shipped_models_as_typed_not_as_this_machines_folders(tmp_path, offline_cache, monkeypatch,
                                                                             capsys):
    # No --models and no hub: the shipped family stands in, and the source column held /home/.../data/models/tiny-s.
    monkeypatch.chdir(ROOT)
    assert main(["scaling", "--offline", "--stories", "2", "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    for name in ("summary.csv", "results.csv"):
        with open(tmp_path / "out" / name) as f:
            sources = {row["source"] for row in csv.DictReader(f)}
        assert sources == {"data/models/tiny-s", "data/models/tiny-m", "data/models/tiny-l"}, name


def test_a_warm_up_longer_than_the_run_is_said(tmp_path, capsys):
    stories = tmp_path / "stories.txt"
    from minillm.data import bundled_texts
    stories.write_text("\n<|endoftext|>\n".join(bundled_texts("stories")[:12]), encoding="utf-8")
    assert main(["train", "--init", str(TINY_S), "--data", str(stories), "--steps", "20", "--batch-size", "2",
                 "--context", "32", "--eval-every", "20", "--no-progress", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    # The default warm-up is 50 steps; after 20 the rate is 20/50 of the peak (train.learning_rate).
    assert ("the warm-up (50 steps) is longer than the run (20 steps): the learning rate climbed to 0.0012, 40% of "
            "its peak 0.003, and never decayed. Give --warmup 2") in out
