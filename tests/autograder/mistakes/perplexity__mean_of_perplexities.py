"""Averaging perplexities instead of NLLs: the corpus perplexity computed as the mean of the
per-text perplexities. A short text weighs as much as a long one, and the average taken after
the exponential overweights the hard texts; pool the surprises and counts, then exp() once."""


def corpus_perplexity(model, tokenizer, texts):
    return sum(compute_perplexity(model, tokenizer, t) for t in texts) / len(texts)
