"""Unit 6: scaling. Do bigger models predict text better, and by how much?

Every model scores the same stories. From the per-story numbers you build a results table,
the corpus perplexity of each model, a confidence interval for it, and a power-law fit of
perplexity against model size, the "scaling law". Finally you look at which single tokens
a model finds hardest.

Vocabulary used throughout:

* a story of n tokens has n - 1 *scored* tokens: the first token is never scored, because
  nothing comes before it to predict it (these tokenizers add no BOS token);
* the *surprise* of a token is ``-log p(token | tokens before it)`` in nats (natural log);
* a story's *NLL* is the sum of its tokens' surprises (nats), its perplexity
  ``exp(NLL / scored tokens)``;
* a model's *corpus perplexity* over several stories POOLS them:
  ``exp(sum of NLLs / sum of scored tokens)``. It is not the mean of the per-story
  perplexities. This assignment always asks for the pooled number.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def score_story(model: torch.nn.Module, tokenizer, text: str) -> tuple[float, int]:
    """Total NLL of ``text`` under ``model`` (nats) and the number of scored tokens.

    Encode the text (``tokenizer.encode(text)``: n ids), run the model once on a (1, n) long
    tensor, and score token i (for i = 1 .. n-1) with the logits at position i - 1.

    Args:
        model: a minillm ``Transformer``; ``model(ids)`` returns logits (1, n, vocab).
        tokenizer: a minillm ``Tokenizer``.
        text: a str that encodes to at least 2 tokens.

    Returns:
        ``(nll, tokens)``: a float (nats, >= 0) and an int (n - 1).

    Pitfall: off by one. The logits at position i predict token i + 1; the first token has no
    prediction and is not counted. Dividing by n instead of n - 1 makes every perplexity too
    small.

    Hint: ``F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum")`` is the total NLL.
    """
    raise NotImplementedError("score_story: your code here")


def results_table(models: dict[str, torch.nn.Module], tokenizer, stories: list[str]) -> list[dict]:
    """Score every story with every model: one row (a dict) per (model, story).

    Args:
        models: ``{name: model}`` (dicts keep their order); all share ``tokenizer``.
        tokenizer: a minillm ``Tokenizer``.
        stories: list of str.

    Returns:
        A list of dicts, models in the order given, and for each model its stories in order::

            {"model": name (str),
             "params": total parameters (int, ``sum(p.numel() for p in model.parameters())``),
             "non_embedding_params": params minus the embedding matrix's entries (int,
                                     ``model.embed_tokens.weight.numel()``),
             "story": index of the story in ``stories`` (int),
             "tokens": scored tokens (int),
             "nll": total NLL in nats (float),
             "perplexity": exp(nll / tokens) (float)}

    Hint: use your ``score_story``.
    """
    raise NotImplementedError("results_table: your code here")


def corpus_perplexity(rows: list[dict], model: str) -> float:
    """The corpus perplexity of one model: ``exp(sum of nll / sum of tokens)`` over its rows.

    Args:
        rows: results-table rows (dicts with at least "model", "tokens", "nll"), possibly of
            several models.
        model: the name of the model whose rows to pool.

    Returns:
        float.

    Pitfall: averaging the rows' "perplexity" values. A 20-token story would then weigh as
    much as a 500-token one, and the exponential is taken before averaging instead of after
    (exp is convex, so hard stories pull the mean up). Pool NLL and tokens, then exponentiate
    once.
    """
    raise NotImplementedError("corpus_perplexity: your code here")


def fit_power_law(n_params: list[float], perplexities: list[float]) -> tuple[float, float]:
    """Fit ``perplexity = coefficient * N ** exponent`` by least squares on log-log axes.

    Taking logs turns the power law into a straight line::

        log(perplexity) = log(coefficient) + exponent * log(N)

    so fit a line (least squares) through the points (log N, log perplexity): its slope is
    the exponent (negative when bigger models do better), its intercept log(coefficient).

    Args:
        n_params: model sizes N (list of float > 0), at least two different values.
        perplexities: one perplexity per size (list of float > 0).

    Returns:
        ``(coefficient, exponent)``: two floats.

    Pitfall: fitting a line to N and perplexity themselves (linear axes) is not a power law;
    fitting in log space also keeps the 10x-bigger models from dominating the fit.

    Hint: ``np.polyfit(x, y, deg=1)`` returns ``(slope, intercept)``.
    """
    raise NotImplementedError("fit_power_law: your code here")


def bootstrap_ci(nll: list[float], tokens: list[int], n_resamples: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Bootstrap confidence interval of the corpus perplexity, resampling STORIES.

    The stories we scored are a sample; another sample would give another perplexity. The
    bootstrap estimates how much: ``n_resamples`` times, draw as many stories as there are,
    with replacement (indices into the lists), and compute the corpus perplexity of the
    draw, ``exp(sum nll / sum tokens)`` over the drawn stories. The interval is the
    ``(1 - level) / 2`` and ``1 - (1 - level) / 2`` quantiles of those perplexities.

    Args:
        nll: total NLL per story (nats), list of float.
        tokens: scored tokens per story, list of int (same length).
        n_resamples: int, how many bootstrap replicates.
        seed: int; use ``np.random.default_rng(seed)`` so that the same seed gives the same
            interval.
        level: float in (0, 1), e.g. 0.95 for a 95% interval.

    Returns:
        ``(low, high)``: floats, perplexities, low <= high.

    Pitfalls: resample whole stories (the unit the data came in), not single tokens, and keep
    each story's NLL with its own token count. Quantiles are percentages in
    ``np.percentile`` (2.5, 97.5) but fractions in ``np.quantile`` (0.025, 0.975).
    """
    raise NotImplementedError("bootstrap_ci: your code here")


def hardest_tokens(model: torch.nn.Module, tokenizer, text: str, k: int) -> list[tuple[str, float]]:
    """The ``k`` scored tokens of ``text`` with the highest surprise, hardest first.

    Args:
        model: a minillm ``Transformer``.
        tokenizer: a minillm ``Tokenizer``; ``tokenizer.token_text(id)`` is a token's text
            (with its leading space, e.g. " cat").
        text: str, at least 2 tokens.
        k: int >= 1; if the text has fewer scored tokens, return them all.

    Returns:
        A list of ``(token_text, surprise)`` tuples (str, float in nats), sorted by surprise,
        largest first. Only scored tokens count (never the first token of the text).

    Hint: ``-F.log_softmax(logits, dim=-1)`` gives every token's surprise; pick the actual
    next tokens with ``gather`` (or indexing), then ``torch.topk`` or ``sorted``.
    """
    raise NotImplementedError("hardest_tokens: your code here")
