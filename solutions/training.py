"""Unit 7: training a (tiny) language model.

A language model is trained to predict every next token of its training text. The loss
is the cross-entropy between the model's predicted distribution at position ``i`` and
the token actually found at position ``i + 1``, averaged over all positions, in nats.
One training step: forget the old gradients, compute the loss, backpropagate, optionally
clip the gradient norm, let the optimizer (AdamW) update the weights. Long runs save
checkpoints, so that a crash or a time limit does not lose the work: a checkpoint holds
the weights AND the optimizer's state (AdamW keeps two running averages per weight).

The ``model`` in this unit is any ``torch.nn.Module`` that maps token ids
(batch, seq) int64 to logits (batch, seq, vocab), e.g. a tiny ``minillm.models.qwen2.Transformer``.
Write plain PyTorch; files are written with ``safetensors`` and ``json`` only, never with
pickle (``torch.save`` / ``torch.load`` pickle, and loading a pickle can run arbitrary code).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

MODEL_FILE = "model.safetensors"          # the weights, by parameter name
OPTIMIZER_FILE = "optimizer.safetensors"  # the optimizer's state tensors, by parameter name
STATE_FILE = "training_state.json"        # step, optimizer hyperparameters, anything else


def next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of a batch.

    ``logits[b, i]`` is the model's prediction for the token AFTER ``input_ids[b, i]``,
    that is ``input_ids[b, i + 1]``. So the predictions at positions 0 .. seq-2 are
    compared with the targets at positions 1 .. seq-1; the last position has no target.

    Args:
        logits: (batch, seq, vocab) float, raw scores (not probabilities).
        input_ids: (batch, seq) int64, the tokens the logits were computed from.
    Returns:
        a 0-dim float tensor (keep it a tensor: ``.backward()`` is called on it): the mean
        over all batch * (seq - 1) predicted positions of ``-log p(target)``.

    Pitfall: forgetting the shift (comparing ``logits[:, i]`` with ``input_ids[:, i]``)
    trains the model to copy its input. Hint: ``F.cross_entropy`` wants (N, vocab) logits
    and (N,) targets: slice, then ``.reshape``.
    """
    # BEGIN SOLUTION
    vocab = logits.shape[-1]
    predictions = logits[:, :-1].reshape(-1, vocab)     # (batch * (seq-1), vocab)
    targets = input_ids[:, 1:].reshape(-1)              # (batch * (seq-1),)
    return F.cross_entropy(predictions.float(), targets)
    # END SOLUTION


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor,
               grad_clip: float | None = None) -> float:
    """One optimisation step on ``batch``; returns the loss BEFORE the update, as a float.

    1. clear the gradients left over from the previous step;
    2. logits = model(batch); loss = next_token_loss(logits, batch);
    3. backpropagate;
    4. if ``grad_clip`` is not None, scale the gradients so that their global L2 norm
       (over all parameters together) is at most ``grad_clip``;
    5. let the optimizer update the weights.

    Args:
        model: maps (batch, seq) int64 ids to (batch, seq, vocab) logits.
        optimizer: e.g. ``torch.optim.AdamW(model.parameters(), lr=...)``.
        batch: (batch, seq) int64 token ids.
        grad_clip: max global gradient norm, or None for no clipping.
    Returns:
        float, the loss in nats.

    Pitfall: PyTorch ADDS new gradients to ``.grad``: without step 1 every step also uses
    all earlier gradients. Hint: ``optimizer.zero_grad()``,
    ``torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)``; return ``loss.item()``.
    """
    # BEGIN SOLUTION
    optimizer.zero_grad()
    loss = next_token_loss(model(batch), batch)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()
    # END SOLUTION


def evaluate(model: torch.nn.Module, ids: torch.Tensor, seq_len: int) -> float:
    """Mean next-token loss (nats) of ``model`` on a held-out token stream, without training.

    Cut ``ids`` into consecutive, non-overlapping windows of ``seq_len`` tokens (drop the
    incomplete remainder at the end), stack them into one (n_windows, seq_len) batch and
    return next_token_loss of the model's logits on it.

    Args:
        model: maps (batch, seq) int64 ids to (batch, seq, vocab) logits.
        ids: (n,) int64 token ids, n >= seq_len.
        seq_len: int >= 2, window length.
    Returns:
        float, loss in nats.

    Pitfall: evaluation must not build an autograd graph (wasted memory) nor touch the
    weights: wrap it in ``torch.no_grad()``.
    """
    # BEGIN SOLUTION
    n_windows = len(ids) // seq_len
    windows = ids[: n_windows * seq_len].reshape(n_windows, seq_len)
    with torch.no_grad():
        return next_token_loss(model(windows), windows).item()
    # END SOLUTION


