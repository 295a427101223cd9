"""Supervised fine-tuning (minillm.training.finetune): the reply-only loss, the chat template, exact resume,
an existing model never replaced without --overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers

import minillm
from minillm.cli import main
from minillm.training.finetune import (
    TURN_END,
    encode_example,
    example_windows,
    examples_from_pairs,
    finetune,
    read_examples,
    resize_embeddings,
    resume_finetune,
    write_chat_tokenizer,
)
from minillm.data.stories import synthetic_stories
from minillm.training.config import TrainConfig
from minillm.training.step import next_token_loss
from minillm.training.windows import IGNORE

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = Path(__file__).resolve().parents[1] / "data" / "models" / "tiny-s"   # a real trained model, 98K parameters
QUICK = dict(context=32, batch_size=8, learning_rate=1e-3, warmup_steps=2, eval_every=3, val_fraction=0.25)


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    stories = synthetic_stories(8, seed=11)
    return [("Write a story.", stories[0]), ("Write a short story about a fox.", "The fox ran home.")] + \
        [(f"Write story number {i}.", story) for i, story in enumerate(stories[1:])]


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    """tiny-s with the chat tokens added, as finetune() prepares it."""
    tok = write_chat_tokenizer(minillm.load_tokenizer(BASE), tmp_path_factory.mktemp("tok"))
    model = minillm.load_model(BASE).requires_grad_(True)
    resize_embeddings(model, tok.vocab_size)
    return model, tok


class KeepLogits(nn.Module):
    """Runs the model and keeps its logits, so the test can read their gradient."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        self.logits = self.model(ids)
        self.logits.retain_grad()
        return self.logits


def test_only_the_reply_is_a_target_and_prompt_positions_get_no_gradient(chat, pairs):
    model, tok = chat
    examples = examples_from_pairs(pairs[:2])
    windows = example_windows(tok, examples, context=32)          # the long story takes several windows
    # Targets, in order, are exactly each reply encoded on its own plus <|im_end|>.
    expected = [t for _, reply in pairs[:2] for t in tok.encode(reply, add_special_tokens=False) + [tok.eos_token_id]]
    targets = windows[:, 1, 1:]
    assert targets[targets != IGNORE].tolist() == expected
    assert tok.eos_token == TURN_END

    spy = KeepLogits(model)
    loss = next_token_loss(spy, windows)
    loss.backward()
    grad = spy.logits.grad                                          # (windows, context, vocab)
    scored = targets != IGNORE
    assert (grad[~scored] == 0).all()                               # prompt and padding: no gradient at all
    assert (grad[scored].abs().sum(-1) > 0).all()                  # every reply position: some
    # The loss is the mean -log p over reply tokens only: computed here from the logits.
    logp = F.log_softmax(spy.logits.detach().float(), dim=-1)
    nll = -logp[scored].gather(-1, targets[scored][:, None]).squeeze(-1)
    assert loss.item() == pytest.approx(nll.mean().item(), rel=1e-6)   # one float32 mean, reordered
    # Changing a prompt position's logits leaves the loss unchanged.
    with torch.no_grad():
        first_prompt = (~scored).nonzero()[0]
        bumped = spy.logits.detach().clone()
        bumped[tuple(first_prompt)] += 5.0
        flat = targets.flatten()
        same = F.cross_entropy(bumped.flatten(0, 1), flat, ignore_index=IGNORE)
    assert same.item() == pytest.approx(loss.item(), rel=1e-6)


def test_the_training_tokens_are_those_score_chat_scores(chat, pairs):
    # One short example in one window: the summed loss equals score(..., chat=True) on the reply
    # plus the cost of <|im_end|>, so fine-tuning optimises exactly what the chat scoring measures.
    model, tok = chat
    model.eval()
    instruction, reply = pairs[1]
    windows = example_windows(tok, examples_from_pairs([pairs[1]]), context=64)
    assert len(windows) == 1
    n = int((windows[0, 1, 1:] != IGNORE).sum())
    with torch.no_grad():
        summed = next_token_loss(model, windows).item() * n
        s = minillm.score(model, tok, reply, context=instruction, chat=True)
        ids = windows[0, 0, : int((windows[0, 1] != IGNORE).nonzero()[-1]) + 1]
        end = -F.log_softmax(model(ids[None, :-1])[0, -1], dim=-1)[tok.eos_token_id].item()
    model.train()
    assert s.n_tokens + 1 == n
    assert summed == pytest.approx(s.total_nll + end, rel=1e-5)      # float32 sums over ~10 tokens


