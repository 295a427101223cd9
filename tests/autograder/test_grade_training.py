"""Autograder, unit 7 (training): next-token loss, a training step, a short run, checkpoints.

References are written here in a few lines of plain PyTorch (``F.cross_entropy`` on shifted
logits, ``torch.optim.AdamW``, ``clip_grad_norm_``) and run on the same minillm Transformer
with the same initial weights; never solutions/. Shapes, batches and seeds come from
``grader_seed``. Checkpoint tests make ``torch.save`` / ``torch.load`` / ``pickle`` raise
while the student's code runs, and accept only ``.safetensors`` and ``.json`` files.
Graded apart, what a call left in its model, optimizer or folder crosses back as data into the
test's own objects (effects.py): the checks read them as if the call had run here.
"""

from __future__ import annotations

import copy
import math
import pickle
import random

import pytest
import torch
import torch.nn.functional as F

import minillm.models.qwen2 as mm
from grading import GradingError, GradModes, Unchanged, expect_close, expect_shape, block
from minillm.models.config import ModelConfig

pytestmark = pytest.mark.training

OBJECTIVES = {
    "TRAIN-1": "Computes the next-token cross-entropy of a batch (logits at position i scored against token i+1, in nats)",
    "TRAIN-2": "Writes one optimisation step: zero the gradients, loss, backward, clip the global norm, optimizer step",
    "TRAIN-3": "Evaluates a held-out loss without autograd and runs a short, seeded training loop whose validation loss falls",
    "TRAIN-4": "Saves and resumes a training run (weights, AdamW state by parameter name, step) with safetensors/JSON, no pickle",
}

LR = 1e-2   # the test optimizers' learning rate


# ------------------------------------------------------------------------------------------
# References and helpers
# ------------------------------------------------------------------------------------------

def reference_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits[:, :-1] against input_ids[:, 1:] (nats)."""
    vocab = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), input_ids[:, 1:].reshape(-1))


def reference_step(model, optimizer, batch, grad_clip=None) -> float:
    optimizer.zero_grad()
    loss = reference_loss(model(batch), batch)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


@pytest.fixture(autouse=True)
def _block_library_answers(monkeypatch):
    """minillm's own trainer (minillm.training's step, train and checkpoints modules) holds this unit's answers: it
    raises while students' code runs, patched before the student's module is imported, so any import of it is caught."""
    block(monkeypatch, *(f"minillm.training.{name}" for name in
                         ("step.next_token_loss", "step.train_step", "step.evaluate", "train.train_step", "train.evaluate",
                          "train.train", "train.resume", "checkpoints.save_checkpoint", "checkpoints.restore",
                          "train.save_checkpoint", "train.restore")))


def _rng(grader_seed: int, salt: int) -> tuple[random.Random, torch.Generator]:
    return random.Random(grader_seed * 2003 + salt), torch.Generator().manual_seed(grader_seed * 2003 + salt)


def _small_config(rng: random.Random, vocab: int, tied: bool = False) -> ModelConfig:
    return ModelConfig(
        model_type="qwen2", vocab_size=vocab, hidden_size=rng.choice([16, 24, 32]), intermediate_size=48,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=512,
        tie_word_embeddings=tied, attention_bias=True,
    )


def _fresh_model(config: ModelConfig, gen: torch.Generator) -> mm.Transformer:
    """A small Transformer with seeded weights, spread enough that the loss starts well above its floor."""
    model = mm.Transformer(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.2 * noise)
            elif "embed_tokens" in name:
                p.copy_(noise)
            else:
                p.copy_(noise / math.sqrt(p.shape[-1]))
    return model.train()


def _make_optimizer(model: torch.nn.Module, lr: float = LR) -> torch.optim.AdamW:
    # eps=1e-6 rather than 1e-8: Adam divides each gradient component by its own running RMS, so
    # with a tiny eps a component whose gradient is ~1e-8 turns float32 rounding into a whole step.
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.1)


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _expect_same_weights(got: torch.nn.Module, expected: torch.nn.Module, what: str, atol: float, rtol: float) -> None:
    want = dict(expected.named_parameters())
    for name, p in got.named_parameters():
        expect_close(p.detach(), want[name].detach(), f"{what}: parameter {name}", atol=atol, rtol=rtol)


def _stream(tokenizer, texts: list[str]) -> torch.Tensor:
    """All texts as one stream of ids, <|endoftext|> after each (as TinyStories is stored)."""
    ids: list[int] = []
    for text in texts:
        ids += tokenizer.encode(text) + [tokenizer.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)


def _split(tokenizer, story_texts: list[str], grader_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train / validation streams: a few random stories held out whole for validation."""
    order = list(range(len(story_texts)))
    random.Random(grader_seed).shuffle(order)
    val = [story_texts[i] for i in order[:4]]
    train = [story_texts[i] for i in order[4:]]
    return _stream(tokenizer, train), _stream(tokenizer, val)[:1024]


