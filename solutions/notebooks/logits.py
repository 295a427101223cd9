# Notebook source of solutions/logits.ipynb and exercises/logits.ipynb (run `minillm make-exercises`).
# %% [markdown]
# # Unit 1: logits, what a language model actually outputs
#
# In this lab you open up a language model: tokenize a phrase, look at the numbers the model
# returns for it, turn them into probabilities, and measure how surprised the model is by a text.
# At the end you shrink the model to fewer bits per weight and watch what that costs.
#
# Fill in each function in the cell under its question (replace the line
# `raise NotImplementedError(...)`) and run the cells in order. `pytest -m logits` grades the
# functions; you can hand in this notebook as it is.

# %%
import matplotlib_inline.backend_inline  # noqa: F401 (Jupyter shows matplotlib figures as images)
import torch

from minillm import load_model, load_tokenizer, next_tokens, perplexity, score
from minillm.course.family import FAMILY_DIR

# %% [markdown]
# ## The model
#
# The lab's model is GPT-2. The kit ships a small one, `tiny-gpt2`, trained by the kit on
# TinyStories in the configuration of the TinyStories paper (Eldan and Li, 2023): GPT-2's
# architecture and its own 50,257-token vocabulary, 6 layers, a width of 64. It has 3.6 million
# parameters (GPT-2 small has 124 million), 3.2 million of them in the token embedding, and runs
# offline in a second. With network you can study the real GPT-2: swap the comment below and run
# the notebook again; every cell works the same.

# %%
MODEL = FAMILY_DIR / "tiny-gpt2"
# MODEL = "openai-community/gpt2"      # GPT-2 small, 124 million parameters, about 500 MB to download
model, tok = load_model(MODEL), load_tokenizer(MODEL)
print(f"{MODEL}: {model.num_parameters():,} parameters, a vocabulary of {tok.vocab_size:,} tokens")

# %% [markdown]
# ## Question 1: tokens
#
# Tokenize the phrase below. **How many tokens does it have, and why are there not simply as many
# tokens as words?**

# %%
phrase = "The cat sat on the mat."
ids = tok.encode(phrase)
print(ids)
print([tok.token_text(i) for i in ids])

# %% [markdown] answer
# Seven: GPT-2's tokenizer cuts text into pieces from a fixed vocabulary of 50,257 learned from
# web text. Frequent words are one token together with their leading space (" cat", " the"), the
# full stop is a token of its own, and rarer words are split into several pieces: try
# `tok.encode("Colorless")` ("Color" + "less") or "unbelievably" (four pieces). A smaller
# vocabulary, like the 1,024 tokens of the kit's `tiny-m`, splits many more words.

# %% [markdown]
# ## Question 2: the logits
#
# Run the model on the phrase. **What is the shape of its output, and what does each number mean?**

# %%
with torch.no_grad():
    logits = model(torch.tensor([ids]))          # (batch, seq) -> (batch, seq, vocab)
print(tuple(logits.shape))
print(logits[0, 0, :5])

# %% [markdown] answer
# The shape is (1, number of tokens, vocabulary size): one row per position of the phrase, one
# number per vocabulary entry. `logits[0, i, j]` is the model's raw, unnormalised score for token
# `j` being the token that comes right AFTER position `i`. Higher means more likely; only the
# softmax turns a row into probabilities.

# %% [markdown]
# ## Question 3: the next token's logits
#
# Write `next_token_logits`: the row of logits that predicts the token after the whole text.

# %% module: imports next_token_logits

# %%
last = next_token_logits(model, tok, phrase)
print(tuple(last.shape), last[:5])

# %% [markdown]
# ## Question 4: the most likely next token (argmax)
#
# Write `most_likely_next_token`: the argmax and its probability.

# %% module: most_likely_next_token

# %%
best_token, best_prob = most_likely_next_token(model, tok, "Once upon a")
print(repr(best_token), round(best_prob, 4))

# %% [markdown]
# ## Question 5: a distribution after every prefix
#
# Write `next_token_distributions`: the softmax of every row.

