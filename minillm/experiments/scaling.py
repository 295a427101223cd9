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

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from ..loading import load_model
from ..scoring import TextScore, score_many
from ..tokenizer import load_tokenizer


@dataclass
class StoryResult:
    """One model on one story: a row of results.csv."""

    model: str
    params: int                   # total parameters (a tied LM head counted once)
    non_embedding_params: int
    story: int                    # index of the story in the experiment's list
    tokens: int                   # scored tokens
    bytes: int                    # UTF-8 bytes the scored tokens cover
    nll: float                    # total negative log-likelihood, nats
    perplexity: float
    bits_per_byte: float


@dataclass
class ModelSummary:
    """One model over all stories: a row of summary.csv."""

    model: str
    params: int
    non_embedding_params: int
    stories: int
    tokens: int
    mean_nll: float               # nats per scored token, over all stories
    perplexity: float             # exp(mean_nll)
    ppl_ci_low: float             # bootstrap 95% interval of the perplexity
    ppl_ci_high: float
    bits_per_byte: float
    bpb_ci_low: float
    bpb_ci_high: float


@dataclass
class PowerLaw:
    """perplexity ~= coefficient * N ** exponent, N = non-embedding parameters."""

    coefficient: float
    exponent: float
    points: int                   # models it was fitted on (2 points fit exactly)

    def predict(self, n: float | np.ndarray) -> float | np.ndarray:
        return self.coefficient * np.asarray(n, dtype=float) ** self.exponent


@dataclass
class ScalingResults:
    stories: list[str]
    rows: list[StoryResult]
    summaries: list[ModelSummary]          # sorted by non-embedding parameters
    fit: PowerLaw | None                   # None with fewer than two model sizes
    scores: dict[str, list[TextScore]]     # per model, per story: the token-level detail
    protocol: str


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


def fit_power_law(n_params: list[float], perplexities: list[float]) -> PowerLaw | None:
    """Least-squares line through (log N, log perplexity); None with fewer than two sizes."""
    if len(set(n_params)) < 2:
        return None
    slope, intercept = np.polyfit(np.log(n_params), np.log(perplexities), deg=1)
    return PowerLaw(coefficient=float(math.exp(intercept)), exponent=float(slope), points=len(n_params))


def summarize(name: str, rows: list[StoryResult], seed: int = 0) -> ModelSummary:
    nll = np.array([r.nll for r in rows])
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
    )


def run_scaling(models: list[str], stories: list[str], dtype: torch.dtype | str = torch.float32,
                batch_tokens: int = 1024, progress: bool = True, seed: int = 0) -> ScalingResults:
    """Score ``stories`` with every model (folder or hub id), one model in memory at a time."""
    if not models:
        raise ValueError("give at least one model (a checkpoint folder or a hub repo id).")
    if not stories:
        raise ValueError("give at least one story to score.")
    rows: list[StoryResult] = []
    scores: dict[str, list[TextScore]] = {}
    protocols = set()
    for name in models:
        if progress:
            print(f"scoring {len(stories)} stories with {name}", flush=True)
        model, tok = load_model(name, dtype=dtype, packed=True), load_tokenizer(name)
        params, non_embedding = model.num_parameters(), model.num_parameters(non_embedding=True)
        scores[name] = score_many(model, tok, stories, batch_tokens=batch_tokens, progress=progress)
        protocols.update(s.protocol for s in scores[name])
        for i, s in enumerate(scores[name]):
            rows.append(StoryResult(name, params, non_embedding, i, s.n_tokens, s.n_bytes, s.total_nll,
                                    s.perplexity, s.bits_per_byte))
        del model
    summaries = sorted((summarize(name, [r for r in rows if r.model == name], seed) for name in models),
                       key=lambda s: s.non_embedding_params)
    fit = fit_power_law([s.non_embedding_params for s in summaries], [s.perplexity for s in summaries])
    protocol = "; ".join(sorted(protocols)) + "; each story scored on its own"
    return ScalingResults(stories, rows, summaries, fit, scores, protocol)


