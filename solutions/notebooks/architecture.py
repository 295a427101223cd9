# Notebook source of solutions/architecture.ipynb and exercises/architecture.ipynb (run `minillm make-exercises`).
# %% [markdown]
# # Unit 5: inside the transformer, self-attention step by step
#
# You build the forward pass of a real Qwen2 / Llama decoder from plain tensor operations, one piece
# at a time, on the weights of a trained checkpoint, and check every piece against minillm's own
# modules (which are checked against Hugging Face `transformers`). Then you compare the transformer
# with a model that has no attention at all, and time the model with and without `torch.compile`.
#
# Fill in each function in the cell under its question (replace the line
# `raise NotImplementedError(...)`) and run the cells in order. `pytest -m architecture` grades the
# functions; you can hand in this notebook as it is.

# %%
import json
import os
import tempfile
import time

import matplotlib_inline.backend_inline  # noqa: F401 (Jupyter shows matplotlib figures as images)
import torch
from matplotlib.figure import Figure
from safetensors.torch import load_file

from minillm import load_model, load_tokenizer
from minillm.course.family import FAMILY_DIR
from minillm.checkpoint.hub import resolve_source

# QUICK (set by CI with MINILLM_NOTEBOOK_QUICK=1): a shorter training comparison and no torch.compile,
# which takes 20 s or more to compile. Set it to False to run everything.
QUICK = os.environ.get("MINILLM_NOTEBOOK_QUICK") == "1"

# %% [markdown]
# ## The checkpoint
#
# The weights come as a dict under the names the Hugging Face files use
# (`"model.layers.0.self_attn.q_proj.weight"`, ...). The kit's tiny story model `tiny-m` has 6 query
# heads sharing 3 key/value heads: grouped-query attention, as in Qwen and Llama. With network, put a
# hub id in `MODEL` instead (e.g. `"Qwen/Qwen2.5-0.5B"`).

# %%
MODEL = FAMILY_DIR / "tiny-m"
model, tok = load_model(MODEL), load_tokenizer(MODEL)
folder = resolve_source(MODEL)
config = json.loads((folder / "config.json").read_text())
weights = {}
for file in sorted(folder.glob("*.safetensors")):
    weights.update({name: t.float() for name, t in load_file(file).items()})
