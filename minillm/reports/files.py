"""Results -> files: each experiment's tables (CSV), report (Markdown) and figures, in one folder.

The experiments (``minillm.experiments``) measure and return result objects; this module writes
them out, drawing the figures with the ``plots_*`` modules (and, for the scaling experiment,
report.html with :mod:`minillm.reports.report`), so that no experiment imports the reports.
"""

from __future__ import annotations

from pathlib import Path

from minillm.experiments.categories import CategoryResults
from minillm.experiments.conditions import per_text_differences
from minillm.experiments.context import ContextResults
from minillm.experiments.instructions import InstructionResults
from minillm.experiments.results import ArchitectureRow, PowerLaw, QuantizationResult, ScalingResults, SweepResult, fit_sentence
from minillm.experiments.scaling import costliest_tokens, loss_by_token, rank_stories, size_differences
from minillm.checkpoint.hub import display_name
from minillm.reports.plots_conditions import plot_conditions
from minillm.reports.plots_quantization import plot_quantization
from minillm.reports.plots_scaling import plot_length_confound, plot_per_story, plot_scaling
from minillm.reports.plots_training import plot_architectures, plot_size_sweep
from minillm.reports.report import write_scaling_html
from minillm.reports.tables import difference_table, summary_table, write_csv, write_dicts


def save_results(results: ScalingResults, out: str | Path) -> list[Path]:
    """Write results.csv, summary.csv, differences.csv, report.md, the plots and report.html
    into ``out``; returns the paths."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    largest = results.summaries[-1].model
    label = results.source.label
    diffs = size_differences(results)
    paths = [
        write_csv(out / "results.csv", results.rows),
        write_csv(out / "summary.csv", results.summaries),
        *([write_csv(out / "differences.csv", diffs)] if diffs else []),
        write_scaling_report(results, out),
        plot_scaling(results.summaries, results.fit, out / "perplexity_vs_size.png", data_label=label,
                     note=None if results.shared_tokenizer else
                     "different tokenizers: per-token perplexities not comparable, no fit; see bits per byte"),
        plot_scaling(results.summaries, results.bpb_fit, out / "bits_per_byte_vs_size.png",
                     metric="bits_per_byte", data_label=label),
        plot_per_story(results.rows, results.summaries, out / "per_story.png", data_label=label),
        plot_length_confound(results.rows, out / "length_confound.png", data_label=label),
    ]
    paths.append(write_scaling_html(results, rank_stories(results, largest), diffs, out, fit_sentence(results),
                                    costliest_tokens(results.scores[largest], ids=results.source.ids),
                                    loss_by_token(results.scores[largest])))
    return paths


def write_categories(results: CategoryResults, out: str | Path) -> list[Path]:
    """categories.csv, categories_summary.csv, categories_differences.csv, categories_report.md and
    categories.png into ``out``."""

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
    return paths + [path, plot_conditions(
        results.summaries, [], out / "categories.png", metric="bits_per_byte", connect=False,
        title="Bits per byte by kind of text (lower: the model predicts it better)", xlabel="kind of text",
        data_label="bundled texts no model here trained on" + (", and the files given" if any(
            not c.isalpha() for c in results.sources) else ""))]


def write_context(results: ContextResults, out: str | Path) -> list[Path]:
    """context.csv (per story, model and k), context_summary.csv, context_differences.csv (each k
    against k=0, paired), context_per_story.csv (each story's change from k=0), context_report.md
    and context.png into ``out``."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scored = (f"Scored: the continuation of each of {results.source.label}, after k = 0 to {results.max_k} "
              "preceding sentences; only the continuation is scored, the same tokens for every k (k = 0: only "
              "the start-of-document marker before it).")
    lines = ["# Does context help?", "", scored, ""]
    if results.skipped:
        lines += [f"{results.skipped} stories with fewer than {results.max_k + 1} sentences were skipped.", ""]
    lines += [f"**{w}**" for w in results.warnings] + ([""] if results.warnings else [])
    lines += summary_table(results.summaries, "k")
    lines += ["", "## Each k against k = 0, paired story by story", ""]
    lines += difference_table(results.differences, "perplexity")
    last = results.rows[-1].model
    per_story = [d for d in per_text_differences(results.rows, "k=0") if d["model"] == last]
    ks = [f"k={k}" for k in range(1, results.max_k + 1)]
    lines += ["", f"## Per story, {display_name(last)}: perplexity with k sentences / without (k=0)", "",
              "| story | " + " | ".join(ks) + " |", "|---" * (len(ks) + 1) + "|"]
    for story_id in dict.fromkeys(d["text_id"] for d in per_story):
        ratios = {d["condition"]: d["perplexity_ratio"] for d in per_story if d["text_id"] == story_id}
        lines.append(f"| {story_id} | " + " | ".join(f"{ratios[k]:.3f}" for k in ks) + " |")
    path = out / "context_report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [*_paired_tables(results, out, "context", baseline="k=0"), path,
            plot_conditions(results.summaries, results.differences, out / "context.png",
                            title="Perplexity of the same continuation after k sentences of its story",
                            xlabel="k: sentences of the story before the continuation",
                            data_label=results.source.label, baseline="k=0")]


