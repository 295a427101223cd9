# Notebook source of solutions/quantization.ipynb and exercises/quantization.ipynb (run `minillm make-exercises`).
# %% [markdown]
# # Unit 3: quantization, how few bits can a weight keep?
#
# A model stores every weight as a 32-bit float. Quantization stores each weight as a k-bit integer
# code plus a scale and an offset per matrix: a smaller file, a less exact model. In this notebook you
# count the bytes, round tensors and whole models to k bits, and measure what that costs in perplexity.
#
# Fill in each function in the cell under its question (replace the line
# `raise NotImplementedError(...)`) and run the cells in order. `pytest -m quantization` grades the
# functions; you can hand in this notebook as it is.

# %%
import matplotlib_inline.backend_inline  # noqa: F401 (Jupyter shows matplotlib figures as images)
from matplotlib.figure import Figure

from minillm import load_model, load_tokenizer
from minillm.course.family import FAMILY_DIR, held_out_stories

# %%
# The kit's tiny story models run offline ("tiny-s", "tiny-m", "tiny-l"); with network, put a hub
# id here instead, e.g. "Qwen/Qwen2.5-0.5B", or "openai-community/gpt2".
MODEL = FAMILY_DIR / "tiny-m"
model, tok = load_model(MODEL), load_tokenizer(MODEL)
# Five stories the tiny models never trained on, cut to their first sentences (up to 300 characters):
# the tiny models read at most 128 tokens at a time.
stories = [story[: story.rfind(".", 0, 300) + 1] for story in held_out_stories()[:5]]

# %% [markdown]
# ## Question 1: model size per bit width
#
# Write `model_size_bytes` (n numbers at k bits each) and `quantized_model_size_bytes` (a real k-bit
# file: quantized matrices with their scale and offset, 16-bit vectors). **How big is this model,
# and Qwen2.5-0.5B (494 million parameters), at 32, 16, 8 and 4 bits?**

# %% module: imports FULL_PRECISION model_size_bytes quantized_model_size_bytes

# %%
n_params = sum(p.numel() for p in model.parameters())
sizes = {bits: quantized_model_size_bytes(model, bits) for bits in (32, 16, 8, 4)}
for bits, size in sizes.items():
    print(f"{bits:>2} bits: this model {size / 1e3:8.1f} kB ({model_size_bytes(n_params, bits) / 1e3:8.1f} kB "
          f"without scales and offsets), Qwen2.5-0.5B {model_size_bytes(494_032_768, bits) / 1e9:5.2f} GB")

# %% [markdown] answer
# Size is proportional to the bits: float32 takes 4 bytes per weight, so Qwen2.5-0.5B needs about
# 2 GB, 1 GB in 16 bits, 0.5 GB in 8 bits and 0.25 GB in 4 bits. The scales and offsets add only
# 4 bytes per matrix; the 16-bit norm gains and biases a little more.

# %% [markdown]
# ## Question 2: rounding a tensor and a model
#
# Write `quantize_tensor` (uniform min-max, one scale and zero point per tensor) and `quantize_model`
# (a quantized copy; the original stays as it was).

# %% module: quantize_tensor quantize_model

# %%
w = model.layers[0].mlp.up_proj.weight.detach()
for bits in (8, 4, 2):
    error = (quantize_tensor(w, bits) - w).abs().max().item()
    levels = quantize_tensor(w, bits).unique().numel()
    print(f"{bits} bits: {levels:>3} distinct values, largest change {error:.5f}")

# %% [markdown]
# ## Question 3: perplexity against bits
#
# `text_nll` is given. Write `perplexity_vs_bits` and plot it on held-out stories. **Where does the
# model break?**

# %% module: text_nll perplexity_vs_bits

# %%
curve = perplexity_vs_bits(model, tok, stories, [32, 8, 6, 4, 3, 2])
for bits, ppl in curve:
    print(f"{bits:>2} bits: perplexity {ppl:8.2f}")
fig = Figure(figsize=(6, 3.5), layout="constrained")
ax = fig.add_subplot()
ax.plot([b for b, _ in curve[1:]], [p for _, p in curve[1:]], marker="o", label="quantized")
ax.axhline(curve[0][1], color="grey", linestyle="--", label="float32")
ax.set(xlabel="bits per weight", ylabel="perplexity", title="Perplexity against bits per weight")
ax.legend()
fig

# %% [markdown] answer
# Down to 6 or 8 bits the perplexity hardly changes: the rounding error is far below the weights'
# own spread. At 4 bits it starts to rise, at 3 bits clearly, and at 2 bits (four values for a whole
# matrix) the model is broken. One scale per tensor is the crudest scheme: one outlier weight
# stretches the range for all the others; a scale per row or per group of 64 weights
# (`minillm quantize --schemes channel group`) keeps more of the model at low bit widths.
