"""A pytest plugin for bench/bench_grade.py: when one pytest session's tests were collected, and how long they took.

Used two ways, never inside `minillm grade`'s sandbox nor in its judge (the bench does not touch
the grader; see bench_grade.py's docstring):

* ``python -m pytest ... -p grade_timing`` (bench/ on the import path): the baseline's one
  ``pytest --target`` process. At the session's end it appends its record, one JSON line, to the
  file named by the environment variable ``BENCH_GRADE_TIMING``.
* ``pytest.main(args, plugins=[grade_timing])`` in grade_phases.py's replay: the caller reads
  :data:`LAST` after the call.

A record: ``collected`` (seconds since the epoch when collection ended), ``finish`` (when the
session ended), ``tests`` ({unit: seconds of its tests' setup + call + teardown}) and ``process_start``
(when this process started, from /proc; None elsewhere).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

ENV = "BENCH_GRADE_TIMING"
LAST: dict = {}   # the latest session's record; reset when a session starts (a judge runs many in one process)


def process_start(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the epoch (Linux /proc; None elsewhere or once it ended)."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])   # field 22: starttime
    except (OSError, ValueError, IndexError):
        return None
    # starttime counts clock ticks since boot, on the clock CLOCK_BOOTTIME reads
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME) + ticks / os.sysconf("SC_CLK_TCK")


def unit_of(nodeid: str) -> str:
    """``tests/autograder/test_grade_logits.py::test_x`` -> ``logits``."""
    return nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_grade_")


def pytest_sessionstart(session: pytest.Session) -> None:
    LAST.clear()
    LAST.update(collected=None, finish=None, tests={}, process_start=process_start(os.getpid()))


def pytest_collection_finish(session: pytest.Session) -> None:
    LAST["collected"] = time.time()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    unit = unit_of(report.nodeid)
    LAST["tests"][unit] = LAST["tests"].get(unit, 0.0) + report.duration


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    LAST["finish"] = time.time()
    path = os.environ.get(ENV)
    if path and not session.config.option.collectonly:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(LAST) + "\n")
