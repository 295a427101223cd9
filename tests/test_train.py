"""Training tiny models: the BPE tokenizer, the loop, checkpoints, exact resume, the CLI."""

from __future__ import annotations

import collections
import json
import math
import struct

import pytest
import torch
import transformers
from safetensors import safe_open

import minillm
from minillm.cli import main
from minillm.data import bundled_texts
from minillm.models.config import ModelConfig
from minillm.training.bpe import train_tokenizer
from minillm.training.config import TrainConfig
from minillm.training.new_model import build_model
from minillm.training.step import make_optimizer, next_token_loss, train_step
from minillm.training.train import resume, train
from minillm.training.windows import encode_documents, split_documents

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(vocab_size=384, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=86, context=32, batch_size=16, learning_rate=1e-2, val_fraction=0.15)


@pytest.fixture(scope="module")
def stories() -> list[str]:
    return bundled_texts("stories")


@pytest.fixture(scope="module")
def trained(stories, tmp_path_factory):
    """150 steps on the bundled stories (rope_theta 1000: a wrong rotary base would show)."""
    config = TrainConfig(**TINY, steps=150, warmup_steps=15, eval_every=50, rope_theta=1000.0)
    return train(stories, config, tmp_path_factory.mktemp("run"), progress=False)


def test_bpe_tokenizer_loads_in_minillm_and_transformers(stories, tmp_path):
    folder = train_tokenizer(stories, 300, tmp_path / "a")
    assert (folder / "tokenizer.json").read_bytes() == train_tokenizer(stories, 300, tmp_path / "b").joinpath(
        "tokenizer.json").read_bytes()                                   # deterministic
    tok, ref = minillm.load_tokenizer(folder), transformers.AutoTokenizer.from_pretrained(folder)
    assert tok.vocab_size == len(ref) == 300
    assert tok.eos_token_id == tok.pad_token_id == ref.eos_token_id == 0 and tok.bos_token_id is None
    text = stories[-1][:300] + "<|endoftext|>Zoë said: 你好 🙂"
    assert tok.encode(text) == ref(text)["input_ids"]
    assert tok.decode(tok.encode(text)) == text                         # byte-level: nothing is lost
    with pytest.raises(ValueError, match="at least 257"):
        train_tokenizer(stories, 100, tmp_path / "c")


def test_config_to_dict_round_trips(trained):
    config = trained.model.config
    assert ModelConfig.from_dict(config.to_dict()) == config
    raw = json.loads((trained.folder / "config.json").read_text())
    assert raw["architectures"] == ["Qwen2ForCausalLM"] and raw["use_sliding_window"] is False
    assert raw["rope_theta"] == 1000.0 and raw["tie_word_embeddings"] is True


def test_one_step_lowers_the_loss_and_lr_zero_does_not():
    config = TrainConfig(**TINY)
    batch = torch.randint(0, 384, (16, 33), generator=torch.Generator().manual_seed(1))
    for lr, falls in [(1e-2, True), (0.0, False)]:
        model = build_model(config, vocab_size=384, eos_id=0)
        optimizer = make_optimizer(model, config)
        with torch.no_grad():
            before = next_token_loss(model, batch).item()
        assert train_step(model, model, optimizer, batch, lr, config) == pytest.approx(before, abs=1e-6)
        with torch.no_grad():
            after = next_token_loss(model, batch).item()
        if falls:
            assert after < before - 0.01
        else:
            assert after == before


def test_validation_loss_falls_well_under_the_unigram_entropy(trained, stories):
    _, val_docs = split_documents(stories, TINY["val_fraction"])
    ids = encode_documents(trained.tokenizer, val_docs).tolist()
    counts = collections.Counter(ids)
    entropy = -sum(c / len(ids) * math.log(c / len(ids)) for c in counts.values())   # nats
    start, final = trained.history[0].val_loss, trained.final_val_loss
    assert start == pytest.approx(math.log(384), abs=0.05)   # untrained: close to a uniform guess
    assert final < entropy - 0.5, (final, entropy)           # measured: 3.75 vs 4.76 nats
    rows = [r for r in trained.history if r.step > 0]
    assert [r.step for r in rows] == list(range(1, 151))
    assert rows[-1].tokens == 150 * 16 * 32 and rows[-1].lr == pytest.approx(1e-3)
    assert rows[14].lr == pytest.approx(1e-2)                # end of the warm-up: the peak


