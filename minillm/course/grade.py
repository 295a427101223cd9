"""Grade a whole class with the autograder: one pytest subprocess per student and unit, one CSV row each.

    minillm grade SUBMISSIONS_DIR --out grades.csv [--timeout S] [--units logits,perplexity]
                  [--jobs N] [--time-limit-scale F] [--autograder PATH]

``SUBMISSIONS_DIR`` holds one folder per student, each with that student's unit modules or
notebooks (``logits.py`` or ``logits.ipynb``, ``perplexity.py`` or ``perplexity.ipynb``, ...;
missing ones score 0 in their unit). Each unit of each folder is graded in its own process::

    python -m pytest <autograder>/test_grade_<unit>.py --target <folder> --grade-json <tmp>/results.json \
        --grade-key-fd N -q -p no:cacheprovider -p no:unraisableexception -p no:hypothesispytest

so that a crash, an infinite loop, a ``sys.exit`` or a change to global state (torch's default
dtype, the RNG, a patched torch function) in one unit's code cannot touch the other units or
students; a unit's run is killed after ``timeout`` seconds, with whatever it started. The run is
offline (``HF_HUB_OFFLINE=1``) and reads nothing from the terminal. Every student gets the same
grader seed (fresh per class run, written in the CSV), so their recorded numbers are computed on
the same texts. ``units`` grades only those units, for an assignment that covers a few of them.
What the grader defends against, and what it does not, is in the README ("What the grader
guarantees").

The CSV has one row per student: ``student``, ``status`` (``ok``; ``timeout`` or ``crashed``
when a unit's run did not finish: that unit scores 0 of its points), ``total`` and ``max_total``,
the points of each unit (``<unit>`` and ``<unit>_max``: both blank for a unit the run did not
grade, with ``--units``, so that a spreadsheet shows no zero that was never earned; every unit
has its columns in every run, so the CSVs of one class share one header), the
scaling comparison (``scaling_numbers``: numbers the scaling unit recorded, ``scaling_matched``:
how many agree with the reference's within 1e-4 relative, ``scaling_max_rel_diff``), then
``grader_seed``, ``seconds`` and a ``message``: what went wrong, unit by unit ("logits: missing: ...;
perplexity: importing perplexity.py failed with ...; training: grading this unit took longer than
300 s and was stopped", the autograder's ``extra_data["problems"]`` joined by "; ").

This module never imports the autograder, the tests or the exercises: it only runs them.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import math
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

UNITS = ("logits", "perplexity", "quantization", "sampling", "architecture", "scaling", "training")
MATCH_RTOL = 1e-4            # a recorded number "matches" the reference within this relative difference
MESSAGE_CHARS = 2000         # the longest CSV message (a spreadsheet cell stays readable)
SCALING_UNIT = "scaling"

# The repository is installed editable (`pip install -e .`): tests/autograder sits next to the package.
DEFAULT_AUTOGRADER = Path(__file__).resolve().parents[2] / "tests" / "autograder"


class GradeError(ValueError):
    """The autograder or the submissions folder cannot be found."""


def find_autograder(autograder: str | Path | None = None) -> Path:
    """The autograder folder: ``autograder`` if given, else tests/autograder of the minillm repository."""
    path = Path(autograder) if autograder is not None else DEFAULT_AUTOGRADER
    if not (path / "conftest.py").is_file():
        where = "the --autograder folder" if autograder is not None else (
            "tests/autograder next to the installed minillm package (install minillm from a clone "
            "with `pip install -e .`, or pass --autograder PATH)")
        raise GradeError(f"no autograder at {path}: expected {where}, holding conftest.py and test_grade_*.py.")
    return path.resolve()


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


def _check_units(units) -> list[str] | None:
    if units is None:
        return None
    units = [u.strip() for u in ([units] if isinstance(units, str) else units) for u in u.split(",") if u.strip()]
    unknown = [u for u in units if u not in UNITS]
    if unknown or not units:
        raise GradeError(f"units {unknown or units}: choose among {', '.join(UNITS)} (comma-separated).")
    return units


def grade_submission(folder: str | Path, autograder: str | Path | None = None, timeout: float = 300.0,
                     seed: int | None = None, units: Sequence[str] | None = None,
                     time_limit_scale: float = 1.0) -> dict:
    """Grade one submission folder, each unit in a pytest process of its own; returns a dict with
    ``status`` ("ok"; "timeout" or "crashed" when a unit's run did not finish), ``results`` (the
    units' results.json files merged into one, or None when no unit left one), ``seconds`` and
    ``message``.

    ``timeout``: seconds one unit's run may take before its process (and whatever it started) is
    stopped; that unit scores 0, the others are graded as usual. ``units``: grade only these
    units (default: every unit the autograder has tests for). ``time_limit_scale``: every test's
    time limit is multiplied by it (the autograder's ``--time-limit-scale``)."""
    autograder = find_autograder(autograder)
    units = _check_units(units) or list(UNITS)
    units = [u for u in units if (autograder / f"test_grade_{u}.py").is_file()]
    folder = Path(folder).resolve()
    start = time.monotonic()
    runs = [_grade_unit(folder, autograder, unit, timeout, seed, time_limit_scale) for unit in units]
    seconds = time.monotonic() - start
    results = merge_results([run["results"] for run in runs if run["results"] is not None])
    status = next((s for s in ("crashed", "timeout") if any(run["status"] == s for run in runs)), "ok")
    message = problems_message(results) if results is not None else "; ".join(
        f"{run['unit']}: {run['message']}" for run in runs if run["message"])
    return {"status": status, "results": results, "seconds": seconds, "message": message,
            "output": "\n".join(run["output"] for run in runs)}


def _grade_unit(folder: Path, autograder: Path, unit: str, timeout: float, seed: int | None,
                time_limit_scale: float) -> dict:
    """Run one unit's tests on ``folder`` in a subprocess: {"unit", "status", "results", "message", "output"}.

    The results are trusted only when signed with a key the run got through a pipe that the
    student's code never sees (see the autograder's conftest.py): a results file the code forged
    or changed scores 0. The run's process group is killed at the end, and on Linux so is any
    process it left behind that escaped the group (this process is their "subreaper")."""
    with tempfile.TemporaryDirectory(prefix=f"minillm-grade-{unit}-") as tmp:
        json_path = Path(tmp) / "results.json"
        key = secrets.token_bytes(32)
        read_end, write_end = os.pipe()
        os.write(write_end, key.hex().encode())
        os.close(write_end)
        # Plugins no grade depends on, left out of every one of the class's runs: at its end
        # unraisableexception calls gc.collect() five times (~0.5 s each in a process holding torch),
        # and hypothesis (installed with the test extra) takes ~0.7 s to import.
        cmd = [sys.executable, "-m", "pytest", str(autograder / f"test_grade_{unit}.py"), "--target", str(folder),
               "--grade-json", str(json_path), "--grade-key-fd", str(read_end), "-q", "-p", "no:cacheprovider",
               "-p", "no:unraisableexception", "-p", "no:hypothesispytest"]
        if seed is not None:
            cmd += ["--grader-seed", str(seed)]
        if time_limit_scale != 1.0:
            cmd += ["--time-limit-scale", repr(float(time_limit_scale))]
        env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["HF_HUB_OFFLINE"] = "1"
        _become_subreaper()
        children_before = _children()
        # The output goes to a file, not a pipe: a process the student's code started (and left
        # running) inherits the output, and a pipe would stay open, stalling the grading until the
        # timeout even though pytest has finished. We wait for pytest itself, then stop the rest.
        log_path = Path(tmp) / "output.txt"
        timed_out = False
        with log_path.open("wb") as log:
            try:
                proc = subprocess.Popen(cmd, cwd=autograder.parent.parent, env=env, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                        pass_fds=(read_end,))
            finally:
                os.close(read_end)
            _RUNNING.add(proc.pid)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill(proc)   # and whatever the student's code started and left behind
            proc.wait()
            _RUNNING.discard(proc.pid)
            _kill_new_children(children_before)
        output = _tail(log_path)
        results = _signed_json(json_path, key)
        collected = _signed_json(json_path.with_suffix(".collected.json"), key)
        forged = json_path.is_file() and results is None
    if timed_out:
        status, why = "timeout", f"grading this unit took longer than {timeout:g} s and was stopped"
    elif proc.returncode in (0, 1) and results is not None:
        return {"unit": unit, "status": "ok", "results": results, "message": "", "output": output}
    elif forged:
        status, why = "ok", ("its results file was changed after the grader wrote it (by the graded code?), "
                             "so the unit scores 0")
    else:
        tail = " | ".join(line for line in output.strip().splitlines()[-3:])
        status, why = "crashed", f"the unit's grading process ended with exit code {proc.returncode}: {tail}"[:500]
    if collected is None:
        return {"unit": unit, "status": status, "results": None, "message": why, "output": output}
    collected.setdefault("extra_data", {}).setdefault("problems", {}).setdefault(unit, []).append(why)
    return {"unit": unit, "status": status, "results": collected, "message": why, "output": output}


def _signed_json(path: Path, key: bytes) -> dict | None:
    """The JSON at ``path`` if ``path`` + ".sig" holds its HMAC-SHA256 under ``key``, else None."""
    try:
        data, signature = path.read_bytes(), path.with_name(path.name + ".sig").read_text().strip()
    except OSError:
        return None
    if not hmac.compare_digest(hmac.new(key, data, hashlib.sha256).hexdigest(), signature):
        return None
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def merge_results(parts: list[dict]) -> dict | None:
    """One results.json (Gradescope's format, see the README) from the per-unit ones, in order."""
    if not parts:
        return None
    merged: dict = {"score": 0, "max_score": 0, "execution_time": 0.0, "output": "", "output_format": "text",
                    "visibility": "visible", "stdout_visibility": "hidden", "tests": [], "extra_data": {}}
    extra = merged["extra_data"]
    for part in parts:
        merged["score"] += part.get("score", 0)
        merged["max_score"] += part.get("max_score", 0)
        merged["execution_time"] = round(merged["execution_time"] + part.get("execution_time", 0.0), 3)
        merged["output"] = "\n\n".join(t for t in (merged["output"], part.get("output", "")) if t)
        merged["tests"] += part.get("tests", [])
        data = part.get("extra_data", {})
        for key in ("grader_seed", "target"):
            extra.setdefault(key, data.get(key))
        for key in ("units", "problems", "notes"):
            extra.setdefault(key, {}).update(data.get(key, {}))
        for key in ("objectives", "numbers"):
            extra.setdefault(key, []).extend(data.get(key, []))
    return merged


def problems_message(results: dict) -> str:
    """What went wrong with the student's files, unit by unit, from a results.json ("" when nothing
    did): "logits: missing: ...; perplexity: importing perplexity.py failed with ...". """
    problems = results.get("extra_data", {}).get("problems", {}) or {}
    # Each problem is a sentence; the separator replaces its final period ("...graded from; perplexity: ...").
    text = "; ".join(f"{unit}: {problem.rstrip().removesuffix('.')}"
                     for unit in UNITS for problem in problems.get(unit, []))
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."


def _tail(path: Path, limit: int = 100_000) -> str:
    """The last ``limit`` bytes of the grading output as text (a student's code may write gigabytes)."""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - limit))
        return f.read().decode("utf-8", errors="replace")


