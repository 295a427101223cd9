"""`minillm grade` against one `pytest --target` process, on copies of the reference submission.

    python bench/bench_grade.py                          # 4 students, --jobs 2 (~5 min on 2 busy cores)
    python bench/bench_grade.py --students 20 --jobs 2   # issue 20's goal: <= 120 s wall, <= 0.6 GB a job

The reference submission is a copy of solutions/ (every unit's module and notebook, as the
tests' fixtures hand it in); the class is N copies of it. In one run the bench times
``python -m pytest <autograder> --target <reference>`` (one process grading all units,
median of --repeats runs) and ``minillm grade <class> --jobs J --quiet`` once per sandbox mode
(bwrap, process), and says where the time goes:

* start-up: Python, torch, pytest, the kit and the autograder's modules imported and the tests
  collected. For `minillm grade`, per student: the zygote's start in its sandbox (until its
  first unit's process is forked) plus each unit's process from its fork to its collected tests.
* tests: the tests' own durations (pytest's setup + call + teardown), which include loading the
  submission; loading it alone (the unit modules imported after torch, as the grader imports
  them) is timed apart and shown beside.
* report and the rest: the results files and the points table, processes ending; for
  `minillm grade` also the copy of the student's files and the sandbox's start and end (each
  student's ``seconds`` in the CSV minus start-up and tests).
* per class (`minillm grade` only): its own start, the grading plan and the CSV, estimated as the
  wall time minus the students' seconds spread over the jobs.

The timings inside pytest come from a small plugin (``bench_timing.py``, below) added to a copy
of the autograder: it records when the process started, when collection ended, each test's
duration and when the session ended, and hands them back as a note in the unit's results, the
one channel out of the sandbox. Memory is sampled from /proc every 0.2 s: per job (a student's
zygote and its unit process) the peak resident set of its largest process (VmHWM; the unit
process shares the zygote's pages, so this is the job's footprint short of pages it copied)
and the largest sum over the job's processes (shared pages counted twice: an upper bound).

Times are wall seconds on this machine as it is: on a busy machine (load average printed at
the start and the end) they are not the quiet-machine figures the issue's goal is about.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # this checkout's minillm, as `minillm grade` below runs it

from minillm.course import isolation               # noqa: E402
from minillm.course.feedback import UNITS          # noqa: E402
from minillm.course.grade import PYTEST_FLAGS      # noqa: E402   the flags every `minillm grade` run uses

NOTE = "bench-timing "
TIMING_PLUGIN = '''"""bench/bench_grade.py's timings of this pytest process, handed back as a note in the results."""
import json, os, sys, time
from pathlib import Path

import pytest

_TESTS, _TIMES = {}, {}


def _started(pid):
    """When process ``pid`` started, in seconds since the epoch (Linux /proc; None elsewhere)."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])   # field 22: starttime
        boot = next(int(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def pytest_collection_finish(session):
    _TIMES["collected"] = time.time()


def pytest_runtest_logreport(report):
    unit = report.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_grade_")
    _TESTS[unit] = _TESTS.get(unit, 0.0) + report.duration


@pytest.hookimpl(tryfirst=True)   # before the conftest writes the results
def pytest_sessionfinish(session):
    state = getattr(sys.modules.get("conftest"), "_STATE", None)
    if state is None or session.config.option.collectonly:
        return
    record = dict(_TIMES, start=_started(os.getpid()), parent_start=_started(os.getppid()), finish=time.time(),
                  tests=_TESTS)
    for unit in _TESTS:
        state.notes.setdefault(unit, []).append(''' + repr(NOTE) + ''' + json.dumps(record))
'''


def instrumented_autograder(root: Path) -> Path:
    """A copy of tests/autograder whose conftest also loads the timing plugin."""
    folder = root / "grader" / "tests" / "autograder"
    shutil.copytree(REPO / "tests" / "autograder", folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "bench_timing.py").write_text(TIMING_PLUGIN, encoding="utf-8")
    with (folder / "conftest.py").open("a", encoding="utf-8") as f:
        f.write('\n\n# added by bench/bench_grade.py\n'
                'pytest_plugins = [*globals().get("pytest_plugins", []), "bench_timing"]\n')
    return folder


def timing_records(results: dict) -> list[dict]:
    """The plugin's records in a results.json, one per pytest process, in the order they ran."""
    found = {note for notes in results.get("extra_data", {}).get("notes", {}).values() for note in notes
             if note.startswith(NOTE)}
    return sorted((json.loads(n[len(NOTE):]) for n in found), key=lambda r: r["start"] or 0)


