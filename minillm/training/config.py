"""What decides a training run (:class:`TrainConfig`) and what it records at each step (:class:`Record`).

Every setting is a dataclass field, checked when the config is built: a bad value raises
ValueError naming the field. The run's trainer_state.json stores the config as a dict, so a
resumed run is rebuilt from exactly these fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from minillm.errors import InputError

ARCHITECTURES = ("transformer", "mlp", "gpt2")


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
            raise InputError(f"architecture must be one of {ARCHITECTURES}; got {self.architecture!r}.")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                     "intermediate_size", "context", "mlp_window", "steps", "batch_size", "eval_every",
                     "eval_batches"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InputError(f"{name} must be a whole number >= 1; got {getattr(self, name)!r}.")
        if self.architecture in ("transformer", "gpt2"):
            if self.hidden_size % self.num_attention_heads:
                raise InputError(f"hidden_size={self.hidden_size} must be a multiple of "
                                 f"num_attention_heads={self.num_attention_heads}.")
        if self.architecture == "transformer":
            if self.num_attention_heads % self.num_key_value_heads:
                raise InputError(f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                                 f"num_key_value_heads={self.num_key_value_heads}.")
            if (self.hidden_size // self.num_attention_heads) % 2:
                raise InputError(f"head width hidden_size / num_attention_heads = "
                                 f"{self.hidden_size // self.num_attention_heads} must be even (rotary embeddings).")
        if self.architecture == "gpt2" and self.n_positions and self.n_positions < self.context:
            raise InputError(f"n_positions={self.n_positions} is smaller than context={self.context}: "
                             "the position table needs a row for every position of a window.")
        if not 0 < self.val_fraction < 1:
            raise InputError(f"val_fraction must be between 0 and 1; got {self.val_fraction}.")
        for name in ("learning_rate", "min_lr_ratio", "weight_decay", "grad_clip", "val_fraction"):
            if not math.isfinite(getattr(self, name)):
                raise InputError(f"{name} must be a finite number; got {getattr(self, name)!r}.")
        if self.learning_rate < 0 or self.weight_decay < 0 or self.grad_clip < 0 or self.warmup_steps < 0:
            raise InputError("learning_rate, weight_decay, grad_clip and warmup_steps must be >= 0.")
        if not 0 <= self.min_lr_ratio <= 1:
            raise InputError(f"min_lr_ratio must be between 0 and 1; got {self.min_lr_ratio}.")

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
