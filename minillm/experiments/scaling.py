"""The scaling experiment: how does perplexity fall as models grow?

Every model scores the same stories. Per story we keep the scored token count, the total
negative log-likelihood (nats), perplexity and bits per byte. Per model, the corpus
perplexity is ``exp(total NLL / total tokens)`` (the mean of NLLs, never the mean of
per-story perplexities), with a bootstrap confidence interval over stories: stories are
resampled with replacement and the corpus perplexity recomputed, and the 2.5th and 97.5th
percentiles of those replicates bound the interval. Across models, a power law
``perplexity = A * N**k`` is fitted by least squares on log-log axes, with N the
non-embedding parameter count (embeddings are a lookup table, not computation; Kaplan et
al. 2020 found the cleaner trend without them).

Models with different tokenizers split the same story into different tokens, so their
perplexities are not over the same units: compare them by bits per byte.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from minillm.checkpoint.hub import display_name
from minillm.checkpoint.loading import load_model_and_tokenizer
from minillm.checkpoint.tokenizer import load_tokenizer
from minillm.data import TextSource
from minillm.errors import InputError
from minillm.experiments.results import ModelSummary, PairedDifference, PowerLaw, ScalingResults, StoryResult
from minillm.inference.scoring import TextScore, score_many
from minillm.training.provenance import overlap_warning, seen_in_training


def bootstrap_interval(nll: np.ndarray, counts: np.ndarray, samples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Bootstrap interval of ``exp(sum(nll) / sum(counts))`` over stories (resampled with replacement).

    ``nll``: total NLL per story (nats); ``counts``: per story the denominator (tokens, or
    bytes * ln 2 for bits per byte). Returns (low, high).
    """
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(nll), size=(samples, len(nll)))     # (samples, stories)
    ratios = nll[picks].sum(axis=1) / counts[picks].sum(axis=1)
    tail = (1 - level) / 2 * 100
    return tuple(float(v) for v in np.percentile(ratios, [tail, 100 - tail]))


def paired_difference(nll_a: np.ndarray, count_a: np.ndarray, nll_b: np.ndarray, count_b: np.ndarray,
                      a: str = "A", b: str = "B", group: str = "", samples: int = 2000, seed: int = 0,
                      level: float = 0.95) -> PairedDifference:
    """Condition (or model) B against A on the same texts, with a paired bootstrap interval.

    ``nll_*``: total NLL per text (nats); ``count_*``: per text the denominator (scored tokens,
    or bytes * ln 2 for bits per byte), text i of A and text i of B being the same text. The
    statistic is the difference of pooled means, ``sum(nll_b)/sum(count_b) - sum(nll_a)/sum(count_a)``;
    each bootstrap replicate resamples texts with replacement and uses the *same* picks for A
    and B, so that what the texts share (some stories are hard for every condition) cancels.
    Two separate intervals, one per condition, can overlap even when B wins on nearly every
    text; the paired interval is what says whether the difference is more than chance.
    """
    arrays = [np.asarray(v, dtype=float) for v in (nll_a, count_a, nll_b, count_b)]
    if len({len(v) for v in arrays}) != 1 or not len(arrays[0]):
        raise InputError(f"paired_difference needs the same non-zero number of texts for {a!r} and {b!r}; "
                         f"got {[len(v) for v in arrays]}.")
    nll_a, count_a, nll_b, count_b = arrays
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(nll_a), size=(samples, len(nll_a)))         # (samples, texts)
    diffs = nll_b[picks].sum(1) / count_b[picks].sum(1) - nll_a[picks].sum(1) / count_a[picks].sum(1)
    tail = (1 - level) / 2 * 100
    low, high = (float(v) for v in np.percentile(diffs, [tail, 100 - tail]))
    diff = float(nll_b.sum() / count_b.sum() - nll_a.sum() / count_a.sum())
    return PairedDifference(group=group, a=a, b=b, texts=len(nll_a), mean_nll_diff=diff, ci_low=low, ci_high=high,
                            ratio=math.exp(diff), ratio_ci_low=math.exp(low), ratio_ci_high=math.exp(high),
                            b_better=int((nll_b / count_b < nll_a / count_a).sum()))


