"""Grade a whole class with the autograder: one run per student and unit, one CSV row each.

    minillm grade SUBMISSIONS_DIR --out grades.csv [--timeout S] [--units logits,perplexity]
                  [--jobs N] [--time-limit-scale F] [--autograder PATH] [--sandbox auto|bwrap|process]

``SUBMISSIONS_DIR`` holds one folder per student, each with that student's unit modules or
notebooks (``logits.py`` or ``logits.ipynb``, ``perplexity.py`` or ``perplexity.ipynb``, ...;
missing ones score 0 in their unit, and no run is started for them). The folder's files are
copied, and each unit is graded on the copy in a run of its own::

    python -m pytest <autograder>/test_grade_<unit>.py --target <copy> --grade-json <results>/results.json \
        --grade-key-fd N -q -p no:cacheprovider -p no:unraisableexception -p no:hypothesispytest

inside a bubblewrap sandbox where it starts, else as a plain process (``minillm.course.isolation``
says what each mode lets the run see and do), so that a crash, an infinite loop, a ``sys.exit``
or a change to global state in one unit's code cannot touch the other units or students; a
unit's run is stopped after ``timeout`` seconds, with whatever it started. The run is offline
(``HF_HUB_OFFLINE=1``) and reads nothing from the terminal. Every student gets the same grader
seed (fresh per class run, written in the CSV), so their recorded numbers are computed on the
same texts. ``units`` grades only those units, for an assignment that covers a few of them.
A unit the autograder lists in ``graded_apart.txt`` is graded apart (minillm.course.verdict): the
run above only records the student's outputs (``--grade-mode probe``), and a judge process of the
grader's, where no student code runs, checks them and writes that unit's results. What the grader
defends against, and what it does not, is in the README ("What the grader guarantees").

The CSV has one row per student: ``student``, ``status`` (``ok``; ``timeout`` or ``crashed``
when a unit's run did not finish: that unit scores 0 of its points; ``refused`` for a folder
that is a link), ``total`` and ``max_total`` (the same for every student: a unit whose run left
no result counts its tests from :func:`grading_plan`), the points of each unit (``<unit>`` and
``<unit>_max``: both blank for a unit the run did not grade, with ``--units``, so that a
spreadsheet shows no zero that was never earned; every unit has its columns in every run, so the
CSVs of one class share one header), the scaling comparison (``scaling_numbers``: numbers the
scaling unit recorded, ``scaling_matched``: how many agree with the reference's within 1e-4
relative, ``scaling_max_rel_diff``), then ``grader_seed``, ``seconds`` and a ``message``: what
went wrong with the files, unit by unit ("logits: missing: ...; training: grading this unit took
longer than 300 s and was stopped"), else the points lost. Beside it, ``<out stem>-feedback/``
holds each student's ``results.json`` and ``feedback.txt``.

This module never imports the autograder, the tests or the exercises: it only runs them.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from minillm.course import isolation, verdict
from minillm.course.outcomes import (RESULTS, merge_results, missing_outcome, run_log, run_status, signed_outcome,
                                     unit_plan)
from minillm.course.feedback import (UNITS, csv_row, feedback_folder, first_line, problems_message,
                                     write_csv, write_feedback)
from minillm.errors import InputError
from minillm.progress import print_line, progress_bar

# The repository is installed editable (`pip install -e .`): tests/autograder sits next to the package.
DEFAULT_AUTOGRADER = Path(__file__).resolve().parents[2] / "tests" / "autograder"


class GradeError(InputError):
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
                     time_limit_scale: float = 1.0, sandbox: str = "auto", plan: dict | None = None,
                     planned: dict | None = None, judge: verdict.Judge | None = None) -> dict:
    """Grade one submission folder, each unit in a run of its own; returns a dict with
    ``status`` ("ok"; "timeout" or "crashed" when a unit's run did not finish; "refused" when the
    folder cannot be graded), ``results`` (the units' results merged into one results.json, or
    None), ``seconds``, ``message`` and ``output``.

    ``timeout``: seconds one unit's run may take before it (and whatever it started) is stopped;
    that unit scores 0, the others are graded as usual. ``units``: grade only these units
    (default: every unit the autograder has tests for). ``time_limit_scale``: every test's time
    limit is multiplied by it (the autograder's ``--time-limit-scale``). ``sandbox``: "auto",
    "bwrap" or "process" (minillm.course.isolation). ``plan``: the units' tests and points
    (:func:`grading_plan`; computed here when not given), so that a unit whose run left nothing
    still counts with 0 of its points. ``planned``: the calls of the units graded apart
    (:func:`plan_calls`, for the same ``seed``; both recorded here, by :func:`class_plan`, unless
    both are given), and ``judge`` the
    process that judges them (verdict.Judge; started here when not given)."""
    autograder = find_autograder(autograder)
    units = _check_units(units) or list(UNITS)
    units = [u for u in units if (autograder / f"test_grade_{u}.py").is_file()]
    mode, _ = isolation.choose_mode(sandbox)
    if seed is None and verdict.apart_units(autograder, units):   # the plan and the judge need the same seed
        seed = random.SystemRandom().randrange(1, 2**31 - 1)
    if plan is None or planned is None:
        plan, planned = class_plan(autograder, units, seed)
    folder = Path(folder)
    start = time.monotonic()
    if folder.is_symlink():
        why = (f"{folder.name} is a link to another folder ({os.readlink(folder)}), not a student's own folder; "
               "copy the files into a real folder to grade them")
        return _refused(plan, units, why, start)
    with tempfile.TemporaryDirectory(prefix="minillm-submission-") as tmp:
        # Messages name the student's folder, in the sandbox too; abspath (links not followed) gives
        # "." and "alice/.." their real names.
        copy = Path(tmp) / Path(os.path.abspath(folder)).name
        copy.mkdir()
        try:
            copy_notes = isolation.copy_submission(folder, copy)
        except (isolation.SandboxError, OSError) as err:
            return _refused(plan, units, str(err), start)
        if planned and judge is None:   # one student alone: a judge for it
            with verdict.Judge(autograder.parent.parent, _environment(), timeout) as own:
                runs = _grade_units(copy, autograder, units, timeout, seed, time_limit_scale, mode, plan, planned, own)
        else:
            runs = _grade_units(copy, autograder, units, timeout, seed, time_limit_scale, mode, plan, planned, judge)
    seconds = time.monotonic() - start
    results = merge_results([run["results"] for run in runs])
    results["extra_data"]["target"] = str(folder)
    if copy_notes:
        results["extra_data"].setdefault("notes", {}).setdefault("files", []).extend(copy_notes)
    status = next((s for s in ("crashed", "timeout") if any(run["status"] == s for run in runs)), "ok")
    return {"status": status, "results": results, "seconds": seconds, "message": problems_message(results),
            "output": "\n".join(run["output"] for run in runs)}


def _refused(plan: dict, units: list[str], why: str, start: float) -> dict:
    results = merge_results([unit_plan(plan, unit, why) for unit in units])
    return {"status": "refused", "results": results, "seconds": time.monotonic() - start,
            "message": why, "output": ""}


def grading_plan(autograder: str | Path, units: Sequence[str]) -> dict:
    """Every graded test of ``units`` with its points, as a results.json where each scores 0.

    Read by collecting the autograder's tests (``pytest --collect-only``) in a process that runs
    no student code: a unit whose graded run leaves no result is still counted, with 0 of its
    points and a message, so ``max_total`` is the same for every student."""
    autograder = find_autograder(autograder)
    with tempfile.TemporaryDirectory(prefix="minillm-plan-") as tmp:
        json_path = Path(tmp) / "plan.json"
        empty = Path(tmp) / "empty"
        empty.mkdir()
        cmd = [sys.executable, "-m", "pytest", *[str(autograder / f"test_grade_{u}.py") for u in units],
               "--collect-only", "--target", str(empty), "--grade-json", str(json_path), "-q", *PYTEST_FLAGS]
        done = subprocess.run(cmd, cwd=autograder.parent.parent, env=_environment(), capture_output=True,
                              text=True, stdin=subprocess.DEVNULL)
        if not json_path.is_file():
            tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
            raise GradeError(f"the autograder at {autograder} did not list its tests (exit code {done.returncode}): "
                             f"{tail}")
        return json.loads(json_path.read_text(encoding="utf-8"))


def plan_calls(autograder: str | Path, units: Sequence[str], seed: int | None,
               results: Path | None = None) -> dict[str, dict[str, bytes]]:
    """The reference's calls for those of ``units`` graded apart (minillm.course.verdict), under
    grader seed ``seed``; {} when none is. With ``results``, that run's results.json is written there.
    Raises GradeError when the reference fails a test."""
    autograder = find_autograder(autograder)
    apart = verdict.apart_units(autograder, units)
    try:
        return verdict.plan_calls(autograder, apart, seed, _environment(), PYTEST_FLAGS, results) if apart else {}
    except verdict.PlanError as err:
        raise GradeError(str(err)) from None


def class_plan(autograder: str | Path, units: Sequence[str], seed: int | None) -> tuple[dict, dict[str, dict[str, bytes]]]:
    """(:func:`grading_plan`, :func:`plan_calls`) of ``units`` for grader seed ``seed``, in as few runs
    as they take: the run that records the reference's calls of the units graded apart runs every test
    of those units, so its results list them, each then set to 0 points and "not run"; only the other
    units need a listing run (``pytest --collect-only``) of their own."""
    autograder = find_autograder(autograder)
    apart = verdict.apart_units(autograder, units)
    parts, planned = [], {}
    if apart:
        with tempfile.TemporaryDirectory(prefix="minillm-plan-") as tmp:
            results = Path(tmp) / "results.json"
            planned = plan_calls(autograder, apart, seed, results)
            parts.append(_not_run(json.loads(results.read_text(encoding="utf-8"))))
    if [u for u in units if u not in apart]:
        parts.append(grading_plan(autograder, [u for u in units if u not in apart]))
    return merge_results(parts), planned


def _not_run(results: dict) -> dict:
    """A run's results.json as a plan: every test, unit and objective at 0 points, each test "not run"."""
    extra = results.get("extra_data", {})
    return {**results, "score": 0, "output": "",
            "tests": [dict(t, score=0, status="failed", output="not run") for t in results.get("tests", [])],
            "extra_data": {**extra, "numbers": [], "problems": {}, "notes": {},
                           "units": {u: dict(v, score=0) for u, v in extra.get("units", {}).items()},
                           "objectives": [dict(o, score=0) for o in extra.get("objectives", [])]}}




# Plugins no grade depends on, left out of every one of the class's runs: at its end
# unraisableexception calls gc.collect() five times (~0.5 s each in a process holding torch),
# and hypothesis (installed with the test extra) takes ~0.7 s to import.
PYTEST_FLAGS = ("-p", "no:cacheprovider", "-p", "no:unraisableexception", "-p", "no:hypothesispytest")


def _environment() -> dict[str, str]:
    """The environment of a grading run: offline, no bytecode files, no PYTEST_ADDOPTS, and no pytest
    plugins but the grader's own (installed ones cost ~1 s a run and grade nothing)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env.update(PYTHONDONTWRITEBYTECODE="1", HF_HUB_OFFLINE="1", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    return env


def _sandbox_environment() -> dict[str, str]:
    """The whole environment inside the sandbox: nothing of the instructor's but the import path."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "TMPDIR": "/tmp",
           "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1",
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _grade_units(copy: Path, autograder: Path, units: list[str], timeout: float, seed: int | None,
                 time_limit_scale: float, mode: str, plan: dict, planned: dict,
                 judge: verdict.Judge | None) -> list[dict]:
    """Grade ``units`` on the submission ``copy``: those it holds files for in one run
    (:func:`_run_units`), the others scored 0 with the autograder's message, without a run."""
    absent = _absent_units(copy, units)
    present = [u for u in units if u not in absent]
    ran = {o["unit"]: o for o in _run_units(copy, autograder, present, timeout, seed, time_limit_scale, mode, plan,
                                             planned, judge)} if present else {}
    return [ran[u] if u in ran else missing_outcome(u, copy.name, plan) for u in units]


def _absent_units(copy: Path, units: list[str]) -> list[str]:
    """The units ``copy`` holds no file for at all: no .py or .ipynb whose name holds the unit's
    (``logits.py``, ``Copy of logits.ipynb``: the autograder names a misnamed copy, so that one runs).
    A run of such a unit could only fail each of its tests with the same message; skipping it makes a
    class that hands in one assignment a week cost that assignment's runs."""
    names = [p.stem.lower() for p in copy.iterdir() if p.suffix in (".py", ".ipynb") and p.is_file()]
    return [u for u in units if not any(u in name for name in names)]


def _run_units(copy: Path, autograder: Path, units: list[str], timeout: float, seed: int | None,
               time_limit_scale: float, mode: str, plan: dict, planned: dict,
               judge: verdict.Judge | None) -> list[dict]:
    """Grade ``units`` on the submission ``copy`` in one run (minillm.course.zygote: a process
    that imports torch and pytest once and forks a fresh child per unit, stopped after
    ``timeout`` seconds); one {"unit", "status", "results", "message", "output"} per unit.

    Each unit's results are trusted only when signed with that unit's key, which its child reads
    from a pipe and closes before any student code runs (see the autograder's guard.py): a results
    file the code forged or changed scores 0. A unit that leaves no results counts its tests from
    ``plan``, each with 0 points. A unit in ``planned`` is graded apart (minillm.course.verdict):
    its run only records outputs, which :func:`_apart_outcome` has judged outside the sandbox."""
    import minillm

    kit = Path(minillm.__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="minillm-grade-") as tmp:
        results_dir = Path(tmp) / "results"
        results_dir.mkdir()
        if mode == "bwrap":
            target, out_dir = f"{isolation.SUBMISSIONS_MOUNT}/{copy.name}", isolation.RESULTS_MOUNT
        else:
            target, out_dir = str(copy), str(results_dir)
        verdict.place_plan(planned, results_dir / "plan")
        keys, fds, specs = {}, [], []
        for unit in units:
            keys[unit] = secrets.token_bytes(32)
            read_end, write_end = os.pipe()
            os.write(write_end, keys[unit].hex().encode())
            os.close(write_end)
            fds.append(read_end)
            folder = f"{out_dir}/{unit}"   # the unit's own: the only one its run may write (zygote.py)
            if unit in planned:
                args = [*verdict.probe_args(autograder, unit, target, out_dir), "-q", *PYTEST_FLAGS]
            else:
                args = [str(autograder / f"test_grade_{unit}.py"), "--target", target, "--grade-json",
                        f"{folder}/{RESULTS}", "--grade-key-fd", str(read_end), "-q", *PYTEST_FLAGS]
            if seed is not None:
                args += ["--grader-seed", str(seed)]
            if time_limit_scale != 1.0:
                args += ["--time-limit-scale", repr(float(time_limit_scale))]
            specs.append({"unit": unit, "args": args, "timeout": timeout, "key_fd": read_end, "folder": folder})
        zygote_plan = {"autograder": str(autograder), "units": specs, "private_tmp": mode == "bwrap",
                       "confine": mode == "bwrap", "results": out_dir}
        (results_dir / "zygote.json").write_text(json.dumps(zygote_plan), encoding="utf-8")
        cmd = [sys.executable, "-m", "minillm.course.zygote", f"{out_dir}/zygote.json"]
        if mode == "bwrap":
            kit_paths = [p for p in (kit / "minillm", kit / "data", autograder) if p.exists()]
            cmd = isolation.bwrap_command(cmd, kit_paths=kit_paths, submission=copy, results=results_dir,
                                          cwd=str(autograder), hidden=[kit, copy.parent], env=_sandbox_environment())
            env = None
        else:
            env = _environment()
        try:   # the zygote stops each unit at its timeout; this bound only catches the zygote itself
            whole = isolation.run(cmd, cwd=autograder, env=env, timeout=timeout * len(units) + 120,
                                  log_path=Path(tmp) / "zygote.txt", pass_fds=tuple(fds))
        finally:
            for fd in fds:
                os.close(fd)
        return [_apart_outcome(unit, copy, autograder, results_dir, seed, time_limit_scale, timeout, whole, plan,
                               judge)
                if unit in planned else signed_outcome(unit, results_dir, keys[unit], timeout, whole, plan)
                for unit in units]


def _apart_outcome(unit: str, copy: Path, autograder: Path, results_dir: Path, seed: int, time_limit_scale: float,
                   timeout: float, whole: isolation.Run, plan: dict, judge: verdict.Judge) -> dict:
    """A unit graded apart: its outputs judged in a process of the grader's (verdict.judge). A run
    stopped at its timeout scores 0, as any unit's; one that ended early is judged on what it
    recorded (a test without a record fails) and marked "crashed". ``judge``: the grader's judge
    process (verdict.Judge), where no student code runs."""
    output = run_log(results_dir / unit)
    status = run_status(results_dir / unit)
    if isinstance(status, dict) and status.get("timed_out"):
        why = f"grading this unit took longer than {timeout:g} s and was stopped"
        return {"unit": unit, "status": "timeout", "results": unit_plan(plan, unit, why), "message": why,
                "output": output}
    with tempfile.TemporaryDirectory(prefix="minillm-judged-") as tmp:   # not results_dir: the sandbox wrote there
        json_path = Path(tmp) / f"{unit}.json"
        args = verdict.judge_args(autograder, unit, copy, results_dir, json_path, seed, time_limit_scale, PYTEST_FLAGS)
        results, judged = judge.judge(args, json_path, Path(tmp) / "judge.txt")
    if results is None:
        why = ("the grader could not judge this unit's recorded outputs: "
               + " | ".join(judged.strip().splitlines()[-3:]))[:500]
        return {"unit": unit, "status": "crashed", "results": unit_plan(plan, unit, why), "message": why,
                "output": output + judged}
    returncode = status.get("returncode") if isinstance(status, dict) else None
    if returncode in (0, 1):
        return {"unit": unit, "status": "ok", "results": results, "message": "", "output": output + judged}
    tail = " | ".join((output if status is not None else whole.output).strip().splitlines()[-3:])
    why = f"the unit's run ended before it finished (exit code {returncode}): {tail}"[:500]
    results.setdefault("extra_data", {}).setdefault("problems", {}).setdefault(unit, []).append(why)
    return {"unit": unit, "status": "crashed", "results": results, "message": why, "output": output + judged}


def submission_folders(submissions_dir: str | Path) -> list[Path]:
    """The student folders of ``submissions_dir``, by name: every subfolder, those whose names
    start with "." or "_" included (a link to a folder is listed too, and refused when graded);
    only ``__pycache__`` is left out."""
    root = Path(submissions_dir)
    if not root.is_dir():
        raise GradeError(f"{root} is not a folder: give the folder that holds one subfolder per student.")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name != "__pycache__")
    if not folders:
        raise GradeError(f"{root} holds no student folders: put each student's unit modules in a subfolder.")
    return folders


