# Notebook source of solutions/training.ipynb and exercises/training.ipynb (run `minillm make-exercises`).
# %% [markdown]
# # Unit 7: training a tiny language model
#
# A language model learns one thing: to predict the next token of its training text. In this notebook
# you write the loss, one optimisation step, a training run with its validation loss, and checkpoints
# that let a run stop and carry on exactly where it was. Then you measure a pretrained model's loss on
# text it was trained on and on text it never saw.
#
# Fill in each function in the cell under its question (replace the line
# `raise NotImplementedError(...)`) and run the cells in order. `pytest -m training` grades the
# functions; you can hand in this notebook as it is.

# %%
import math
import os
import tempfile

import matplotlib_inline.backend_inline  # noqa: F401 (Jupyter shows matplotlib figures as images)
import torch
from matplotlib.figure import Figure

from minillm import load_model, load_tokenizer
from minillm.data import bundled_texts
from minillm.course.family import FAMILY_DIR, held_out_stories
from minillm.training.config import TrainConfig
from minillm.training.new_model import build_model

# QUICK (set by CI with MINILLM_NOTEBOOK_QUICK=1): fewer training steps. Set it to False for the full run.
QUICK = os.environ.get("MINILLM_NOTEBOOK_QUICK") == "1"
# The pretrained model of question 4: the kit's tiny-m runs offline; with network, put a hub id here
# instead, e.g. "Qwen/Qwen2.5-0.5B" (it did not train on the kit's stories, so both sets are unseen).
PRETRAINED = FAMILY_DIR / "tiny-m"

# %% [markdown]
# ## The data and the model
#
# The stories bundled with the kit, tokenized with the tiny models' 1,024-token vocabulary and joined
# into one stream of ids, an end-of-text token after each story. The first 40 stories are for
# training, the next 8 for validation. The model is a Qwen2-style transformer with 2 layers of width
# 32, initialised at random.

# %%
tok = load_tokenizer(FAMILY_DIR / "tiny-m")
eos = tok.eos_token_id
stories = bundled_texts("stories")


def stream(texts: list[str], tokenizer=tok) -> torch.Tensor:
    """The texts' token ids, one after the other, each followed by the end-of-text id: (n,)."""
    return torch.tensor([i for text in texts for i in tokenizer.encode(text) + [tokenizer.eos_token_id]])


train_ids, val_ids = stream(stories[:40]), stream(stories[40:48])
config = TrainConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=64, context=64)
model = build_model(config, tok.vocab_size, eos)
print(f"{len(train_ids):,} training tokens, {len(val_ids):,} validation tokens; "
      f"model of {sum(p.numel() for p in model.parameters()):,} parameters")

# %% [markdown]
# ## Question 1: the loss
#
# Write `next_token_loss`: the cross-entropy of the logits at position i against the token at
# position i + 1. **What loss does the untrained model have, and why that number?**

# %% module: imports MODEL_FILE OPTIMIZER_FILE STATE_FILE next_token_loss

# %%
first_batch = train_ids[: 4 * 32].reshape(4, 32)
initial_loss = next_token_loss(model(first_batch), first_batch).item()
print(f"untrained loss {initial_loss:.3f} nats; ln(vocabulary) = {math.log(tok.vocab_size):.3f}")

# %% [markdown] answer
# About ln(1024) = 6.93 nats: a model initialised with small random weights gives almost the same
# logit to every token, so each next token gets probability about 1/1024, and -log(1/1024) = 6.93. A
# loss above that would be worse than guessing uniformly.

# %% [markdown]
# ## Question 2: training
#
# Write `train_step` (zero the gradients, loss, backward, clip, step), `evaluate` (the loss on
# held-out windows, without autograd) and `train` (a seeded AdamW run that measures the validation loss
# before the first step and every `eval_every` steps).

# %% module: train_step evaluate train