def fit_power_law(n_params: list[float], values: list[float], metric: str = "perplexity") -> PowerLaw | None:
    """Least-squares line through (log N, log value); None with fewer than two sizes.

    ``metric`` names what ``values`` hold ("perplexity" or "bits_per_byte"); it is recorded
    in the fit. Fit per-token perplexity only across models that share one tokenizer.
    """
    if len(set(n_params)) < 2:
        return None
    slope, intercept = np.polyfit(np.log(n_params), np.log(values), deg=1)
    return PowerLaw(coefficient=float(math.exp(intercept)), exponent=float(slope), points=len(n_params),
                    metric=metric)


def model_labels(models: list[str]) -> dict[str, str]:
    """Each model's label in tables and plots: its short name (:func:`minillm.checkpoint.hub.display_name`:
    'Qwen/Qwen2.5-0.5B' -> 'Qwen2.5-0.5B', a folder -> its last part), or the full source when two
    models would share a short name."""
    short = {m: display_name(m) for m in models}
    counts = list(short.values())
    return {m: s if counts.count(s) == 1 else m for m, s in short.items()}


def summarize(name: str, rows: list[StoryResult], seed: int = 0) -> ModelSummary:
    nll = np.array([r.nll_total for r in rows])
    tokens = np.array([r.tokens for r in rows], dtype=float)
    nbytes = np.array([r.bytes for r in rows], dtype=float)
    mean_nll = nll.sum() / tokens.sum()
    low, high = bootstrap_interval(nll, tokens, seed=seed)
    bpb_low, bpb_high = bootstrap_interval(nll, nbytes * math.log(2), seed=seed)
    return ModelSummary(
        model=name, params=rows[0].params, non_embedding_params=rows[0].non_embedding_params,
        stories=len(rows), tokens=int(tokens.sum()), mean_nll=float(mean_nll),
        perplexity=math.exp(mean_nll), ppl_ci_low=math.exp(low), ppl_ci_high=math.exp(high),
        bits_per_byte=float(nll.sum() / math.log(2) / nbytes.sum()), bpb_ci_low=bpb_low, bpb_ci_high=bpb_high,
        source=rows[0].source,
    )


def tokenizer_fingerprint(source: str) -> str:
    """SHA-256 of a model's tokenizer.json: two models with the same one split text the same way."""
    return hashlib.sha256((load_tokenizer(source).folder / "tokenizer.json").read_bytes()).hexdigest()