def grade_class(submissions_dir: str | Path, out: str | Path, timeout: float = 300.0,
                autograder: str | Path | None = None, seed: int | None = None, progress: bool = False,
                units: Sequence[str] | None = None, time_limit_scale: float = 1.0, jobs: int = 1,
                sandbox: str = "auto") -> list[dict]:
    """Grade every student folder of ``submissions_dir``; write the CSV ``out`` and, in the folder
    ``<out stem>-feedback/<student>/``, each student's ``results.json`` (Gradescope's format) and
    ``feedback.txt``; return the CSV's rows.

    ``timeout``: seconds one unit's grading run may take. ``seed``: the grader seed
    shared by the whole class (default: a fresh one). ``progress``: print a header, a line per
    student as each is done, and a bar over the students with the time left (on stderr; hidden by
    ``TQDM_DISABLE=1``); without it, only the warning that grading runs without a sandbox.
    ``units``, ``time_limit_scale`` and ``sandbox``: see :func:`grade_submission`. ``jobs``: how
    many students are graded at the same time (each run uses one thread and ~0.5 GB; on a laptop,
    about its number of cores).
    Raises GradeError for a missing autograder or submissions folder, a bad ``jobs`` or ``units``,
    and isolation.SandboxError when ``sandbox="bwrap"`` cannot start here.
    """
    if not (isinstance(jobs, int) and jobs >= 1):
        raise GradeError(f"jobs={jobs!r}: give a whole number of submissions to grade at once, at least 1.")
    autograder = find_autograder(autograder)
    units = [u for u in (_check_units(units) or UNITS) if (autograder / f"test_grade_{u}.py").is_file()]
    folders = submission_folders(submissions_dir)
    mode, warning = isolation.choose_mode(sandbox)
    if warning:   # said once, up front, whatever `progress` is
        print(f"minillm grade: {warning}", file=sys.stderr, flush=True)
    if seed is None:
        seed = random.SystemRandom().randrange(1, 2**31 - 1)
    plan, planned = class_plan(autograder, units, seed)   # once for the class: every student is called alike
    if progress:
        print(f"grading {len(folders)} submissions with {autograder} (grader seed {seed}, sandbox: {mode})",
              flush=True)
    # A line per student as each is done (in any order when jobs > 1; the CSV keeps the folders'
    # order), above a bar over the students with the time left, on stderr. On a terminal the lines
    # are printed through the bar (it is cleared and drawn again under them); elsewhere (a CI log,
    # a pipe) they are plain lines, so the log holds the bar's own redraws, one per student, and no
    # clearing around every line.
    say = print_line if sys.stderr.isatty() else lambda line: print(line, flush=True)
    bar = progress_bar(total=len(folders), enabled=progress, desc="grading", unit="student", smoothing=0,
                       file=sys.stderr)

    def grade(folder: Path) -> tuple[dict, dict]:
        graded = grade_submission(folder, autograder, timeout, seed, units, time_limit_scale, mode, plan, planned,
                                  judge)
        return csv_row(folder.name, graded, seed), graded

    graded_rows: list[tuple[dict, dict] | None] = [None] * len(folders)
    with verdict.Judge(autograder.parent.parent, _environment(), timeout) as judge, \
            ThreadPoolExecutor(max_workers=jobs) as pool, bar:
        pending = {pool.submit(grade, folder): i for i, folder in enumerate(folders)}
        for done in as_completed(pending):   # here, in one thread: the bar and the lines never interleave
            row, graded = done.result()
            graded_rows[pending[done]] = (row, graded)
            if progress:
                say(f"  {row['student']:<24} {row['status']:<8} {row['total']}/{row['max_total'] or '?'}"
                    f"  ({row['seconds']} s){'  ' + first_line(row['message'], 100) if row['message'] else ''}")
            bar.update(1)
    # Written once, at the end, through temporary files: a graded run cannot have edited them.
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_feedback(feedback_folder(out), [(f.name, g) for f, (_, g) in zip(folders, graded_rows)])
    rows = [row for row, _ in graded_rows]
    write_csv(out, rows)
    return rows


