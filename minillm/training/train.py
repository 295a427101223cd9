"""Training a small Qwen2-architecture (or GPT-2) language model from text, from the first step.

A language model is trained on one task only: predict the next token. The recipe, one module each:

1. **The data** (:mod:`minillm.training.windows`): learn a BPE vocabulary from the training
   texts (:mod:`minillm.training.bpe`), hold out the last documents for validation, join the
   documents into one stream of ids with ``<|endoftext|>`` after each, cut it into windows of
   ``context + 1`` tokens and draw ``batch_size`` of them at random for each step.
2. **The model** (:mod:`minillm.training.new_model`): a freshly initialised model of the shape
   the :class:`~minillm.training.config.TrainConfig` describes.
3. **The step** (:mod:`minillm.training.step`): the next-token cross-entropy in nats, AdamW,
   the warm-up-then-cosine learning rate, gradient clipping.
4. **The checkpoints** (:mod:`minillm.training.checkpoints`): a Hugging Face model folder plus
   the trainer state, so that :func:`resume` gives, on CPU, bit-for-bit the losses and weights
   of a run that never stopped.

This module holds the run itself: one :class:`RunState` (model, optimizer, batch generator,
history, step count), built in one of three ways, and the loop that trains it. Every
``eval_every`` steps the validation loss is measured on a fixed set of held-out windows; every
``sample_every`` steps the model writes a few short continuations. ``compile`` tries
``torch.compile`` (and trains without it if compiling fails).

The three ways a run starts:

* **fresh** (``train(...)``): a new model, tokenizer (trained unless given), optimizer and schedule;
* **from a trained model** (``train(..., init=FOLDER)``, *continued pretraining* on new text):
  only the weights (and the tokenizer they belong to) come from FOLDER; the optimizer's moments,
  the learning-rate schedule (warm-up, then cosine over ``config.steps``), the step count and the
  batch order start afresh, as in a new run. This is how a model is adapted to a new domain
  (and, with chat-formatted data, how :mod:`minillm.training.finetune` makes an instruct model);
* **from a checkpoint** (:func:`resume`): the run saved in ``out`` carries on. It *finishes* an
  interrupted run (``until``, then :func:`resume`) exactly as if it had never stopped, or
  *extends* a run (``resume(..., steps=N)`` with more steps than planned): the weights, AdamW's
  moments, the step count and the batch order carry on, and the learning-rate schedule is
  planned again for N steps. Steps already taken keep the rates they had; the next step takes
  the rate the new plan gives it, as if the run had been planned for N steps from the start.
  For a run that had already decayed to its minimum that is a jump back up (a *re-warming*:
  the rate at step s of N), which is what "train it some more" means in most trainers.

Errors and notes name the functions' parameters (``steps=``, ``init=``, ``warmup_steps=``);
``minillm train`` says the same in its flags.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from minillm.checkpoint.safe_io import build_then_move, holds_out
from minillm.checkpoint.tokenizer import Tokenizer, load_tokenizer
from minillm.errors import InputError
from minillm.inference.generate import generate, sample_next_token
from minillm.models.gpt2 import GPT2
from minillm.models.qwen2 import Transformer
from minillm.progress import print_line, progress_bar
from minillm.training.bpe import train_tokenizer
from minillm.training.checkpoints import (config_for, load_initial, load_state, load_trained, new_run_from, restore,
                                          save_checkpoint)
from minillm.training.config import Record, TrainConfig
from minillm.training.new_model import build_model
from minillm.training.provenance import write_run_record
from minillm.training.step import evaluate, learning_rate, make_optimizer, train_step
from minillm.training.windows import TrainingData, draw_batch, text_data, training_documents


@dataclass
class TrainResult:
    model: nn.Module                # the trained model (train mode, float32)
    tokenizer: Tokenizer
    history: list[Record]           # the whole run's, resumed parts included
    samples: list[tuple[int, str]]  # (step, text) of the sampled continuations of this call
    folder: Path                    # the checkpoint folder
    tokens_per_second: float        # training throughput of this call (evaluation and compiling excluded)
    compile_seconds: float | None = None  # compile=True: how long the first step took (it compiles); None: eager
    notes: list[str] = field(default_factory=list)   # what carried on and what started afresh

    @property
    def final_val_loss(self) -> float:
        return _last_val(self.history)


# ---- the run's state, built three ways ---------------------------------------------------------------

@dataclass
class RunState:
    """Everything a run carries from one step to the next, and saves in its checkpoints."""

    config: TrainConfig
    model: nn.Module                   # float32, train mode
    optimizer: torch.optim.AdamW
    tokenizer: Tokenizer
    data_generator: torch.Generator    # draws the batches: seeded with config.seed, saved and restored
    history: list[Record]              # step 0 (the model before any update) first
    step: int                          # optimizer updates done
    provenance: dict                   # {"init": folder} or {"base": folder}: recorded in trainer_state.json
    notes: list[str]                   # what carried on and what started afresh

    @classmethod
    def fresh(cls, config: TrainConfig, tok: Tokenizer, data: TrainingData) -> RunState:
        """A new run of a freshly initialised model."""
        torch.manual_seed(config.seed)
        return cls._start(config, build_model(config, tok.vocab_size, tok.eos_token_id), tok, data, {}, [])

    @classmethod
    def from_model(cls, model: nn.Module, tok: Tokenizer, config: TrainConfig, data: TrainingData,
                   provenance: dict, notes: list[str]) -> RunState:
        """A new run from a trained model's weights: fresh optimizer, schedule, step count and batch order."""
        torch.manual_seed(config.seed)
        return cls._start(config, model, tok, data, provenance, notes)

    @classmethod
    def _start(cls, config: TrainConfig, model: nn.Module, tok: Tokenizer, data: TrainingData, provenance: dict,
               notes: list[str]) -> RunState:
        before = Record(0, 0, None, evaluate(model, data.val, config.batch_size, config.bf16), 0.0)
        return cls(config, model, make_optimizer(model, config), tok, torch.Generator().manual_seed(config.seed),
                   [before], 0, provenance, notes)

    @classmethod
    def from_checkpoint(cls, out: Path, state: dict, config: TrainConfig, tok: Tokenizer, data: TrainingData,
                        notes: list[str]) -> RunState:
        """The run saved in ``out`` (its trainer state ``state``, see :func:`load_state`), exactly as it stopped.
        Raises ValueError when ``data`` is not the data it was trained on."""
        if state["data"]["fingerprint"] != data.fingerprint:
            raise InputError(f"the texts differ from those the run in {out} was trained on (token fingerprint "
                             f"{data.fingerprint} != {state['data']['fingerprint']}); resume with the same texts. "
                             f"To train on new texts, start a new run from these weights: {new_run_from(out, state)}.")
        model = load_trained(out, config)
        optimizer, data_generator = make_optimizer(model, config), torch.Generator().manual_seed(config.seed)
        restore(out, model, optimizer, data_generator)
        return cls(config, model, optimizer, tok, data_generator, [Record(**r) for r in state["history"]],
                   state["step"], {key: state[key] for key in ("init", "base") if key in state}, notes)

    def save(self, out: Path, data: TrainingData) -> None:
        """Checkpoint the run into ``out``. Built aside and moved into place whole: a save that fails
        or is killed half-way leaves the previous checkpoint as it was. Files of ``out`` that a save
        does not write carry over."""
        with build_then_move(out, carry_over=True) as partial:
            save_checkpoint(partial, self.model, self.tokenizer, self.optimizer, self.data_generator, dict(
                step=self.step, tokens=self.step * self.config.tokens_per_step, config=asdict(self.config),
                **self.provenance, data=dict(fingerprint=data.fingerprint, **data.info),
                history=[asdict(r) for r in self.history]))
            write_run_record(partial, data.documents, data.info["kind"],
                             self.provenance.get("init") or self.provenance.get("base"))


