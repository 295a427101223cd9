"""What a graded call leaves in its arguments, as data (tests/autograder/effects.py): the training unit
graded apart reads the student's weights, gradients, AdamW state and checkpoint files through it.

A model, an optimizer and a folder go to the "probe" as the plan writes them, are changed there as a
student's train_step and save_checkpoint change them, and what they were left as is put into the
grader's own objects, which must then be bit-identical to the probe's (the judge compares digests of
them before the next call). Records broken in each way raise ExchangeError with what is wrong.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "autograder"))
from effects import Held, _folder_state, apply_folder, apply_model, gradients, with_gradients  # noqa: E402
from exchange import Decoder, Encoder, ExchangeError, digest, read_record, write_record  # noqa: E402

from minillm.models.config import ModelConfig  # noqa: E402
from minillm.models.qwen2 import Transformer  # noqa: E402


def _model(tied: bool = True) -> Transformer:
    config = ModelConfig(model_type="qwen2", vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, rope_theta=10000.0,
                         rms_norm_eps=1e-6, max_position_embeddings=64, tie_word_embeddings=tied, attention_bias=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Transformer(config)


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    """One AdamW step on a random batch, as a student's train_step takes it."""
    batch = torch.randint(0, 40, (2, 6), generator=torch.Generator().manual_seed(seed))
    optimizer.zero_grad()
    logits = model(batch)
    F.cross_entropy(logits[:, :-1].reshape(-1, 40), batch[:, 1:].reshape(-1)).backward()
    optimizer.step()


def _call(held: Held, values: list) -> tuple[list, dict, str]:
    """The values encoded as one call's arguments: (nodes, tensors, digest)."""
    held.start_call()
    enc = Encoder(held=held)
    nodes = [enc.encode(v) for v in values]
    return nodes, enc.tensors, digest(nodes, enc.tensors)


@pytest.fixture
def grader_side(tmp_path):
    """The grader's model (tied, trained two steps, with leftover gradients), its AdamW and a folder
    with a file in it, and the Held of the grader's process."""
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.1)
    _step(model, optimizer, 1)
    _step(model, optimizer, 2)
    folder = tmp_path / "grader" / "checkpoint"
    folder.mkdir(parents=True)
    (folder / "old.json").write_text("{}")
    return Held(), [model, optimizer, folder]


def _probe(tmp_path: Path, nodes: list, tensors: dict) -> tuple[Held, list]:
    """The probe's side: its own objects, built from the call's nodes (a folder in a fresh folder)."""
    probe = Held()
    (tmp_path / "probe").mkdir()
    probe.make_folder = lambda: tmp_path / "probe"
    decoder = Decoder(tensors, held=probe)
    return probe, [decoder.decode(n) for n in nodes]


def test_a_model_an_optimizer_and_a_folder_cross_by_state_and_what_a_call_left_comes_back(grader_side, tmp_path):
    judge, values = grader_side
    nodes, tensors, key = _call(judge, values)
    probe, objects = _probe(tmp_path, nodes, tensors)
    model, optimizer, folder = objects
    assert type(model) is Transformer and model.lm_head.weight is model.embed_tokens.weight
    assert [p for g in optimizer.param_groups for p in g["params"]] == list(model.parameters())
    assert (folder / "old.json").read_text() == "{}" and folder.name == "checkpoint"
    assert _call(probe, objects)[2] == key            # the probe's echo of the call is the grader's

    # The student's call: a step (the gradients left over are used and replaced), a checkpoint written,
    # the old file removed, the model put in eval mode.
    _step(model, optimizer, 3)
    (folder / "model.safetensors").write_bytes(b"\x00\x01binary")
    (folder / "sub").mkdir()
    (folder / "sub" / "state.json").write_text('{"step": 3}')
    (folder / "old.json").unlink()
    model.eval()
    enc = Encoder(prefix="a.")
    write_record(tmp_path / "record", "r", {"after": probe.after(enc)}, enc.tensors)
    record, record_tensors = read_record(tmp_path / "record", "r")

    grader_model, grader_optimizer, grader_folder = values
    params_before = list(grader_model.parameters())
    judge.apply_after(record["after"], record_tensors)
    for n in range(3):
        assert judge.state_digest(n) == probe.state_digest(n), n
    assert list(grader_model.parameters()) == params_before   # the same objects, updated in place
    assert grader_model.lm_head.weight is grader_model.embed_tokens.weight and not grader_model.training
    assert [p for g in grader_optimizer.param_groups for p in g["params"]] == params_before
    assert torch.equal(grader_optimizer.state[params_before[0]]["exp_avg"], optimizer.state[model.embed_tokens.weight]
                       ["exp_avg"])
    assert sorted(p.relative_to(grader_folder).as_posix() for p in grader_folder.rglob("*") if p.is_file()) == \
        ["model.safetensors", "sub/state.json"]
    assert (grader_folder / "model.safetensors").read_bytes() == b"\x00\x01binary"
    assert _call(judge, values)[2] == _call(probe, objects)[2]   # a next call given them: the same digest


