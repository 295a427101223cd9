"""One student's units graded one after another, each in a fresh process forked from this one.

    python -m minillm.course.zygote PLAN.json

``minillm grade`` starts this once per student, inside the student's sandbox (or as a plain
process where there is none). It imports what every unit's grading imports (torch, pytest, the
kit: about 2 s of CPU) once, then for each unit forks a child that runs that unit's pytest and
exits. A child starts from this process's clean state, so nothing one unit's code does (global
torch settings, patched functions, loaded modules) reaches the next; it is stopped after its
unit's timeout, and whatever it started is killed before the next unit (this process is their
"subreaper"). No student code ever runs in this process itself.

PLAN.json: {"autograder": its folder, "private_tmp": true in a sandbox, "results": the results
folder, "confine": true in a sandbox, "units": [{"unit": "logits", "args": [pytest arguments],
"timeout": 300.0, "key_fd": 5, "folder": "<results>/logits"}, ...]}.

Each unit has a folder of its own in the results folder, made afresh before it runs: its output
(``log.txt``), what it records (results, or a probe's outputs), and the status this process
writes once it has ended (``status.json``: whether it finished, its exit code, or was stopped).
In a sandbox (``confine``) each child can write only its own unit's folder (isolation.confine_writes):
a later unit's code cannot rewrite an earlier unit's records or status, nor the plan beside them.
Each child keeps its own unit's key descriptor and closes the others' before its first
instruction of pytest, and this process is not dumpable, so one unit's code can neither hold nor
reach (through /proc/<pid>/fd) another's key. Before each unit, in a sandbox, what an earlier
unit's code left in /tmp is removed. The signed results or the judge's verdict, not the status,
are what counts (minillm.course.grade).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sys
import time
from pathlib import Path

from minillm.course import isolation

# The modules every unit's grading imports, loaded once here before the first fork, are listed by
# the autograder in this file (one module a line, then the units that need it where only some do;
# # comments), beside its conftest.py.
PRELOAD_FILE = "preload.txt"


LOG, STATUS = "log.txt", "status.json"   # in each unit's folder


def _run_child(unit: dict, plan: dict) -> None:
    """In the forked child: own process group, output to the unit's log, only its own key, in a
    sandbox writes only to its own folder; run pytest; never return (an error here must not send
    the child back into the parent's loop)."""
    code = 3
    try:
        os.setpgid(0, 0)
        key = unit["key_fd"]   # every other descriptor above stderr goes: the other units' keys first
        os.closerange(3, key)
        os.closerange(key + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        log = os.open(Path(unit["folder"]) / LOG, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        if plan.get("confine"):
            try:
                isolation.confine_writes(Path(unit["folder"]), Path(plan["results"]))
            except OSError as err:
                print(f"the sandbox could not keep this unit's run to its own results folder ({err}); "
                      "the grader needs user namespaces inside bubblewrap")
                raise
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


def _fresh_start(unit: dict, private_tmp: bool) -> None:
    """The unit's own results folder, made empty, and, in a sandbox (whose /tmp is its own), /tmp
    emptied: what an earlier unit's code could have left for this one goes."""
    folder = Path(unit["folder"])
    _remove(folder)
    folder.mkdir(parents=True)
    if private_tmp:
        for path in Path("/tmp").iterdir():
            _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


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


def preload(autograder: Path, units: set[str]) -> None:
    """Import the modules the autograder's preload.txt lists for a run that grades ``units``."""
    listed = autograder / PRELOAD_FILE
    if listed.is_file():
        for line in listed.read_text(encoding="utf-8").splitlines():
            words = line.split("#")[0].split()   # the module, then the units that need it (none: every unit)
            if words and (len(words) == 1 or units & set(words[1:])):
                __import__(words[0])


def main(plan_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
    units = plan["units"]
    isolation.become_subreaper()
    # Not dumpable: no unit's process (same user, no capabilities in the sandbox) may open this
    # one's /proc/<pid>/fd (the later units' key pipes) or ptrace it. Forked children inherit it.
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)   # 4: PR_SET_DUMPABLE, 0: no
    preload(Path(plan["autograder"]), {unit["unit"] for unit in units})
    for unit in units:
        _fresh_start(unit, plan.get("private_tmp", False))
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _run_child(unit, plan)
        os.close(unit["key_fd"])
        code, timed_out = _wait(pid, unit["timeout"])
        isolation.kill_new_children(set())   # whatever the unit left behind (handed to this subreaper)
        status = Path(unit["folder"]) / STATUS
        _remove(status)   # whatever the unit's code put there (a link, a folder): this file is the zygote's own
        fd = os.open(status, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"returncode": code, "timed_out": timed_out, "seconds": round(time.monotonic() - start, 3)}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
