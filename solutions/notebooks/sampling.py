# Notebook source of solutions/sampling.ipynb and exercises/sampling.ipynb (run `minillm make-exercises`).
# %% [markdown]
# # Unit 4: sampling, from logits to the next token
#
# A language model does not write text: at every step it gives one *logit* per token of its
# vocabulary, and a *decoding* rule picks the next token from them. In this notebook you write
# that rule: temperature, top-k and top-p filtering, drawing a token, and the generation loop.
#
# Fill in each function in the cell under its question (replace the line
# `raise NotImplementedError(...)`), run the cell, and run the cells after it to see what your
# code does. `pytest -m sampling` grades the functions; you can hand in this notebook as it is.

# %%
import torch

from minillm import load_model, load_tokenizer
from minillm.course.family import FAMILY_DIR

# The model to generate with at the end. The kit's tiny story models run offline ("tiny-s", "tiny-m",
# "tiny-l"); with network, put a hub id here instead, e.g. "Qwen/Qwen2.5-0.5B" (about 1 GB to
# download) or "openai-community/gpt2".
MODEL = FAMILY_DIR / "tiny-m"
model, tok = load_model(MODEL), load_tokenizer(MODEL)

# %% [markdown]
# ## The textbook's example
#
# After the prompt *"every effort moves you"*, a model whose vocabulary had only nine words gave
# these next-token logits:

# %%
words = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
logits = torch.tensor([4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79])   # (vocab,) = (9,)
for word, logit in zip(words, logits.tolist()):
    print(f"{word:>8} {logit:6.2f}")

# %% [markdown]
# ## Question 1: softmax with a temperature
#
# Write `softmax_with_temperature`: divide the logits by the temperature, then take the softmax
# over the vocabulary (the last dimension) yourself, with `torch.exp`. Subtract each row's largest
# logit first so that `exp` never overflows.

# %% module: imports NEG_INF softmax_with_temperature

# %%
for temperature in (1.0, 0.1, 5.0):
    probs = softmax_with_temperature(logits, temperature)
    print(f"T = {temperature:>3}: " + "  ".join(f"{w} {p:.3f}" for w, p in zip(words, probs.tolist())))

# %% [markdown]
# **What does the temperature do to the distribution?**

# %% [markdown] answer
# Dividing by T < 1 stretches the gaps between logits, so the softmax piles almost all the
# probability on the largest one ("forward" gets 0.991 at T = 0.1); T > 1 shrinks the gaps and the
# distribution flattens towards uniform (at T = 5 even "pizza" gets about 4%). T = 1 is the model's
# own distribution. The order of the words never changes.

# %% [markdown]
# ## Question 2: top-k and top-p
#
# Write `top_k_filter` (keep the k largest logits of each row, set the others to `-inf`) and
# `top_p_filter` (keep the smallest set of most likely tokens whose probabilities reach p).

# %% module: top_k_filter top_p_filter

# %%
print("top-3 logits:", top_k_filter(logits, 3).tolist())
print("top-p 0.9:   ", top_p_filter(logits, 0.9).tolist())
print("kept by top-3:", [w for w, l in zip(words, top_k_filter(logits, 3).tolist()) if l > float("-inf")])

# %% [markdown]
# ## Question 3: drawing tokens
#
# Write `sample` (one token id per row: greedy when the temperature is 0, otherwise temperature,
# filters, softmax and `torch.multinomial` with the generator you are given) and
# `sampling_frequencies` (draw many tokens from one row and count them).

# %% module: sample sampling_frequencies

# %% [markdown]
# Draw 10,000 tokens at each temperature. **How often does the model say "pizza"?**

# %%
N_DRAWS = 10_000
frequencies = {}
for temperature in (1.0, 0.1, 5.0):
    frequencies[temperature] = sampling_frequencies(logits, N_DRAWS, seed=123, temperature=temperature)
    counts = (frequencies[temperature] * N_DRAWS).round().long().tolist()
    print(f"T = {temperature:>3}: " + "  ".join(f"{w} {c}" for w, c in zip(words, counts)))
pizza = words.index("pizza")
print({f"pizza at T={t}": round(float(f[pizza]) * N_DRAWS) for t, f in frequencies.items()})

# %% [markdown] answer
# "pizza" has probability e^-1.89 / sum(e^logits), about 0.0001 at T = 1: it comes up about once
# in 10,000 draws (sometimes never). At T = 0.1 it never does (its probability is about e^-86). At
# T = 5 it is chosen about 4% of the time, some 430 draws out of 10,000: a high temperature gives
# nonsense words a real chance.

# %% [markdown]
# With top-k = 3 only "forward", "toward" and "closer" can ever be drawn, whatever the temperature:

# %%
top3_frequencies = sampling_frequencies(logits, N_DRAWS, seed=123, temperature=5.0, top_k=3)
print({w: round(float(f), 3) for w, f in zip(words, top3_frequencies) if f > 0})

# %% [markdown]
# ## Question 4: the generation loop
#
# Write `generate`: run the model on all the ids so far, take the last position's logits, choose a
# token with your `sample`, append it, repeat. Try it on one of the kit's small story models.

# %% module: generate

# %%
prompt = tok.encode("Once upon a time")
greedy = [generate(model, prompt, 20) for _ in range(2)]
sampled = [(seed, generate(model, prompt, 20, temperature=1.0, seed=seed)) for seed in (0, 0, 1)]
print("greedy, twice:  ", [tok.decode(g) for g in greedy])
for seed, ids in sampled:
    print(f"T=1, seed {seed}:   ", repr(tok.decode(ids)))

# %% [markdown]
# **What makes decoding deterministic?**

# %% [markdown] answer
# Greedy decoding (temperature 0) always takes the argmax, so the same prompt gives the same text
# every time. Sampling is random, but a `torch.Generator` seeded with the same seed replays the same
# random numbers, so the same prompt, settings and seed give the same tokens; a new seed gives a
# new text. (On different hardware, logits that differ in their last bits can still change a
# close call.)
