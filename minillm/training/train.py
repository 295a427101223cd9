"""Training a small Qwen2-architecture (or GPT-2) language model from text, from the first step.

A language model is trained on one task only: predict the next token. The recipe:

1. **Tokenize.** Learn a BPE vocabulary from the training texts (``minillm.training.bpe``), encode
   every document, and join the documents into one long stream of ids with the
   ``<|endoftext|>`` id after each, so the model learns where a text ends (and that what
   follows is a fresh one).
2. **Split by document.** The last ``val_fraction`` of the documents are held out for
   validation (or separate validation documents are given). Splitting by document, not by
   position in the stream, keeps every validation story unseen as a whole.
3. **Cut windows.** The stream is cut into windows of ``context + 1`` tokens (consecutive
   windows share one token, so every token is a target once). A window's first ``context``
   tokens are the input and its last ``context`` tokens the targets: ``logits[:, t]``
   predicts token ``t + 1``. Each step draws ``batch_size`` windows at random, with a seeded
   generator, so a run is reproducible.
4. **Minimise the cross-entropy** between the predicted distribution and the real next
   token, in nats: a model that guesses uniformly scores ``ln(vocab_size)``; one that knows
   only how often each token occurs scores the *unigram entropy*; lower than that means
   it uses the context.
5. **Optimise with AdamW**: Adam's per-parameter step sizes plus weight decay on the weight
   matrices (not on biases and norm gains, which are 1-D). The learning rate rises linearly
   for ``warmup_steps`` (early gradients are large and noisy), then follows a cosine down to
   ``min_lr_ratio`` of its peak. Gradients whose overall norm exceeds ``grad_clip`` are scaled
   down, so one bad batch cannot throw the weights far.

Every ``eval_every`` steps the validation loss is measured on a fixed set of held-out
windows; every ``sample_every`` steps the model writes a few short continuations. With
``bf16`` the matrix products run in bfloat16 under ``torch.autocast`` (weights, gradients
and optimizer state stay float32); ``compile`` tries ``torch.compile``.

A checkpoint is an ordinary Hugging Face folder (``config.json``, ``model.safetensors``,
``tokenizer.json``, ``tokenizer_config.json``) that :func:`minillm.load_model` and
``transformers`` load, plus what is needed to carry on training exactly where it stopped:
``trainer_state.safetensors`` (AdamW's two moment estimates per parameter name, the random
number generators' states) and ``trainer_state.json`` (step, settings, loss history). No
pickle anywhere: :func:`resume` gives, on CPU, bit-for-bit the losses and weights of a run
that never stopped.

Three ways to go on from a checkpoint:

* **finish** an interrupted run (``until``, then :func:`resume`): exactly as if it had never stopped;
* **extend** a run (``resume(..., steps=N)`` with more steps than planned): the weights, AdamW's
  moments, the step count and the batch order carry on, and the learning-rate schedule is
  planned again for N steps. Steps already taken keep the rates they had; the next step takes
  the rate the new plan gives it, as if the run had been planned for N steps from the start.
  For a run that had already decayed to its minimum that is a jump back up (a *re-warming*:
  the rate at step s of N), which is what "train it some more" means in most trainers;
* **continue pretraining** on new text (``train(..., init=FOLDER)``): only the weights (and the
  tokenizer they belong to) come from FOLDER; the optimizer's moments, the learning-rate
  schedule (warm-up, then cosine over ``config.steps``), the step count and the batch order
  start afresh, as in a new run. This is how a model is adapted to a new domain (and, with
  chat-formatted data, how :mod:`minillm.training.finetune` makes an instruct model).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from minillm.checkpoint.loading import load_model, load_model_and_tokenizer
from minillm.checkpoint.safe_io import build_then_move, holds_out
from minillm.checkpoint.tokenizer import Tokenizer, load_tokenizer
from minillm.checkpoint.weights import save_weights
from minillm.inference.generate import generate, sample_next_token
from minillm.models.config import GPT2Config, ModelConfig
from minillm.models.gpt2 import GPT2, LayerNorm
from minillm.models.mlp_lm import MLPLanguageModel
from minillm.models.qwen2 import RMSNorm, Transformer
from minillm.progress import print_line, progress_bar
from minillm.training.bpe import train_tokenizer
from minillm.training.provenance import write_run_record

ARCHITECTURES = ("transformer", "mlp", "gpt2")
BETAS = (0.9, 0.95)          # AdamW's moment decay rates, as used for most LLMs
INIT_STD = 0.02              # std of the normal init of weight matrices (Hugging Face's default)
STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
IGNORE = -100                # a target id that the loss skips (F.cross_entropy's ignore_index)


@dataclass
class TrainConfig:
    """Everything that decides a training run. Defaults: a 158K-parameter model (93K besides the
    embedding, with a 1024-token vocabulary), 500 steps of 16 x 128 tokens."""

    # The model. "transformer": a Qwen2 decoder; "mlp": minillm.models.mlp_lm's fixed-window MLP
    # (hidden_size = its embedding width, intermediate_size = its hidden width); "gpt2":
    # minillm.models.gpt2 (n_embd = hidden_size, MLP 4 x hidden_size wide, every head with its own
    # keys and values, so intermediate_size and num_key_value_heads are not used).
    architecture: str = "transformer"
    vocab_size: int = 1024          # size of the BPE vocabulary trained when no tokenizer is given
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 176
    context: int = 128              # tokens the model sees at once (max_position_embeddings)
    tie_word_embeddings: bool = True
    rope_theta: float = 10000.0
    mlp_window: int = 8             # architecture "mlp": how many previous tokens it sees
    n_positions: int = 0            # architecture "gpt2": rows of the position table; 0 means context
    # The optimisation.
    steps: int = 500                # optimizer updates in the whole run
    batch_size: int = 16            # windows per update
    learning_rate: float = 3e-3     # peak learning rate, after warm-up
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1       # the cosine ends at learning_rate * min_lr_ratio
    weight_decay: float = 0.1       # on weight matrices only
    grad_clip: float = 1.0          # max gradient norm; 0 switches clipping off
    # Watching it, and saving it.
    eval_every: int = 100           # steps between validation losses (and at the last step)
    eval_batches: int = 4           # validation windows measured: eval_batches * batch_size at most
    sample_every: int = 0           # steps between sampled continuations; 0: never
    save_every: int = 0             # steps between checkpoints; 0: only at the end
    val_fraction: float = 0.1       # share of the documents (the last ones) held out, unless val_texts are given
    seed: int = 0
    bf16: bool = False              # bfloat16 autocast for the forward pass
    compile: bool = False           # torch.compile the model (falls back to eager if it fails)

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}; got {self.architecture!r}.")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                     "intermediate_size", "context", "mlp_window", "steps", "batch_size", "eval_every",
                     "eval_batches"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a whole number >= 1; got {getattr(self, name)!r}.")
        if self.architecture in ("transformer", "gpt2"):
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(f"hidden_size={self.hidden_size} must be a multiple of "
                                 f"num_attention_heads={self.num_attention_heads}.")
        if self.architecture == "transformer":
            if self.num_attention_heads % self.num_key_value_heads:
                raise ValueError(f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                                 f"num_key_value_heads={self.num_key_value_heads}.")
            if (self.hidden_size // self.num_attention_heads) % 2:
                raise ValueError(f"head width hidden_size / num_attention_heads = "
                                 f"{self.hidden_size // self.num_attention_heads} must be even (rotary embeddings).")
        if self.architecture == "gpt2" and self.n_positions and self.n_positions < self.context:
            raise ValueError(f"n_positions={self.n_positions} is smaller than context={self.context}: "
                             "the position table needs a row for every position of a window.")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be between 0 and 1; got {self.val_fraction}.")
        for name in ("learning_rate", "min_lr_ratio", "weight_decay", "grad_clip", "val_fraction"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number; got {getattr(self, name)!r}.")
        if self.learning_rate < 0 or self.weight_decay < 0 or self.grad_clip < 0 or self.warmup_steps < 0:
            raise ValueError("learning_rate, weight_decay, grad_clip and warmup_steps must be >= 0.")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be between 0 and 1; got {self.min_lr_ratio}.")

    @property
    def tokens_per_step(self) -> int:
        """Target tokens in one batch: batch_size * context."""
        return self.batch_size * self.context


@dataclass
class Record:
    """One line of the training history. Step 0 is the untrained model (no train loss)."""

    step: int                       # optimizer updates done
    tokens: int                     # training target tokens seen so far
    train_loss: float | None        # this step's batch loss, nats per token
    val_loss: float | None          # validation loss, nats per token (only at evaluation steps)
    lr: float                       # learning rate of this step's update


@dataclass
class TrainResult:
    model: nn.Module                # the trained model (train mode, float32)
    tokenizer: Tokenizer
    history: list[Record]           # the whole run's, resumed parts included
    samples: list[tuple[int, str]]  # (step, text) of the sampled continuations of this call
    folder: Path                    # the checkpoint folder
    tokens_per_second: float        # training throughput of this call (evaluation and compiling excluded)
    compile_seconds: float | None = None  # --compile: how long the first step took (it compiles); None: eager
    notes: list[str] = field(default_factory=list)   # what carried on and what started afresh

    @property
    def final_val_loss(self) -> float:
        return _last_val(self.history)


# ---- data ----------------------------------------------------------------------------------------

def split_documents(texts: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, validation): the last ``ceil(val_fraction * len(texts))`` documents are validation."""
    if isinstance(texts, str) or len(texts) < 2:
        raise ValueError("give at least two texts (documents): one to train on and one to validate on.")
    n_val = min(max(1, math.ceil(val_fraction * len(texts))), len(texts) - 1)
    return list(texts[:-n_val]), list(texts[-n_val:])