class MemorySampler:
    """Samples the processes under ``pid`` from /proc every 0.2 s until stopped. With ``zygotes``
    (a `minillm grade` run), a job is one zygote (a process running minillm.course.zygote whose
    parent does not) with the unit processes it forks; without, the command is the one job."""

    def __init__(self, pid: int, zygotes: bool):
        self.pid, self.zygotes, self.hwm, self.job_sum, self.job_of = pid, zygotes, {}, {}, {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(0.2):
            procs = {}
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
                    zygote = b"minillm.course.zygote" in (status.parent / "cmdline").read_bytes()
                except OSError:   # ended meanwhile
                    continue
                procs[int(status.parent.name)] = (int(fields["PPid"]), zygote,
                                                  int(fields.get("VmRSS", "0 kB").split()[0]) / 1024,
                                                  int(fields.get("VmHWM", "0 kB").split()[0]) / 1024)
            sums: dict[int, float] = {}
            for pid, (_, _, rss, hwm) in procs.items():
                chain, p = [pid], pid   # pid and its ancestors up to the command
                while p in procs and p != self.pid:
                    p = procs[p][0]
                    chain.append(p)
                if p != self.pid:
                    continue   # not under the command
                if self.zygotes:
                    job = next((c for c in reversed(chain) if c in procs and procs[c][1]), None)
                else:
                    job = self.pid
                self.hwm[pid] = max(self.hwm.get(pid, 0.0), hwm)
                if job is not None:
                    self.job_of[pid] = job
                    sums[job] = sums.get(job, 0.0) + rss
            for job, total in sums.items():
                self.job_sum[job] = max(self.job_sum.get(job, 0.0), total)

    def stop(self) -> dict:
        """{"largest": peak MB of a job's largest process, "sum": largest sum of RSS over a job's
        processes, "command": peak MB of the command's own process, "jobs": how many were seen}."""
        self.done.set()
        self.thread.join()
        largest: dict[int, float] = {}
        for pid, job in self.job_of.items():
            largest[job] = max(largest.get(job, 0.0), self.hwm[pid])
        return {"largest": max(largest.values(), default=0.0), "sum": max(self.job_sum.values(), default=0.0),
                "command": self.hwm.get(self.pid, 0.0), "jobs": len(largest)}


def run_measured(cmd: list[str], cwd: Path, zygotes: bool) -> tuple[float, float, dict, subprocess.CompletedProcess]:
    """(launch time since the epoch, wall seconds, memory, the finished process) of ``cmd``."""
    launched = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    sampler = MemorySampler(proc.pid, zygotes)
    out, err = proc.communicate()
    wall = time.time() - launched
    memory = sampler.stop()
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if proc.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd[:6])}... failed (exit code {proc.returncode}):\n{err[-2000:]}")
    return launched, wall, memory, done


