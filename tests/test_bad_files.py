"""Every file the kit reads is named in its errors (with the line where there is one), and two runs
never write into one --out at the same time.

Each case failed before: a --data file in Latin-1 said "'utf-8' codec can't decode byte 0xe9 in
position 20" without naming the file; a 51 MB line ended in a template error about another file;
a model folder that is a loop of links raised a bare RuntimeError; model.safetensors linked to a
text file was "truncated, download again"; two runs into one --out replaced each other's files.
"""

from __future__ import annotations

import codecs
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import minillm
from minillm.checkpoint.hub import SourceError
from minillm.checkpoint.safe_io import hold_output, lock_file
from minillm.checkpoint.weights import WeightsError
from minillm.cli import main
from minillm.data import bundled_texts, read_text_file
from minillm.training import finetune

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "data" / "models" / "tiny-s"      # a real trained model (and its tokenizer)
PAIR = {"instruction": "Tell me a story.", "response": "Once upon a time there was a cat."}
TINY_RUN = ["--vocab-size", "280", "--hidden", "16", "--layers", "1", "--heads", "2", "--kv-heads", "1",
            "--intermediate", "32", "--context", "16", "--batch-size", "2", "--warmup", "1",
            "--eval-every", "50", "--no-progress", "--threads", "1"]


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and err.endswith("\n"), err
    return err


# ---- text and JSON Lines files --------------------------------------------------------------------

