"""Checkpoints of a training run: what a run writes, and the two ways a new run reads one.

A checkpoint is an ordinary Hugging Face folder (``config.json``, ``model.safetensors``,
``tokenizer.json``, ``tokenizer_config.json``) that :func:`minillm.load_model` and
``transformers`` load, plus what is needed to carry on training exactly where it stopped:
``trainer_state.safetensors`` (AdamW's two moment estimates per parameter name, the random
number generators' states) and ``trainer_state.json`` (step, settings, loss history). No
pickle anywhere.

Reading one back:

* :func:`load_state` and :func:`restore`: the whole run (settings, history, optimizer,
  generators), to resume it exactly;
* :func:`load_initial` and :func:`config_for`: only the weights and tokenizer, to start a new
  run from a trained model (continued pretraining, fine-tuning).

Errors name the library's parameters (``steps=``, ``init=``, ``out=``, ``resume()``); the
command line translates them into its flags.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from minillm.checkpoint.loading import load_model, load_model_and_tokenizer
from minillm.checkpoint.tokenizer import Tokenizer, load_tokenizer
from minillm.checkpoint.weights import save_weights
from minillm.errors import InputError
from minillm.models.gpt2 import GPT2
from minillm.models.mlp_lm import MLPLanguageModel
from minillm.models.qwen2 import Transformer
from minillm.training.config import TrainConfig
from minillm.training.step import learning_rate

STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


# ---- writing ---------------------------------------------------------------------------------------

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


# ---- resuming a run ----------------------------------------------------------------------------------

def load_state(out: Path, steps: int | None = None, until: int | None = None) -> tuple[dict, TrainConfig, list[str]]:
    """(trainer state, its config planned for ``steps``, notes) of the run in ``out``, ready to go on.

    ``steps``: plan the run for this many steps instead of its own (more than it has taken).
    Raises ValueError when ``out`` holds no resumable run, a damaged state, or a finished run
    and no new ``steps``."""
    if not (out / STATE_JSON).is_file():
        raise InputError(f"{out} holds no {STATE_JSON}: nothing to resume. Start a new run with train().")
    if not (out / STATE_TENSORS).is_file():
        raise InputError(f"{out} holds no {STATE_TENSORS} (the optimizer's state), so its run cannot be resumed "
                         "exactly. Shipped models keep only their history; to train one further, start a new run "
                         f"from its weights: train() with init={out}, out=NEW_FOLDER.")
    try:
        state = json.loads((out / STATE_JSON).read_text(encoding="utf-8"))
        config = TrainConfig(**state["config"])
        done, planned = state["step"], config.steps
    except (ValueError, KeyError, TypeError) as err:   # not JSON or not UTF-8, a missing key, a foreign setting
        raise InputError(f"{out / STATE_JSON} is damaged ({type(err).__name__}: {err}); the run cannot be "
                         "resumed. Train a new run instead.") from err
    if steps is None:
        if done >= planned:
            raise InputError(f"the run in {out} has finished its {planned} planned steps. To train it further, give "
                             f"the new total: steps=N (N > {done}; the learning-rate schedule is planned again for "
                             f"N steps), or start a new run from its weights: {new_run_from(out, state)}.")
        steps = planned
    if not isinstance(steps, int) or steps <= done:
        raise InputError(f"steps={steps!r}: give more than the {done} steps the run in {out} has taken.")
    if until is not None and isinstance(until, int) and until <= done:
        raise InputError(f"until={until}: the run in {out} is already at step {done}; give a later step.")
    notes = [f"resuming {out} at step {done}: weights, AdamW moments, step count and batch order carry on."]
    if steps != planned:
        config = replace(config, steps=steps)
        old = learning_rate(done, replace(config, steps=planned)) if done else 0.0
        notes.append(f"the plan grows from {planned} to {steps} steps: the learning-rate schedule (warm-up "
                     f"{config.warmup_steps}, cosine down to {config.min_lr_ratio:g} of the peak) is planned again "
                     f"for {steps} steps; step {done} ran at lr {old:.3g}, step {done + 1} runs at "
                     f"{learning_rate(done + 1, config):.3g}, as in a run planned for {steps} steps from the start.")
    return state, config, notes


def new_run_from(out: Path, state: dict) -> str:
    """How to start a new run from the weights of the run in ``out`` (its state ``state``), in words
    that name the library's parameters: fine-tuning for a chat run, continued pretraining for the rest."""
    if state.get("data", {}).get("kind") == "chat":
        return f"finetune() with base={out}, out=NEW_FOLDER"
    return f"train() with init={out}, out=NEW_FOLDER"