def loading_seconds(reference: Path, autograder: Path) -> float:
    """Seconds to import the reference's unit modules once torch and the kit are loaded (median of 3)."""
    code = f"""
import importlib.util, statistics, sys, time
from pathlib import Path
for line in Path({str(autograder / "preload.txt")!r}).read_text().splitlines():
    if line.split("#")[0].strip():
        __import__(line.split("#")[0].strip())
sys.path.insert(0, {str(reference)!r})
times = []
for attempt in range(3):
    start = time.perf_counter()
    for unit in {list(UNITS)!r}:
        spec = importlib.util.spec_from_file_location(f"_student_{{unit}}_{{attempt}}", Path({str(reference)!r}) / f"{{unit}}.py")
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    times.append(time.perf_counter() - start)
print(statistics.median(times))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    return float(done.stdout.strip().splitlines()[-1])


def baseline(reference: Path, autograder: Path, root: Path, repeats: int) -> dict:
    """One `pytest --target` process grading every unit, ``repeats`` times: medians."""
    runs = []
    for i in range(repeats):
        out = root / f"baseline-{i}.json"
        cmd = [sys.executable, "-m", "pytest", str(autograder), "--target", str(reference), "--grade-json", str(out),
               "-q", *PYTEST_FLAGS]
        launched, wall, memory, _ = run_measured(cmd, autograder.parent.parent, zygotes=False)
        results = json.loads(out.read_text(encoding="utf-8"))
        [record] = timing_records(results)
        tests = sum(record["tests"].values())
        runs.append({"wall": wall, "startup": record["collected"] - launched, "tests": tests,
                     "report": launched + wall - record["finish"], "units": record["tests"],
                     "score": (results["score"], results["max_score"]), "memory": memory})
    return {"wall": statistics.median(r["wall"] for r in runs),
            **{k: statistics.median(r[k] for r in runs) for k in ("startup", "tests", "report")},
            "units": {u: statistics.median(r["units"].get(u, 0.0) for r in runs) for u in UNITS},
            "scores": [r["score"] for r in runs], "memory": max((r["memory"] for r in runs), key=lambda m: m["largest"])}


def grade(subs: Path, autograder: Path, root: Path, jobs: int, mode: str) -> dict:
    """One `minillm grade` run over the class: wall time, per-student phases, per-unit medians."""
    out = root / f"grades-{mode}.csv"
    cmd = [sys.executable, "-m", "minillm.cli", "grade", str(subs), "--out", str(out), "--autograder", str(autograder),
           "--jobs", str(jobs), "--sandbox", mode, "--quiet", "--overwrite"]
    _, wall, memory, done = run_measured(cmd, REPO, zygotes=True)
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    students, units = [], {u: {"startup": [], "tests": []} for u in UNITS}
    for row in rows:
        results = json.loads((root / f"grades-{mode}-feedback" / row["student"] / "results.json").read_text())
        records = timing_records(results)
        if not records:   # no unit finished (a timeout on a very busy machine?): counted in the statuses only
            print(f"{mode}: {row['student']} left no timings ({row['status']}: {row['message'][:200]})")
            continue
        seconds = float(row["seconds"])
        zygote = records[0]["start"] - records[0]["parent_start"]   # sandbox'd Python + imports, to the first fork
        startup = zygote + sum(r["collected"] - r["start"] for r in records)
        tests = sum(sum(r["tests"].values()) for r in records)
        students.append({"seconds": seconds, "startup": startup, "zygote": zygote, "tests": tests,
                         "report": seconds - startup - tests,
                         "status": row["status"], "score": (row["total"], row["max_total"])})
        for r in records:
            [unit] = r["tests"]
            units[unit]["startup"].append(r["collected"] - r["start"])
            units[unit]["tests"].append(r["tests"][unit])
    median = {k: statistics.median(s[k] for s in students) for k in ("seconds", "startup", "zygote", "tests", "report")}
    return {"wall": wall, **median, "class": wall - sum(s["seconds"] for s in students) / jobs, "memory": memory,
            "units": {u: {k: statistics.median(v) for k, v in d.items() if v} for u, d in units.items()},
            "statuses": [s["status"] for s in students], "scores": sorted({s["score"] for s in students}),
            "summary": done.stdout.strip()}


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=4, help="copies of the reference to grade (default 4)")
    parser.add_argument("--jobs", type=int, default=2, help="minillm grade --jobs (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="pytest --target runs, median taken (default 3)")
    parser.add_argument("--modes", nargs="+", default=["bwrap", "process"], choices=["bwrap", "process"])
    args = parser.parse_args()
    # Every process below, in a sandbox too, imports this checkout's minillm (not another install's).
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)

    print(f"load average at the start: {load_average()} on {os.cpu_count()} cores"
          + ("  (a busy machine: these are not quiet-machine figures)" if os.getloadavg()[0] > 0.5 else ""))
    with tempfile.TemporaryDirectory(prefix="minillm-bench-grade-") as tmp:
        root = Path(tmp)
        autograder = instrumented_autograder(root)
        reference = root / "reference"
        shutil.copytree(REPO / "solutions", reference, ignore=shutil.ignore_patterns("__pycache__"))
        subs = root / "class"
        for i in range(args.students):
            shutil.copytree(reference, subs / f"student_{i:03}")
        loading = loading_seconds(reference, autograder)
        base = baseline(reference, autograder, root, args.repeats)
        graded = {}
        for mode in args.modes:
            if mode == "bwrap" and isolation.bwrap_problem():
                print(f"--sandbox bwrap skipped: {isolation.bwrap_problem()}")
                continue
            graded[mode] = grade(subs, autograder, root, args.jobs, mode)

    n_units = len(UNITS)
    print(f"reference: solutions/ ({n_units} units); pytest --target: median of {args.repeats} runs, scores "
          f"{sorted(set(base['scores']))}; minillm grade: {args.students} copies, --jobs {args.jobs}")
    print(f"loading the submission alone (its {n_units} modules, after torch): {loading:.2f} s, inside 'tests'\n")
    print(f"{'':24} {'wall s':>7} {'s/student':>9} {'s/unit':>6} {'start-up':>8} {'tests':>6} {'report+':>7} "
          f"{'class':>6} {'MB/job':>6} {'MB sum':>6} {'MB grader':>9}")
    print(f"{'pytest --target':24} {base['wall']:7.1f} {base['wall']:9.1f} {base['wall'] / n_units:6.2f} "
          f"{base['startup']:8.1f} {base['tests']:6.1f} {base['report']:7.1f} {'':>6} "
          f"{base['memory']['largest']:6.0f} {base['memory']['sum']:6.0f} {'':>9}")
    for mode, g in graded.items():
        print(f"{'minillm grade ' + mode:24} {g['wall']:7.1f} {g['seconds']:9.1f} {g['seconds'] / n_units:6.2f} "
              f"{g['startup']:8.1f} {g['tests']:6.1f} {g['report']:7.1f} {g['class']:6.1f} "
              f"{g['memory']['largest']:6.0f} {g['memory']['sum']:6.0f} {g['memory']['command']:9.0f}")
    print("(s/student and the phases: medians over students of one student's seconds in its job; 'class': the "
          "grader's own start, plan and CSV, = wall - students' seconds / jobs; MB/job: the largest process of a job "
          "at its peak; MB sum: a job's processes summed, shared pages twice)\n")
    for mode, g in graded.items():
        print(f"minillm grade {mode}: {g['seconds'] / base['wall']:.2f}x the pytest --target process's time a student; "
              f"class: {g['wall']:.1f} s wall = {g['wall'] / args.students:.1f} s a student with --jobs {args.jobs} "
              f"(~{g['wall'] / args.students * 20:.0f} s for 20 at this rate); start-up: the zygote {g['zygote']:.1f} s "
              f"+ the unit processes {g['startup'] - g['zygote']:.1f} s; statuses {sorted(set(g['statuses']))}, "
              f"scores {g['scores']}")
    print(f"\n{'per unit, median s':24} {'pytest tests':>12} " +
          " ".join(f"{m + ' start-up':>16} {m + ' tests':>13}" for m in graded))
    for unit in UNITS:
        print(f"{unit:24} {base['units'][unit]:12.2f} " + " ".join(
            f"{g['units'][unit].get('startup', float('nan')):16.2f} {g['units'][unit].get('tests', float('nan')):13.2f}"
            for g in graded.values()))
    print(f"\nload average at the end: {load_average()}")


if __name__ == "__main__":
    main()
