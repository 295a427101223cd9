"""One student's units graded one after another, each in a fresh process forked from this one.

    python -m minillm.course.zygote PLAN.json

``minillm grade`` starts this once per student, inside the student's sandbox (or as a plain
process where there is none). It imports what every unit's grading imports (torch, pytest, the
kit: about 2 s of CPU) once, then for each unit forks a child that runs that unit's pytest and
exits. A child starts from this process's clean state, so nothing one unit's code does (global
torch settings, patched functions, loaded modules) reaches the next; it is stopped after its
unit's timeout, and whatever it started is killed before the next unit (this process is their
"subreaper"). No student code ever runs in this process itself.

PLAN.json: {"autograder": its folder, "units": [{"unit": "logits", "args": [pytest arguments], "timeout": 300.0,
"key_fd": 5, "log": "/path/logits.log", "status": "/path/logits.status.json"}, ...]}.
Each child keeps its own unit's key descriptor and closes the others' before its first
instruction of pytest, so one unit's code never holds another's key. The status file says
whether the unit finished (its exit code) or was stopped; the signed results, not it, are what
counts (minillm.course.grade).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from minillm.course import isolation

# The modules every unit's grading imports, loaded once here before the first fork, are listed by
# the autograder in this file (one module a line, # comments), beside its conftest.py.
PRELOAD_FILE = "preload.txt"


def _run_child(unit: dict, all_fds: list[int]) -> None:
    """In the forked child: own process group, output to the unit's log, only its own key; run
    pytest; never return (an error here must not send the child back into the parent's loop)."""
    code = 3
    try:
        os.setpgid(0, 0)
        os.closerange(3, unit["key_fd"])        # the other units' keys and anything else inherited
        os.closerange(unit["key_fd"] + 1, max(all_fds, default=0) + 64)
        log = os.open(unit["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        import atexit

        import pytest

        sys.argv = ["pytest", *unit["args"]]   # as in a pytest process of its own
        try:
            code = int(pytest.main(unit["args"]))
        finally:
            atexit._run_exitfuncs()   # what a process of its own would run at exit (os._exit skips it)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _wait(pid: int, timeout: float) -> tuple[int | None, bool]:
    """(exit code, or None when stopped; whether it ran past ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return None, True
        time.sleep(0.02)


def main(plan_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
    units = plan["units"]
    isolation.become_subreaper()
    preload = Path(plan["autograder"]) / PRELOAD_FILE
    if preload.is_file():
        for line in preload.read_text(encoding="utf-8").splitlines():
            if line.split("#")[0].strip():
                __import__(line.split("#")[0].strip())
    fds = [u["key_fd"] for u in units]
    for unit in units:
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _run_child(unit, fds)
        os.close(unit["key_fd"])
        code, timed_out = _wait(pid, unit["timeout"])
        isolation.kill_new_children(set())   # whatever the unit left behind (handed to this subreaper)
        Path(unit["status"]).write_text(json.dumps({"returncode": code, "timed_out": timed_out,
                                                    "seconds": round(time.monotonic() - start, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