def run_scaling(models: list[str], stories: TextSource | list[str], dtype: torch.dtype | str = torch.float32,
                batch_tokens: int = 1024, progress: bool = True, seed: int = 0) -> ScalingResults:
    """Score ``stories`` with every model (folder or hub id), one model in memory at a time.

    ``stories``: a :class:`~minillm.data.TextSource` (texts with ids), or a plain list of texts
    (ids "text #0", "text #1", ...). Each row records whether the model trained on the story
    (its training record, :mod:`minillm.training.provenance`). The power law is fitted in perplexity
    only when all models share one tokenizer; in bits per byte always. Rows, summaries and
    ``scores`` name each model by its label (:func:`model_labels`); ``source`` keeps the full one.
    """
    if not models:
        raise InputError("give at least one model (a checkpoint folder or a hub repo id).")
    if isinstance(stories, list):
        stories = TextSource(f"{len(stories)} texts", stories, [f"text #{i}" for i in range(len(stories))])
    if not stories.texts:
        raise InputError("give at least one story to score.")
    rows: list[StoryResult] = []
    scores: dict[str, list[TextScore]] = {}
    protocols, warnings = set(), []
    labels = model_labels(models)
    for name in models:
        if progress:
            print(f"scoring {len(stories)} stories with {name}", flush=True)
        model, tok = load_model_and_tokenizer(name, dtype=dtype, packed=True)
        params, non_embedding = model.num_parameters(), model.num_parameters(non_embedding=True)
        label = labels[name]
        scores[label] = score_many(model, tok, stories.texts, batch_tokens=batch_tokens, progress=progress)
        protocols.update(s.protocol for s in scores[label])
        seen = seen_in_training(name, stories.texts)
        warnings += [w for w in [overlap_warning(name, stories.texts)] if w]
        for i, s in enumerate(scores[label]):
            rows.append(StoryResult(label, params, non_embedding, i, stories.ids[i], s.n_tokens, s.n_bytes,
                                    s.total_nll, s.mean_nll, s.perplexity, s.bits_per_byte, seen[i], name))
        del model
    summaries = sorted((summarize(labels[m], [r for r in rows if r.model == labels[m]], seed) for m in models),
                       key=lambda s: s.non_embedding_params)
    shared = len({tokenizer_fingerprint(m) for m in models}) == 1
    sizes = [s.non_embedding_params for s in summaries]
    fit = fit_power_law(sizes, [s.perplexity for s in summaries]) if shared else None
    bpb_fit = fit_power_law(sizes, [s.bits_per_byte for s in summaries], metric="bits_per_byte")
    protocol = "; ".join(sorted(protocols)) + "; each story scored on its own"
    return ScalingResults(stories, rows, summaries, fit, bpb_fit, shared, scores, protocol, warnings)


def rank_stories(results: ScalingResults, model: str) -> list[StoryResult]:
    """One model's story rows, hardest (highest perplexity) first."""
    return sorted((r for r in results.rows if r.model == model), key=lambda r: r.perplexity, reverse=True)


def costliest_tokens(scores: list[TextScore], k: int = 20, ids: list[str] | None = None) -> list[dict]:
    """The k single tokens with the highest surprise across all stories, hardest first.

    ``story`` is the story's id from ``ids`` (default: its index in ``scores``)."""
    ids = ids or [str(i) for i in range(len(scores))]
    found = [dict(story=ids[i], position=row.position, token=row.token, context=row.context, surprise=row.surprise,
                  prob=row.prob, model_expected=row.top[0][0] if row.top else "")
             for i, s in enumerate(scores) for row in s.rows]
    return sorted(found, key=lambda d: d["surprise"], reverse=True)[:k]


def loss_by_token(scores: list[TextScore], k: int = 20) -> list[dict]:
    """Which token strings carry the most total loss (nats summed over every occurrence)."""
    totals: dict[str, list[float]] = {}
    for s in scores:
        for row in s.rows:
            totals.setdefault(row.token, []).append(row.surprise)
    ranked = sorted(totals.items(), key=lambda kv: sum(kv[1]), reverse=True)[:k]
    return [dict(token=t, count=len(v), total_nats=sum(v), mean_nats=sum(v) / len(v)) for t, v in ranked]


def size_differences(results: ScalingResults, seed: int = 0) -> list[PairedDifference]:
    """Each model against the next smaller one on the same stories (paired bootstrap).

    Per token when the models share a tokenizer, else per byte (``ratio`` is then the ratio of
    2 ** bits-per-byte, the per-byte perplexity)."""
    out = []
    per_token = results.shared_tokenizer
    for small, large in zip(results.summaries, results.summaries[1:]):
        a = sorted((r for r in results.rows if r.model == small.model), key=lambda r: r.story)
        b = sorted((r for r in results.rows if r.model == large.model), key=lambda r: r.story)
        count = (lambda rows: [r.tokens for r in rows]) if per_token else \
            (lambda rows: [r.bytes * math.log(2) for r in rows])
        out.append(paired_difference([r.nll_total for r in a], count(a), [r.nll_total for r in b], count(b),
                                     small.model, large.model, results.source.label, seed=seed))
    return out
