"""Which kinds of text does a model know? Every model on stories, news, code, poetry and
instructions (the bundled texts) and on any text files given, in one run.

Per model and category: bits per byte (the fair measure across tokenizers: total NLL in bits
over the UTF-8 bytes) and per-token perplexity, each pooled over the category's texts with a
bootstrap interval. Models are compared on the same texts, paired, in bits per byte. Texts a
model trained on are left out first (its training record), so that stories mean held-out stories.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from minillm.data import TextSource
from minillm.checkpoint.loading import load_model_and_tokenizer
from minillm.training.provenance import overlap_warning, seen_in_training
from minillm.experiments.results import ConditionScore, ConditionSummary, PairedDifference
from minillm.inference.scoring import score_many
from minillm.experiments.conditions import (condition_rows, difference_table, differences_between_models,
                                            summarize_conditions, summary_table)
from minillm.experiments.scaling import write_csv


@dataclass
class CategoryResults:
    """What :func:`run_categories` measured; :func:`write_categories` turns it into files."""

    sources: dict[str, TextSource]        # category -> its texts
    rows: list[ConditionScore]            # condition = category
    summaries: list[ConditionSummary]
    differences: list[PairedDifference]   # per category, each model against the first, per byte
    warnings: list[str]


def run_categories(models: list[str], sources: dict[str, TextSource], dtype: torch.dtype | str = torch.float32,
                   seed: int = 0, progress: bool = True) -> CategoryResults:
    """Score every category's texts with every model."""
    rows, warnings = [], []
    for name in models:
        if progress:
            print(f"scoring {sum(len(s) for s in sources.values())} texts in {len(sources)} categories with {name}",
                  flush=True)
        model, tok = load_model_and_tokenizer(name, dtype=dtype, packed=True)
        for category, source in sources.items():
            scored = score_many(model, tok, source.texts, top_k=0)
            rows += condition_rows(name, category, source.ids, scored, [""] * len(source),
                                   seen_in_training(name, source.texts))
            warnings += [w for w in [overlap_warning(name, source.texts)] if w]
        del model
    return CategoryResults(sources, rows, summarize_conditions(rows, seed),
                           differences_between_models(rows, per="byte", seed=seed), warnings)


def write_categories(results: CategoryResults, out: str | Path) -> list[Path]:
    """categories.csv, categories_summary.csv, categories_differences.csv, categories_report.md and
    categories.png into ``out``."""
    from minillm.reports import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Which kinds of text does each model know?", "", "Scored, each text on its own:", ""]
    lines += [f"- {category}: {source.label}" for category, source in results.sources.items()]
    lines += [""] + [f"**{w}**" for w in results.warnings] + ([""] if results.warnings else [])
    lines += ["Bits per byte compare across tokenizers; per-token perplexity only between models that share one.", ""]
    lines += summary_table(results.summaries, "category")
    if results.differences:
        lines += ["", "## Each model against the first, per category, paired text by text (bits per byte)", ""]
        lines += difference_table(results.differences, "2^bits-per-byte", group="texts")
    path = out / "categories_report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    paths = [write_csv(out / "categories.csv", results.rows), write_csv(out / "categories_summary.csv",
             results.summaries)]
    if results.differences:
        paths.append(write_csv(out / "categories_differences.csv", results.differences))
    return paths + [path, plots.plot_conditions(
        results.summaries, [], out / "categories.png", metric="bits_per_byte", connect=False,
        title="Bits per byte by kind of text (lower: the model predicts it better)", xlabel="kind of text",
        data_label="bundled texts no model here trained on" + (", and the files given" if any(
            not c.isalpha() for c in results.sources) else ""))]