@holds_out
def train(texts: list[str], config: TrainConfig, out: str | Path, tokenizer: str | Path | Tokenizer | None = None,
          until: int | None = None, progress: bool = True, val_texts: list[str] | None = None,
          init: str | Path | None = None) -> TrainResult:
    """Train a model on ``texts`` (list of documents) and save it as a checkpoint in ``out``.

    ``tokenizer``: an existing tokenizer (a folder with tokenizer.json, or a Tokenizer); by
    default a BPE tokenizer of ``config.vocab_size`` tokens is trained on the training
    documents and saved in ``out``. ``until``: stop (and save) after that many steps, with
    the learning-rate schedule still planned for ``config.steps``; :func:`resume` finishes
    the run. ``progress`` shows a progress bar and prints the samples. ``val_texts``: the
    validation documents, when they are not simply the last ``config.val_fraction`` of ``texts``.

    ``init``: continued pretraining. Start from the weights of the model in this folder (or hub
    id), with its tokenizer and shape (the shape fields of ``config`` are replaced by the
    model's); everything else (optimizer, schedule, step count, batch order) starts afresh.
    ``result.notes`` says so.
    """
    out = Path(out)
    if init is not None:
        if tokenizer is not None:
            raise InputError("give either init (the tokenizer comes with the model) or tokenizer, not both.")
        model, tok = load_initial(init, out)
        config = config_for(model, config)
        data = text_data(tok, texts, val_texts, config)
        notes = [(f"continued pretraining from {init}: its weights, tokenizer and shape carry on (shape options "
                  "are ignored); the optimizer (fresh AdamW moments), the learning-rate schedule (warm-up "
                  f"{config.warmup_steps} steps, cosine over {config.steps}), the step count and the batch order "
                  "start afresh.")]
        run = RunState.from_model(model, tok, config, data, provenance=dict(init=str(init)), notes=notes)
    else:
        if tokenizer is None:
            tok = load_tokenizer(train_tokenizer(training_documents(texts, val_texts, config)[0], config.vocab_size,
                                                 out))
        else:
            tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
        data = text_data(tok, texts, val_texts, config)
        run = RunState.fresh(config, tok, data)
    return run_loop(run, data, out, until, progress)