@pytest.fixture
def no_pickle(monkeypatch) -> None:
    """Every pickle path raises while the test runs (a fixture: the probe sets it up too)."""
    def refuse(what):
        def raiser(*args, **kwargs):
            raise GradingError(
                f"your checkpoint code called {what}, which uses pickle. Loading a pickle can run "
                "arbitrary code: write tensors with safetensors.torch.save_file / load_file and the "
                "rest with json."
            )
        return raiser
    monkeypatch.setattr(torch, "save", refuse("torch.save"))
    monkeypatch.setattr(torch, "load", refuse("torch.load"))
    for attr in ("dump", "dumps", "load", "loads"):
        monkeypatch.setattr(pickle, attr, refuse(f"pickle.{attr}"))


def _check_files(folder) -> None:
    if any(p.is_symlink() for p in folder.rglob("*")):
        raise GradingError("save_checkpoint made a link: a checkpoint holds plain files (a copy loses a link's target).")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        raise GradingError(f"save_checkpoint wrote no file in the folder it was given ({folder}).")
    others = [p.name for p in files if p.suffix not in (".safetensors", ".json")]
    if others:
        raise GradingError(
            f"save_checkpoint wrote {', '.join(others)}: a checkpoint should hold only .safetensors "
            "(tensors) and .json (everything else) files."
        )


# ------------------------------------------------------------------------------------------
# TRAIN-1 next_token_loss
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=2, objective="TRAIN-1", level="P")
def test_next_token_loss_value(student, grader_seed):
    rng, gen = _rng(grader_seed, 1)
    batch, seq, vocab = rng.randint(2, 4), rng.randint(5, 12), rng.randint(20, 60)
    logits = 3.0 * torch.randn(batch, seq, vocab, generator=gen)     # spread: each position's loss differs
    ids = torch.randint(0, vocab, (batch, seq), generator=gen)
    expected = reference_loss(logits, ids)
    next_token_loss = student.function("training", "next_token_loss")
    got = next_token_loss(logits.clone(), ids.clone())
    if not isinstance(got, torch.Tensor):
        raise GradingError(f"next_token_loss should return a 0-dim torch.Tensor (so that .backward() works), "
                           f"got {type(got).__name__}.")
    expect_shape(got, (), "next_token_loss(logits, input_ids)")
    # A mean of <= 44 log-softmax terms over <= 60 classes in float32: ~1e-6 relative.
    expect_close(got, expected, f"next_token_loss of ({batch}, {seq}, {vocab}) logits: logits[:, i] is scored "
                 "against input_ids[:, i + 1] (the last position has no target), mean in nats",
                 atol=1e-5, rtol=1e-5)


