"""Training experiments: loss against model size, and what attention buys over a fixed window.

**Size sweep.** Models of several sizes train on the same texts, with the same tokenizer,
for the same number of training tokens (the *token budget*). The final validation loss is
recorded against each model's non-embedding parameter count N, and a power law
``perplexity = A * N**k`` is fitted as in the scaling experiment
(:func:`minillm.experiments.scaling.fit_power_law`, perplexity = exp(validation loss)).
At a fixed budget a bigger model is not always better: it learns more per token but also
needs more tokens before it has learned anything, so tiny budgets favour small models.

**Architectures.** A Qwen2 transformer and the MLP baseline of :mod:`minillm.models.mlp_lm` (which
sees only the last ``mlp_window`` tokens) train on the same data for the same budget, the
MLP with the transformer's embedding width and about as many non-embedding parameters.
The MLP is often ahead early (it has less to learn); the transformer pulls ahead once it
uses context the MLP cannot see: a name from the first sentence, a quote still open.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

from minillm.errors import InputError
from minillm.training.bpe import train_tokenizer
from minillm.training.config import TrainConfig
from minillm.training.train import train
from minillm.training.windows import split_documents
from minillm.experiments.results import ArchitectureRow, PowerLaw, SweepResult
from minillm.experiments.scaling import fit_power_law


def shape(hidden: int, layers: int, head_dim: int = 16) -> dict:
    """A Qwen2-like shape: heads of ``head_dim``, half as many key/value heads, SwiGLU width
    about 8/3 of ``hidden`` (rounded to a multiple of 8). A dict of TrainConfig fields."""
    if hidden % head_dim or hidden < head_dim:
        raise InputError(f"hidden={hidden} must be a multiple of head_dim={head_dim}.")
    heads = hidden // head_dim
    return dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=max(1, heads // 2), intermediate_size=8 * round(hidden / 3))


def _steps(token_budget: int, base: TrainConfig) -> int:
    steps = token_budget // base.tokens_per_step
    if steps < 1:
        raise InputError(f"token_budget={token_budget} is less than one batch ({base.tokens_per_step} tokens).")
    return steps


def _shared_tokenizer(texts: list[str], base: TrainConfig, out: Path) -> Path:
    """One tokenizer for every model of an experiment, learned from the training documents."""
    train_docs, _ = split_documents(texts, base.val_fraction)
    return train_tokenizer(train_docs, base.vocab_size, out / "tokenizer")


def size_sweep(texts: list[str], shapes: list[dict], token_budget: int, out: str | Path,
               base: TrainConfig | None = None, progress: bool = True) -> list[SweepResult]:
    """Train one model per shape (dicts of TrainConfig fields, e.g. from :func:`shape`) on
    ``texts`` for ``token_budget`` training tokens each; returns one result per shape.

    Everything but the shape comes from ``base`` (default: TrainConfig()); the steps are
    ``token_budget // (batch_size * context)``. Checkpoints go to ``out/<name>``, the shared
    tokenizer to ``out/tokenizer``.
    """
    if not shapes:
        raise InputError("give at least one shape, e.g. [shape(32, 2), shape(64, 2)].")
    out, base = Path(out), base or TrainConfig()
    steps = _steps(token_budget, base)
    tokenizer = _shared_tokenizer(texts, base, out)
    results = []
    for fields in shapes:
        config = replace(base, **fields, architecture="transformer", steps=steps,
                         eval_every=max(1, steps // 10))
        name = f"h{config.hidden_size}-l{config.num_hidden_layers}"
        if progress:
            print(f"training {name} for {steps} steps ({steps * config.tokens_per_step:,} tokens)", flush=True)
        start = time.perf_counter()
        result = train(texts, config, out / name, tokenizer=tokenizer, progress=progress)
        model = result.model
        results.append(SweepResult(
            name, config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.num_key_value_heads, config.intermediate_size, model.num_parameters(),
            model.num_parameters(non_embedding=True), steps, steps * config.tokens_per_step,
            result.final_val_loss, math.exp(result.final_val_loss), time.perf_counter() - start,
            result.tokens_per_second))
    return results


def fit_sweep(results: list[SweepResult]) -> PowerLaw | None:
    """Power law of validation perplexity against non-embedding parameters (None below 2 sizes)."""
    return fit_power_law([r.non_embedding_params for r in results], [r.val_perplexity for r in results])


def matched_mlp_hidden(non_embedding_params: int, embed_dim: int, window: int) -> int:
    """The MLP hidden width that gives about ``non_embedding_params`` parameters besides the
    embedding: fc1 (window * embed_dim -> hidden), fc2 (hidden -> embed_dim), pad and norm."""
    return max(1, round((non_embedding_params - 3 * embed_dim) / (window * embed_dim + embed_dim + 1)))


def compare_architectures(texts: list[str], token_budget: int, out: str | Path, base: TrainConfig | None = None,
                          progress: bool = True) -> list[ArchitectureRow]:
    """Train ``base``'s transformer and a matching fixed-window MLP for the same token budget.

    The MLP sees the last ``base.mlp_window`` tokens, embeds them with ``base.hidden_size``
    numbers each, and has a hidden width chosen for about the transformer's non-embedding
    parameter count. Returns every validation measurement of both runs (step 0 included).
    """
    out, base = Path(out), base or TrainConfig()
    steps = _steps(token_budget, base)
    tokenizer = _shared_tokenizer(texts, base, out)
    transformer = replace(base, architecture="transformer", steps=steps, eval_every=max(1, steps // 20))
    rows = _architecture_rows(texts, transformer, out, tokenizer, progress)
    hidden = matched_mlp_hidden(rows[0].non_embedding_params, base.hidden_size, base.mlp_window)
    mlp = replace(transformer, architecture="mlp", intermediate_size=hidden)
    return rows + _architecture_rows(texts, mlp, out, tokenizer, progress)


def _architecture_rows(texts: list[str], config: TrainConfig, out: Path, tokenizer: Path,
                       progress: bool) -> list[ArchitectureRow]:
    if progress:
        print(f"training the {config.architecture} for {config.steps} steps", flush=True)
    result = train(texts, config, out / config.architecture, tokenizer=tokenizer, progress=progress)
    params, non_embedding = result.model.num_parameters(), result.model.num_parameters(non_embedding=True)
    return [ArchitectureRow(config.architecture, params, non_embedding, r.step, r.tokens, r.val_loss)
            for r in result.history if r.val_loss is not None]


def sweep_text(results: list[SweepResult], fit: PowerLaw | None) -> str:
    """A text table of a size sweep (what ``minillm sweep`` prints), and its power law in words."""
    lines = [f"{'model':<10} {'params':>9} {'non-emb':>9} {'val loss':>9} {'val ppl':>8} {'seconds':>8} {'tokens/s':>9}"]
    lines += [f"{r.name:<10} {r.params:>9,} {r.non_embedding_params:>9,} {r.val_loss:>9.4f} {r.val_perplexity:>8.3f} "
              f"{r.seconds:>8.1f} {r.tokens_per_second:>9,.0f}" for r in results]
    if fit:
        lines.append(f"power law: validation perplexity = {fit.coefficient:.4g} * N^{fit.exponent:.4f} "
                     "(N = non-embedding parameters)")
    return "\n".join(lines)


def architectures_text(rows: list[ArchitectureRow]) -> str:
    """A text table of :func:`compare_architectures`' last measurement per architecture."""
    lines = [f"{'architecture':<12} {'params':>9} {'non-emb':>9} {'tokens':>10} {'val loss':>9}"]
    for name in dict.fromkeys(r.architecture for r in rows):
        last = [r for r in rows if r.architecture == name][-1]
        lines.append(f"{name:<12} {last.params:>9,} {last.non_embedding_params:>9,} {last.tokens:>10,} "
                     f"{last.val_loss:>9.4f}")
    return "\n".join(lines)