# %% module: next_token_distributions

# %%
distributions = next_token_distributions(model, tok, phrase)
print(tuple(distributions.shape), "each row sums to", distributions.sum(dim=-1))

# %% [markdown]
# ## Question 6: a top-k table
#
# Write `predict_next_tokens`: the k most likely next tokens and their probabilities.

# %% module: predict_next_tokens

# %%
top = predict_next_tokens(model, tok, "Once upon a time, there was a little", 5)
for token, prob in top:
    print(f"{token!r:>12} {prob:.4f}")

# %% [markdown]
# minillm's `next_tokens` shows the same table in colour (darker blue = more likely):

# %%
next_tokens(model, tok, "Once upon a time, there was a little", k=5)

# %% [markdown]
# ## Question 7: how surprised is the model, token by token?
#
# The *surprise* of a token is `-log p(token | the tokens before it)` in nats. minillm's `score`
# computes it for every token but the first (nothing comes before it to predict it); in the
# perplexity unit you write it yourself. **Which tokens of the phrase surprise the model most, and
# why?**

# %%
scored = score(model, tok, phrase)
scored

# %% [markdown] answer
# The darkest token is " mat": a word the story model almost never saw, so it gets less
# probability than a uniform guess over the vocabulary would give it (a surprise above
# ln 50,257 = 10.8 nats); the model expected a floor, a window or a garden. " cat" after "The"
# is one of many possible next words, and after "The cat" the model expected " named", not
# " sat". " the" after "sat on" is almost certain (a surprise near 0).

# %% [markdown]
# ## Question 8: perplexity
#
# The *perplexity* of a text is `exp(mean surprise)`: the number of equally likely tokens the model
# was, on average, choosing among. **Which text does the model find most natural?**

# %%
texts = ["The cat sat on the mat.", "Mat the on sat cat the.", "Colorless green ideas sleep furiously."]
perplexities = {text: perplexity(model, tok, text) for text in texts}
for text, ppl in perplexities.items():
    print(f"{ppl:10.1f}  {text}")

# %% [markdown] answer
# "The cat sat on the mat." has the lowest perplexity: its words come in an order the model has
# seen in its stories. The same words shuffled are far more surprising: the model has learned word
# order. For this story model the grammatical sentence of unusual words is the most surprising of
# all: "colorless", "ideas" and "furiously" hardly ever occur in a children's story, and a model
# trained on a million tokens knows which words occur better than it knows grammar. (The real GPT-2,
# trained on web text, has seen all these words: try it.)

# %% [markdown]
# ## Question 9: fewer bits per weight
#
# A float32 weight takes 32 bits. Stored with k bits (plus a scale and an offset per matrix), the
# model shrinks. **How big is the model at each bit width, and how much perplexity does that cost on
# held-out stories?** (The quantization unit has you write these functions yourself.)

# %%
from minillm.experiments.quantization import perplexity_vs_bits
from minillm.course.family import held_out_stories
from minillm.reports.plots_quantization import quantization_figure
from minillm.inference.quantize import size_table

for row in size_table(model, bits_list=(32, 16, 8, 4, 2)):
    print(f"{row['bits']:>2} bits: {row['size_mb'] * 1000:8.1f} kB ({row['ratio_vs_32']:.2f} of float32)")
quantized = perplexity_vs_bits(model, tok, held_out_stories()[:5], bits_list=(32, 8, 4, 3, 2), schemes=("tensor",))
for row in quantized:
    print(f"{row.bits:>2} bits: perplexity {row.perplexity:8.1f}")
quantization_figure(quantized)

# %% [markdown] answer
# Size falls in proportion to the bits: 8 bits is a quarter of float32, 4 bits an eighth. At 8 bits
# the perplexity barely moves; at 4 bits it starts to rise, and at 2 bits (four values per matrix)
# the model is broken. Larger models, and finer schemes (a scale per row or per group of weights),
# survive lower bit widths.