@pytest.mark.graded(points=1, objective="TRAIN-1", level="M")
def test_next_token_loss_gradient(student, grader_seed):
    rng, gen = _rng(grader_seed, 2)
    batch, seq, vocab = 2, rng.randint(4, 9), rng.randint(10, 30)
    base = 2.0 * torch.randn(batch, seq, vocab, generator=gen)
    ids = torch.randint(0, vocab, (batch, seq), generator=gen)
    ref_logits = base.clone().requires_grad_(True)
    reference_loss(ref_logits, ids).backward()
    next_token_loss = student.function("training", "next_token_loss")
    logits = base.clone().requires_grad_(True)
    loss = next_token_loss(logits, ids.clone())
    if not isinstance(loss, torch.Tensor) or loss.grad_fn is None:
        raise GradingError("next_token_loss must return a tensor connected to the logits (no .item(), no "
                           "torch.no_grad(), no detach): training calls .backward() on it.")
    loss.backward()
    if logits.grad is None:
        raise GradingError("after next_token_loss(...).backward() the logits have no gradient.")
    # Gradients are (softmax - onehot) / N: values <= 1/N, float32 ~1e-8 absolute.
    expect_close(logits.grad, ref_logits.grad, "the gradient of next_token_loss with respect to the logits "
                 "(zero at the last position, which has no target)", atol=1e-6, rtol=1e-4)


# ------------------------------------------------------------------------------------------
# TRAIN-2 train_step
# ------------------------------------------------------------------------------------------

def _step_setup(student, lend, grader_seed, salt, tiny_model_config):
    rng, gen = _rng(grader_seed, salt)
    config = _small_config(rng, tiny_model_config.vocab_size)
    model = _fresh_model(config, gen)
    ref_model = copy.deepcopy(model)
    batches = [torch.randint(0, config.vocab_size, (rng.randint(2, 4), rng.randint(8, 16)), generator=gen)
               for _ in range(3)]
    train_step = student.function("training", "train_step")
    # Grade the step on its own: the loss inside it is the reference (next_token_loss is graded above).
    lend("training", "next_token_loss", reference_loss)
    return model, ref_model, batches, train_step, gen


# AdamW's update is lr * m / (sqrt(v) + eps), per component: where a gradient component is small,
# float32 summation-order noise in it (another but correct loss or clipping code) moves that
# weight by up to ~2e-5 after 3 steps (measured over 60 seeds with a float64 implementation).
# 1e-4 is 1% of one step (lr 1e-2), and 50x below the smallest effect of a missing clip.
STEP_ATOL, STEP_RTOL = 1e-4, 1e-5


@pytest.mark.graded(points=2, objective="TRAIN-2", level="P")
def test_train_step_matches_adamw(student, lend, grader_seed, tiny_model_config):
    model, ref_model, batches, train_step, _ = _step_setup(student, lend, grader_seed, 3, tiny_model_config)
    optimizer, ref_optimizer = _make_optimizer(model), _make_optimizer(ref_model)
    expected_loss = reference_step(ref_model, ref_optimizer, batches[0])
    got = train_step(model, optimizer, batches[0].clone(), None)
    if isinstance(got, torch.Tensor):
        raise GradingError("train_step should return the loss as a Python float (loss.item()), not a tensor: "
                           "a tensor keeps the whole graph of the step alive.")
    # The loss of one batch, a float32 mean of <= 60 terms.
    expect_close(got, expected_loss, "the loss train_step returns (before the update)", atol=1e-5, rtol=1e-5)
    _expect_same_weights(model, ref_model, "the weights after one train_step (AdamW, no clipping)",
                         atol=STEP_ATOL, rtol=STEP_RTOL)


@pytest.mark.graded(points=2, objective="TRAIN-2", level="P")
def test_train_step_clears_old_gradients(student, lend, grader_seed, tiny_model_config):
    model, ref_model, batches, train_step, gen = _step_setup(student, lend, grader_seed, 4, tiny_model_config)
    optimizer, ref_optimizer = _make_optimizer(model), _make_optimizer(ref_model)
    # Gradients left over from some earlier backward(): a step must not add them in.
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)
    for batch in batches:
        reference_step(ref_model, ref_optimizer, batch)
        train_step(model, optimizer, batch.clone(), None)
    _expect_same_weights(model, ref_model, "the weights after 3 train_steps that started with leftover "
                         "gradients in .grad (PyTorch ADDS to .grad: clear it first)",
                         atol=STEP_ATOL, rtol=STEP_RTOL)