def test_resize_keeps_the_old_rows_and_adds_their_mean(chat):
    model, tok = chat
    base = minillm.load_model(BASE)
    old = base.embed_tokens.weight
    new = model.embed_tokens.weight
    assert new.shape == (tok.vocab_size, old.shape[1]) == (old.shape[0] + 2, old.shape[1])
    assert torch.equal(new[: old.shape[0]], old) and model.lm_head.weight is new     # tied head stays tied
    torch.testing.assert_close(new[old.shape[0]:], old.mean(0).expand(2, -1), rtol=0, atol=0)


def test_finetuned_folder_is_a_hub_style_instruct_model(pairs, tmp_path):
    config = TrainConfig(**QUICK, steps=6)
    result = finetune(BASE, examples_from_pairs(pairs), config, tmp_path, progress=False)
    assert result.history[-1].step == 6 and result.history[-1].val_loss is not None
    messages = [{"role": "user", "content": "Write a story about a dragon."}]
    tok, ref_tok = minillm.load_tokenizer(tmp_path), transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = tok.apply_chat_template(messages, add_generation_prompt=True)
    assert ours == ref_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert ours == "<|im_start|>user\nWrite a story about a dragon.<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.encode(ours, add_special_tokens=False)
    assert ids == ref_tok(ours, add_special_tokens=False)["input_ids"]
    assert ids[0] == ref_tok.convert_tokens_to_ids("<|im_start|>") == tok.vocab_size - 2
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(minillm.load_model(tmp_path)(torch.tensor([ids])), ref(torch.tensor([ids])).logits,
                                   atol=1e-5, rtol=0)        # the same float32 forward pass, summed differently
    generation = transformers.GenerationConfig.from_pretrained(tmp_path)
    assert generation.eos_token_id == [ref_tok.convert_tokens_to_ids("<|im_end|>"), 0]   # <|im_end|>, <|endoftext|>
    assert json.loads((tmp_path / "trainer_state.json").read_text())["base"] == str(BASE)


def test_finetune_resume_is_exact(pairs, tmp_path):
    examples = examples_from_pairs(pairs)
    config = TrainConfig(**QUICK, steps=6)
    whole = finetune(BASE, examples, config, tmp_path / "whole", progress=False)
    finetune(BASE, examples, config, tmp_path / "split", progress=False, until=4)
    rest = resume_finetune(tmp_path / "split", examples, progress=False)
    assert [(r.step, r.train_loss, r.lr) for r in rest.history] == [(r.step, r.train_loss, r.lr) for r in whole.history]
    for (name, p), q in zip(whole.model.named_parameters(), rest.model.parameters()):
        assert torch.equal(p, q), name                                   # bit for bit
    with pytest.raises(ValueError, match="differ"):
        resume_finetune(tmp_path / "split", examples[:-1], progress=False, steps=8)
    with pytest.raises(ValueError, match="fine-tuning run"):
        minillm.training.train.resume(tmp_path / "split", ["a b c", "d e f"], progress=False, steps=8)