@holds_out
def resume(out: str | Path, texts: list[str], until: int | None = None, progress: bool = True,
           val_texts: list[str] | None = None, steps: int | None = None) -> TrainResult:
    """Carry on the run saved in ``out`` up to its ``config.steps`` (or to ``until``).

    ``texts`` (and ``val_texts``) must be those the run started with (checked by a fingerprint
    of their tokens). On CPU the losses and final weights equal those of a run never interrupted,
    bit for bit: the weights, AdamW's moments and the step counter, the batch generator's
    state and torch's global generator state are all restored exactly.

    ``steps``: plan the run for this many steps instead (more than it has taken): this is how a
    finished run trains further. The learning-rate schedule is planned again for ``steps``
    (see the module docstring); ``result.notes`` says what that means for the rate.
    To train on other texts, start a new run from the weights: ``train(..., init=out)``.
    """
    out = Path(out)
    state, config, notes = load_state(out, steps, until)
    if state["data"].get("kind", "text") != "text":
        raise InputError(f"{out} holds a fine-tuning run; carry it on with resume_finetune().")
    tok = load_tokenizer(out)
    data = text_data(tok, texts, val_texts, config)
    run = RunState.from_checkpoint(out, state, config, tok, data, notes)
    return run_loop(run, data, out, until, progress)


# ---- the loop ----------------------------------------------------------------------------------------

def run_loop(run: RunState, data: TrainingData, out: Path, until: int | None = None,
             progress: bool = True) -> TrainResult:
    """Train ``run`` on ``data`` up to step ``config.steps`` (or ``until``), checkpointing into ``out``."""
    config, model, tok = run.config, run.model, run.tokenizer
    if until is not None and (not isinstance(until, int) or until < 1):
        raise InputError(f"until={until!r}: give a step number >= 1 (or None to run all {config.steps} steps).")
    last = config.steps if until is None else min(until, config.steps)
    update = TimedStep(model, run.optimizer, config)     # train_step, compiled if asked (eager if that fails)
    samples: list[tuple[int, str]] = []
    bar = progress_bar(total=config.steps, initial=run.step, desc="training", unit="step", enabled=progress)
    while run.step < last:
        batch = draw_batch(data.train, config.batch_size, run.data_generator)
        lr = learning_rate(run.step + 1, config)
        loss = update(batch, lr)                       # forward, backward, clip, AdamW step
        run.step += 1

        evaluating = run.step % config.eval_every == 0 or run.step in (config.steps, last)   # and where it stops
        val = evaluate(model, data.val, config.batch_size, config.bf16) if evaluating else None
        run.history.append(Record(run.step, run.step * config.tokens_per_step, loss, val, lr))
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", val=f"{_last_val(run.history):.3f}",
                        tok_s=f"{update.tokens_per_second:,.0f}" if update.seconds else "-")
        if config.sample_every and run.step % config.sample_every == 0:
            samples += _samples(model, tok, data.prompts, run.step, config.seed, progress)
        if (config.save_every and run.step % config.save_every == 0) or run.step == last:
            run.save(out, data)
    bar.close()
    return TrainResult(model, tok, run.history, samples, out, update.tokens_per_second, update.compile_seconds,
                       list(run.notes) + warmup_note(config))