def test_replaced_parameters_and_a_broken_tie_come_back_as_such(grader_side, tmp_path):
    """A student's code that assigns new Parameters (a broken tie; an optimizer then holding the old
    tensors) leaves the grader's model so too: "kept" says which parameters are still the objects they were."""
    judge, values = grader_side
    nodes, tensors, _ = _call(judge, values)
    probe, (model, optimizer, _) = _probe(tmp_path, nodes, tensors)
    _call(probe, [model, optimizer])
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach() * 2)
    model.norm.weight = torch.nn.Parameter(model.norm.weight.detach().clone())
    enc = Encoder()
    after = probe.after(enc)
    _call(judge, values[:2])
    old_norm = values[0].norm.weight
    judge.apply_after(after, enc.tensors)
    grader_model, grader_optimizer = values[0], values[1]
    assert grader_model.lm_head.weight is not grader_model.embed_tokens.weight
    assert torch.equal(grader_model.lm_head.weight, model.lm_head.weight)
    assert grader_model.norm.weight is not old_norm
    held_by_optimizer = [p for g in grader_optimizer.param_groups for p in g["params"]]
    assert not any(p is grader_model.norm.weight for p in held_by_optimizer)   # updates go to the old tensor
    assert judge.state_digest(0) == probe.state_digest(0) and judge.state_digest(1) == probe.state_digest(1)


def test_a_returned_loss_carries_its_recorded_gradient_to_the_graders_logits():
    base = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(1))
    logits = base.clone().requires_grad_(True)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, 7), ids[:, 1:].reshape(-1))
    enc = Encoder()
    recorded = gradients(loss, [logits, ids], enc)
    mine = base.clone().requires_grad_(True)
    replayed = with_gradients(loss.detach(), recorded, [mine, ids], Decoder(enc.tensors))
    assert replayed.grad_fn is not None and torch.equal(replayed, loss.detach())
    (3 * replayed).backward()
    reference = base.clone().requires_grad_(True)
    F.cross_entropy(reference[:, :-1].reshape(-1, 7), ids[:, 1:].reshape(-1)).backward()
    assert torch.allclose(mine.grad, 3 * reference.grad, atol=0, rtol=1e-6)
    assert gradients(loss.detach(), [logits, ids], enc) is None                 # no graph: nothing recorded
    with pytest.raises(ExchangeError, match="does not fit"):
        with_gradients(loss.detach(), recorded, [base.clone().requires_grad_(True)[:, :2], ids], Decoder(enc.tensors))


def test_records_of_what_a_call_left_that_are_broken_are_refused(grader_side, tmp_path):
    judge, values = grader_side
    _call(judge, values)
    enc = Encoder()
    good = judge.after(enc)
    with pytest.raises(ExchangeError, match="malformed"):
        judge.apply_after(good[:2], enc.tensors)                          # the folder's state left out
    with pytest.raises(ExchangeError, match="malformed"):
        judge.apply_after([["0", good[0][1]]], enc.tensors)
    model_state = good[0][1]
    renamed = {**model_state, "parameters": [["extra.weight", *model_state["parameters"][0][1:]],
                                             *model_state["parameters"][1:]]}
    with pytest.raises(ExchangeError, match="not the ones it was given"):
        apply_model(_model(), renamed, Decoder(enc.tensors))
    tied_forward = {**model_state, "parameters": [[model_state["parameters"][0][0], {"tied": "lm_head.weight"}],
                                                  *model_state["parameters"][1:]]}
    with pytest.raises(ExchangeError, match="tied to one recorded after it"):
        apply_model(_model(), tied_forward, Decoder(enc.tensors))
    bad_grad = Encoder(prefix="g.")
    wrong = {**model_state, "parameters": [[*model_state["parameters"][0][:2], bad_grad.encode(torch.zeros(3)), True],
                                           *model_state["parameters"][1:]]}
    with pytest.raises(ExchangeError, match="does not fit the parameter"):
        apply_model(_model(), wrong, Decoder({**enc.tensors, **bad_grad.tensors}))
    optimizer_state = good[1][1]
    missing = {**optimizer_state, "groups": [[optimizer_state["groups"][0][0], [{"param": [0, "no.such.weight"]}]]]}
    with pytest.raises(ExchangeError, match="does not exist"):
        judge.apply_after([good[0], [1, missing], good[2]], enc.tensors)
    files = Encoder()
    node = {"exists": True, "files": [["../escape.json", files.encode(torch.zeros(2, dtype=torch.uint8))]]}
    with pytest.raises(ExchangeError, match="not a plain relative path"):
        apply_folder(tmp_path / "f", node, Decoder(files.tensors))
    assert not (tmp_path / "escape.json").exists()
    node = {"exists": True, "files": [["x.json", files.encode(torch.zeros(2))]]}
    with pytest.raises(ExchangeError, match="are not bytes"):
        apply_folder(tmp_path / "f", node, Decoder(files.tensors))


def test_a_folder_holding_a_link_or_too_many_files_is_not_read_back(tmp_path):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "a.json").write_text("{}")
    assert _folder_state(tmp_path / "absent", Encoder()) == {"exists": False, "files": []}
    os.symlink("/etc/hostname", folder / "b.json")
    with pytest.raises(ExchangeError, match=r"checkpoint/b.json is not a plain file \(a link\?\)"):
        _folder_state(folder, Encoder())
    (folder / "b.json").unlink()
    for i in range(70):
        (folder / f"f{i}.json").write_text("{}")
    with pytest.raises(ExchangeError, match="more than 64 files"):
        _folder_state(folder, Encoder())
