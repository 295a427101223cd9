"""Units graded apart: the student's code only produces outputs; the score is decided where it never runs.

For a unit the autograder lists in ``graded_apart.txt`` (one unit a line, # comments),
``minillm grade`` runs its test file three times (the autograder's apart.py says what each mode does):

1. :func:`plan_calls`, once per class, on the grader's machine with the reference as the student:
   the calls the tests make (functions and arguments, as JSON and safetensors) for the class's
   grader seed. The files are read into memory at once, and each student's run gets its own copy.
2. the probe, in the student's sandbox (``minillm.course.zygote``, like any unit): the student's
   functions are called on those arguments; their outputs, exceptions and side effects are
   written as data into the unit's outputs folder. Nothing it writes is read as a score.
3. :class:`Judge`, on the grader's machine, in a process that runs no student code (one for the
   class): the tests compute their expected values, compare them with the recorded outputs and
   write results.json.

So expected values never exist in the student's process (walking stack frames or the garbage
collector finds nothing), and no code there can mark a test passed. A unit that is not listed, or
an autograder without the reference beside it (``solutions/``: the Gradescope bundle has none),
is graded as before, in the student's process.

This module never imports the autograder: it only runs it.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from minillm.course import isolation
from minillm.errors import InputError

APART_FILE = "graded_apart.txt"


class PlanError(InputError):
    """The reference's calls cannot be recorded (the reference fails a test, or the run broke)."""


def reference_folder(autograder: Path) -> Path | None:
    """The reference solutions the plan runs: ``solutions/`` of the autograder's repository, else of
    the installed kit's; None when neither exists."""
    import minillm

    for root in (autograder.parent.parent, Path(minillm.__file__).resolve().parents[1]):
        if (root / "solutions").is_dir():
            return (root / "solutions").resolve()
    return None


def apart_units(autograder: Path, units: Sequence[str]) -> list[str]:
    """Those of ``units`` that the autograder grades apart (none without a reference to plan with)."""
    listed = autograder / APART_FILE
    if not listed.is_file() or reference_folder(autograder) is None:
        return []
    names = {line.split("#")[0].strip() for line in listed.read_text(encoding="utf-8").splitlines()}
    return [u for u in units if u in names]


def plan_calls(autograder: Path, units: Sequence[str], seed: int, env: dict[str, str],
               flags: Sequence[str], results: Path | None = None) -> dict[str, dict[str, bytes]]:
    """The reference's calls for ``units`` under grader seed ``seed``: {unit: {file name: bytes}};
    with ``results``, the run's results.json (every test of ``units`` with its points) written there.
    Raises PlanError when the reference does not pass every test (the plan would be wrong)."""
    if not units:
        return {}
    reference = reference_folder(autograder)
    with tempfile.TemporaryDirectory(prefix="minillm-calls-") as tmp:
        calls = Path(tmp)
        cmd = [sys.executable, "-m", "pytest", *[str(autograder / f"test_grade_{u}.py") for u in units],
               "--target", str(reference), "--grade-mode", "plan", "--grade-calls", str(calls),
               "--grader-seed", str(seed), "-q", *flags, *(["--grade-json", str(results)] if results else [])]
        done = subprocess.run(cmd, cwd=autograder.parent.parent, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        planned: dict[str, dict[str, bytes]] = {}
        for unit in units:
            index = calls / unit / "plan.json"
            if not index.is_file():
                tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
                raise PlanError(f"the autograder did not record the {unit} unit's calls (exit code "
                                f"{done.returncode}): {tail}")
            failed = json.loads(index.read_text(encoding="utf-8"))["reference_failed"]
            if failed:
                name, why = next(iter(failed.items()))
                raise PlanError(f"the reference {reference}/{unit}.py fails {name} with grader seed {seed}, so "
                                f"the {unit} unit cannot be graded apart: {why.splitlines()[0] if why else ''}")
            planned[unit] = {p.name: p.read_bytes() for p in (calls / unit).iterdir() if p.is_file()}
        return planned


def place_plan(planned: dict[str, dict[str, bytes]], folder: Path) -> None:
    """This student's own copy of the plan, in ``folder/<unit>/`` (the sandbox reads it there)."""
    for unit, files in planned.items():
        (folder / unit).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / unit / name).write_bytes(data)


