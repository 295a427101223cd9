"""The result rows of the experiments: plain dataclasses, one per table.

The experiments (``minillm.experiments``) fill these rows; the figures (``minillm.reports.plots_*``)
and the tables read them. Keeping the types in a module of their own, which imports no
experiment, lets data flow one way: experiments -> rows -> tables and plots, with the plots
importing these rows and never an experiment.

Units: NLL in nats (natural log); bits per byte is the total NLL in bits over the UTF-8
bytes the scored tokens cover. Every ``*_ci_low`` / ``*_ci_high`` pair is a 95% bootstrap
interval over texts (see :func:`minillm.experiments.scaling.bootstrap_interval`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minillm.data import TextSource
from minillm.inference.scoring import TextScore


@dataclass
class StoryResult:
    """One model on one story: a row of results.csv."""

    model: str
    params: int                   # total parameters (a tied LM head counted once)
    non_embedding_params: int
    story: int                    # index of the story in this run's list
    story_id: str                 # where the story comes from: "stories.txt#48" = text 48 (from 0) of that file
    tokens: int                   # scored tokens
    bytes: int                    # UTF-8 bytes the scored tokens cover
    nll_total: float              # total negative log-likelihood over the scored tokens, nats
    nll_mean: float               # nll_total / tokens, nats per token
    perplexity: float             # exp(nll_mean)
    bits_per_byte: float          # nll_total / ln 2 / bytes
    seen_in_training: str         # "yes", "no" or "unknown" (no record of the model's training data)
    source: str = ""              # the folder or hub id the model came from (``model`` is its short name)


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
    source: str = ""              # the folder or hub id the model came from (``model`` is its short name)


@dataclass
class PowerLaw:
    """metric ~= coefficient * N ** exponent, N = non-embedding parameters.

    ``metric`` names what was fitted: "perplexity" (per token: only fair when every model
    shares one tokenizer) or "bits_per_byte" (fair across tokenizers)."""

    coefficient: float
    exponent: float
    points: int                   # models it was fitted on (2 points fit exactly)
    metric: str = "perplexity"

    def predict(self, n: float | np.ndarray) -> float | np.ndarray:
        return self.coefficient * np.asarray(n, dtype=float) ** self.exponent


@dataclass
class PairedDifference:
    """Condition B against condition A on the same texts: a row of a *_differences.csv.

    ``mean_nll_diff`` = pooled NLL per unit of B minus that of A (nats per token, or per byte
    for bits per byte): negative when B predicts the texts better. ``ratio`` = exp of it, the
    factor by which B's perplexity differs from A's. The interval comes from resampling texts
    with replacement, the same texts for A and B (a paired bootstrap). ``group`` names what A
    and B share: the model when two conditions are compared, the condition when two models are."""

    group: str
    a: str
    b: str
    texts: int
    mean_nll_diff: float
    ci_low: float
    ci_high: float
    ratio: float                  # exp(mean_nll_diff): perplexity of B / perplexity of A
    ratio_ci_low: float
    ratio_ci_high: float
    b_better: int                 # texts on which B's NLL per unit is lower than A's


@dataclass
class QuantizationResult:
    """One (bits, scheme) setting: a row of quantization.csv."""

    bits: int                     # 32 means the unquantized model
    scheme: str                   # "tensor", "channel" or "group"
    size_mb: float                # storage of a real k-bit model, 10**6 bytes
    tokens: int                   # scored tokens
    mean_nll: float               # nats per token
    perplexity: float
    bits_per_byte: float


@dataclass
class SweepResult:
    """One model of a size sweep: a row of sweep.csv."""

    name: str                     # "h64-l2": hidden size and layers
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    params: int                   # all parameters (the tied embedding once)
    non_embedding_params: int
    steps: int
    tokens: int                   # training tokens seen
    val_loss: float               # final validation loss, nats per token
    val_perplexity: float         # exp(val_loss)
    seconds: float                # wall-clock training time
    tokens_per_second: float


@dataclass
class ArchitectureRow:
    """One validation measurement of one architecture: a row of architectures.csv."""

    architecture: str             # "transformer" or "mlp"
    params: int
    non_embedding_params: int
    step: int
    tokens: int                   # training tokens seen
    val_loss: float               # nats per token


@dataclass
class ConditionScore:
    """One model on one text under one condition (a context length, an instruction, a category):
    a row of context.csv, instructions.csv or categories.csv."""

    model: str
    condition: str                # "k=2", "specific", "news", ...
    text_id: str                  # "stories.txt#48": file and index (from 0) of the source text
    tokens: int                   # scored tokens
    bytes: int                    # UTF-8 bytes they cover
    nll_total: float              # nats
    nll_mean: float               # nats per token
    perplexity: float
    bits_per_byte: float
    prompt: str                   # the unscored text before it ("" for none)
    seen_in_training: str         # "yes", "no" or "unknown"


@dataclass
class ConditionSummary:
    """One model under one condition over all its texts: a row of *_summary.csv."""

    model: str
    condition: str
    texts: int
    tokens: int
    perplexity: float             # exp(total NLL / total tokens)
    ppl_ci_low: float
    ppl_ci_high: float
    bits_per_byte: float
    bpb_ci_low: float
    bpb_ci_high: float


@dataclass
class ScalingResults:
    """Every model on the same stories: the rows, the summaries, the fits and the token-level scores."""

    source: TextSource                     # the stories, their ids and what they are
    rows: list[StoryResult]
    summaries: list[ModelSummary]          # sorted by non-embedding parameters
    fit: PowerLaw | None                   # in perplexity; None with fewer than two sizes or with mixed tokenizers
    bpb_fit: PowerLaw | None               # in bits per byte; None with fewer than two sizes
    shared_tokenizer: bool                 # whether every model has the same tokenizer.json
    scores: dict[str, list[TextScore]]     # per model, per story: the token-level detail
    protocol: str
    warnings: list[str]                    # e.g. stories a model was trained on

    @property
    def stories(self) -> list[str]:
        return self.source.texts

    def __str__(self) -> str:
        """The text view (``minillm scaling`` prints it): per model its size, tokens, perplexity with
        its interval and bits per byte; the fitted power law in words; the warnings."""
        width = max(len("model"), *(len(s.model) for s in self.summaries))
        lines = [f"{'model':<{width}} {'non-emb params':>15} {'tokens':>8} {'perplexity':>11} {'95% CI':>17} "
                 f"{'bits/byte':>9}"]
        for s in self.summaries:
            ci = f"{s.ppl_ci_low:.3f}-{s.ppl_ci_high:.3f}"
            lines.append(f"{s.model:<{width}} {s.non_embedding_params:>15,} {s.tokens:>8,} {s.perplexity:>11.3f} "
                         f"{ci:>17} {s.bits_per_byte:>9.4f}")
        return "\n".join([*lines, fit_sentence(self), *self.warnings])


def fit_sentence(results: ScalingResults) -> str:
    """The fitted power law(s), in words, saying which metric and why."""
    parts = []
    for fit in (results.fit, results.bpb_fit):
        if fit is None:
            continue
        name = "perplexity" if fit.metric == "perplexity" else "bits per byte"
        note = " (exact through 2 points)" if fit.points == 2 else ""
        parts.append(f"{name} = {fit.coefficient:.4g} * N^{fit.exponent:.4f}, fitted on {fit.points} models{note}")
    if not parts:
        return "No power law: it needs at least two model sizes."
    text = "Power law (N = non-embedding parameters): " + "; ".join(parts) + "."
    if not results.shared_tokenizer:
        text += (" The models use different tokenizers, so their per-token perplexities count different "
                 "tokens and are not compared or fitted: compare them in bits per byte.")
    return text