def write_instructions(results: InstructionResults, out: str | Path) -> list[Path]:
    """instructions.csv, instructions_summary.csv, instructions_differences.csv,
    instructions_per_story.csv, instructions_report.md and instructions.png into ``out``."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chat = ", ".join(display_name(m) for m in results.chat_models) or "none"
    scored = (f"Scored: {results.source.label}, each after five kinds of instruction; only the story's tokens "
              "are scored. Base models read the instruction as plain text before the story; instruct models "
              f"through their chat template, the story as the assistant's reply (here: {chat}).")
    lines = ["# Do instructions help?", "", scored, ""]
    lines += [f"**{w}**" for w in results.warnings] + ([""] if results.warnings else [])
    lines += summary_table(results.summaries, "instruction")
    lines += ["", "## Each instruction against none, paired story by story", ""]
    lines += difference_table(results.differences, "perplexity")
    lines += ["", "## The prompts", "", "| story | condition | prompt |", "|---|---|---|"]
    first = results.rows[0].model
    for r in (r for r in results.rows if r.model == first and r.condition != "none"):
        lines.append(f"| {r.text_id} | {r.condition} | {r.prompt} |")
    path = out / "instructions_report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [*_paired_tables(results, out, "instructions", baseline="none"), path,
            plot_conditions(results.summaries, results.differences, out / "instructions.png",
                            title="Perplexity of a story after an instruction (only the story is scored)",
                            xlabel="instruction before the story", data_label=results.source.label,
                            baseline="none", connect=False)]


def _paired_tables(results: ContextResults | InstructionResults, out: Path, stem: str, baseline: str) -> list[Path]:
    """<stem>.csv (per text, model and condition), <stem>_summary.csv, <stem>_differences.csv (each
    condition against ``baseline``, paired) and <stem>_per_story.csv (each text's change from it)."""
    return [write_csv(out / f"{stem}.csv", results.rows),
            write_csv(out / f"{stem}_summary.csv", results.summaries),
            write_csv(out / f"{stem}_differences.csv", results.differences),
            write_dicts(out / f"{stem}_per_story.csv", per_text_differences(results.rows, baseline))]


def write_scaling_report(results: ScalingResults, out: Path, n_stories: int = 3) -> Path:
    """report.md: the summary table, the fit, the paired differences between sizes, and for the
    largest model the hardest and easiest stories (full text, with their ids) and the tokens
    that cost the most."""
    lines = ["# Scaling experiment", "", f"Scored: {results.source.label}.", "", f"Protocol: {results.protocol}.", ""]
    lines += [f"**{w}**" for w in results.warnings] + ([""] if results.warnings else [])
    lines += ["| model | parameters | non-embedding | stories | tokens | perplexity (95% CI) | bits/byte (95% CI) |",
              "|---|---|---|---|---|---|---|"]
    for s in results.summaries:
        lines.append(f"| {s.model} | {s.params:,} | {s.non_embedding_params:,} | {s.stories} | {s.tokens:,} | "
                     f"{s.perplexity:.3f} ({s.ppl_ci_low:.3f}-{s.ppl_ci_high:.3f}) | "
                     f"{s.bits_per_byte:.4f} ({s.bpb_ci_low:.4f}-{s.bpb_ci_high:.4f}) |")
    lines += ["", fit_sentence(results)]
    diffs = size_differences(results)
    if diffs:
        unit = "perplexity" if results.shared_tokenizer else "per-byte perplexity (2^bits per byte)"
        lines += ["", "## Each model against the next smaller one, on the same stories", "",
                  f"Ratio of {unit}, larger / smaller, with a paired bootstrap 95% interval over stories:", "",
                  "| smaller | larger | ratio (95% CI) | stories where the larger is better |", "|---|---|---|---|"]
        for d in diffs:
            lines.append(f"| {d.a} | {d.b} | {d.ratio:.3f} ({d.ratio_ci_low:.3f}-{d.ratio_ci_high:.3f}) | "
                         f"{d.b_better} of {d.texts} |")
    largest = results.summaries[-1].model
    ranked = rank_stories(results, largest)
    for title, picks in [("Hardest stories", ranked[:n_stories]), ("Easiest stories", ranked[::-1][:n_stories])]:
        lines += ["", f"## {title} for {largest}", ""]
        for r in picks:
            lines += [f"### Story {r.story_id}: perplexity {r.perplexity:.3f} over {r.tokens} tokens", "",
                      "> " + results.stories[r.story].replace("\n", "\n> "), ""]
    lines += ["", f"## Tokens that cost {largest} the most", "",
              "| story | token | after ... | surprise (nats) | p | model expected |", "|---|---|---|---|---|---|"]
    for t in costliest_tokens(results.scores[largest], ids=results.source.ids):
        lines.append(f"| {t['story']} | `{t['token']!r}` | `{t['context'][-30:]!r}` | {t['surprise']:.2f} | "
                     f"{t['prob']:.2e} | `{t['model_expected']!r}` |")
    lines += ["", f"## Token strings that cost {largest} the most in total", "",
              "Every occurrence of a token string counted together: how often it was scored, the nats summed "
              "over those occurrences, and their mean.", "",
              "| token | count | total nats | mean nats |", "|---|---|---|---|"]
    for t in loss_by_token(results.scores[largest]):
        lines.append(f"| `{t['token']!r}` | {t['count']} | {t['total_nats']:.1f} | {t['mean_nats']:.2f} |")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_quantization(rows: list[QuantizationResult], out: str | Path, data_label: str) -> list[Path]:
    """quantization.csv and perplexity_vs_bits.png (its title ends with ``data_label``) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [write_csv(out / "quantization.csv", rows),
            plot_quantization(rows, out / "perplexity_vs_bits.png", data_label=data_label)]


def write_sweep(results: list[SweepResult], fit: PowerLaw | None, out: str | Path) -> list[Path]:
    """sweep.csv and sweep.png (the final losses against size, and the fit) into ``out``."""
    out = Path(out)
    return [write_csv(out / "sweep.csv", results), plot_size_sweep(results, fit, out / "sweep.png")]


def write_architectures(rows: list[ArchitectureRow], out: str | Path) -> list[Path]:
    """architectures.csv and architectures.png (each architecture's validation loss) into ``out``."""
    out = Path(out)
    return [write_csv(out / "architectures.csv", rows), plot_architectures(rows, out / "architectures.png")]