def test_checkpoint_loads_in_transformers_and_minillm(trained, stories):
    folder = trained.folder
    ours, ref = minillm.load_model(folder), transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager").eval()
    tok, ref_tok = minillm.load_tokenizer(folder), transformers.AutoTokenizer.from_pretrained(folder)
    text = stories[-1]
    ids = tok.encode(text)
    assert ids == ref_tok(text)["input_ids"]
    batch = torch.tensor([ids[:32]])
    with torch.no_grad():
        expected = ref(batch).logits
        torch.testing.assert_close(ours(batch), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(trained.model(batch), expected, atol=1e-5, rtol=0)
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert "lm_head.weight" not in f.keys() and f.metadata() == {"format": "pt"}


def _history(result):
    return [(r.step, r.tokens, r.train_loss, r.val_loss, r.lr) for r in result.history]


def test_resume_is_exact(stories, tmp_path):
    config = TrainConfig(**TINY, steps=20, warmup_steps=4, eval_every=5)
    whole = train(stories, config, tmp_path / "whole", progress=False)
    half = train(stories, config, tmp_path / "split", progress=False, until=10)
    assert half.history[-1].step == 10
    assert json.loads((tmp_path / "split" / "trainer_state.json").read_text())["step"] == 10
    rest = resume(tmp_path / "split", stories, progress=False)
    assert _history(rest) == _history(whole)                           # bit for bit
    for (name, p), q in zip(whole.model.named_parameters(), rest.model.parameters()):
        assert torch.equal(p, q), name
    with pytest.raises(ValueError, match="differ"):
        resume(tmp_path / "split", stories[:-1], progress=False, steps=30)


def test_no_pickle_anywhere(stories, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)
    config = TrainConfig(**TINY, steps=4, warmup_steps=1, eval_every=2)
    train(stories, config, tmp_path, progress=False, until=2)
    resume(tmp_path, stories, progress=False)
    for name in ("model.safetensors", "trainer_state.safetensors"):
        raw = (tmp_path / name).read_bytes()
        (header_len,) = struct.unpack("<Q", raw[:8])              # safetensors: u64 length, then JSON
        assert json.loads(raw[8 : 8 + header_len])["__metadata__"] == {"format": "pt"}
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["config"]["steps"] == 4
    for path in tmp_path.iterdir():
        assert not path.read_bytes().startswith((b"PK", b"\x80")), path   # zip (torch.save) or raw pickle


def test_bf16_autocast_trains(stories, tmp_path):
    config = TrainConfig(**TINY, steps=60, warmup_steps=6, eval_every=30, bf16=True)
    result = train(stories, config, tmp_path, progress=False)
    assert result.final_val_loss < result.history[0].val_loss - 1.0
    assert next(result.model.parameters()).dtype == torch.float32       # only the products run in bf16


def test_cli_trains_and_draws_the_loss_curves(stories, tmp_path, capsys):
    data = tmp_path / "stories.txt"
    data.write_text("\n<|endoftext|>\n".join(stories[:30]), encoding="utf-8")
    out = tmp_path / "model"
    args = ["train", "--data", str(data), "--out", str(out), "--vocab-size", "300", "--hidden", "32", "--layers", "1",
            "--heads", "2", "--kv-heads", "1", "--intermediate", "64", "--context", "32", "--steps", "12",
            "--batch-size", "8", "--warmup", "2", "--eval-every", "6", "--sample-every", "12"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "training on 30 documents" in printed and "validation loss" in printed
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "trainer_state.json",
            "trainer_state.safetensors", "loss_curves.png"} <= names
    assert (out / "loss_curves.png").read_bytes().startswith(b"\x89PNG")
    assert minillm.load_model(out).config.num_hidden_layers == 1
    assert main(["train", "--data", str(tmp_path / "missing.txt"), "--out", str(out)]) == 1


def test_mlp_sees_exactly_its_window_and_saves(tmp_path):
    from minillm.models.mlp_lm import MLPLanguageModel

    torch.manual_seed(0)
    model = MLPLanguageModel(vocab_size=50, window=3, embed_dim=8, hidden=16).eval()
    ids = torch.randint(0, 50, (2, 10))
    logits = model(ids)
    assert logits.shape == (2, 10, 50)
    changed = ids.clone()
    changed[:, 4] = (ids[:, 4] + 1) % 50
    moved = model(changed) != logits
    assert not moved[:, :4].any() and moved[:, 4:7].all(dim=-1).all() and not moved[:, 7:].any()   # t-2 .. t only
    model.save(tmp_path)
    torch.testing.assert_close(MLPLanguageModel.load(tmp_path)(ids), logits, rtol=0, atol=0)
    with pytest.raises(Exception, match="config.json"):
        minillm.load_model(tmp_path)                  # not a Hugging Face model: said so in its docstring


def test_mlp_trains_with_the_same_loop(stories, tmp_path):
    config = TrainConfig(**TINY, architecture="mlp", mlp_window=8, steps=100, warmup_steps=10, eval_every=50)
    result = train(stories, config, tmp_path, progress=False, until=50)
    rest = resume(tmp_path, stories, progress=False)            # resume works for the MLP too
    assert rest.final_val_loss < result.history[0].val_loss - 1.5   # measured: 5.95 -> 4.09 nats
    assert json.loads((tmp_path / "mlp_config.json").read_text())["window"] == 8
    # At this size and budget the MLP keeps up with the transformer (see compare-architectures
    # for the budget where attention pays off), so only training is asserted here.


def test_sweep_and_compare_architectures_write_tables_and_plots(tmp_path, capsys):
    from minillm.data.stories import synthetic_stories

    data = tmp_path / "stories.txt"
    data.write_text("\n<|endoftext|>\n".join(synthetic_stories(120, seed=3)), encoding="utf-8")
    common = ["--data", str(data), "--tokens", "8192", "--vocab-size", "300", "--context", "32", "--batch-size", "8",
              "--no-progress"]
    assert main(["sweep", "--out", str(tmp_path / "sweep"), "--shapes", "16x1", "32x2", *common]) == 0
    rows = (tmp_path / "sweep" / "sweep.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("name,hidden_size")
    assert "power law" in capsys.readouterr().out
    assert main(["compare-architectures", "--out", str(tmp_path / "arch"), "--hidden", "32", "--layers", "1",
                 "--mlp-window", "4", *common]) == 0
    rows = (tmp_path / "arch" / "architectures.csv").read_text().splitlines()[1:]
    assert {r.split(",")[0] for r in rows} == {"transformer", "mlp"}
    params = {r.split(",")[0]: int(r.split(",")[2]) for r in rows}
    assert abs(params["mlp"] - params["transformer"]) < 0.05 * params["transformer"]   # matched sizes
    for png in (tmp_path / "sweep" / "sweep.png", tmp_path / "arch" / "architectures.png"):
        assert png.read_bytes().startswith(b"\x89PNG")


def test_a_failing_torch_compile_is_reported_once_and_training_goes_on(stories, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda model: broken)
    config = TrainConfig(**TINY, steps=3, warmup_steps=1, eval_every=3, compile=True)
    result = train(stories, config, tmp_path, progress=False)
    assert [r.step for r in result.history] == [0, 1, 2, 3]
    assert capsys.readouterr().out.count("torch.compile failed (RuntimeError: no C++ compiler found)") == 1


def test_a_finished_run_trains_further_with_more_steps(stories, tmp_path):
    # Warm-up longer than both plans: every rate is peak * step / warmup whatever the plan, so
    # 20 steps extended to 40 must be bit for bit the run planned for 40 from the start.
    config = TrainConfig(**TINY, steps=20, warmup_steps=50, eval_every=5)
    short = train(stories, config, tmp_path / "short", progress=False)
    with pytest.raises(ValueError, match="finished its 20 planned steps.*steps=N"):
        resume(tmp_path / "short", stories, progress=False)
    longer = resume(tmp_path / "short", stories, progress=False, steps=40)
    whole = train(stories, TrainConfig(**TINY, steps=40, warmup_steps=50, eval_every=5), tmp_path / "whole",
                  progress=False)
    assert len(short.history) == 21 and _history(longer) == _history(whole)
    assert any("planned again for 40 steps" in note for note in longer.notes)
    # After warm-up the rate follows the cosine of the new plan: computed here from the formula.
    cosine = TrainConfig(**TINY, steps=20, warmup_steps=4, eval_every=5)
    train(stories, cosine, tmp_path / "cos", progress=False)
    more = resume(tmp_path / "cos", stories, progress=False, steps=40)
    peak, low = cosine.learning_rate, cosine.learning_rate * cosine.min_lr_ratio
    expected = [low + 0.5 * (peak - low) * (1 + math.cos(math.pi * (s - 4) / 36)) for s in range(21, 41)]
    assert [r.lr for r in more.history[21:]] == pytest.approx(expected, rel=1e-12)
    assert more.history[20].lr == pytest.approx(low, rel=1e-12)    # where the 20-step plan had ended
    with pytest.raises(ValueError, match="more than the 40 steps"):
        resume(tmp_path / "cos", stories, progress=False, steps=30)


def test_continued_pretraining_on_new_text_keeps_the_weights_and_restarts_the_rest(stories, tmp_path):
    from minillm.training.step import evaluate
    from minillm.training.windows import text_data

    first = train(stories, TrainConfig(**TINY, steps=30, warmup_steps=3, eval_every=10), tmp_path / "a",
                  progress=False)
    news = bundled_texts("news")
    with pytest.raises(ValueError, match="init="):             # resume needs the same texts, and says what to do
        resume(tmp_path / "a", news, progress=False, steps=40)
    config = TrainConfig(**{**TINY, "hidden_size": 8}, steps=6, warmup_steps=2, eval_every=3)   # shape: from init
    again = train(news, config, tmp_path / "b", progress=False, init=tmp_path / "a")
    assert "start afresh" in again.notes[0]
    # Step 0 measures the first run's weights on the new validation text: recomputed here.
    reference = text_data(first.tokenizer, news, None, TrainConfig(**TINY))
    assert again.history[0].val_loss == pytest.approx(evaluate(first.model.eval(), reference.val, 16), abs=1e-6)
    state = json.loads((tmp_path / "b" / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["init"] == str(tmp_path / "a") and state["config"]["hidden_size"] == 32
    with safe_open(tmp_path / "b" / "trainer_state.safetensors", "pt") as f:    # fresh AdamW: 6 steps, not 36
        assert f.get_tensor("adamw.step.embed_tokens.weight").item() == 6
    assert (tmp_path / "b" / "tokenizer.json").read_bytes() == (tmp_path / "a" / "tokenizer.json").read_bytes()
    with pytest.raises(ValueError, match="another folder"):
        train(news, config, tmp_path / "a", progress=False, init=tmp_path / "a")


def test_until_between_evaluations_measures_the_validation_loss_where_it_stops(stories, tmp_path):
    from minillm.training.step import evaluate
    from minillm.training.windows import text_data

    config = TrainConfig(**TINY, steps=20, warmup_steps=2, eval_every=10)
    result = train(stories, config, tmp_path, progress=False, until=7)
    assert result.history[-1].step == 7 and result.history[-1].val_loss is not None
    model, tok = minillm.load_model(tmp_path), minillm.load_tokenizer(tmp_path)
    val = text_data(tok, stories, None, config).val
    assert result.final_val_loss == pytest.approx(evaluate(model, val, 16), abs=1e-6)   # float32 sums, reordered


def test_cli_extends_a_finished_run_and_continues_pretraining(stories, tmp_path, capsys):
    data = tmp_path / "stories.txt"
    data.write_text("\n<|endoftext|>\n".join(stories[:30]), encoding="utf-8")
    news = tmp_path / "news.txt"
    news.write_text("\n<|endoftext|>\n".join(bundled_texts("news")), encoding="utf-8")
    out = tmp_path / "r"
    shape = ["--vocab-size", "300", "--hidden", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1",
             "--intermediate", "64", "--context", "32", "--batch-size", "8", "--eval-every", "3", "--threads", "1"]
    assert main(["train", "--data", str(data), "--out", str(out), "--steps", "4", *shape]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "has finished its 4 planned steps" in err
    # The library names its parameters (steps=N, init=...); the command says its own flags.
    assert "--steps N (N > 4;" in err and f"`minillm train` with --init {out}, --out NEW_FOLDER" in err
    assert "steps=" not in err and "init=" not in err
    assert main(["train", "--data", str(news), "--out", str(out), "--resume", "--steps", "6"]) == 1   # other texts
    err = capsys.readouterr().err
    assert "the texts differ" in err and f"--init {out}" in err and "init=" not in err
    assert main(["train", "--data", str(data), "--out", str(out), "--resume", "--steps", "6"]) == 0
    printed = capsys.readouterr().out
    assert "planned again for 6 steps" in printed and "step 6:" in printed
    assert main(["train", "--init", str(out), "--data", str(news), "--out", str(tmp_path / "n"), "--steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "continued pretraining from" in printed and "start afresh" in printed and "step 2:" in printed
    assert minillm.load_model(tmp_path / "n").config.max_position_embeddings == 32    # --init's window, by default


@pytest.mark.usefixtures("one_thread")
def test_a_warm_up_longer_than_the_run_is_said(tmp_path, capsys):
    from minillm.course.family import FAMILY_DIR
    stories = tmp_path / "stories.txt"
    stories.write_text("\n<|endoftext|>\n".join(bundled_texts("stories")[:12]), encoding="utf-8")
    assert main(["train", "--init", str(FAMILY_DIR / "tiny-s"), "--data", str(stories), "--steps", "20",
                 "--batch-size", "2", "--context", "32", "--eval-every", "20", "--no-progress",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    # The default warm-up is 50 steps; after 20 the rate is 20/50 of the peak (train.learning_rate).
    assert ("the warm-up (50 steps) is longer than the run (20 steps): the learning rate climbed to 0.0012, 40% of "
            "its peak 0.003, and never decayed. Give --warmup 2") in out