@pytest.mark.graded(points=1, objective="TRAIN-2", level="M")
def test_train_step_clips_gradient_norm(student, lend, grader_seed, tiny_model_config):
    model, ref_model, batches, train_step, _ = _step_setup(student, lend, grader_seed, 5, tiny_model_config)
    optimizer, ref_optimizer = _make_optimizer(model), _make_optimizer(ref_model)
    clip = 0.5         # these gradients' norms are 1.5 to 4: every step is clipped, each by a different factor
    for batch in batches:
        reference_step(ref_model, ref_optimizer, batch, clip)
        train_step(model, optimizer, batch.clone(), clip)
    _expect_same_weights(model, ref_model, f"the weights after 3 train_steps with grad_clip={clip} (scale ALL "
                         "gradients together so that their global L2 norm is at most grad_clip)",
                         atol=STEP_ATOL, rtol=STEP_RTOL)


# ------------------------------------------------------------------------------------------
# TRAIN-3 evaluate and train
# ------------------------------------------------------------------------------------------

def _untrained_note(vocab: int) -> str:
    """Why the losses in this unit's messages are large: the numbers are the grader's model's, not a mistake."""
    return (f"(The grader's model starts from random weights, spread wider than a trained model's, so its "
            f"untrained loss, about 6.8 nats, is above ln({vocab}) = {math.log(vocab):.2f}, a uniform guess's: "
            "that is the model, not your code.)")


def _reference_eval(model, ids: torch.Tensor, seq_len: int) -> float:
    n = len(ids) // seq_len
    windows = ids[: n * seq_len].reshape(n, seq_len)
    with torch.no_grad():
        return reference_loss(model(windows), windows).item()


@pytest.mark.graded(points=1, objective="TRAIN-3", level="P")
def test_evaluate_value(student, grader_seed, tiny_model, tiny_tokenizer, story_texts):
    rng, _ = _rng(grader_seed, 6)
    _, val_ids = _split(tiny_tokenizer, story_texts, grader_seed)
    seq_len = rng.choice([16, 24, 32, 40])
    model = copy.deepcopy(tiny_model)
    expected = _reference_eval(model, val_ids, seq_len)
    before = _params(model)
    evaluate = student.function("training", "evaluate")
    got = evaluate(model, val_ids.clone(), seq_len)
    if isinstance(got, torch.Tensor):
        raise GradingError("evaluate should return a Python float (.item()), not a tensor.")
    # One forward pass of the tiny model, a mean over ~1000 float32 terms: 1e-5 relative.
    try:
        expect_close(got, expected, f"evaluate on {len(val_ids)} validation tokens in windows of {seq_len}",
                     atol=1e-5, rtol=1e-5)
    except GradingError as err:
        raise GradingError(f"{err}\n{_untrained_note(model.config.vocab_size)}") from None
    for name, p in model.named_parameters():
        if not torch.equal(p.detach(), before[name]):
            raise GradingError(f"evaluate changed the weights ({name}): evaluation must not train the model.")


@pytest.mark.graded(points=1, objective="TRAIN-3", level="M")
def test_evaluate_without_autograd(student, grader_seed, tiny_model, tiny_tokenizer, story_texts):
    _, val_ids = _split(tiny_tokenizer, story_texts, grader_seed)
    model = copy.deepcopy(tiny_model)
    passes = GradModes(model)   # whether autograd was on in each of the model's forward passes
    evaluate = student.function("training", "evaluate")
    evaluate(model, val_ids.clone(), 32)
    grad_modes = passes.modes
    if not grad_modes:
        raise GradingError("evaluate never called the model.")
    if any(grad_modes):
        raise GradingError("evaluate ran the model with autograd on: it built a graph for backward() that is "
                           "never used (memory and time wasted). Wrap the evaluation in `with torch.no_grad():`.")