def train(model: torch.nn.Module, train_ids: torch.Tensor, val_ids: torch.Tensor, steps: int,
          batch_size: int, lr: float, seed: int, seq_len: int = 32, eval_every: int = 10,
          grad_clip: float | None = 1.0) -> dict:
    """A short training run with AdamW on random windows of ``train_ids``.

    Create ``torch.optim.AdamW(model.parameters(), lr=lr)`` and a random generator
    ``torch.Generator().manual_seed(seed)``. For each of the ``steps`` steps, draw
    ``batch_size`` random start positions in ``train_ids`` (with that generator), stack
    the windows ``train_ids[s : s + seq_len]`` into a (batch_size, seq_len) batch and call
    :func:`train_step`. Measure the validation loss with :func:`evaluate` (windows of
    ``seq_len`` tokens of ``val_ids``) BEFORE the first step, after every ``eval_every``
    steps, and after the last step.

    Args:
        model: maps (batch, seq) int64 ids to (batch, seq, vocab) logits; trained in place.
        train_ids, val_ids: (n,) int64 token streams (val_ids: at least seq_len tokens).
        steps, batch_size: ints >= 1.  lr: learning rate.  seed: int, makes the run repeatable.
        seq_len: window length.  eval_every: steps between validation measurements.
        grad_clip: passed to train_step.
    Returns:
        dict with
          "train_loss": list of ``steps`` floats, the loss of each step;
          "val_step": list of ints, the steps after which val was measured: 0, eval_every, ..., steps;
          "val_loss": list of floats, the validation losses at those steps (same length).

    Pitfall: watch the VALIDATION loss: the training loss of random batches is noisy, and
    a model can memorise its training text. Hint: ``torch.randint(high, (batch_size,), generator=g)``.
    """
    # BEGIN SOLUTION
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = {"train_loss": [], "val_step": [0], "val_loss": [evaluate(model, val_ids, seq_len)]}
    for step in range(1, steps + 1):
        starts = torch.randint(len(train_ids) - seq_len + 1, (batch_size,), generator=generator)
        batch = torch.stack([train_ids[s : s + seq_len] for s in starts.tolist()])
        history["train_loss"].append(train_step(model, optimizer, batch, grad_clip))
        if step % eval_every == 0 or step == steps:
            history["val_step"].append(step)
            history["val_loss"].append(evaluate(model, val_ids, seq_len))
    return history
    # END SOLUTION


def save_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int, folder) -> None:
    """Save everything needed to resume training in ``folder`` (created if missing).

    Write three files (the names are the constants at the top of this module):
      * ``MODEL_FILE``: the model's ``state_dict()`` with ``safetensors.torch.save_file``;
      * ``OPTIMIZER_FILE``: the optimizer's state TENSORS (for AdamW, per parameter:
        ``step``, ``exp_avg``, ``exp_avg_sq``), each under a key made of the PARAMETER NAME
        and the state name, e.g. ``"layers.0.mlp.up_proj.weight/exp_avg"``;
      * ``STATE_FILE``: JSON with ``step`` and the optimizer's ``param_groups``
        hyperparameters (lr, betas, eps, weight_decay, ...) together with the parameter
        names of each group (instead of the integer indices the optimizer uses).

    Args:
        model: the nn.Module being trained.
        optimizer: its optimizer (every parameter of the optimizer belongs to ``model``).
        step: int, number of steps done so far.
        folder: str or Path.
    Returns:
        None.

    Pitfalls: no pickle (``torch.save``): a pickle can run code when loaded. safetensors
    refuses two names for one block of memory, which is what a model with TIED input and
    output embeddings has: save copies (``t.detach().clone()``). The optimizer's
    ``state_dict()`` numbers parameters 0, 1, 2 ...; ``dict(model.named_parameters())``
    gives the names, ``optimizer.state[p]`` the state of parameter ``p``.
    """
    # BEGIN SOLUTION
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: t.detach().cpu().clone().contiguous() for name, t in model.state_dict().items()},
              str(folder / MODEL_FILE))

    names = {p: name for name, p in model.named_parameters()}
    tensors, groups = {}, []
    for group in optimizer.param_groups:
        group_names = [names[p] for p in group["params"]]
        for p, name in zip(group["params"], group_names):
            for key, value in optimizer.state.get(p, {}).items():
                tensors[f"{name}/{key}"] = torch.as_tensor(value).detach().cpu().clone().contiguous()
        hyper = {key: value for key, value in group.items() if key != "params"}
        groups.append({"params": group_names, "hyperparameters": hyper})
    save_file(tensors, str(folder / OPTIMIZER_FILE))
    state = {"step": int(step), "param_groups": groups}
    (folder / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
    # END SOLUTION


def load_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, folder) -> int:
    """Restore what :func:`save_checkpoint` wrote into ``model`` and ``optimizer``; return the step.

    ``model`` and ``optimizer`` are freshly built the same way as the saved ones (same
    architecture, same parameter order); their current values are overwritten: the weights,
    the optimizer's state tensors (matched to parameters BY NAME) and its hyperparameters.
    After loading, training continues exactly as if it had never stopped.

    Args:
        model, optimizer: as above.
        folder: str or Path holding the three files.
    Returns:
        int, the step saved.

    Pitfall: restoring only the weights is NOT a resume: AdamW would restart its running
    averages (and its bias correction) from zero, and the next steps differ. Hint: build
    ``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}`` and call
    ``optimizer.load_state_dict``; JSON turns the tuple ``betas`` into a list: turn it back.
    """
    # BEGIN SOLUTION
    folder = Path(folder)
    model.load_state_dict(load_file(str(folder / MODEL_FILE)))
    saved = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    tensors = load_file(str(folder / OPTIMIZER_FILE))

    names = {p: name for name, p in model.named_parameters()}
    state, groups, index = {}, [], 0
    for group, saved_group in zip(optimizer.param_groups, saved["param_groups"]):
        indices = []
        for p in group["params"]:
            name = names[p]
            prefix = name + "/"
            entries = {key[len(prefix):]: t for key, t in tensors.items() if key.startswith(prefix)}
            if entries:
                state[index] = entries
            indices.append(index)
            index += 1
        hyper = dict(saved_group["hyperparameters"])
        if "betas" in hyper:
            hyper["betas"] = tuple(hyper["betas"])
        groups.append({**hyper, "params": indices})
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return int(saved["step"])
    # END SOLUTION