def restore(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, data_generator: torch.Generator):
    """Load AdamW's moments and the generator states saved by :func:`save_checkpoint` into
    ``optimizer``, torch's global generator and ``data_generator`` (the weights are ``model``'s already)."""
    try:
        tensors = load_file(folder / STATE_TENSORS)
        torch.set_rng_state(tensors.pop("rng.torch"))
        data_generator.set_state(tensors.pop("rng.data"))
        names = dict(model.named_parameters())
        for key, value in tensors.items():
            _, slot, name = key.split(".", 2)
            optimizer.state[names[name]][slot] = value
    except Exception as err:   # safetensors' own error for a damaged file, KeyError/ValueError for foreign tensors
        raise InputError(f"{folder / STATE_TENSORS} is damaged or belongs to another run ({type(err).__name__}: "
                         f"{err}), so the run cannot be resumed exactly. Train a new run instead.") from err


def load_trained(folder: Path, config: TrainConfig) -> nn.Module:
    """The model saved in ``folder``, as trainable float32 parameters."""
    if config.architecture == "mlp":
        return MLPLanguageModel.load(folder).train()
    return load_model(folder, dtype=torch.float32).requires_grad_(True).train()


# ---- starting a new run from a trained model ----------------------------------------------------------

def load_initial(source: str | Path, out: Path) -> tuple[nn.Module, Tokenizer]:
    """The model (trainable, float32) and tokenizer to start a new run from: a folder or hub id.
    Raises ValueError when ``source`` is the run's own folder ``out``."""
    folder = Path(source)
    if folder.is_dir() and out.exists() and folder.resolve() == out.resolve():
        raise InputError(f"init={source} and out={out} are the same folder: write the new model to another folder "
                         "(to carry on a run in place, use resume()).")
    if folder.is_dir() and (folder / "mlp_config.json").is_file():
        return MLPLanguageModel.load(folder).train(), load_tokenizer(source)
    model, tok = load_model_and_tokenizer(source, dtype=torch.float32)
    return model.requires_grad_(True).train(), tok


def config_for(model: nn.Module, config: TrainConfig) -> TrainConfig:
    """``config`` with its model fields (architecture, vocabulary, shape) taken from ``model``.
    Raises ValueError when ``config.context`` is longer than the model's positions."""
    if isinstance(model, MLPLanguageModel):
        return replace(config, architecture="mlp", vocab_size=model.vocab_size, mlp_window=model.window,
                       hidden_size=model.embed_dim, intermediate_size=model.hidden)
    c = model.config
    if config.context > c.max_position_embeddings:
        raise InputError(f"context={config.context} is longer than the {c.max_position_embeddings} positions the "
                         "model was built for (max_position_embeddings); choose "
                         f"context={c.max_position_embeddings} or less.")
    if isinstance(model, GPT2):
        return replace(config, architecture="gpt2", vocab_size=c.vocab_size, hidden_size=c.n_embd,
                       num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, n_positions=c.n_positions,
                       tie_word_embeddings=c.tie_word_embeddings)
    return replace(config, architecture="transformer", vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                   num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                   num_key_value_heads=c.num_key_value_heads, intermediate_size=c.intermediate_size,
                   tie_word_embeddings=c.tie_word_embeddings, rope_theta=c.rope_theta)
