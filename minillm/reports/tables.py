"""Result rows -> table files: CSV (one row per dataclass or dict) and Markdown tables of the
condition experiments' summaries and paired differences, for the reports :mod:`minillm.reports.files` writes."""

from __future__ import annotations

import csv
from dataclasses import asdict, fields
from pathlib import Path

from minillm.checkpoint.hub import display_name
from minillm.experiments.results import ConditionSummary, PairedDifference


def write_csv(path: Path, rows: list) -> Path:
    """Write dataclass rows as CSV (header from the field names)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([fl.name for fl in fields(rows[0])])
        for row in rows:
            writer.writerow(asdict(row).values())
    return path


def write_dicts(path: Path, rows: list[dict]) -> Path:
    """Rows of dicts (same keys) as CSV."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def summary_table(summaries: list[ConditionSummary], condition_header: str) -> list[str]:
    """Markdown table lines of the summaries."""
    lines = [f"| model | {condition_header} | texts | tokens | perplexity (95% CI) | bits/byte (95% CI) |",
             "|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {display_name(s.model)} | {s.condition} | {s.texts} | {s.tokens:,} | {s.perplexity:.3f} "
                     f"({s.ppl_ci_low:.3f}-{s.ppl_ci_high:.3f}) | {s.bits_per_byte:.4f} "
                     f"({s.bpb_ci_low:.4f}-{s.bpb_ci_high:.4f}) |")
    return lines


def difference_table(diffs: list[PairedDifference], what: str, group: str = "model") -> list[str]:
    """Markdown table lines of paired differences (B against A); ``group`` heads the column of what both share."""
    lines = [f"| {group} | A | B | texts | {what} B / A (95% paired CI) | texts where B is better |",
             "|---|---|---|---|---|---|"]
    for d in diffs:
        lines.append(f"| {d.group} | {d.a} | {d.b} | {d.texts} | {d.ratio:.3f} ({d.ratio_ci_low:.3f}-{d.ratio_ci_high:.3f}) | "
                     f"{d.b_better} of {d.texts} |")
    return lines
