"""A training run's checkpoint is never lost: `minillm train` refuses to replace one without
--overwrite, a run that fails (bad settings, a save that fails half-way) leaves the old one whole, and
a damaged trainer state is named when a run resumes from it (issue 15)."""

from __future__ import annotations

import json
import shutil

import pytest

from minillm.cli import main as cli_main
from minillm.data import bundled_texts


TINY_RUN = ["--vocab-size", "280", "--hidden", "16", "--layers", "1", "--heads", "2", "--kv-heads", "1",
            "--intermediate", "32", "--context", "16", "--steps", "2", "--batch-size", "2", "--warmup", "1",
            "--eval-every", "2", "--no-progress", "--threads", "1"]


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data = root / "stories.txt"
    data.write_text("\n<|endoftext|>\n".join(bundled_texts("stories")[:12]), encoding="utf-8")
    out = root / "model"
    assert cli_main(["train", "--data", str(data), "--out", str(out), *TINY_RUN]) == 0
    return data, out


def test_train_refuses_to_replace_a_checkpoint_without_overwrite(trained, capsys):
    data, out = trained
    before = _snapshot(out)
    assert cli_main(["train", "--data", str(data), "--out", str(out), *TINY_RUN]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert _snapshot(out) == before


@pytest.mark.parametrize("bad, words", [
    (["--lr", "nan"], "learning_rate must be a finite number"),
    # fails after the tokenizer is trained: before issue 15 it had already replaced tokenizer.json
    (["--context", "100000"], "fewer than one window"),
])
def test_a_failed_run_leaves_the_old_checkpoint_whole(trained, capsys, bad, words):
    data, out = trained
    before = _snapshot(out)
    assert cli_main(["train", "--data", str(data), "--out", str(out), *TINY_RUN, "--overwrite", *bad]) == 1
    assert words in capsys.readouterr().err
    assert _snapshot(out) == before
    assert [p.name for p in out.parent.iterdir() if ".partial-" in p.name] == []   # no debris left next to it


def test_train_into_a_file_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "model"
    out.write_text("my notes")
    assert cli_main(["train", "--out", str(out), *TINY_RUN, "--overwrite"]) == 1
    assert "is a file" in capsys.readouterr().err and out.read_text() == "my notes"


@pytest.mark.parametrize("damage, file", [
    (lambda f: f.write_text('{"step": 2, "config": {"hidden', encoding="utf-8"), "trainer_state.json"),
    (lambda f: f.write_text('{"step": 2, "config": {"no_such_setting": 1}}', encoding="utf-8"), "trainer_state.json"),
    (lambda f: f.write_bytes(b"\xff\xfe garbage"), "trainer_state.json"),
    (lambda f: f.write_bytes(f.read_bytes()[:100]), "trainer_state.safetensors"),    # truncated
])
def test_resume_with_a_damaged_trainer_state_names_the_file(trained, tmp_path, capsys, damage, file):
    data, out = trained
    folder = shutil.copytree(out, tmp_path / "run")
    damage(folder / file)
    # --steps 4: the fixture's run has finished its 2 steps; resuming carries it further
    assert cli_main(["train", "--resume", "--steps", "4", "--data", str(data), "--out", str(folder), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"{folder / file} is damaged" in err and "Traceback" not in err


def test_a_resume_whose_save_fails_keeps_the_previous_checkpoint(trained, tmp_path, monkeypatch, capsys):
    """The save fails half-way (weights written, trainer state not yet), as a full disk would make it.
    Before issue 15 the save wrote over the checkpoint in place: its trainer_state.json was gone and its
    weights were those of step 4, so the run could neither be resumed nor trusted."""
    import minillm.training.checkpoints

    data, out = trained
    folder = shutil.copytree(out, tmp_path / "run")
    (folder / "notes.txt").write_text("my notes")          # a file of the user's, which no save writes
    before = _snapshot(folder)

    def disk_full(state):
        raise OSError(28, "No space left on device")

    argv = ["train", "--resume", "--steps", "4", "--data", str(data), "--out", str(folder), "--no-progress"]
    with monkeypatch.context() as patch:
        patch.setattr(minillm.training.checkpoints, "_state_json", disk_full)
        with pytest.raises(OSError, match="No space left"):
            cli_main(argv)
    assert _snapshot(folder) == before                       # weights, state and tokenizer of step 2, bit for bit
    assert json.loads((folder / "trainer_state.json").read_text())["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no half-written folder left beside it
    # the kept checkpoint resumes; a save that succeeds replaces what it writes and keeps the user's file
    assert cli_main(argv) == 0
    assert json.loads((folder / "trainer_state.json").read_text())["step"] == 4
    assert (folder / "notes.txt").read_text() == "my notes" and (folder / "loss_curves.png").is_file()