def write_csv(path: Path, rows: list) -> Path:
    """Write dataclass rows as CSV (header from the field names)."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([fl.name for fl in fields(rows[0])])
        for row in rows:
            writer.writerow(asdict(row).values())
    return path


def rank_stories(results: ScalingResults, model: str) -> list[StoryResult]:
    """One model's story rows, hardest (highest perplexity) first."""
    return sorted((r for r in results.rows if r.model == model), key=lambda r: r.perplexity, reverse=True)


def costliest_tokens(scores: list[TextScore], k: int = 20) -> list[dict]:
    """The k single tokens with the highest surprise across all stories, hardest first."""
    found = [dict(story=i, position=row.position, token=row.token, context=row.context, surprise=row.surprise,
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


def write_report(results: ScalingResults, out: Path, n_stories: int = 3) -> Path:
    """report.md: the summary table, the fit, and for the largest model the hardest and easiest
    stories (full text) and the tokens that cost the most."""
    lines = ["# Scaling experiment", "", f"Protocol: {results.protocol}.", "",
             "| model | parameters | non-embedding | stories | tokens | perplexity (95% CI) | bits/byte (95% CI) |",
             "|---|---|---|---|---|---|---|"]
    for s in results.summaries:
        lines.append(f"| {s.model} | {s.params:,} | {s.non_embedding_params:,} | {s.stories} | {s.tokens:,} | "
                     f"{s.perplexity:.3f} ({s.ppl_ci_low:.3f}-{s.ppl_ci_high:.3f}) | "
                     f"{s.bits_per_byte:.4f} ({s.bpb_ci_low:.4f}-{s.bpb_ci_high:.4f}) |")
    if results.fit:
        note = " (exact through 2 points)" if results.fit.points == 2 else ""
        lines += ["", f"Power law: perplexity = {results.fit.coefficient:.4g} * N^{results.fit.exponent:.4f}, "
                      f"N = non-embedding parameters, fitted on {results.fit.points} models{note}."]
    largest = results.summaries[-1].model
    ranked = rank_stories(results, largest)
    for title, picks in [("Hardest stories", ranked[:n_stories]), ("Easiest stories", ranked[::-1][:n_stories])]:
        lines += ["", f"## {title} for {largest}", ""]
        for r in picks:
            lines += [f"### Story {r.story}: perplexity {r.perplexity:.3f} over {r.tokens} tokens", "",
                      "> " + results.stories[r.story].replace("\n", "\n> "), ""]
    lines += ["", f"## Tokens that cost {largest} the most", "",
              "| story | token | after ... | surprise (nats) | p | model expected |", "|---|---|---|---|---|---|"]
    for t in costliest_tokens(results.scores[largest]):
        lines.append(f"| {t['story']} | `{t['token']!r}` | `{t['context'][-30:]!r}` | {t['surprise']:.2f} | "
                     f"{t['prob']:.2e} | `{t['model_expected']!r}` |")
    lines += ["", "| token | count | total nats | mean nats |", "|---|---|---|---|"]
    for t in loss_by_token(results.scores[largest]):
        lines.append(f"| `{t['token']!r}` | {t['count']} | {t['total_nats']:.1f} | {t['mean_nats']:.2f} |")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def save_results(results: ScalingResults, out: str | Path) -> list[Path]:
    """Write results.csv, summary.csv, report.md and the plots into ``out``; returns the paths."""
    from .. import plots  # matplotlib is loaded only when figures are drawn

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    largest = results.summaries[-1].model
    hardest = rank_stories(results, largest)[0]
    return [
        write_csv(out / "results.csv", results.rows),
        write_csv(out / "summary.csv", results.summaries),
        write_report(results, out),
        plots.plot_scaling(results.summaries, results.fit, out / "perplexity_vs_size.png"),
        plots.plot_scaling(results.summaries, None, out / "bits_per_byte_vs_size.png", metric="bits_per_byte"),
        plots.plot_per_story(results.rows, results.summaries, out / "per_story.png"),
        plots.plot_length_confound(results.rows, out / "length_confound.png"),
        plots.plot_token_surprise(results.scores[largest][hardest.story], out / "hardest_story_tokens.png",
                                  title=f"{largest}: story {hardest.story}, perplexity {hardest.perplexity:.2f}"),
    ]
