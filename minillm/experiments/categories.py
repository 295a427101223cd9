"""Which kinds of text does a model know? Every model on stories, news, code, poetry and
instructions (the bundled texts) and on any text files given, in one run.

Per model and category: bits per byte (the fair measure across tokenizers: total NLL in bits
over the UTF-8 bytes) and per-token perplexity, each pooled over the category's texts with a
bootstrap interval. Models are compared on the same texts, paired, in bits per byte. Texts a
model trained on are left out first (its training record), so that stories mean held-out stories.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minillm.checkpoint.hub import display_name
from minillm.data import TextSource
from minillm.checkpoint.loading import load_model_and_tokenizer
from minillm.training.provenance import overlap_warning, seen_in_training
from minillm.experiments.results import ConditionScore, ConditionSummary, PairedDifference
from minillm.inference.scoring import score_many
from minillm.experiments.conditions import condition_rows, differences_between_models, summarize_conditions


@dataclass
class CategoryResults:
    """What :func:`run_categories` measured; :func:`minillm.reports.files.write_categories` writes it out."""

    sources: dict[str, TextSource]        # category -> its texts
    rows: list[ConditionScore]            # condition = category
    summaries: list[ConditionSummary]
    differences: list[PairedDifference]   # per category, each model against the first, per byte
    warnings: list[str]

    def __str__(self) -> str:
        """Per model and category: bits per byte with its interval, and the per-token perplexity."""
        names = [display_name(s.model) for s in self.summaries]
        width = max(len("model"), *map(len, names)) if names else len("model")
        lines = [f"{'model':<{width}} {'category':>18} {'texts':>5} {'bits/byte':>10} {'95% CI':>15} {'perplexity':>11}"]
        lines += [f"{name:<{width}} {s.condition:>18} {s.texts:>5} {s.bits_per_byte:>10.4f} "
                  f"{s.bpb_ci_low:>7.4f}-{s.bpb_ci_high:<7.4f} {s.perplexity:>11.3f}"
                  for name, s in zip(names, self.summaries)]
        return "\n".join([*lines, *self.warnings])


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
