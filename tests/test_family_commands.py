"""`minillm train-family` and `finetune-family` never lose the models they would replace: they refuse
before any work without --overwrite, a run that fails keeps the old models, and the replacement
(minillm.checkpoint.safe_io.build_entries_then_move) touches only the command's own entries (issue 15)."""

from __future__ import annotations

import pytest

from minillm.cli import main as cli_main


def _tree(folder):
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _old_family(folder, names):
    """A folder like data/models: a README and an old model (one file each) under each of ``names``."""
    (folder / "README.md").parent.mkdir(parents=True)
    (folder / "README.md").write_text("about the models")
    for name in names:
        (folder / name).mkdir()
        (folder / name / "model.safetensors").write_bytes(b"old " + name.encode())
    return _tree(folder)


@pytest.mark.parametrize("command, entry", [("train-family", "tiny-m"), ("finetune-family", "tiny-m-instruct")])
def test_family_commands_refuse_to_replace_models_before_any_work(tmp_path, capsys, monkeypatch, command, entry):
    from minillm.course import family, instruct_family

    def work_started(*args, **kwargs):
        raise AssertionError("the command started its work before checking --out")

    monkeypatch.setattr(family, "family_texts", work_started)
    monkeypatch.setattr(instruct_family, "instruct_examples", work_started)
    out = tmp_path / "models"
    before = _old_family(out, [entry])
    bases = ["--bases", str(tmp_path / "nowhere")] if command == "finetune-family" else []   # never read
    assert cli_main([command, "--out", str(out), *bases]) == 1
    err = capsys.readouterr().err
    assert f"{out / entry} already holds" in err and "--overwrite" in err
    assert _tree(out) == before
    # what the command does not write (README.md, the other family) is no reason to refuse
    other = tmp_path / "other"
    _old_family(other, ["tiny-s-instruct" if command == "train-family" else "tiny-s"])
    with pytest.raises(AssertionError, match="started its work"):
        cli_main([command, "--out", str(other)])


def test_a_failed_train_family_keeps_the_old_family(tmp_path, monkeypatch):
    """With --overwrite, the run fails after tiny-s is saved (the disk fills while tiny-s is scored).
    Before issue 15 tiny-s was already replaced: a new tiny-s beside the old tiny-m and tiny-l, whose
    tokenizer it does not share. The recipe is shrunk (fewer stories, one step) to keep the test fast."""
    from minillm.course import family

    monkeypatch.setattr(family, "SYNTHETIC", 200)
    monkeypatch.setattr(family, "REPEATS", 1)
    monkeypatch.setattr(family, "VALIDATION", 40)

    def disk_full(folder):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(family, "REAL_REPEATS", 1)
    monkeypatch.setattr(family, "held_out_scores", disk_full)
    out = tmp_path / "models"
    before = _old_family(out, ["tiny-s", "tiny-m", "tiny-l", "tiny-s-instruct"])
    with pytest.raises(OSError, match="No space left"):
        cli_main(["train-family", "--out", str(out), "--tokens", "4096", "--gpt2-tokens", "0", "--overwrite",
                  "--no-progress"])
    assert _tree(out) == before and sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_a_failed_finetune_family_keeps_the_old_instruct_models(tmp_path, monkeypatch):
    """Before issue 15 finetune-family deleted tiny-s-instruct before fine-tuning its replacement."""
    from minillm.course import instruct_family

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(instruct_family, "finetune", disk_full)
    out = tmp_path / "models"
    before = _old_family(out, ["tiny-s-instruct", "tiny-m-instruct", "tiny-l-instruct"])
    with pytest.raises(OSError, match="No space left"):
        cli_main(["finetune-family", "--out", str(out), "--overwrite", "--no-progress"])
    assert _tree(out) == before and sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_build_entries_then_move_replaces_only_its_entries(tmp_path):
    from minillm.checkpoint.safe_io import build_entries_then_move

    folder = tmp_path / "models"
    _old_family(folder, ["a", "keep"])
    with build_entries_then_move(folder, ["a", "table.csv"]) as partial:
        (partial / "a").mkdir()
        (partial / "a" / "new.txt").write_text("new a")
        (partial / "table.csv").write_text("x,y\n")
    assert _tree(folder) == {"README.md": b"about the models", "a/new.txt": b"new a",
                             "keep/model.safetensors": b"old keep", "table.csv": b"x,y\n"}
    before = _tree(folder)
    with pytest.raises(RuntimeError, match="wrote no table.csv"):    # an entry missing: nothing replaced
        with build_entries_then_move(folder, ["a", "table.csv"]) as partial:
            (partial / "a").mkdir()
    assert _tree(folder) == before and [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