def _kill(proc: subprocess.Popen) -> None:
    """Stop the grading process and whatever it started."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows
            proc.kill()
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _become_subreaper() -> None:
    """Linux: make the processes this one's children leave behind its own children when their
    parent ends (PR_SET_CHILD_SUBREAPER), instead of init's, so that they can be found and
    stopped even after they left the grading's process group (``setsid``, a double fork)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)   # 36: PR_SET_CHILD_SUBREAPER
        except (OSError, AttributeError):   # pragma: no cover - no libc prctl
            pass


def _children() -> set[int]:
    """The process ids whose parent is this process (Linux: from /proc; elsewhere: empty)."""
    me, found = str(os.getpid()), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()   # after "(name)": state, ppid, ...
        except (OSError, IndexError):
            continue
        if fields[1] == me:
            found.add(int(stat.parent.name))
    return found


_RUNNING: set[int] = set()   # the grading runs (pytest processes) now going on, in every thread


def _kill_new_children(before: set[int]) -> None:
    """Kill and reap this process's children that were not there ``before`` and are not grading
    runs: what a graded run left behind, handed to this process as their subreaper; again for
    theirs, until none is left."""
    for _ in range(100):
        new = _children() - before - _RUNNING
        if not new:
            return
        for pid in new:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError, PermissionError):
                pass


