"""Issue 15: bad or hostile input never reads a file outside the checkpoint, never destroys a
user's files, and never passes NaN off as a result; each case gets a clear error."""

from __future__ import annotations

import json
import shutil

import pytest
from checkpoints import make_checkpoint, make_tokenizer
from safetensors.torch import load_file, save_file

import minillm
from conftest import need_shared_data
from minillm.checkpoint.weights import WeightsError
from minillm.cli import main as cli_main
from minillm.course.stubs import make_exercises
from minillm.data import bundled_texts
from minillm.models import numpy_model
from minillm.models.config import ConfigError


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("sharded") / "ckpt", "qwen2", shard=True)


def _move_shard_out(sharded, tmp_path, name_in_index):
    """A copy of the sharded checkpoint whose first shard lies one folder up, named in the index
    by ``name_in_index(path)``: before issue 15 such a valid shard loaded silently."""
    folder = shutil.copytree(sharded, tmp_path / "ckpt")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = sorted(set(index["weight_map"].values()))[0]
    outside = (folder / shard).rename(tmp_path / shard)
    index["weight_map"] = {k: (name_in_index(outside) if v == shard else v) for k, v in index["weight_map"].items()}
    index_path.write_text(json.dumps(index))
    return folder, outside


@pytest.mark.parametrize("how", ["dotdot", "absolute"])
def test_index_naming_a_shard_outside_the_folder_is_refused(sharded, tmp_path, how):
    name = (lambda p: f"../{p.name}") if how == "dotdot" else (lambda p: str(p))
    folder, outside = _move_shard_out(sharded, tmp_path, name)
    with pytest.raises(WeightsError, match="outside the checkpoint folder"):
        minillm.load_model(folder)
    with pytest.raises(ValueError, match="outside"):     # the standalone NumPy loader refuses it too
        numpy_model.load_weights(folder)


def test_a_symlinked_shard_inside_the_folder_loads(sharded, tmp_path):
    """The decision: the index's own names must stay inside the folder, but a link the folder
    holds is its owner's (the Hugging Face cache links every snapshot file into blobs/)."""
    folder, outside = _move_shard_out(sharded, tmp_path, lambda p: p.name)
    (folder / outside.name).symlink_to(outside)
    model = minillm.load_model(folder)
    assert model.config.model_type == "qwen2"


def test_weight_map_that_is_a_list_names_the_index(sharded, tmp_path):
    folder = shutil.copytree(sharded, tmp_path / "ckpt")
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": [["model.norm.weight", "a.safetensors"]]}))
    with pytest.raises(WeightsError, match=r"model\.safetensors\.index\.json.*'weight_map' object"):
        minillm.load_model(folder)
    index.write_text("[1, 2]")
    with pytest.raises(WeightsError, match="'weight_map' object"):
        minillm.load_model(folder)


def test_config_that_is_a_json_list_names_the_file(sharded, tmp_path):
    folder = shutil.copytree(sharded, tmp_path / "ckpt")
    (folder / "config.json").write_text('[{"model_type": "qwen2"}]')
    with pytest.raises(ConfigError, match=r"config\.json holds a JSON list, not an object"):
        minillm.load_model(folder)


# ---- data loss -----------------------------------------------------------------------------------

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