def test_cli_finetune_and_bad_data_files(pairs, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    lines = [json.dumps({"instruction": i, "response": r}) for i, r in pairs[2:]]
    lines.append(json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": pairs[1][0]},
                                          {"role": "assistant", "content": pairs[1][1]}]}))
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert read_examples(data)[-1].prompt[0] == {"role": "system", "content": "Be brief."}
    out = tmp_path / "chat"
    args = ["finetune", str(BASE), "--data", str(data), "--out", str(out), "--steps", "4", "--context", "32",
            "--batch-size", "4", "--eval-every", "2", "--val-fraction", "0.2", "--threads", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "loss is taken on the replies only" in printed and "Added 2 special tokens" in printed
    assert main(["finetune", "--resume", "--out", str(out), "--data", str(data), "--steps", "6"]) == 0
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 6
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n" + '{"instruction": "Hi"}\n', encoding="utf-8")
    assert main(["finetune", str(BASE), "--data", str(bad), "--out", str(tmp_path / "x")]) == 1
    assert f"{bad}, line 2" in capsys.readouterr().err


def test_a_tokenizer_that_has_the_chat_tokens_keeps_its_ids(shared_data, tmp_path):
    # Qwen2.5's real tokenizer already holds <|im_start|> (151644) and <|im_end|> (151645):
    # they are reused, nothing is added, and a reply ends at <|im_end|> or <|endoftext|> (151643).
    import gzip
    import shutil

    from minillm.training.finetune import end_of_text_id, write_generation_config

    source = shared_data / "qwen2.5-tokenizer"
    base = tmp_path / "base"
    base.mkdir()
    shutil.copy(source / "tokenizer_config.json", base)
    (base / "tokenizer.json").write_bytes(gzip.decompress((source / "tokenizer.json.gz").read_bytes()))
    qwen = minillm.load_tokenizer(base)
    tok = write_chat_tokenizer(qwen, tmp_path / "out")
    assert tok.vocab_size == qwen.vocab_size == 151665
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi!"}], add_generation_prompt=True)
    assert tok.encode(prompt, add_special_tokens=False)[:1] == [151644] and tok.eos_token_id == 151645
    write_generation_config(tmp_path / "out", tok, end_of_text_id(qwen))
    assert json.loads((tmp_path / "out" / "generation_config.json").read_text())["eos_token_id"] == [151645, 151643]


@pytest.mark.parametrize("family", ["qwen2.5", "gpt2"])
def test_training_ids_are_chat_scorings_ids_whatever_the_reply_starts_with(family, shared_data, tmp_path):
    """Fine-tuning encodes each conversation once, as score(..., chat=True) does. Encoding the reply on its
    own trained "\\n" where chat scoring scores "\\n\\n" (Qwen2.5: the prompt's closing newline merges with
    the reply's) and "\\n", "\\n" where it scores "\\n\\n", "\\n" (GPT-2, on a reply starting with two)."""
    import gzip
    import shutil

    from minillm.models.config import ModelConfig
    from minillm.models.qwen2 import Transformer

    source = shared_data / f"{family}-tokenizer"
    base = tmp_path / "base"
    base.mkdir()
    (base / "tokenizer.json").write_bytes(gzip.decompress((source / "tokenizer.json.gz").read_bytes()))
    shutil.copyfile(source / "tokenizer_config.json", base / "tokenizer_config.json")
    tok = write_chat_tokenizer(minillm.load_tokenizer(base), tmp_path / "chat")
    torch.manual_seed(0)      # a random model: only which tokens are scored matters here, not their scores
    model = Transformer(ModelConfig("qwen2", tok.vocab_size, 8, 16, 1, 2, 1, 4, 10000.0, 1e-6, 512, True, True)).eval()
    replies = ["\nHello there.", "\n\nTwo newlines.", " A space first.", "\tA tab.", "<|im_end|> a special token",
               "<|im_start|>assistant\nnested", "Plain text.", "é accented"]
    for reply in replies:
        ids, targets = encode_example(tok, examples_from_pairs([("Say something.", reply)])[0])
        trained = [t for t in targets if t != IGNORE]
        scored = minillm.score(model, tok, reply, context="Say something.", chat=True, top_k=0)
        assert trained == [row.token_id for row in scored.rows] + [tok.eos_token_id], (family, reply)
        assert ids[: -1] == scored.token_ids                  # the same sequence, then <|im_end|>


def test_finetune_refuses_to_replace_a_model_before_reading_anything(tmp_path, capsys):
    out = tmp_path / "instruct"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"my model")
    assert main(["finetune", "no/such-base", "--data", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err and (out / "model.safetensors").read_bytes() == b"my model"
