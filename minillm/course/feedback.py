"""What a class's grading tells the instructor and each student: the CSV row, its message, and
the feedback files (``results.json`` in Gradescope's format and a readable ``feedback.txt``).

Built from the results.json that each unit's run writes (the autograder's conftest.py) once
:mod:`minillm.course.grade` has merged them. Nothing here runs a student's code.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

UNITS = ("logits", "perplexity", "quantization", "sampling", "architecture", "scaling", "training")
MATCH_RTOL = 1e-4            # a recorded number "matches" the reference within this relative difference
MESSAGE_CHARS = 2000         # the longest CSV message (a spreadsheet cell stays readable)
SCALING_UNIT = "scaling"


def missing_message(unit: str, folder_name: str, note: str = "") -> str:
    """What a student reads when a unit has no file to grade (the autograder's, and the grader's when
    it skips such a unit's run); ``note`` names a file that looks like a misnamed copy, if any."""
    return (f"missing: no {unit}.py or {unit}.ipynb in {folder_name}/, the files the {unit} unit is graded from. "
            f"{note}").rstrip()


def compare_numbers(numbers: list[dict], unit: str | None = SCALING_UNIT, rtol: float = MATCH_RTOL) -> dict:
    """Compare recorded (student, reference) numbers: how many, how many match, the largest relative gap.

    ``numbers`` are the records of ``extra_data["numbers"]`` in the results JSON
    ({"unit", "name", "student", "reference"}); ``unit`` keeps one unit's (None: all).
    A missing or non-finite student value counts as a mismatch with an infinite difference.
    """
    rows = [n for n in numbers if unit is None or n.get("unit") == unit]
    matched, worst = 0, 0.0
    for n in rows:
        s, r = n.get("student"), n.get("reference")
        if s is None or r is None or not math.isfinite(s) or not math.isfinite(r):
            diff = math.inf
        else:
            diff = abs(s - r) / max(abs(r), 1e-12)
        matched += diff <= rtol
        worst = max(worst, diff)
    return {"numbers": len(rows), "matched": matched, "max_rel_diff": worst if rows else None}


def problems_message(results: dict) -> str:
    """What went wrong with the student's files, unit by unit, from a results.json ("" when nothing
    did): "logits: missing: ...; perplexity: importing perplexity.py failed with ...". """
    problems = results.get("extra_data", {}).get("problems", {}) or {}
    # Each problem is a sentence; the separator replaces its final period ("...graded from; perplexity: ...").
    text = "; ".join(f"{unit}: {problem.rstrip().removesuffix('.')}"
                     for unit in UNITS for problem in problems.get(unit, []))
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."


def spreadsheet_safe(value):
    """``value`` as a spreadsheet shows it and never runs it: text starting with =, +, -, @, a tab
    or a carriage return (a formula, e.g. ``=HYPERLINK(...)``) gets a leading apostrophe."""
    if isinstance(value, str) and value.startswith(("=", "+", "-", "@", "\t", "\r")):
        return "'" + value
    return value


def csv_row(student: str, graded: dict, seed: int) -> dict:
    """One CSV row from a :func:`grade_submission` result (cells not yet made spreadsheet-safe)."""
    row: dict = {"student": student, "status": graded["status"], "total": 0, "max_total": ""}
    results = graded["results"]
    units = (results or {}).get("extra_data", {}).get("units", {})
    for unit in UNITS:   # a unit this run did not grade stays blank (not 0: it was not graded)
        row[unit] = units.get(unit, {}).get("score", "")
        row[f"{unit}_max"] = units.get(unit, {}).get("max_score", "")
    if results:
        row["total"], row["max_total"] = results.get("score", 0), results.get("max_score", "")
    comparison = compare_numbers((results or {}).get("extra_data", {}).get("numbers", []))
    graded_scaling = SCALING_UNIT in units   # blank, not 0, when the scaling unit was not graded
    row["scaling_numbers"] = comparison["numbers"] if graded_scaling else ""
    row["scaling_matched"] = comparison["matched"] if graded_scaling else ""
    worst = comparison["max_rel_diff"]
    row["scaling_max_rel_diff"] = "" if worst is None else ("inf" if math.isinf(worst) else f"{worst:.3g}")
    row["grader_seed"] = seed
    row["seconds"] = f"{graded['seconds']:.1f}"
    row["message"] = graded["message"] if graded["status"] == "refused" else summary_message(results, graded["message"])
    return row


def summary_message(results: dict | None, fallback: str = "") -> str:
    """The CSV's message: the problems with the student's files, else the points lost per unit
    ("lost 5 points: sampling 5 in 2 tests (test_sample_greedy...: expected ...)"), at most
    MESSAGE_CHARS characters; the feedback files hold the whole of it."""
    text = problems_message(results) if results else fallback
    if not text and results:
        lost: dict[str, list[dict]] = {}
        for t in results.get("tests", []):
            if t.get("score", 0) < t.get("max_score", 0):
                lost.setdefault(t.get("extra_data", {}).get("unit", "?"), []).append(t)
        if lost:
            total = sum(t["max_score"] - t["score"] for ts in lost.values() for t in ts)
            text = f"lost {total:g} points: " + "; ".join(
                f"{unit} {sum(t['max_score'] - t['score'] for t in ts):g} in {len(ts)} test(s) (first: "
                f"{ts[0]['name'].rpartition(': ')[2]}: {first_line(ts[0].get('output', ''))})"
                for unit, ts in lost.items())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."


def first_line(text: str, limit: int = 160) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def feedback_text(student: str, results: dict) -> str:
    """A student's feedback, readable as it is: the points per objective, the problems with the
    files and the grader's notes, then each test that lost points with its message."""
    extra = results.get("extra_data", {})
    lines = [f"Feedback for {student} (grader seed {extra.get('grader_seed')})", "",
             f"{'unit':<13} {'objective':<9} {'level':<5} {'points':>7}  description"]
    for o in extra.get("objectives", []):
        lines.append(f"{o['unit']:<13} {o['objective']:<9} {o['level']:<5} {o['score']:>3g}/{o['max_score']:<3g}  "
                     f"{o.get('description', '')}")
    lines += [f"{'TOTAL':<29} {results.get('score', 0):>3g}/{results.get('max_score', 0):<3g}", ""]
    for title, key in (("Problems with your files", "problems"), ("Notes", "notes")):
        entries = [f"  {unit}: {text}" for unit, texts in (extra.get(key) or {}).items() for text in texts]
        if entries:
            lines += [title, *entries, ""]
    failing = [t for t in results.get("tests", []) if t.get("score", 0) < t.get("max_score", 0)]
    if failing:
        lines += ["Tests that lost points", ""]
        for t in failing:
            lines += [f"{t['name']}  ({t['score']:g}/{t['max_score']:g})",
                      *("    " + line for line in (t.get("output", "").rstrip() or "(no message)").splitlines()), ""]
    return "\n".join(lines).rstrip() + "\n"


def feedback_folder(out: Path) -> Path:
    """Where the per-student files go: ``grades.csv`` -> ``grades-feedback/``."""
    return out.with_name(f"{out.stem}-feedback")


CSV_FIELDS = (["student", "status", "total", "max_total"]
              + [f for unit in UNITS for f in (unit, f"{unit}_max")]
              + ["scaling_numbers", "scaling_matched", "scaling_max_rel_diff", "grader_seed", "seconds", "message"])


def write_feedback(folder: Path, graded: list[tuple[str, dict]]) -> None:
    """``folder/<student>/results.json`` and ``feedback.txt`` for every student, built aside and
    moved in whole (an earlier run's folder is replaced)."""
    partial = folder.with_name(f".{folder.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    for student, result in graded:
        where = partial / student
        where.mkdir(parents=True)
        results = result["results"] or {}
        (where / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        (where / "feedback.txt").write_text(feedback_text(student, results), encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder)
    partial.replace(folder)


def write_csv(out: Path, rows: list[dict]) -> None:
    """``rows`` as the CSV ``out``, every cell spreadsheet-safe, through a temporary file."""
    partial = out.with_name(f".{out.name}.partial")
    with partial.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows({k: spreadsheet_safe(v) for k, v in row.items()} for row in rows)
    partial.replace(out)
