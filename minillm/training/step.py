"""One optimisation step, and the loss it minimises.

* **The loss** is the cross-entropy between the predicted distribution and the real next
  token, in nats: a model that guesses uniformly scores ``ln(vocab_size)``; one that knows
  only how often each token occurs scores the *unigram entropy*; lower than that means it uses
  the context.
* **AdamW**: Adam's per-parameter step sizes plus weight decay on the weight matrices (not on
  biases and norm gains, which are 1-D).
* **The learning rate** rises linearly for ``warmup_steps`` (early gradients are large and
  noisy), then follows a cosine down to ``min_lr_ratio`` of its peak.
* **Clipping**: gradients whose overall norm exceeds ``grad_clip`` are scaled down, so one bad
  batch cannot throw the weights far.

With ``bf16`` the matrix products run in bfloat16 under ``torch.autocast`` (weights, gradients
and optimizer state stay float32).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from minillm.training.config import TrainConfig
from minillm.training.windows import IGNORE

BETAS = (0.9, 0.95)          # AdamW's moment decay rates, as used for most LLMs


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