# %%
steps = 60 if QUICK else 400
history = train(model, train_ids, val_ids, steps=steps, batch_size=16, lr=3e-3, seed=0, seq_len=32, eval_every=10)
print(f"validation loss {history['val_loss'][0]:.3f} -> {history['val_loss'][-1]:.3f} nats after {steps} steps")
fig = Figure(figsize=(6, 3.5), layout="constrained")
ax = fig.add_subplot()
ax.plot(range(1, steps + 1), history["train_loss"], alpha=0.5, label="training batches")
ax.plot(history["val_step"], history["val_loss"], marker="o", label="validation")
ax.set(xlabel="step", ylabel="loss (nats per token)", title="Training a tiny story model")
ax.legend()
fig

# %% [markdown]
# **Why is the training curve noisy and the validation curve smooth?**

# %% [markdown] answer
# Each training loss is measured on one random batch of 16 windows, different at every step; the
# validation loss is always measured on the same held-out windows, all of them. With longer training
# the two curves part: the training loss keeps falling while the validation loss flattens, as the
# model starts memorising its 40 stories.

# %% [markdown]
# ## Question 3: save, and continue pretraining
#
# Write `save_checkpoint` and `load_checkpoint` (weights and AdamW's state by parameter name, in
# safetensors and JSON, no pickle). Train 10 steps, save, build a fresh model and optimizer, load the
# checkpoint into them and carry on for 10 more steps; compare with 20 steps that never stopped.

# %% module: save_checkpoint load_checkpoint

# %%
def fresh() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A new model (same seed, so the same initial weights) and its AdamW optimizer."""
    net = build_model(config, tok.vocab_size, eos)
    return net, torch.optim.AdamW(net.parameters(), lr=3e-3)


batches = [train_ids[i * 512 : i * 512 + 16 * 32].reshape(16, 32) for i in range(20)]
net, optimizer = fresh()
uninterrupted = [train_step(net, optimizer, b, grad_clip=1.0) for b in batches]

net, optimizer = fresh()
first_half = [train_step(net, optimizer, b, grad_clip=1.0) for b in batches[:10]]
folder = tempfile.mkdtemp()
save_checkpoint(net, optimizer, 10, folder)
net, optimizer = fresh()                                                 # as if the machine had restarted
step = load_checkpoint(net, optimizer, folder)
resumed = first_half + [train_step(net, optimizer, b, grad_clip=1.0) for b in batches[step:]]
print(sorted(os.listdir(folder)))
print("resumed run equals the uninterrupted one:", resumed == uninterrupted)

# %% [markdown]
# **What would go wrong if the checkpoint held only the weights?**

# %% [markdown] answer
# AdamW keeps two running averages per weight (of the gradients and of their squares) and a step
# count for its bias correction. Restarted from zero, they make the next updates larger and in
# different directions than those of the uninterrupted run: the losses differ from step 11 on, and
# the first steps after a resume can even undo some training.

# %% [markdown]
# ## Question 4: a pretrained model on seen and unseen text
#
# `tiny-m` was trained on synthetic stories and on the bundled stories except the last 20. Measure its
# loss with your `evaluate` on stories it was trained on and on the 20 it never saw. **Which is lower,
# and what does the gap say?**

# %%
pretrained, pretrained_tok = load_model(PRETRAINED), load_tokenizer(PRETRAINED)
context = min(128, pretrained.config.max_position_embeddings)               # window length, tokens
seen_loss = evaluate(pretrained, stream(stories[:20], pretrained_tok), context)
unseen_loss = evaluate(pretrained, stream(held_out_stories(), pretrained_tok), context)
print(f"stories it trained on: {seen_loss:.3f} nats (perplexity {math.exp(seen_loss):.1f})")
print(f"held-out stories:      {unseen_loss:.3f} nats (perplexity {math.exp(unseen_loss):.1f})")

# %% [markdown] answer
# The loss on the stories it trained on is much lower: it saw each of them 40 times and has partly
# learned them by heart. Only the held-out loss says how well the model predicts new stories, which is
# why a validation set must hold whole documents the model never trained on.
