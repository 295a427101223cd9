"""The mean of per-story perplexities instead of the corpus perplexity: every story weighs the
same whatever its length, and exp is applied before averaging instead of after pooling."""


def corpus_perplexity(rows, model):
    mine = [r for r in rows if r["model"] == model]
    return sum(r["perplexity"] for r in mine) / len(mine)
