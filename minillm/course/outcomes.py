"""What one unit's run left, read by the grader (:mod:`minillm.course.grade`), which runs no student
code: the results it signed, the zygote's status and log, or why there are none; and the per-unit
results merged into one results.json. A unit that leaves nothing keeps its tests and maxima from the
class's plan (:func:`unit_plan`), each at 0 with the reason."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

from minillm.course import isolation, zygote
from minillm.course.feedback import missing_message


def unit_plan(plan: dict, unit: str, why: str) -> dict:
    """One unit's part of ``plan``: each of its tests scoring 0 with ``why`` as the problem."""
    tests = [dict(t, output=why) for t in plan.get("tests", []) if t.get("extra_data", {}).get("unit") == unit]
    max_score = sum(t["max_score"] for t in tests)
    extra = plan.get("extra_data", {})
    return {"score": 0, "max_score": max_score, "execution_time": 0.0, "output": "", "tests": tests,
            "extra_data": {"grader_seed": extra.get("grader_seed"), "target": None,
                           "units": {unit: {"score": 0, "max_score": max_score}},
                           "objectives": [dict(o, score=0) for o in extra.get("objectives", []) if o["unit"] == unit],
                           "numbers": [], "problems": {unit: [why]}, "notes": {}}}


def missing_outcome(unit: str, name: str, plan: dict) -> dict:
    """A unit with no file: each of its tests at 0, with the message the autograder gives."""
    return {"unit": unit, "status": "ok", "results": unit_plan(plan, unit, missing_message(unit, name)), "message": "",
            "output": ""}


RESULTS = "results.json"   # a unit's results in its folder, beside the zygote's log.txt and status.json


def run_log(folder: Path) -> str:
    """The end of a unit's output (zygote.LOG in its folder), or "" when there is none."""
    log = folder / zygote.LOG
    return isolation.tail(log) if log.is_file() and not log.is_symlink() else ""


def run_status(folder: Path) -> dict | None:
    """The zygote's status file of a unit's run (whether it finished, its exit code), or None."""
    try:
        status = json.loads((folder / zygote.STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def signed_outcome(unit: str, results_dir: Path, key: bytes, timeout: float, whole: isolation.Run,
                  plan: dict) -> dict:
    """What one unit's run left: its signed results, or why there are none (with the plan's zeros)."""
    output = run_log(results_dir / unit)
    status = run_status(results_dir / unit)
    json_path = results_dir / unit / RESULTS
    results = _signed_json(json_path, key)
    collected = _signed_json(json_path.with_suffix(".collected.json"), key)
    forged = json_path.is_file() and results is None
    returncode = status.get("returncode") if isinstance(status, dict) else None
    if isinstance(status, dict) and status.get("timed_out"):
        state, why = "timeout", f"grading this unit took longer than {timeout:g} s and was stopped"
    elif returncode in (0, 1) and results is not None:
        return {"unit": unit, "status": "ok", "results": results, "message": "", "output": output}
    elif forged:
        state, why = "ok", ("its results file was changed after the grader wrote it (by the graded code?), "
                            "so the unit scores 0")
    elif status is None:
        tail = " | ".join(whole.output.strip().splitlines()[-3:])
        state, why = "crashed", (f"the grading process ended before this unit finished (exit code "
                                 f"{whole.returncode}): {tail}")[:500]
    else:
        tail = " | ".join(line for line in output.strip().splitlines()[-3:])
        state, why = "crashed", f"the unit's grading process ended with exit code {returncode}: {tail}"[:500]
    if collected is None:
        return {"unit": unit, "status": state, "results": unit_plan(plan, unit, why), "message": why,
                "output": output}
    collected.setdefault("extra_data", {}).setdefault("problems", {}).setdefault(unit, []).append(why)
    return {"unit": unit, "status": state, "results": collected, "message": why, "output": output}


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