def submission_folders(submissions_dir: str | Path) -> list[Path]:
    """The student folders of ``submissions_dir``, by name (hidden folders and __pycache__ left out)."""
    root = Path(submissions_dir)
    if not root.is_dir():
        raise GradeError(f"{root} is not a folder: give the folder that holds one subfolder per student.")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    if not folders:
        raise GradeError(f"{root} holds no student folders: put each student's unit modules in a subfolder.")
    return folders


def csv_row(student: str, graded: dict, seed: int) -> dict:
    """One CSV row from a :func:`grade_submission` result."""
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
    row["message"] = graded["message"]
    return row


CSV_FIELDS = (["student", "status", "total", "max_total"]
              + [f for unit in UNITS for f in (unit, f"{unit}_max")]
              + ["scaling_numbers", "scaling_matched", "scaling_max_rel_diff", "grader_seed", "seconds", "message"])


def grade_class(submissions_dir: str | Path, out: str | Path, timeout: float = 300.0,
                autograder: str | Path | None = None, seed: int | None = None, progress: bool = False,
                units: Sequence[str] | None = None, time_limit_scale: float = 1.0, jobs: int = 1) -> list[dict]:
    """Grade every student folder of ``submissions_dir``; write the CSV ``out``; return its rows.

    ``timeout``: seconds one unit's grading run may take. ``seed``: the grader seed
    shared by the whole class (default: a fresh one). ``units`` and ``time_limit_scale``: see
    :func:`grade_submission`. ``jobs``: how many students are graded at the same time (each run
    uses one thread and ~0.5 GB; on a laptop, about its number of cores).
    """
    if not (isinstance(jobs, int) and jobs >= 1):
        raise GradeError(f"jobs={jobs!r}: give a whole number of submissions to grade at once, at least 1.")
    autograder = find_autograder(autograder)
    units = _check_units(units)
    folders = submission_folders(submissions_dir)
    if seed is None:
        seed = random.SystemRandom().randrange(1, 2**31 - 1)
    if progress:
        print(f"grading {len(folders)} submissions with {autograder} (grader seed {seed})", flush=True)

    def grade(folder: Path) -> dict:
        row = csv_row(folder.name, grade_submission(folder, autograder, timeout, seed, units, time_limit_scale), seed)
        if progress:   # as each student is done (in any order when jobs > 1); the CSV keeps the folders' order
            print(f"  {folder.name:<24} {row['status']:<8} {row['total']}/{row['max_total'] or '?'}"
                  f"  ({row['seconds']} s){'  ' + row['message'] if row['message'] else ''}", flush=True)
        return row

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        rows = list(pool.map(grade, folders))
    # Written once, at the end, through a temporary file: a graded run cannot have edited it.
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    with partial.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(out)
    return rows