class TimedStep:
    """:func:`~minillm.training.step.train_step` on one model and optimizer, timed.

    With ``config.compile`` the forward pass goes through ``torch.compile(model)``. Compiling
    happens at the first call, and may fail in many ways (no compiler, an unsupported op...):
    a step that fails so is said once and taken again without it, as are all later steps.
    ``compile_seconds``: how long the first compiled step took (None when eager); ``seconds`` and
    ``tokens``: the other steps', whose rate is ``tokens_per_second``.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig):
        self.model, self.optimizer, self.config = model, optimizer, config
        self.forward = _compile(model) if config.compile else model
        self.seconds, self.tokens, self.compile_seconds = 0.0, 0, None

    def __call__(self, batch: torch.Tensor, lr: float) -> float:
        """One update on ``batch`` at learning rate ``lr``; returns its loss (nats per token)."""
        start = time.perf_counter()
        try:
            loss = train_step(self.model, self.forward, self.optimizer, batch, lr, self.config)
        except Exception as err:
            if self.forward is self.model:
                raise
            print_line(f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                       "training without it.")
            self.forward = self.model
            loss = train_step(self.model, self.forward, self.optimizer, batch, lr, self.config)
        if self.forward is not self.model and self.compile_seconds is None:
            self.compile_seconds = time.perf_counter() - start     # the first compiled step compiles
        else:
            self.seconds += time.perf_counter() - start
            self.tokens += self.config.tokens_per_step
        return loss

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def _compile(model: nn.Module):
    """``torch.compile(model)``; compilation happens (and may fail) at the first call."""
    try:
        return torch.compile(model)
    except Exception as err:
        print_line(f"torch.compile is not available ({err}); training without it.")
        return model


def warmup_note(config: TrainConfig) -> list[str]:
    """A note when the warm-up is longer than the run: the learning rate then never reaches its peak."""
    if config.warmup_steps <= config.steps:
        return []
    reached = learning_rate(config.steps, config)
    return [f"the warm-up ({config.warmup_steps} steps) is longer than the run ({config.steps} steps): the learning "
            f"rate climbed to {reached:.3g}, {reached / config.learning_rate:.0%} of its peak {config.learning_rate:g}, "
            f"and never decayed. Give warmup_steps={max(1, config.steps // 10)} (a tenth of the steps, say) for the "
            "whole schedule."]


def _last_val(history: list[Record]) -> float:
    """The most recent validation loss in ``history`` (nats)."""
    return next(r.val_loss for r in reversed(history) if r.val_loss is not None)


def _samples(model, tok: Tokenizer, prompts: list[list[int]], step: int, seed: int,
             progress: bool) -> list[tuple[int, str]]:
    """(step, text) of one sampled continuation of each prompt, 40 tokens at most; printed with ``progress``."""
    out = []
    for i, prompt in enumerate(prompts):
        text = tok.decode(prompt + _sample(model, prompt, 40, seed + i, tok.eos_token_id))
        out.append((step, text))
        if progress:
            print_line(f"step {step} sample: {text!r}")
    return out


def _sample(model, prompt: list[int], max_new_tokens: int, seed: int, eos_id: int) -> list[int]:
    """A sampled continuation (temperature 0.8, top-k 40): minillm.generate for the transformers,
    a plain loop over the last window for the MLP (it has no KV cache)."""
    was_training = model.training
    model.eval()
    if isinstance(model, (Transformer, GPT2)):
        max_new_tokens = min(max_new_tokens, model.config.max_position_embeddings - len(prompt))
        new = generate(model, prompt, max_new_tokens, temperature=0.8, top_k=40, seed=seed, eos_token_id=eos_id)
    else:
        generator, new = torch.Generator().manual_seed(seed), []
        with torch.no_grad():
            for _ in range(max_new_tokens):
                logits = model(torch.tensor([(prompt + new)[-model.window:]]))[:, -1]   # (1, vocab)
                new.append(int(sample_next_token(logits, 0.8, 40, generator=generator)))
                if new[-1] == eos_id:
                    break
    model.train(was_training)
    return new
