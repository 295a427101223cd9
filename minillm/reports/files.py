"""Results -> files: each experiment's tables (CSV), report (Markdown) and figures, in one folder.

The experiments (``minillm.experiments``) measure and return result objects; this module writes
them out, drawing the figures with the ``plots_*`` modules (and, for the scaling experiment,
report.html with :mod:`minillm.reports.report`), so that no experiment imports the reports.
"""

from __future__ import annotations

from pathlib import Path

from minillm.experiments.categories import CategoryResults
from minillm.experiments.conditions import difference_table, per_text_differences, summary_table, write_dicts
from minillm.experiments.context import ContextResults
from minillm.experiments.instructions import InstructionResults
from minillm.experiments.results import ScalingResults
from minillm.experiments.scaling import (costliest_tokens, fit_sentence, loss_by_token, rank_stories, size_differences,
                                         write_csv, write_report)
from minillm.checkpoint.hub import display_name
from minillm.reports.plots_conditions import plot_conditions
from minillm.reports.plots_scaling import plot_length_confound, plot_per_story, plot_scaling
from minillm.reports.report import write_scaling_html


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
        write_report(results, out),
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
