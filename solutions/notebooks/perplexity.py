# Notebook source of solutions/perplexity.ipynb and exercises/perplexity.ipynb (run `minillm make-exercises`).
# %% [markdown]
# # Unit 2: perplexity, how surprised is the model by a text?
#
# The model's logits at position `i` predict token `i + 1`. The *surprise* of the token that really
# came next is `-log p(token)` in nats; the *perplexity* of a text is the exponential of its mean
# surprise. In this notebook you compute both yourself, from the logits, and check your numbers
# against minillm's `score`.
#
# Fill in each function in the cell under its question (replace the line
# `raise NotImplementedError(...)`) and run the cells in order. `pytest -m perplexity` grades the
# functions; you can hand in this notebook as it is.

# %%
import torch

from minillm import load_model, load_tokenizer, score
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
# ## Question 1: the surprise of one token
#
# Write `token_loss`: `-log p(target)` from one row of logits, with the log-sum-exp form (a
# probability of 1e-50 is 0 in float32, and `log(0)` is `-inf`).

# %% module: imports token_loss

# %%
row = torch.tensor([2.0, 1.0, 0.1, -1000.0])
print([round(token_loss(row, t), 4) for t in range(4)])

# %% [markdown]
# ## Question 2: the surprise table
#
# Write `surprise_table`: one row per token of the text but the first. **Why is the first token never
# scored?**

# %% module: surprise_table

# %%
phrase = "The cat sat on the mat."
table = surprise_table(model, tok, phrase)
for token, surprise in table:
    print(f"{token!r:>8} {surprise:6.3f}")

# %% [markdown] answer
# The logits at position i - 1 predict token i, so the first token has no prediction: nothing comes
# before it (these tokenizers add no beginning-of-text token). A text of n tokens has n - 1 scored
# tokens.

# %% [markdown]
# minillm's `score` gives the same numbers, shaded by surprise:

# %%
score(model, tok, phrase)

# %% [markdown]
# ## Question 3: perplexity
#
# Write `compute_perplexity`, `continuation_perplexity` (only the continuation's tokens are scored;
# the context conditions them) and `corpus_perplexity` (pool all texts' surprises and tokens).

# %% module: compute_perplexity continuation_perplexity corpus_perplexity

# %%
ppl_phrase = compute_perplexity(model, tok, phrase)
ppl_continuation = continuation_perplexity(model, tok, "Once upon a time, there was a little girl.", " She had a cat.")
ppl_alone = compute_perplexity(model, tok, "She had a cat.")
ppl_corpus = corpus_perplexity(model, tok, stories)
ppl_mean_of_stories = sum(compute_perplexity(model, tok, s) for s in stories) / len(stories)
print(f"phrase {ppl_phrase:.2f}; continuation after a context {ppl_continuation:.2f}, alone {ppl_alone:.2f}")
print(f"5 stories: corpus perplexity {ppl_corpus:.2f}, mean of their perplexities {ppl_mean_of_stories:.2f}")

# %% [markdown]
# **Why does the context lower the continuation's perplexity, and why is the corpus perplexity not the
# mean of the stories' perplexities?**

# %% [markdown] answer
# The context tells the model who "she" is and that this is a story, so the continuation's tokens
# are less surprising (and its first token is scored too, predicted by the context). The corpus
# perplexity pools every token's surprise before the exponential: each token counts once, whatever
# story it is in. The mean of per-story perplexities gives a short story as much weight as a long one,
# and averaging after the exponential lets the hardest stories pull the number up.