def _run_train(student, tiny_model, tiny_tokenizer, story_texts, grader_seed, seed, steps=30):
    train_ids, val_ids = _split(tiny_tokenizer, story_texts, grader_seed)
    model = copy.deepcopy(tiny_model).train()
    train = student.function("training", "train")
    # train draws its batches from its own seeded generator: the caller's token ids and torch's global
    # random state are left as they were.
    inputs = Unchanged("the token ids it was given or torch's global random state", train_ids, val_ids, rng=True)
    history = train(model, train_ids, val_ids, steps=steps, batch_size=8, lr=LR, seed=seed,
                    seq_len=32, eval_every=10)
    inputs.check(f"train(model, train_ids, val_ids, ..., seed={seed})")
    return history, model, val_ids


def _check_history(history, steps: int, eval_every: int) -> None:
    if not isinstance(history, dict):
        raise GradingError(f"train should return a dict (train_loss, val_step, val_loss), got {type(history).__name__}.")
    for key in ("train_loss", "val_step", "val_loss"):
        if key not in history:
            raise GradingError(f"train's history has no key {key!r}; it has {sorted(history)}.")
    if len(history["train_loss"]) != steps:
        raise GradingError(f"history['train_loss'] should hold one loss per step ({steps}), it holds "
                           f"{len(history['train_loss'])}.")
    expected_steps = list(range(0, steps, eval_every)) + [steps]
    if list(history["val_step"]) != expected_steps:
        raise GradingError(f"history['val_step'] should be {expected_steps} (before training, every "
                           f"{eval_every} steps, after the last), got {list(history['val_step'])}.")
    if len(history["val_loss"]) != len(expected_steps):
        raise GradingError(f"history['val_loss'] should hold {len(expected_steps)} losses, one per val_step.")
    for value in list(history["val_loss"]) + list(history["train_loss"]):
        if not isinstance(value, (float, int)) or not math.isfinite(value):
            raise GradingError(f"the history should hold finite Python floats; found {value!r}.")


@pytest.mark.graded(points=2, objective="TRAIN-3", level="P")
@pytest.mark.timeout_s(40)
def test_train_validation_loss_falls(student, grader_seed, tiny_model, tiny_tokenizer, story_texts):
    history, _, _ = _run_train(student, tiny_model, tiny_tokenizer, story_texts, grader_seed, seed=grader_seed % 1000)
    _check_history(history, 30, 10)
    first, last = history["val_loss"][0], history["val_loss"][-1]
    # 30 AdamW steps at lr 1e-2 take the tiny model from ~6.8 nats to ~4.3: demand a clear fall.
    if not last < first - 0.5:
        raise GradingError(f"the validation loss did not fall clearly in 30 steps: {first:.3f} -> {last:.3f} nats "
                           f"(all: {[round(v, 3) for v in history['val_loss']]}). Check the step "
                           "(zero_grad, backward, optimizer.step) and the batches; the reference falls to about "
                           f"4.3 nats. {_untrained_note(tiny_model.config.vocab_size)}")