OUTPUTS = "outputs"   # a probe's records, in its unit's own folder of the results folder (zygote.py)


def probe_args(autograder: Path, unit: str, target: str, out_dir: str) -> list[str]:
    """The pytest arguments of a unit's probe run in the sandbox (``out_dir``: the results folder
    as the sandbox sees it): the plan from ``out_dir/plan``, the outputs into ``out_dir/<unit>/outputs``,
    in the unit's own folder, the only one its run may write."""
    return [str(autograder / f"test_grade_{unit}.py"), "--target", target, "--grade-mode", "probe",
            "--grade-calls", f"{out_dir}/plan", "--grade-outputs", f"{out_dir}/{unit}/{OUTPUTS}"]


def judge_args(autograder: Path, unit: str, target: Path, results_dir: Path, json_path: Path, seed: int,
               time_limit_scale: float, flags: Sequence[str]) -> list[str]:
    """The pytest arguments of a unit's judge run: the probe's records from ``results_dir/<unit>/outputs``,
    the results to ``json_path`` (outside ``results_dir``, where the student's run never wrote)."""
    args = [str(autograder / f"test_grade_{unit}.py"), "--target", str(target), "--grade-mode", "judge",
            "--grade-outputs", str(results_dir / unit / OUTPUTS), "--grade-json", str(json_path),
            "--grader-seed", str(seed), "-q", *flags]
    if time_limit_scale != 1.0:
        args += ["--time-limit-scale", repr(float(time_limit_scale))]
    return args


class Judge:
    """A process of the grader's, outside any sandbox, that judges one unit after another
    (``python -m minillm.course.verdict``: one in-process pytest run per judgment). Started once per
    class, it imports torch and pytest once: a judgment then takes about half a second instead of
    the ~6 s of a fresh process. No student code ever runs in it; it reads the probes' records as
    data. Thread-safe (one judgment at a time); restarted if it dies. Use as a context manager."""

    def __init__(self, cwd: Path, env: dict[str, str], timeout: float = 300.0) -> None:
        self.cwd, self.env, self.timeout = cwd, env, timeout
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            isolation.forget(self._proc)
            for stream in (self._proc.stdin, self._proc.stdout):
                stream.close()
            self._proc = None

    def judge(self, args: list[str], json_path: Path, log_path: Path) -> tuple[dict | None, str]:
        """Run the judge with pytest ``args`` (:func:`judge_args`): (the results.json it wrote, or None
        when it broke; its output)."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                if self._proc is not None:
                    self._stop()
                self._proc = isolation.spawn_helper([sys.executable, "-m", "minillm.course.verdict"], cwd=self.cwd,
                                                    env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                    stderr=subprocess.DEVNULL, text=True)
            self._proc.stdin.write(json.dumps({"args": args, "log": str(log_path)}) + "\n")
            self._proc.stdin.flush()
            ready, _, _ = select.select([self._proc.stdout], [], [], self.timeout)
            line = self._proc.stdout.readline() if ready else ""
            if not line:   # it died or hung: the next judgment starts a fresh one
                self._stop()
        output = isolation.tail(log_path) if log_path.is_file() else ""
        try:
            code = json.loads(line)["exit"] if line else None
        except (ValueError, KeyError, TypeError):
            code = None
        if code in (0, 1) and json_path.is_file():
            return json.loads(json_path.read_text(encoding="utf-8")), output
        return None, output or "the judge process ended without a word"


def _serve() -> None:
    """The judge process: one JSON job a line on stdin ({"args": pytest arguments, "log": path}),
    one line {"exit": pytest's exit code} on stdout when it is done."""
    import contextlib

    import pytest

    reply = os.fdopen(os.dup(1), "w", buffering=1)
    for line in sys.stdin:
        job = json.loads(line)
        with open(job["log"], "w", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            try:
                code = int(pytest.main(job["args"]))
            except BaseException as err:   # the grader's own failure: reported, and the next job still runs
                print(f"the judge failed: {type(err).__name__}: {err}")
                code = 3
        reply.write(json.dumps({"exit": code}) + "\n")


if __name__ == "__main__":
    _serve()