def test_finetune_data_that_is_not_utf8_names_file_line_and_column(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_bytes(json.dumps(PAIR).encode() + b"\n" + '{"instruction": "caf\xe9", "response": "ok"}\n'.encode("latin-1"))
    assert main(["finetune", str(BASE), "--data", str(data), "--out", str(tmp_path / "out")]) == 1
    assert one_line(capsys.readouterr().err) == (
        f"minillm finetune: error: {data}, line 2, column 21 is not UTF-8 text: byte 0xe9 cannot start or continue a "
        "UTF-8 character (a Latin-1 or Windows-1252 file?). Save it as UTF-8, e.g. "
        "`iconv -f latin1 -t utf-8 pairs.jsonl > fixed.jsonl`.\n")
    assert not (tmp_path / "out").exists()


def test_finetune_data_with_a_byte_order_mark_reads(tmp_path):
    data = tmp_path / "pairs.jsonl"    # Windows editors write one; json.loads refuses it
    data.write_text("\ufeff" + json.dumps(PAIR) + "\n" + json.dumps(PAIR) + "\n", encoding="utf-8")
    assert len(finetune.read_examples(data)) == 2


@pytest.mark.parametrize("kind", ["jsonl", "txt"])
def test_a_byte_order_mark_is_not_text_and_not_counted_in_the_column(tmp_path, kind):
    """Both readers drop the mark; a bad byte on the first line is named as it is, at its column
    after the mark ("caf\xe9": the byte 0xe9, the 4th of the line an editor shows)."""
    path = tmp_path / f"data.{kind}"
    path.write_bytes(codecs.BOM_UTF8 + "caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError) as err:
        finetune.read_examples(path) if kind == "jsonl" else read_text_file(path)
    assert str(err.value).startswith(f"{path}, line 1, column 4 is not UTF-8 text: byte 0xe9"), err.value
    path.write_bytes(codecs.BOM_UTF8 + b"One story.\n")
    if kind == "txt":
        assert read_text_file(path).texts == ["One story."]


def test_an_oversized_line_is_refused_naming_file_and_line(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    huge = json.dumps({"instruction": "a " * (finetune.MAX_LINE_BYTES // 2), "response": "ok"})
    data.write_text("\n".join([json.dumps(PAIR), huge, json.dumps(PAIR)]) + "\n", encoding="utf-8")
    assert main(["finetune", str(BASE), "--data", str(data), "--out", str(tmp_path / "out")]) == 1
    assert one_line(capsys.readouterr().err) == (
        f"minillm finetune: error: {data}, line 2 is longer than 1 MiB: a JSON Lines file holds one example (one "
        "conversation) per line; split the text into several examples.\n")


def test_texts_file_that_is_not_utf8_names_line_and_column(tmp_path):
    path = tmp_path / "stories.txt"
    path.write_bytes("One story.\n\nAnother, in a caf\xe9.\n".encode("cp1252"))
    with pytest.raises(ValueError) as err:
        read_text_file(path)
    assert str(err.value).startswith(f"{path}, line 3, column 18 is not UTF-8 text: byte 0xe9")


# ---- model folders and weights files ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["loop", "dangling"])
def test_a_model_folder_that_is_a_broken_link_is_named(tmp_path, capsys, kind):
    link = tmp_path / "model"
    if kind == "loop":
        os.symlink(tmp_path / "b", tmp_path / "a")
        os.symlink(tmp_path / "a", tmp_path / "b")
        os.symlink(tmp_path / "a", link)
        why = "leads back to itself (a loop of symbolic links)"
    else:
        os.symlink(tmp_path / "gone", link)
        why = "does not exist"
    with pytest.raises(SourceError) as err:
        minillm.load_model(link)
    assert str(err.value).startswith(f"{link} is a symbolic link to ") and f"', which {why}. Point it at" in str(err.value)
    assert main(["logits", str(link), "hello"]) == 1
    assert why in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("content, kind", [
    (b"these are my notes\n", "text"),
    (b"PK\x03\x04" + bytes(60), "a zip archive (PyTorch's torch.save format, as in pytorch_model.bin)"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n", "a Git LFS pointer"),
    (b"<!DOCTYPE html><html>Sign in</html>", "an HTML or XML page"),
    (b"", "empty"),
], ids=["text", "zip", "lfs-pointer", "html", "empty"])
def test_safetensors_name_on_another_kind_of_file_says_what_it_is(tmp_path, content, kind):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_bytes((BASE / "config.json").read_bytes())
    (tmp_path / "other").write_bytes(content)
    os.symlink(tmp_path / "other", folder / "model.safetensors")
    with pytest.raises(WeightsError) as err:
        minillm.load_model(folder)
    message = str(err.value)
    assert message.startswith(f"{folder / 'model.safetensors'} (a link to {tmp_path / 'other'}) is not a safetensors "
                              f"file: it is {kind}")
    assert "truncated" not in message


def test_a_truncated_safetensors_file_is_still_called_truncated(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_bytes((BASE / "config.json").read_bytes())
    whole = (BASE / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(WeightsError, match="truncated or incompletely downloaded"):
        minillm.load_model(folder)


# ---- one run at a time into an --out ----------------------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from minillm.checkpoint.safe_io import hold_output
with hold_output(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def stories(tmp_path) -> Path:
    path = tmp_path / "stories.txt"
    path.write_text("\n<|endoftext|>\n".join(bundled_texts("stories")[:12]), encoding="utf-8")
    return path


def test_a_run_into_an_out_another_process_holds_is_refused_and_writes_nothing(tmp_path, stories, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline() == "holding\n"
        pairs = tmp_path / "pairs.jsonl"
        pairs.write_text(f"{json.dumps(PAIR)}\n{json.dumps(PAIR)}\n", encoding="utf-8")
        for command in (["train", "--data", str(stories), *TINY_RUN, "--steps", "2"],
                        ["train", "--resume", "--data", str(stories), "--no-progress"],
                        ["finetune", str(BASE), "--data", str(pairs), "--steps", "2", "--no-progress"]):
            assert main([*command, "--out", str(out)]) == 1
            assert one_line(capsys.readouterr().err) == (
                f"minillm {command[0]}: error: --out {out}: another minillm run (process {holder.pid}) is writing "
                f"there now (it holds {lock_file(out)}); wait for it to finish, or choose another --out.\n")
        with pytest.raises(ValueError, match="another minillm run"):     # the library refuses too
            minillm.training.train.resume(out, ["text"])
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed: its lock went with it (the file stays, but nobody holds it).
    with hold_output(out):
        pass
    assert not lock_file(out).exists()


def _holder(out: Path) -> str | None:
    """The process id written in ``out``'s lock file once its holder has the lock (None before)."""
    try:
        return lock_file(out).read_text().strip() or None
    except OSError:
        return None


def test_two_concurrent_training_runs_into_one_out_cannot_mix(tmp_path, stories, capsys):
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "minillm.cli", "train", "--data", str(stories), "--out", str(out),
                              *TINY_RUN, "--steps", "300", "--seed", "1"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while _holder(out) != str(first.pid) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _holder(out) == str(first.pid), "the first run never took its --out"
        # Paused while it holds the lock, so that it cannot finish before the second run tries (on any machine).
        first.send_signal(signal.SIGSTOP)
        # The second run, with or without --overwrite, is refused while the first is writing.
        for extra in ([], ["--overwrite"]):
            assert main(["train", "--data", str(stories), "--out", str(out), *TINY_RUN, "--steps", "2",
                         "--seed", "2", *extra]) == 1
            assert f"another minillm run (process {first.pid})" in one_line(capsys.readouterr().err)
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        first.kill()
    state = json.loads((out / "trainer_state.json").read_text())
    assert (state["step"], state["config"]["seed"]) == (300, 1)     # the first run's files, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "stories.txt"]   # no partial folders or locks left


def test_holding_an_out_leaves_nothing_behind_and_names_a_file_in_the_way(tmp_path, capsys):
    # A run that fails before writing leaves no lock file and none of the folders made to hold one.
    assert main(["train", "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "new" / "deep" / "out")]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    capsys.readouterr()
    (tmp_path / "afile").write_text("x")
    assert main(["train", "--out", str(tmp_path / "afile" / "out"), *TINY_RUN, "--steps", "2"]) == 1
    assert one_line(capsys.readouterr().err).endswith(f"{tmp_path / 'afile'} is a file, not a folder. Choose another --out.\n")


@pytest.mark.parametrize("name, content", [
    ("chat_template.jinja", b"caf\xe9 {{ messages }}"),
    ("generation_config.json", b'{"eos_token_id": "caf\xe9"}'),
    ("training_data.json", b'{"description": "\xff"}'),
    ("tokenizer_config.json", b'{"eos_token": "caf\xe9"}'),
    ("config.json", b'{"model_type": "caf\xe9"}'),
])
def test_a_model_folders_file_that_is_not_utf8_is_named(tmp_path, capsys, name, content):
    """Each of these said only "'utf-8' codec can't decode byte 0xe9 in position 3" (the first three)."""
    folder = tmp_path / "model"
    shutil.copytree(BASE, folder)
    (folder / name).write_bytes(content)
    command = {"chat_template.jinja": ["generate", str(folder), "Hi", "--chat", "--max-new-tokens", "1"],
               "training_data.json": ["scaling", "--models", str(folder), "--stories", "2", "--no-progress",
                                      "--out", str(tmp_path / "out")]}.get(name, ["logits", str(folder), "Hi"])
    assert main(command) == 1
    assert f"error: {folder / name} " in one_line(capsys.readouterr().err)


def test_an_mlp_config_that_is_not_json_is_named(tmp_path):
    from minillm.models.mlp_lm import MLPLanguageModel

    (tmp_path / "mlp_config.json").write_text("{not json")
    with pytest.raises(ValueError, match=f"^{tmp_path / 'mlp_config.json'} is not a valid MLP language model config"):
        MLPLanguageModel.load(tmp_path)


def test_data_file_that_is_not_utf8_is_named(tmp_path, capsys):
    data = tmp_path / "latin1.txt"
    data.write_bytes("Il était une fois, à Paris.".encode("latin-1"))
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "m"), *TINY_RUN, "--steps", "2"]) == 1
    assert f"{data}, line 1, column 4 is not UTF-8 text: byte 0xe9" in capsys.readouterr().err   # "Il é"
    assert not (tmp_path / "m").exists()