def encode_documents(tok: Tokenizer, texts: list[str]) -> torch.Tensor:
    """One stream of ids, each document followed by the EOS id: (total tokens,) int64."""
    if tok.eos_token_id is None:
        raise ValueError(f"the tokenizer in {tok.folder} has no eos_token; training joins documents with it. "
                         "Set eos_token in its tokenizer_config.json.")
    ids: list[int] = []
    for text in texts:
        ids += tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)


def cut_windows(stream: torch.Tensor, context: int, what: str = "training") -> torch.Tensor:
    """Windows of ``context + 1`` tokens, each starting where the last one's inputs end:
    (n_windows, context + 1). The tail shorter than a window is dropped."""
    if len(stream) < context + 1:
        raise ValueError(
            f"the {what} texts hold {len(stream)} tokens, fewer than one window of context + 1 = "
            f"{context + 1}. Give more text, a smaller context, or (validation) a larger val_fraction."
        )
    return stream.unfold(0, context + 1, context)


def draw_batch(windows: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """``batch_size`` windows drawn at random (with replacement): (batch, context + 1), or
    (batch, 2, context + 1) for windows that carry their own targets."""
    return windows[torch.randint(len(windows), (batch_size,), generator=generator)]


@dataclass
class TrainingData:
    """What the loop trains and validates on, already tokenized.

    Windows are (n, context + 1) token ids, every next token a target (pretraining), or
    (n, 2, context + 1): the ids, then the targets with ``IGNORE`` where nothing is scored
    (fine-tuning scores only the replies, see :mod:`minillm.training.finetune`).
    """

    train: torch.Tensor
    val: torch.Tensor
    fingerprint: str                # of the tokens: a resumed run must see the same ones
    info: dict                      # recorded in trainer_state.json under "data"
    prompts: list[list[int]]        # prompts of the sampled continuations
    documents: list[str] = field(default_factory=list)   # the texts trained on, for the training record


def text_data(tok: Tokenizer, texts: list[str], val_texts: list[str] | None, config: TrainConfig) -> TrainingData:
    """Pretraining data: documents joined with EOS into streams, cut into windows."""
    train_docs, val_docs = _documents(texts, val_texts, config)
    train_stream, val_stream = encode_documents(tok, train_docs), encode_documents(tok, val_docs)
    return TrainingData(
        train=cut_windows(train_stream, config.context), val=validation_windows(val_stream, config),
        fingerprint=token_fingerprint(train_stream, val_stream),
        info=dict(kind="text", train_documents=len(train_docs), val_documents=len(val_docs),
                  train_tokens=len(train_stream), val_tokens=len(val_stream)),
        prompts=[[tok.eos_token_id], encode_documents(tok, val_docs[:1])[:4].tolist()],
        documents=train_docs)


# ---- model and optimizer -------------------------------------------------------------------------

def model_config(config: TrainConfig, vocab_size: int, eos_id: int) -> ModelConfig:
    """The Qwen2 ModelConfig of the model ``config`` describes (vocabulary from the tokenizer)."""
    return ModelConfig(
        model_type="qwen2", vocab_size=vocab_size, hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_key_value_heads,
        head_dim=config.hidden_size // config.num_attention_heads, rope_theta=config.rope_theta,
        rms_norm_eps=1e-6, max_position_embeddings=config.context,
        tie_word_embeddings=config.tie_word_embeddings, attention_bias=True, torch_dtype="float32",
        bos_token_id=eos_id, eos_token_id=eos_id,
    )


def gpt2_config(config: TrainConfig, vocab_size: int, eos_id: int) -> GPT2Config:
    """The GPT2Config of the model ``config`` describes (vocabulary from the tokenizer)."""
    return GPT2Config(
        vocab_size=vocab_size, n_positions=config.n_positions or config.context, n_embd=config.hidden_size,
        n_layer=config.num_hidden_layers, n_head=config.num_attention_heads,
        tie_word_embeddings=config.tie_word_embeddings, torch_dtype="float32", bos_token_id=eos_id, eos_token_id=eos_id,
    )


def init_weights(model: nn.Module, seed: int) -> None:
    """Initialise like Hugging Face: matrices and embeddings ~ N(0, 0.02), biases 0, norm gains 1.
    GPT-2's projections into the residual stream (``c_proj``) get the std divided by
    sqrt(2 * n_layer), as in the GPT-2 paper, so that the stream's variance does not grow with depth."""
    generator = torch.Generator().manual_seed(seed)
    gains = {id(m.weight) for m in model.modules() if isinstance(m, (RMSNorm, LayerNorm))}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if id(param) in gains:
                param.fill_(1.0)
            elif name.endswith("bias"):
                param.zero_()
            else:
                std = INIT_STD
                if isinstance(model, GPT2) and name.endswith("c_proj.weight"):
                    std /= math.sqrt(2 * model.config.n_layer)
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def build_model(config: TrainConfig, vocab_size: int, eos_id: int) -> nn.Module:
    """A freshly initialised model of ``config.architecture``, float32, in train mode."""
    if config.architecture == "mlp":
        model = MLPLanguageModel(vocab_size, config.mlp_window, config.hidden_size, config.intermediate_size)
    elif config.architecture == "gpt2":
        model = GPT2(gpt2_config(config, vocab_size, eos_id))
    else:
        model = Transformer(model_config(config, vocab_size, eos_id))
    init_weights(model, config.seed)
    return model.train()


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices (2-D and up) and none on biases and norm gains."""
    params = list(model.parameters())  # a tied matrix once
    return torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=config.learning_rate, betas=BETAS,
    )


def learning_rate(step: int, config: TrainConfig) -> float:
    """The learning rate of update number ``step`` (1-based): linear warm-up, then cosine decay."""
    peak, warmup = config.learning_rate, config.warmup_steps
    if step <= warmup:
        return peak * step / warmup
    progress = min(1.0, (step - warmup) / max(1, config.steps - warmup))
    low = peak * config.min_lr_ratio
    return low + 0.5 * (peak - low) * (1 + math.cos(math.pi * progress))


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats, in float32) of logits (batch, n, vocab) against the ids they
    predict, targets (batch, n), leaving out the targets equal to ``IGNORE``. A 0-d tensor."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


def next_token_loss(model, windows: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of windows (batch, context + 1): the first ``context``
    tokens go in, and ``logits[:, t]`` is scored against token ``t + 1``. A 0-d tensor.

    Windows (batch, 2, context + 1) carry their targets in row 1: positions whose target is
    ``IGNORE`` are left out of the mean, so their logits get no gradient at all.
    """
    inputs, targets = (windows[:, 0], windows[:, 1]) if windows.dim() == 3 else (windows, windows)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(inputs[:, :-1])                                 # (batch, context, vocab)
    return cross_entropy(logits, targets[:, 1:])


def train_step(model, forward, optimizer: torch.optim.Optimizer, batch: torch.Tensor, lr: float,
               config: TrainConfig) -> float:
    """One update on ``batch`` (batch, context + 1) with learning rate ``lr``; returns the loss (nats).

    ``forward`` computes the logits (``model`` itself, or its compiled version).
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = next_token_loss(forward, batch, config.bf16)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return loss.item()


@torch.no_grad()
def evaluate(model, windows: torch.Tensor, batch_size: int, bf16: bool = False) -> float:
    """Mean next-token cross-entropy (nats per scored token) over all ``windows`` (see next_token_loss)."""
    def scored(batch):   # the number of targets in a batch, or (whole windows) one weight per window
        return int((batch[:, 1, 1:] != IGNORE).sum()) if batch.dim() == 3 else len(batch)

    batches = windows.split(batch_size)
    total = sum(next_token_loss(model, batch, bf16).item() * scored(batch) for batch in batches)
    return total / sum(scored(batch) for batch in batches)


def validation_windows(val_stream: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The fixed validation windows: at most eval_batches * batch_size, spread over the whole set."""
    return spread(cut_windows(val_stream, config.context, "validation"), config.eval_batches * config.batch_size)


def spread(windows: torch.Tensor, wanted: int) -> torch.Tensor:
    """At most ``wanted`` of ``windows``, evenly spaced over all of them."""
    if len(windows) <= wanted:
        return windows
    return windows[torch.linspace(0, len(windows) - 1, wanted).long()]


# ---- checkpoints ---------------------------------------------------------------------------------

def save_checkpoint(folder: Path, model: nn.Module, tok: Tokenizer, optimizer: torch.optim.Optimizer,
                    data_generator: torch.Generator, state: dict) -> Path:
    """Write the model folder plus the trainer state (see the module docstring) into ``folder``;
    returns ``folder``. It writes in place: the training loop gives it a fresh folder beside the
    run's and moves that into place once complete (``minillm.checkpoint.safe_io.build_then_move``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATE_JSON).unlink(missing_ok=True)   # written again last, once the rest is complete
    if isinstance(model, (Transformer, GPT2)):
        (folder / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n", encoding="utf-8")
        save_weights(model, folder)
    else:
        model.save(folder)
    if tok.folder.resolve() != folder.resolve():
        for name in TOKENIZER_FILES:
            shutil.copyfile(tok.folder / name, folder / name)

    tensors = {"rng.torch": torch.get_rng_state(), "rng.data": data_generator.get_state()}
    for name, param in model.named_parameters():
        for key, value in optimizer.state.get(param, {}).items():   # step, exp_avg, exp_avg_sq
            tensors[f"adamw.{key}.{name}"] = value.detach().contiguous()
    save_file(tensors, folder / STATE_TENSORS, metadata={"format": "pt"})
    (folder / STATE_JSON).write_text(_state_json(state), encoding="utf-8")
    return folder


def _state_json(state: dict) -> str:
    """JSON of the trainer state, readable: one line per history record."""
    head = json.dumps({key: value for key, value in state.items() if key != "history"}, indent=1)
    rows = ",\n  ".join(json.dumps(record) for record in state["history"])
    return head[:-2] + f',\n "history": [\n  {rows}\n ]\n}}\n'


def _restore(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, data_generator: torch.Generator):
    """Load weights, AdamW moments and generator states saved by :func:`save_checkpoint`."""
    try:
        tensors = load_file(folder / STATE_TENSORS)
        torch.set_rng_state(tensors.pop("rng.torch"))
        data_generator.set_state(tensors.pop("rng.data"))
        names = dict(model.named_parameters())
        for key, value in tensors.items():
            _, slot, name = key.split(".", 2)
            optimizer.state[names[name]][slot] = value
    except Exception as err:   # safetensors' own error for a damaged file, KeyError/ValueError for foreign tensors
        raise ValueError(f"{folder / STATE_TENSORS} is damaged or belongs to another run ({type(err).__name__}: "
                         f"{err}), so the run cannot be resumed exactly. Train a new run instead.") from err


def _load_trained(folder: Path, config: TrainConfig) -> nn.Module:
    """The model saved in ``folder``, as trainable float32 parameters."""
    if config.architecture == "mlp":
        return MLPLanguageModel.load(folder).train()
    return load_model(folder, dtype=torch.float32).requires_grad_(True).train()


# ---- the loop ------------------------------------------------------------------------------------

def token_fingerprint(*streams: torch.Tensor) -> str:
    """A short hash of token tensors: a resumed run checks that it sees the same tokens."""
    digest = hashlib.sha256()
    for stream in streams:
        digest.update(stream.numpy().tobytes())
    return digest.hexdigest()[:16]


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
            raise ValueError("give either init (the tokenizer comes with the model) or tokenizer, not both.")
        model, tok = load_initial(init, out)
        config = config_for(model, config)
        notes = [(f"continued pretraining from {init}: its weights, tokenizer and shape carry on (shape options "
                  "are ignored); the optimizer (fresh AdamW moments), the learning-rate schedule (warm-up "
                  f"{config.warmup_steps} steps, cosine over {config.steps}), the step count and the batch order "
                  "start afresh.")]
        return run_loop(text_data(tok, texts, val_texts, config), config, out, tok, until, progress,
                        init=model, provenance=dict(init=str(init)), notes=notes)
    train_docs, _ = _documents(texts, val_texts, config)
    if tokenizer is None:
        tok = load_tokenizer(train_tokenizer(train_docs, config.vocab_size, out))
    else:
        tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    return run_loop(text_data(tok, texts, val_texts, config), config, out, tok, until, progress)


def load_initial(source: str | Path, out: Path) -> tuple[nn.Module, Tokenizer]:
    """The model (trainable, float32) and tokenizer to start continued training from."""
    folder = Path(source)
    if folder.is_dir() and out.exists() and folder.resolve() == out.resolve():
        raise ValueError(f"--out {out} is the folder the weights come from; write the new model to another folder "
                         "(to carry on a run in place, use --resume).")
    if folder.is_dir() and (folder / "mlp_config.json").is_file():
        return MLPLanguageModel.load(folder).train(), load_tokenizer(source)
    model, tok = load_model_and_tokenizer(source, dtype=torch.float32)
    return model.requires_grad_(True).train(), tok


def config_for(model: nn.Module, config: TrainConfig) -> TrainConfig:
    """``config`` with its model fields (architecture, vocabulary, shape) taken from ``model``."""
    if isinstance(model, MLPLanguageModel):
        return replace(config, architecture="mlp", vocab_size=model.vocab_size, mlp_window=model.window,
                       hidden_size=model.embed_dim, intermediate_size=model.hidden)
    c = model.config
    if config.context > c.max_position_embeddings:
        raise ValueError(f"context {config.context} is longer than the {c.max_position_embeddings} positions the "
                         "model was built for (max_position_embeddings); choose --context "
                         f"{c.max_position_embeddings} or less.")
    if isinstance(model, GPT2):
        return replace(config, architecture="gpt2", vocab_size=c.vocab_size, hidden_size=c.n_embd,
                       num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, n_positions=c.n_positions,
                       tie_word_embeddings=c.tie_word_embeddings)
    return replace(config, architecture="transformer", vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                   num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                   num_key_value_heads=c.num_key_value_heads, intermediate_size=c.intermediate_size,
                   tie_word_embeddings=c.tie_word_embeddings, rope_theta=c.rope_theta)


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
        raise ValueError(f"{out} holds a fine-tuning run; carry it on with `minillm finetune --resume --out {out}` "
                         "(minillm.training.finetune.resume_finetune).")
    tok = load_tokenizer(out)
    data = text_data(tok, texts, val_texts, config)
    return run_loop(data, config, out, tok, until, progress, state=state, notes=notes)


def load_state(out: Path, steps: int | None = None, until: int | None = None) -> tuple[dict, TrainConfig, list[str]]:
    """(trainer state, its config planned for ``steps``, notes) of the run in ``out``, ready to go on."""
    if not (out / STATE_JSON).is_file():
        raise ValueError(f"{out} holds no {STATE_JSON}: nothing to resume. Start a run with train() "
                         "(`minillm train` without --resume).")
    if not (out / STATE_TENSORS).is_file():
        raise ValueError(f"{out} holds no {STATE_TENSORS} (the optimizer's state), so its run cannot be resumed "
                         "exactly. Shipped models keep only their history; to train one further, start a new run "
                         f"from its weights: `minillm train --init {out} --out NEW_FOLDER`.")
    try:
        state = json.loads((out / STATE_JSON).read_text(encoding="utf-8"))
        config = TrainConfig(**state["config"])
        done, planned = state["step"], config.steps
    except (ValueError, KeyError, TypeError) as err:   # not JSON or not UTF-8, a missing key, a foreign setting
        raise ValueError(f"{out / STATE_JSON} is damaged ({type(err).__name__}: {err}); the run cannot be "
                         "resumed. Train a new run instead.") from err
    if steps is None:
        if done >= planned:
            again = (f"`minillm finetune {out} --data FILE --out NEW_FOLDER`" if state["data"].get("kind") == "chat"
                     else f"`minillm train --init {out} --out NEW_FOLDER`")
            raise ValueError(f"the run in {out} has finished its {planned} planned steps. To train it further, give "
                             f"the new total: --steps N (N > {done}; the learning-rate schedule is planned again for "
                             f"N steps), or start a new run from its weights: {again}.")
        steps = planned
    if not isinstance(steps, int) or steps <= done:
        raise ValueError(f"steps must be more than the {done} steps the run in {out} has taken; got {steps!r}.")
    if until is not None and isinstance(until, int) and until <= done:
        raise ValueError(f"until={until}: the run in {out} is already at step {done}; give a later step.")
    notes = [f"resuming {out} at step {done}: weights, AdamW moments, step count and batch order carry on."]
    if steps != planned:
        config = replace(config, steps=steps)
        old = learning_rate(done, replace(config, steps=planned)) if done else 0.0
        notes.append(f"the plan grows from {planned} to {steps} steps: the learning-rate schedule (warm-up "
                     f"{config.warmup_steps}, cosine down to {config.min_lr_ratio:g} of the peak) is planned again "
                     f"for {steps} steps; step {done} ran at lr {old:.3g}, step {done + 1} runs at "
                     f"{learning_rate(done + 1, config):.3g}, as in a run planned for {steps} steps from the start.")
    return state, config, notes


def _documents(texts: list[str], val_texts: list[str] | None, config: TrainConfig) -> tuple[list[str], list[str]]:
    """(training, validation) documents: ``val_texts`` if given, else the last val_fraction of ``texts``."""
    if val_texts is None:
        return split_documents(texts, config.val_fraction)
    if isinstance(texts, str) or isinstance(val_texts, str) or not texts or not val_texts:
        raise ValueError("texts and val_texts must be non-empty lists of documents.")
    return list(texts), list(val_texts)


def run_loop(data: TrainingData, config: TrainConfig, out: Path, tok: Tokenizer, until: int | None, progress: bool,
             state: dict | None = None, init: nn.Module | None = None, provenance: dict | None = None,
             notes: list[str] | None = None) -> TrainResult:
    """The training loop on ``data``: from scratch, from ``init``'s weights, or from a saved ``state``."""
    if until is not None and (not isinstance(until, int) or until < 1):
        raise ValueError(f"until must be a step number >= 1 (or None to run all {config.steps} steps); got {until!r}.")
    train_windows, val_windows, eos = data.train, data.val, tok.eos_token_id
    last = config.steps if until is None else min(until, config.steps)

    data_generator = torch.Generator().manual_seed(config.seed)
    if state is not None:  # resuming
        if state["data"]["fingerprint"] != data.fingerprint:
            again = (f"minillm finetune {out} --data NEW.jsonl --out NEW_FOLDER" if data.info["kind"] == "chat"
                     else f"minillm train --init {out} --data NEW.txt --out NEW_FOLDER")
            raise ValueError(f"the texts differ from those the run in {out} was trained on (token fingerprint "
                             f"{data.fingerprint} != {state['data']['fingerprint']}); resume with the same texts. "
                             f"To train on new texts, start a new run from these weights: `{again}`.")
        model = _load_trained(out, config)
        optimizer = make_optimizer(model, config)
        _restore(out, model, optimizer, data_generator)
        history = [Record(**r) for r in state["history"]]
        step = state["step"]
        provenance = {key: state[key] for key in ("init", "base") if key in state}
    else:
        torch.manual_seed(config.seed)
        model = build_model(config, tok.vocab_size, eos) if init is None else init
        optimizer = make_optimizer(model, config)
        history = [Record(0, 0, None, evaluate(model, val_windows, config.batch_size, config.bf16), 0.0)]
        step = 0

    forward = _compile(model) if config.compile else model
    samples: list[tuple[int, str]] = []
    train_seconds, train_tokens, compile_seconds = 0.0, 0, None

    def checkpoint() -> None:
        # Built aside and moved into place whole: a save that fails or is killed half-way leaves
        # the previous checkpoint as it was. Files of out that a save does not write carry over.
        with build_then_move(out, carry_over=True) as partial:
            save_checkpoint(partial, model, tok, optimizer, data_generator, dict(
                step=step, tokens=step * config.tokens_per_step, config=asdict(config), **(provenance or {}),
                data=dict(fingerprint=data.fingerprint, **data.info), history=[asdict(r) for r in history]))
            write_run_record(partial, data.documents, data.info["kind"], (provenance or {}).get("init")
                             or (provenance or {}).get("base"))

    bar = progress_bar(total=config.steps, initial=step, desc="training", unit="step", enabled=progress)
    while step < last:
        batch = draw_batch(train_windows, config.batch_size, data_generator)
        lr = learning_rate(step + 1, config)
        start = time.perf_counter()
        try:
            loss = train_step(model, forward, optimizer, batch, lr, config)
        except Exception as err:  # torch.compile fails in many ways (no compiler, unsupported op...)
            if forward is model:
                raise
            print_line(f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                       "training without it.")
            forward = model
            loss = train_step(model, forward, optimizer, batch, lr, config)
        if forward is not model and compile_seconds is None:
            compile_seconds = time.perf_counter() - start     # the first compiled step compiles
        else:
            train_seconds += time.perf_counter() - start
            train_tokens += config.tokens_per_step
        step += 1
        val = None
        if step % config.eval_every == 0 or step in (config.steps, last):   # and where the run stops
            val = evaluate(model, val_windows, config.batch_size, config.bf16)
        history.append(Record(step, step * config.tokens_per_step, loss, val, lr))
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", val=f"{_last_val(history):.3f}",
                        tok_s=f"{train_tokens / train_seconds:,.0f}" if train_seconds else "-")
        if config.sample_every and step % config.sample_every == 0:
            for i, prompt in enumerate(data.prompts):
                text = tok.decode(prompt + _sample(model, prompt, 40, config.seed + i, eos))
                samples.append((step, text))
                if progress:
                    print_line(f"step {step} sample: {text!r}")
        if (config.save_every and step % config.save_every == 0) or step == last:
            checkpoint()
    bar.close()
    rate = train_tokens / train_seconds if train_seconds else 0.0
    return TrainResult(model, tok, history, samples, out, rate, compile_seconds, list(notes or []) + warmup_note(config))


def warmup_note(config: TrainConfig) -> list[str]:
    """A note when the warm-up is longer than the run: the learning rate then never reaches its peak."""
    if config.warmup_steps <= config.steps:
        return []
    reached = learning_rate(config.steps, config)
    return [f"the warm-up ({config.warmup_steps} steps) is longer than the run ({config.steps} steps): the learning "
            f"rate climbed to {reached:.3g}, {reached / config.learning_rate:.0%} of its peak {config.learning_rate:g}, "
            f"and never decayed. Give --warmup {max(1, config.steps // 10)} (a tenth of the steps, say) for the "
            "whole schedule."]


def _last_val(history: list[Record]) -> float:
    """The most recent validation loss in ``history`` (nats)."""
    return next(r.val_loss for r in reversed(history) if r.val_loss is not None)


def _compile(model: nn.Module):
    """``torch.compile(model)``; compilation happens (and may fail) at the first call."""
    try:
        return torch.compile(model)
    except Exception as err:
        print_line(f"torch.compile is not available ({err}); training without it.")
        return model