@pytest.mark.graded(points=1, objective="TRAIN-3", level="M")
@pytest.mark.timeout_s(40)
def test_train_starts_from_the_untrained_loss_and_is_repeatable(student, grader_seed, tiny_model, tiny_tokenizer,
                                                                story_texts):
    seed = grader_seed % 1000
    first, _, val_ids = _run_train(student, tiny_model, tiny_tokenizer, story_texts, grader_seed, seed, steps=12)
    _check_history(first, 12, 10)
    # The first validation loss is the untrained model's: one forward pass, float32 mean of ~1000 terms.
    try:
        expect_close(first["val_loss"][0], _reference_eval(tiny_model, val_ids, 32),
                     "history['val_loss'][0], the validation loss BEFORE the first step (windows of seq_len tokens)",
                     atol=1e-5, rtol=1e-5)
    except GradingError as err:
        raise GradingError(f"{err}\n{_untrained_note(tiny_model.config.vocab_size)}") from None
    second, _, _ = _run_train(student, tiny_model, tiny_tokenizer, story_texts, grader_seed, seed, steps=12)
    # Same seed, same data, same start: the same computation, so the same numbers.
    expect_close(second["train_loss"], first["train_loss"], "the train losses of two runs with the same seed "
                 "(draw the batches with torch.Generator().manual_seed(seed))", atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------------------------------
# TRAIN-4 checkpoints
# ------------------------------------------------------------------------------------------

def _checkpoint_setup(grader_seed, salt, vocab, tied=False):
    rng, gen = _rng(grader_seed, salt)
    config = _small_config(rng, vocab, tied=tied)
    model = _fresh_model(config, gen)
    batches = [torch.randint(0, vocab, (3, rng.randint(8, 14)), generator=gen) for _ in range(5)]
    other = _fresh_model(config, gen)        # same architecture, different weights: the "fresh process"
    return model, other, batches, rng.randint(2, 3)


def _carry_on(model, optimizer, batches) -> None:
    """The reference's steps on a resumed model and optimizer: a state that does not fit fails with a message."""
    try:
        for batch in batches:
            reference_step(model, optimizer, batch)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        raise GradingError(f"training could not go on after load_checkpoint: {type(err).__name__}: {err}. Each "
                           "optimizer state tensor should have its parameter's shape, and each param group every "
                           "hyperparameter the optimizer was built with.") from None


@pytest.mark.graded(points=2, objective="TRAIN-4", level="P")
def test_checkpoint_round_trip_without_pickle(student, no_pickle, grader_seed, tiny_model_config, tmp_path):
    model, other, batches, n_before = _checkpoint_setup(grader_seed, 7, tiny_model_config.vocab_size)
    optimizer = _make_optimizer(model)
    for batch in batches[:n_before]:
        reference_step(model, optimizer, batch)
    save_checkpoint = student.function("training", "save_checkpoint")
    load_checkpoint = student.function("training", "load_checkpoint")
    folder = tmp_path / "checkpoint"
    saved = _params(model)
    optimizer_file = student.constant("training", "OPTIMIZER_FILE", "optimizer.safetensors")
    inputs = Unchanged("the model or its optimizer's state", model, optimizer)
    save_checkpoint(model, optimizer, n_before, folder)
    inputs.check("save_checkpoint(model, optimizer, step, folder)")
    _check_files(folder)
    step = load_checkpoint(other, _make_optimizer(other), folder)
    if step != n_before or isinstance(step, bool):
        raise GradingError(f"load_checkpoint should return the saved step {n_before}, got {step!r}.")
    for name, p in other.named_parameters():
        expect_close(p.detach(), saved[name], f"parameter {name} after load_checkpoint", atol=0, rtol=0)
    _expect_state_by_name(model, optimizer, folder / str(optimizer_file))


def _expect_state_by_name(model: torch.nn.Module, optimizer: torch.optim.Optimizer, path) -> None:
    """The rubric's clause "AdamW state by parameter name": the optimizer file holds, for every
    parameter, each of its state tensors under "<parameter name>/<state name>" with the right values
    (integer indices would silently attach the state to the wrong weights if the order changed)."""
    from safetensors.torch import load_file
    if not path.is_file():
        raise GradingError(f"save_checkpoint wrote no {path.name}: the optimizer's state tensors belong there "
                           "(the OPTIMIZER_FILE constant at the top of training.py).")
    try:
        tensors = load_file(str(path))
    except Exception as err:   # safetensors raises its own error types for a file it cannot parse
        raise GradingError(f"{path.name} is not a file safetensors can read ({type(err).__name__}: {err}): write "
                           "the optimizer's state with safetensors.torch.save_file.") from None
    for name, p in model.named_parameters():
        for key, value in optimizer.state[p].items():
            if f"{name}/{key}" not in tensors:
                raise GradingError(
                    f"{path.name} has no tensor {name + '/' + key!r}; it holds {sorted(tensors)[:4]} ... Save each "
                    "optimizer state tensor under its PARAMETER NAME and state name (dict(model.named_parameters()) "
                    "gives the names; optimizer.state[p] the state of parameter p), not the optimizer's indices.")
            expect_close(tensors[f"{name}/{key}"], torch.as_tensor(value), f"{path.name}: {name}/{key}",
                         atol=0, rtol=0)


@pytest.mark.graded(points=2, objective="TRAIN-4", level="M")
def test_resume_equals_uninterrupted_run(student, no_pickle, grader_seed, tiny_model_config, tmp_path):
    model, other, batches, n_before = _checkpoint_setup(grader_seed, 8, tiny_model_config.vocab_size)
    optimizer = _make_optimizer(model)
    for batch in batches[:n_before]:
        reference_step(model, optimizer, batch)
    save_checkpoint = student.function("training", "save_checkpoint")
    load_checkpoint = student.function("training", "load_checkpoint")
    folder = tmp_path / "checkpoint"
    other_optimizer = _make_optimizer(other)
    save_checkpoint(model, optimizer, n_before, folder)
    load_checkpoint(other, other_optimizer, folder)
    for batch in batches[n_before:]:          # carry on: the uninterrupted run and the resumed one
        reference_step(model, optimizer, batch)
    _carry_on(other, other_optimizer, batches[n_before:])
    # Identical float32 computations from identical state: only bit-level noise could differ.
    _expect_same_weights(other, model, f"the weights {len(batches) - n_before} steps after resuming at step "
                         f"{n_before}, compared with a run that never stopped (restore AdamW's exp_avg, exp_avg_sq "
                         "and step too, or its running averages restart from zero)", atol=1e-6, rtol=1e-6)


@pytest.mark.graded(points=1, objective="TRAIN-4", level="E")
def test_checkpoint_tied_model_and_hyperparameters(student, no_pickle, grader_seed, tiny_model_config, tmp_path):
    model, other, batches, n_before = _checkpoint_setup(grader_seed, 9, tiny_model_config.vocab_size, tied=True)
    optimizer = _make_optimizer(model, lr=LR)
    for batch in batches[:n_before]:
        reference_step(model, optimizer, batch)
    save_checkpoint = student.function("training", "save_checkpoint")
    load_checkpoint = student.function("training", "load_checkpoint")
    folder = tmp_path / "checkpoint"
    other_optimizer = _make_optimizer(other, lr=LR / 7)   # built with another learning rate
    save_checkpoint(model, optimizer, n_before, folder)
    load_checkpoint(other, other_optimizer, folder)
    if other.lm_head.weight is not other.embed_tokens.weight:
        raise GradingError("after load_checkpoint the tied model's lm_head and embedding are no longer the same "
                           "tensor: load the weights into the existing parameters (load_state_dict).")
    got_lr = other_optimizer.param_groups[0]["lr"]
    if not math.isclose(float(got_lr), LR, rel_tol=1e-9):
        raise GradingError(f"after load_checkpoint the optimizer's lr is {got_lr}, not the saved {LR}: restore the "
                           "hyperparameters of the optimizer's param_groups too.")
    for batch in batches[n_before:]:
        reference_step(model, optimizer, batch)
    _carry_on(other, other_optimizer, batches[n_before:])
    # As in the resume test: identical computations.
    _expect_same_weights(other, model, "the weights of a TIED-embedding model after resuming", atol=1e-6, rtol=1e-6)