def test_make_exercises_keeps_a_students_edits(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    (solutions / "unit.py").write_text('def f():\n    """Doc."""\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n',
                                       encoding="utf-8")
    make_exercises(solutions, exercises)
    # the instructor changes the solution: the generated, untouched exercise is regenerated without --force
    (solutions / "unit.py").write_text('def f():\n    """Doc, clearer."""\n    # BEGIN SOLUTION\n    return 1\n'
                                       '    # END SOLUTION\n', encoding="utf-8")
    make_exercises(solutions, exercises)
    assert "Doc, clearer." in (exercises / "unit.py").read_text(encoding="utf-8")
    work = "def f():\n    return 1  # my answer\n"
    (exercises / "unit.py").write_text(work, encoding="utf-8")
    assert cli_main(["make-exercises", "--solutions", str(solutions), "--exercises", str(exercises)]) == 1
    assert (exercises / "unit.py").read_text(encoding="utf-8") == work
    assert cli_main(["make-exercises", "--check", "--solutions", str(solutions), "--exercises", str(exercises)]) == 1   # unchanged
    assert cli_main(["make-exercises", "--force", "--solutions", str(solutions), "--exercises", str(exercises)]) == 0
    assert "my answer" not in (exercises / "unit.py").read_text(encoding="utf-8")


def test_grade_refuses_to_replace_a_csv_before_grading(tmp_path, capsys):
    (tmp_path / "subs" / "eve").mkdir(parents=True)
    old = tmp_path / "grades.csv"
    old.write_text("student,total\nann,10\n")
    # --autograder points nowhere: a refusal that came only after grading would say "no autograder"
    args = ["grade", str(tmp_path / "subs"), "--out", str(old), "--autograder", str(tmp_path / "nowhere")]
    assert cli_main(args) == 1
    assert "--overwrite" in capsys.readouterr().err and old.read_text() == "student,total\nann,10\n"
    assert cli_main([*args, "--overwrite"]) == 1
    assert "no autograder" in capsys.readouterr().err


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


# ---- outputs checked before the work -------------------------------------------------------------

@pytest.mark.parametrize("command", [["quantize", "no/such-model"], ["scaling", "--offline", "--models", "no/such-model"],
                                     ["sweep", "--data", "no/such-model"], ["context", "--models", "no/such-model"],
                                     ["categories", "--models", "no/such-model"]])
def test_out_that_is_a_file_is_refused_before_any_model_is_loaded(tmp_path, capsys, command):
    """The model does not exist: an --out checked only after the work would report the model instead."""
    out = tmp_path / "results"
    out.write_text("keep me")
    assert cli_main([*command, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"--out {out} is a file" in err and "no/such-model" not in err
    assert out.read_text() == "keep me"


def test_out_under_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("")
    assert cli_main(["quantize", "no/such-model", "--out", str(tmp_path / "notes.txt" / "results")]) == 1
    assert "notes.txt is a file, not a folder" in capsys.readouterr().err


def test_grade_out_that_is_a_folder_is_refused_before_grading(tmp_path, capsys):
    (tmp_path / "subs" / "eve").mkdir(parents=True)
    assert cli_main(["grade", str(tmp_path / "subs"), "--out", str(tmp_path), "--overwrite",
                     "--autograder", str(tmp_path / "nowhere")]) == 1
    assert "is a folder, but a file name is needed" in capsys.readouterr().err


# ---- silent nonsense -----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_weights_are_refused_at_load(tmp_path, capsys, bad):
    folder = make_checkpoint(tmp_path / "ckpt", "qwen2", tied=True, vocab=300)
    make_tokenizer(folder, 300)
    tensors = load_file(folder / "model.safetensors")
    tensors["model.layers.0.mlp.up_proj.weight"][3, 5] = bad
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=r"'model\.layers\.0\.mlp\.up_proj\.weight' in .*model\.safetensors "
                                           r"holds NaN or infinite values"):
        minillm.load_model(folder)
    assert cli_main(["logits", str(folder), "Once upon a time"]) == 1     # before: a NaN table, exit 0
    assert "NaN or infinite" in capsys.readouterr().err


def test_float16_overflow_is_caught_too(tmp_path):
    """A finite float32 weight beyond float16's largest value (65504) becomes inf when loaded as float16."""
    folder = make_checkpoint(tmp_path / "ckpt", "qwen2")
    tensors = load_file(folder / "model.safetensors")
    tensors["model.norm.weight"][0] = 1e6
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    assert minillm.load_model(folder).norm.weight[0].item() == 1e6
    with pytest.raises(WeightsError, match="too large for float16"):
        minillm.load_model(folder, dtype="float16")


def test_tokenizer_with_more_tokens_than_embedding_rows_is_refused(tmp_path, capsys):
    folder = make_checkpoint(tmp_path / "ckpt", "qwen2")           # 101 embedding rows
    make_tokenizer(folder, 300)                                     # a real BPE tokenizer of 300 tokens
    assert cli_main(["logits", str(folder), "Once upon a time"]) == 1
    err = capsys.readouterr().err
    assert (f"the tokenizer has 300 tokens ({folder / 'tokenizer.json'}) but the model's embedding has only 101 rows "
            f"(vocab_size in {folder / 'config.json'})") in err
    fits = make_checkpoint(tmp_path / "fits", "qwen2", vocab=320)  # 20 padding rows to a multiple of 64: accepted
    make_tokenizer(fits, 300)
    assert cli_main(["logits", str(fits), "Once upon a time", "--top-k", "2"]) == 0


def test_a_tokenizer_far_smaller_than_the_embedding_is_another_models(tmp_path, capsys):
    """Before issue 15 a 320-token tokenizer beside a 1000-row model scored and generated with exit 0."""
    folder = make_checkpoint(tmp_path / "ckpt", "qwen2", vocab=1000)
    make_tokenizer(folder, 320)
    for command in (["logits", str(folder), "Once upon a time"], ["generate", str(folder), "Once upon a time"]):
        assert cli_main(command) == 1
        err = capsys.readouterr().err
        assert (f"the tokenizer has 320 tokens ({folder / 'tokenizer.json'}) but the model's embedding has 1,000 rows "
                f"(vocab_size in {folder / 'config.json'}): 680 rows that no token uses") in err
        assert "Put the tokenizer files that came with these weights next to config.json" in err


def test_the_padding_rule_on_real_tokenizers(gpt2_tokenizer_folder, tmp_path):
    """The real tokenizers against the row counts of real models (public config.json values):
    each family's own pair passes; a tokenizer put beside another family's model does not."""
    import gzip

    from minillm.checkpoint.loading import check_tokenizer_fits

    source = need_shared_data() / "qwen2.5-tokenizer"
    qwen_folder = tmp_path / "qwen"
    qwen_folder.mkdir()
    (qwen_folder / "tokenizer.json").write_bytes(gzip.decompress((source / "tokenizer.json.gz").read_bytes()))
    shutil.copy(source / "tokenizer_config.json", qwen_folder)
    qwen, gpt2 = minillm.load_tokenizer(qwen_folder), minillm.load_tokenizer(gpt2_tokenizer_folder)
    stories = minillm.load_tokenizer(need_shared_data() / "stories260K")
    assert (qwen.vocab_size, gpt2.vocab_size, stories.vocab_size) == (151_665, 50_257, 512)
    check_tokenizer_fits(qwen, 151_936, "Qwen2.5-0.5B")      # 271 padding rows, a multiple of 128
    check_tokenizer_fits(qwen, 152_064, "Qwen2.5-7B")        # 399
    check_tokenizer_fits(gpt2, 50_257, "gpt2")               # none
    check_tokenizer_fits(gpt2, 50_304, "nanoGPT")            # 47, to a multiple of 64
    check_tokenizer_fits(stories, 512, "stories260K")
    with pytest.raises(ValueError, match=r"the tokenizer has 50,257 tokens .* has 151,936 rows .*: 101,679 rows "
                                         r"that no token uses"):
        check_tokenizer_fits(gpt2, 151_936, "Qwen2.5-0.5B")
    with pytest.raises(ValueError, match="has only 50,257 rows"):
        check_tokenizer_fits(qwen, 50_257, "gpt2")
    with pytest.raises(ValueError, match="512 tokens .* 50,257 rows"):
        check_tokenizer_fits(stories, 50_257, "gpt2")


def test_generate_never_emits_a_padding_row(tmp_path, capsys):
    """A model whose 20 padding rows (300..319) outscore every token: minillm generate continues with
    the tokens only (before issue 15 it picked a padding row and stopped with a decoding error). The
    reference is transformers' greedy decoding on the same weights cut to the tokenizer's 300 rows."""
    import torch
    from checkpoints import load_reference
    from transformers import AutoModelForCausalLM

    padded = make_checkpoint(tmp_path / "padded", "qwen2", vocab=320)
    make_tokenizer(padded, 300)
    reference = load_reference(padded)
    with torch.no_grad():
        reference.lm_head.weight[300:] *= 50                     # padding rows now win every argmax
    reference.save_pretrained(padded)
    cut = load_reference(padded)
    cut.resize_token_embeddings(300)                             # the same model with the padding rows removed
    cut.save_pretrained(tmp_path / "cut")
    cut = AutoModelForCausalLM.from_pretrained(tmp_path / "cut").eval()
    tok = minillm.load_tokenizer(padded)
    prompt = tok.encode("Once upon a time")
    with torch.no_grad():
        expected = cut.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False, eos_token_id=None,
                                pad_token_id=0)[0, len(prompt):].tolist()
    model = minillm.load_model(padded)
    unmasked = minillm.generate(model, prompt, 8, eos_token_id=())
    assert all(i >= 300 for i in unmasked)                       # the library alone picks padding rows, as transformers
    assert minillm.generate(model, prompt, 8, eos_token_id=(), tokenizer_size=300) == expected
    with pytest.raises(minillm.checkpoint.tokenizer.TokenizerError, match="padding rows"):   # and decoding one is an error
        tok.decode(unmasked)
    # the command knows the tokenizer: it prints the continuation (the tokenizer's ids stop nothing here)
    stop = [i for i in expected if i == tok.eos_token_id]
    assert cli_main(["generate", str(padded), "Once upon a time", "--max-new-tokens", "8", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.strip() == tok.decode(prompt + expected[: expected.index(stop[0]) + 1] if stop
                                                         else prompt + expected, skip_special_tokens=True).strip()


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
        cli_main(argv)
    assert exit_info.value.code == 2 and words in capsys.readouterr().err


# ---- clear errors instead of tracebacks ----------------------------------------------------------

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


def test_data_file_that_is_not_utf8_is_named(tmp_path, capsys):
    data = tmp_path / "latin1.txt"
    data.write_bytes("Il était une fois, à Paris.".encode("latin-1"))
    assert cli_main(["train", "--data", str(data), "--out", str(tmp_path / "m"), *TINY_RUN]) == 1
    assert f"{data}, line 1, column 4 is not UTF-8 text: byte 0xe9" in capsys.readouterr().err   # "Il é"
    assert not (tmp_path / "m").exists()


def test_a_device_torch_cannot_use_is_named_before_any_file_is_read(sharded):
    """On this CPU-only torch, "cuda" says so (before: "could not be read... Download it again");
    on a machine with GPUs a device index that does not exist stands in for it."""
    import torch

    device = "cuda:99" if torch.cuda.is_available() else "cuda"
    with pytest.raises(ValueError, match=f"device '{device}' is not available here") as info:
        minillm.load_model(sharded, device=device)
    assert "Download it again" not in str(info.value)
    if not torch.backends.cuda.is_built():
        assert "This torch build has no CUDA support" in str(info.value)


# ---- the grader's process ------------------------------------------------------------------------

LEAVES_A_CHILD = '''
import hashlib, hmac, json, os, subprocess, sys

import pytest


def pytest_addoption(parser):
    for option in ("--target", "--grade-json", "--grader-seed", "--grade-key-fd"):
        parser.addoption(option)


def pytest_sessionfinish(session):
    if session.config.option.collectonly:   # minillm grade's plan: the tests and their points
        data = json.dumps({"score": 0, "max_score": 1, "tests": []}).encode()
        open(session.config.getoption("--grade-json"), "wb").write(data)
        return
    # as a student's code might: start processes that outlive pytest, one holding its output open,
    # one that also left the process group (setsid), out of reach of a process-group kill
    pids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=new).pid
            for new in (False, True)]
    with open(os.environ["MINILLM_TEST_PIDS"], "w") as f:
        f.write(" ".join(map(str, pids)))
    key = bytes.fromhex(os.read(int(session.config.getoption("--grade-key-fd")), 100).decode())
    data = json.dumps({"score": 1, "max_score": 1, "tests": []}).encode()
    path = session.config.getoption("--grade-json")
    with open(path, "wb") as f:
        f.write(data)
    with open(path + ".sig", "w") as f:
        f.write(hmac.new(key, data, hashlib.sha256).hexdigest())
'''


def test_a_process_left_running_does_not_stall_the_grading(tmp_path, monkeypatch):
    """A small autograder whose run leaves children, one holding the output: before issue 15 the
    grading waited for the pipe to close, i.e. until the timeout, and the student got "timeout".
    The one that called setsid is found too (minillm grade is its subreaper) and stopped. This is
    the process mode's guarantee (no sandbox); under bubblewrap the run's PID namespace ends with
    it (tests/test_grade_sandbox.py)."""
    import os
    import time

    from minillm.course.grade import grade_submission

    autograder = tmp_path / "tests" / "autograder"
    autograder.mkdir(parents=True)
    (autograder / "conftest.py").write_text(LEAVES_A_CHILD)
    (autograder / "test_grade_logits.py").write_text("def test_one():\n    pass\n")
    student = tmp_path / "alice"
    student.mkdir()
    pids = tmp_path / "children.pid"
    monkeypatch.setenv("MINILLM_TEST_PIDS", str(pids))
    graded = grade_submission(student, autograder, timeout=40, sandbox="process")
    assert graded["status"] == "ok" and graded["results"]["score"] == 1 and graded["seconds"] < 30
    for child in map(int, pids.read_text().split()):
        for _ in range(50):
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the process {child} the graded code started is still running")


MISBEHAVING = '''

import os
import sys


def next_token_logits(model, tokenizer, text):
    os._exit(3)


def most_likely_next_token(model, tokenizer, text):
    raise KeyboardInterrupt


def predict_next_tokens(model, tokenizer, text, k):
    while True:
        sys.stdout.write("x" * 1000)


def next_token_distributions(model, tokenizer, text):
    import torch

    return torch.ones(3 * 2**30 // 4)     # 3 GiB, over the 2 GiB limit the test sets
'''


def test_os_exit_keyboard_interrupt_raw_writes_and_memory_cost_only_their_test(tmp_path):
    """Before issue 15, os._exit ended the grading with no results at all, KeyboardInterrupt stopped
    the run, sys.stdout.write went past the print limit without end, and memory had no limit."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    student = tmp_path / "mallory"
    student.mkdir()
    (student / "logits.py").write_text((repo / "solutions" / "logits.py").read_text() + MISBEHAVING)
    (student / "perplexity.py").write_text("import os\n\nos._exit(4)\n")      # at import time
    json_path = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", str(repo / "tests" / "autograder"), "--target", str(student),
                           "--grade-json", str(json_path), "-q", "-p", "no:cacheprovider", "-k", "logits",
                           "--memory-limit-gb", "2"],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:]
    tests = {t["name"].split(": ")[-1]: t for t in json.loads(json_path.read_text())["tests"]}   # "logits LOG-1 (P): test_..."
    out = {name: (t["status"], t["output"]) for name, t in tests.items()}
    assert "os._exit(3)" in out["test_next_token_logits"][1], out
    assert "raised KeyboardInterrupt" in out["test_most_likely_next_token"][1], out
    assert "wrote more than" in out["test_predict_next_tokens"][1], out
    assert "importing perplexity.py failed" in out["test_token_loss_extreme_logits"][1], out
    assert "os._exit(4)" in out["test_token_loss_extreme_logits"][1], out
    assert "can't allocate memory" in out["test_next_token_distributions"][1], out
    assert out["test_edge_cases"][1].startswith("your code called os._exit(3)"), out   # the unit's other tests ran
    assert len(proc.stdout) < 200_000


def test_finetune_refuses_to_replace_a_model_before_reading_anything(tmp_path, capsys):
    out = tmp_path / "instruct"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"my model")
    assert cli_main(["finetune", "no/such-base", "--data", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err and (out / "model.safetensors").read_bytes() == b"my model"


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