print({key: config[key] for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")})
print(sorted(name for name in weights if name.startswith("model.layers.0.")))

# %% [markdown]
# ## Question 1: RMSNorm
#
# Write `rms_norm`. `config_dict` is given: it reads the numbers you need from `config.json`.

# %% module: imports config_dict rms_norm

# %%
cfg = config_dict(config)
phrase = "Once upon a time, there was a little girl who"
ids = torch.tensor([tok.encode(phrase)])                                # (1, seq)
seq = ids.shape[1]
x = weights["model.embed_tokens.weight"][ids]                           # (1, seq, hidden)
a = rms_norm(x, weights["model.layers.0.input_layernorm.weight"], cfg["rms_norm_eps"])
with torch.no_grad():
    print("largest difference from minillm's RMSNorm:", (a - model.layers[0].input_layernorm(x)).abs().max().item())

# %% [markdown]
# ## Question 2: queries, keys and values
#
# Project the normalised vectors to queries, keys and values with layer 0's weights, split them into
# heads, and rotate queries and keys by their positions (write `rope_cos_sin` and `apply_rope`).
# **Why do the keys and values have fewer heads than the queries?**

# %% module: rope_cos_sin apply_rope

# %%
n_heads, n_kv, head_dim = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
p = "model.layers.0.self_attn."


def heads(name: str, n: int) -> torch.Tensor:
    """Layer 0's projection ``name`` of ``a``, split into ``n`` heads: (1, n, seq, head_dim)."""
    out = torch.nn.functional.linear(a, weights[p + name + ".weight"], weights.get(p + name + ".bias"))
    return out.view(1, seq, n, head_dim).transpose(1, 2)


q, k, v = heads("q_proj", n_heads), heads("k_proj", n_kv), heads("v_proj", n_kv)
cos, sin = rope_cos_sin(torch.arange(seq), head_dim, cfg["rope_theta"])
q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
print("q", tuple(q.shape), "k", tuple(k.shape), "v", tuple(v.shape))

# %% [markdown] answer
# Grouped-query attention: 6 query heads share 3 key/value heads, two query heads per group. Each
# query head still looks at the text in its own way, but the keys and values (what is stored in the
# KV cache while generating) take half the memory. Llama 2 70B and Qwen2.5 go further, with 7 or
# 8 query heads per key/value head.

# %% [markdown]
# ## Question 3: scores, the causal mask and the softmax
#
# For query head 0 (it uses key head 0): the scores are `q @ k^T / sqrt(head_dim)`, one per (query,
# key) pair. Write `causal_mask`: a token may look at itself and the past, never the future. **What do
# the rows of the attention weights add up to, and what is above the diagonal?**

# %% module: causal_mask

# %%
scores = q[0, 0] @ k[0, 0].T / head_dim ** 0.5                          # (seq, seq): query x key
mask = causal_mask(seq)
attention_weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
print("row sums:", attention_weights.sum(dim=-1))
tokens = [tok.token_text(i) for i in ids[0].tolist()]
fig = Figure(figsize=(6, 5), layout="constrained")
ax = fig.add_subplot()
image = ax.imshow(attention_weights.detach(), cmap="Blues")
ax.set_xticks(range(seq), tokens, rotation=90)
ax.set_yticks(range(seq), tokens)
ax.set(xlabel="key (the token looked at)", ylabel="query (the token looking)", title="Layer 0, head 0: attention weights")
fig.colorbar(image)
fig

# %% [markdown] answer
# Each row is a probability distribution over the keys the query may see: it adds up to 1. Above
# the diagonal every weight is exactly 0: those keys are later tokens, hidden by the mask (score
# `-inf` before the softmax). The first token can only look at itself (weight 1).

# %% [markdown]
# ## Every head, from the model itself
#
# `minillm.inspect.trace` runs the model once and keeps what passes through it: the attention
# probabilities of every layer and head, the hidden states, what each block's attention and MLP add
# to the residual stream. Its map for layer 0, head 0 is the one you just computed by hand (the cell
# checks it); the grid shows it beside the other heads of layer 0, each looking at the text in its
# own way. `minillm attention MODEL "text" --layer 0 --out heads.png` draws the same grid.

# %%
import minillm.inspect

run = minillm.inspect.trace(model, ids)
traced_head = run.attentions[0][0, 0]                                    # (seq, seq): layer 0, head 0
head_difference = (attention_weights - traced_head).abs().max().item()
print(f"largest difference between your head 0 and the traced one: {head_difference:.2e}")
# float32 both ways, the same weights through the same operations: only rounding may differ
assert head_difference < 1e-5, "your layer-0 head differs from the model's: check the scores, the mask and the softmax"
minillm.inspect.attention_figure(run, tokens, layer=0)

# %% [markdown]
# ## Question 4: all heads at once, and grouped-query attention
#
# Write `scaled_dot_product_attention` (any number of heads, an optional mask) and `repeat_kv`
# (give each key/value head to its group of query heads). Then merge the heads and apply the output
# projection, and compare with minillm's `Attention` module of the same layer.

# %% module: scaled_dot_product_attention repeat_kv

# %%
y = scaled_dot_product_attention(q, repeat_kv(k, n_heads // n_kv), repeat_kv(v, n_heads // n_kv), mask)
y = y.transpose(1, 2).reshape(1, seq, n_heads * head_dim)                # (1, seq, hidden): heads merged
mine = torch.nn.functional.linear(y, weights[p + "o_proj.weight"], weights.get(p + "o_proj.bias"))
with torch.no_grad():
    cos_m, sin_m = model.rotary(torch.arange(seq)[None], torch.float32)  # (1, 1, seq, head_dim)
    reference = model.layers[0].self_attn(a, cos_m, sin_m, mask[None, None], None)
attention_difference = (mine - reference).abs().max().item()
print(f"largest difference from minillm's Attention: {attention_difference:.2e}")

# %% [markdown]
# ## Question 5: the whole model
#
# Write `swiglu_mlp`, `decoder_block` and `forward`, and compare your logits with the model's.

# %% module: swiglu_mlp decoder_block forward

# %%
my_logits = forward(weights, config, ids)
with torch.no_grad():
    logits_difference = (my_logits - model(ids)).abs().max().item()
print(f"logits {tuple(my_logits.shape)}, largest difference from minillm: {logits_difference:.2e}")

# %% [markdown]
# ## What each layer would predict: the logit lens
#
# Every block adds to the residual stream; the final norm and the LM head turn the last state into
# your logits. Applied to the stream after each block instead, they say what the model would predict
# had it stopped there (`minillm lens MODEL "text"` prints the same table). The last row is the
# model's own prediction.

# %%
minillm.inspect.logit_lens(model, tok, phrase, top_k=5)

# %% [markdown]
# ## Question 6: does attention matter?
#
# minillm's `compare_architectures` trains the transformer and an MLP-only model (it sees a fixed
# window of the last 8 tokens and has no attention) on the same stories with the same budget and
# about the same number of parameters. **Which learns faster, and why?**

# %%
from minillm.data import bundled_texts
from minillm.experiments.training import compare_architectures
from minillm.reports.plots_training import architectures_figure
from minillm.training.config import TrainConfig

base = TrainConfig(hidden_size=32, num_hidden_layers=2, intermediate_size=64, batch_size=8, context=64,
                   vocab_size=512, warmup_steps=5)
budget = 20_000 if QUICK else 300_000                                   # training tokens per model
comparison = compare_architectures(bundled_texts("stories"), token_budget=budget, out=tempfile.mkdtemp(),
                                   base=base, progress=False)
final_loss = {r.architecture: r.val_loss for r in comparison}           # the last measurement of each
print({name: round(loss, 3) for name, loss in final_loss.items()})
architectures_figure(comparison)

# %% [markdown] answer
# With 300,000 training tokens the transformer ends at a validation loss of about 3.74 nats per token
# against the MLP's 3.99, with the same parameters and data: attention lets every position draw on
# the whole context (64 tokens here), and pick out what matters in it, while the MLP only sees its
# last 8 tokens, each through weights fixed to its place in the window. In the QUICK run (20,000
# tokens) both have only learned which tokens are frequent, and the two curves still overlap: the
# advantage appears with training.

# %% [markdown]
# ## Question 7: eager against `torch.compile`
#
# `torch.compile` traces the model once and generates fused code for it. **Is the compiled model
# faster here, and what does compiling cost?**

# %%
def best_time(fn, batch: torch.Tensor, repeats: int = 5) -> float:
    """The fastest of ``repeats`` calls of ``fn(batch)``, in seconds."""
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            fn(batch)
            times.append(time.perf_counter() - start)
    return min(times)


batch = torch.randint(tok.vocab_size, (8, 128))
eager_s = best_time(model, batch)
print(f"eager: {eager_s * 1000:.1f} ms per batch of 8 x 128 tokens")
if QUICK:
    print("torch.compile skipped (QUICK mode); set QUICK = False in the first cell to time it.")
else:
    try:
        compiled = torch.compile(model)
        start = time.perf_counter()
        with torch.no_grad():
            compiled(batch)                                              # the first call compiles
        print(f"compiling took {time.perf_counter() - start:.1f} s")
        print(f"compiled: {best_time(compiled, batch) * 1000:.1f} ms per batch")
    except Exception as err:                                              # no C++ compiler, unsupported platform...
        print(f"torch.compile does not work on this machine ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
              "the model runs eagerly, exactly as in every other cell.")

# %% [markdown] answer
# On a CPU, compiling a model this small takes tens of seconds and saves a fraction of each forward
# pass (the matrix products are already library calls; what compile fuses is the small element-wise
# work around them: norms, rotary embeddings, the SwiGLU product). It pays off for long training runs
# on a GPU, not for a few forward passes. (The warning about a "graph break" comes from the model's
# input checks, which read a number with `.item()` and run eagerly.) Where compile fails (no C++
# compiler, an unsupported Python), the eager model computes the same logits.
