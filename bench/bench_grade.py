"""`minillm grade` against one `pytest --target` process, on copies of the reference submission.

    python bench/bench_grade.py                          # 4 students, --jobs 2 (~5 min on 2 busy cores)
    python bench/bench_grade.py --students 20 --jobs 2   # issue 20's goal: <= 120 s wall, <= 0.6 GB a job
    python bench/bench_grade.py --students 2 --jobs 1 --repeats 1 --json figures.json

The reference submission is a copy of solutions/ (every unit's module); the class is N copies of
it. In one run the bench measures three things, with this checkout's minillm and tests/autograder
as they are (nothing of the grader is copied, patched or instrumented):

1. The real thing, the headline figures: ``minillm grade <class> --jobs J --quiet`` once per
   sandbox mode (bwrap, process): its wall time, each student's ``seconds`` (the CSV), the
   statuses and scores, and from /proc, sampled every 0.2 s: memory per job (a student's zygote
   and the unit processes it forks: the peak resident set of the job's largest process, VmHWM,
   which counts the pages a unit process shares with its zygote once; and the largest sum over
   the job's processes, shared pages counted twice, an upper bound), the judge's peak and the
   grader's own. /proc also gives each process's exact start time, so the bench reads, per job,
   the zygote's start (from the sandbox's first process, or the zygote itself without one, to
   the first unit's fork: sandbox + Python + imports) and each unit's time in the sandbox (from
   its fork to the next unit's; the last one to the job's end, to within 0.2 s). The rest of a
   student's ``seconds`` is the copy of its files, the judgments (and, with several jobs, the
   wait for the class's one judge), the results and the sandbox's end.
2. The replay (bench/grade_phases.py): the bench does one student's steps itself, on the
   reference, outside any sandbox and with the grader's own argument builders: a zygote-like
   process (preload, then a forked pytest per unit: the probe for a unit graded apart, the whole
   grading for training) and a judge-like process (one pytest.main a judgment), both with a
   small timing plugin (bench/grade_timing.py), median of --repeats passes. It splits what /proc
   cannot see: each unit's start-up (fork to collected tests), its tests and its end; each
   judgment; the judge's own start and the class's plan (once per class).
3. The baseline: ``python -m pytest tests/autograder --target <reference>``, one process grading
   every unit directly (median of --repeats runs), with the same timing plugin (``-p``).

Why not time inside `minillm grade`: a timing plugin in the sandbox could hand its figures back
only through a file the student's code can also write, and one in the judge would change the
process that decides scores. Timing stays informational: the grader is run exactly as shipped,
its sandbox gets no writable path, and nothing the bench records is read by the grader.

Times are wall seconds on this machine as it is: on a busy machine (load average printed at the
start and the end) they are not the quiet-machine figures the issue's goal is about.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
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

import grade_phases                                # noqa: E402   bench/, beside this file
import grade_timing                                # noqa: E402
from minillm.course import isolation               # noqa: E402
from minillm.course.feedback import UNITS          # noqa: E402
from minillm.course.grade import PYTEST_FLAGS      # noqa: E402   the flags every `minillm grade` run uses

AUTOGRADER = REPO / "tests" / "autograder"
ZYGOTE, JUDGE = "minillm.course.zygote", "minillm.course.verdict"


class ProcessWatch:
    """Samples the processes under ``pid`` from /proc every 0.2 s until stopped: for each, its
    parent, command line, start time (exact, from /proc), when it was last seen, its peak resident
    set (VmHWM, MB), and per job (a `minillm grade` student: the outermost process whose command
    names the zygote, with everything under it) the largest sum of its processes' resident sets."""

    def __init__(self, pid: int):
        self.pid, self.procs, self.job_sum = pid, {}, {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        seen = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                pid, ppid, ticks = int(stat.parent.name), int(fields[1]), int(fields[19])
                known = self.procs.get(pid)
                if known is None or known["ticks"] != ticks:   # new (or a reused pid): read its command once
                    argv = (stat.parent / "cmdline").read_bytes().decode(errors="replace").split("\0")
                    known = self.procs[pid] = {"ppid": ppid, "argv": argv, "ticks": ticks, "hwm": 0.0,
                                               "start": grade_timing.process_start(pid)}
                status = dict(line.split(":", 1) for line in (stat.parent / "status").read_text().splitlines()
                              if ":" in line)
            except (OSError, ValueError, IndexError):   # ended meanwhile, or a kernel thread
                continue
            known["rss"] = int(status.get("VmRSS", "0 kB").split()[0]) / 1024
            known["hwm"] = max(known["hwm"], int(status.get("VmHWM", "0 kB").split()[0]) / 1024)
            known["last"] = time.time()
            seen[pid] = known
        sums: dict[int, float] = {}
        for pid, proc in seen.items():
            job = self.job_of(pid, seen)
            if job is not None:
                proc["job"] = job
                sums[job] = sums.get(job, 0.0) + proc["rss"]
        for job, total in sums.items():
            self.job_sum[job] = max(self.job_sum.get(job, 0.0), total)

    def job_of(self, pid: int, procs: dict) -> int | None:
        """The job ``pid`` belongs to (the outermost zygote-named process above it), or None."""
        chain = [pid]
        while chain[-1] in procs and chain[-1] != self.pid:
            chain.append(procs[chain[-1]]["ppid"])
        if chain[-1] != self.pid:
            return None   # not under the command
        return next((p for p in reversed(chain) if p in procs and any(ZYGOTE in a for a in procs[p]["argv"])), None)

    def _run(self) -> None:
        while not self.done.wait(0.2):
            self._sample()

    def stop(self) -> dict:
        """Memory (MB) and, per job, its phases (seconds; see the module doc)."""
        self.done.set()
        self.thread.join()
        jobs: dict[int, list[int]] = {}
        for pid, proc in self.procs.items():
            if "job" in proc:
                jobs.setdefault(proc["job"], []).append(pid)
        judge = [p["hwm"] for p in self.procs.values() if p["argv"][1:3] == ["-m", JUDGE]]
        others = [p["hwm"] for pid, p in self.procs.items() if "job" not in p and pid != self.pid
                  and p["argv"][1:3] != ["-m", JUDGE] and self.job_of(pid, self.procs) is None
                  and self._under(pid)]
        return {"largest": max((max(self.procs[p]["hwm"] for p in ps) for ps in jobs.values()), default=0.0),
                "sum": max(self.job_sum.values(), default=0.0), "judge": max(judge, default=0.0),
                "grader": self.procs.get(self.pid, {}).get("hwm", 0.0), "others": max(others, default=0.0),
                "jobs": [self._phases(root, pids) for root, pids in jobs.items()]}

    def _under(self, pid: int) -> bool:
        while pid in self.procs and pid != self.pid:
            pid = self.procs[pid]["ppid"]
        return pid == self.pid

    def _phases(self, root: int, pids: list[int]) -> dict:
        """One job: {"zygote": seconds to the first fork, "units": [seconds in the sandbox, in order], "life"}."""
        zygotes = [p for p in pids if self.procs[p]["argv"][1:3] == ["-m", ZYGOTE]]
        zygote = min(zygotes, key=lambda p: self.procs[p]["ticks"])   # the unit processes, forked, share its argv
        units = sorted((p for p in pids if self.procs[p]["ppid"] == zygote), key=lambda p: self.procs[p]["ticks"])
        start, end = self.procs[root]["start"], self.procs[root]["last"]
        starts = [self.procs[p]["start"] for p in units]
        return {"zygote": starts[0] - start if starts else None, "life": end - start,
                "units": [b - a for a, b in zip(starts, [*starts[1:], end])]}


def run_measured(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, dict, str]:
    """(wall seconds, ProcessWatch.stop()'s figures, stdout) of ``cmd``; exits when it fails."""
    launched = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    watch = ProcessWatch(proc.pid)
    out, err = proc.communicate()
    wall = time.time() - launched
    figures = watch.stop()
    if proc.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd[:6])}... failed (exit code {proc.returncode}):\n{err[-2000:]}")
    return wall, figures, out


def baseline(reference: Path, root: Path, repeats: int) -> dict:
    """One `pytest --target` process grading every unit, ``repeats`` times: medians (seconds, MB)."""
    runs = []
    for i in range(repeats):
        out, timing = root / f"baseline-{i}.json", root / f"baseline-{i}.jsonl"
        cmd = [sys.executable, "-m", "pytest", str(AUTOGRADER), "--target", str(reference), "--grade-json", str(out),
               "-q", *PYTEST_FLAGS, "-p", "grade_timing"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ["PYTHONPATH"]]),
                   **{grade_timing.ENV: str(timing)})
        launched = time.time()
        wall, figures, _ = run_measured(cmd, REPO, env)
        results = json.loads(out.read_text(encoding="utf-8"))
        [record] = grade_phases.read_records(timing)
        runs.append({"wall": wall, "startup": record["collected"] - launched, "tests": sum(record["tests"].values()),
                     "report": launched + wall - record["finish"], "units": record["tests"],
                     "score": [results["score"], results["max_score"]], "memory": figures["grader"]})
    return {**{k: statistics.median(r[k] for r in runs) for k in ("wall", "startup", "tests", "report")},
            "units": {u: statistics.median(r["units"].get(u, 0.0) for r in runs) for u in UNITS},
            "scores": sorted({tuple(r["score"]) for r in runs}), "memory": max(r["memory"] for r in runs)}


def grade(subs: Path, root: Path, jobs: int, mode: str) -> dict:
    """One `minillm grade` run over the class: wall time, students' seconds, memory, per-job phases."""
    out = root / f"grades-{mode}.csv"
    cmd = [sys.executable, "-m", "minillm.cli", "grade", str(subs), "--out", str(out), "--autograder",
           str(AUTOGRADER), "--jobs", str(jobs), "--sandbox", mode, "--quiet", "--overwrite"]
    wall, figures, summary = run_measured(cmd, REPO)
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    seconds = [float(r["seconds"]) for r in rows]
    timed = [j for j in figures["jobs"] if j["zygote"] is not None and len(j["units"]) == len(UNITS)]
    if len(timed) < len(figures["jobs"]):
        print(f"{mode}: {len(figures['jobs']) - len(timed)} of {len(figures['jobs'])} jobs were not seen with all "
              f"{len(UNITS)} unit processes (the 0.2 s sampling missed one?): left out of the phases")
    phases = {"zygote": statistics.median(j["zygote"] for j in timed) if timed else float("nan"),
              "units": statistics.median(sum(j["units"]) for j in timed) if timed else float("nan"),
              "life": statistics.median(j["life"] for j in timed) if timed else float("nan"),
              "per_unit": {u: statistics.median(j["units"][i] for j in timed) if timed else float("nan")
                           for i, u in enumerate(UNITS)}}
    return {"wall": wall, "seconds": statistics.median(seconds), "seconds_max": max(seconds),
            "class": wall - sum(seconds) / jobs, **phases, "rest": statistics.median(seconds) - phases["life"],
            "memory": {k: v for k, v in figures.items() if k != "jobs"},
            "statuses": sorted({r["status"] for r in rows}),
            "scores": sorted({f"{r['total']}/{r['max_total']}" for r in rows}), "summary": summary.strip()}


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report(args: argparse.Namespace, base: dict, replayed: dict, graded: dict) -> None:
    """The compact table."""
    n = len(UNITS)
    unit_runs = sum(u["startup"] + u["tests"] + u["end"] for u in replayed["units"].values())
    judgments = sum(u.get("judge", 0.0) for u in replayed["units"].values())
    print(f"reference: solutions/ ({n} units); class: {args.students} copies, --jobs {args.jobs}; pytest --target "
          f"and the replay: median of {args.repeats}; baseline scores {base['scores']}")
    print(f"\n{'':22} {'wall s':>7} {'s/student':>9} {'(max)':>6} {'class s':>7} {'MB/job':>6} {'MB sum':>6} "
          f"{'MB judge':>8} {'MB grader':>9}  statuses, scores")
    print(f"{'pytest --target':22} {base['wall']:7.1f} {base['wall']:9.1f} {'':>6} {'':>7} {base['memory']:6.0f}")
    for mode, g in graded.items():
        m = g["memory"]
        print(f"{'minillm grade ' + mode:22} {g['wall']:7.1f} {g['seconds']:9.1f} {g['seconds_max']:6.1f} "
              f"{g['class']:7.1f} {m['largest']:6.0f} {m['sum']:6.0f} {m['judge']:8.0f} {m['grader']:9.0f}  "
              f"{g['statuses']} {g['scores']}")
    print("(s/student: median of the CSV's seconds; class s: wall - the students' seconds / jobs: the grader's start,"
          " plan, judge start, CSV; MB/job: a job's largest process at its peak; MB sum: its processes summed)")

    print(f"\nwhere a student's seconds go (s) {'':10}" + "".join(f"{m:>9}" for m in graded) + f"{'replay':>9}")
    rows = [("zygote start (+sandbox) to 1st fork", "zygote", replayed["zygote"]),
            (f"{n} units' runs in the sandbox", "units", unit_runs),
            ("rest: copy, judging, results, end", "rest", None)]
    for label, key, mine in rows:
        print(f"  {label:40}" + "".join(f"{g[key]:9.1f}" for g in graded.values())
              + (f"{mine:9.1f}" if mine is not None else f"{'':9}"))
    judged = sum("judge" in u for u in replayed["units"].values())
    print(f"  {f'  of it, {judged} judgments (replay)':40}" + f"{'':9}" * len(graded) + f"{judgments:9.1f}")
    print(f"per class (replay): the judge's start {replayed['judge_start']:.1f} s, the grading plan "
          f"{replayed['plan']:.1f} s (the tests' points and the reference's calls)")

    print(f"\n{'per unit, median s':20} {'pytest':>7} {'replay:':>8} {'start-up':>8} {'tests':>6} {'end':>5} "
          f"{'judge':>6} | in the sandbox: " + " ".join(f"{m:>7}" for m in graded))
    for unit in UNITS:
        r = replayed["units"][unit]
        judge = f"{r['judge']:6.2f}" if "judge" in r else f"{'-':>6}"
        kind = "probe" if r["apart"] else "graded"
        print(f"{unit:20} {base['units'][unit]:7.2f} {kind:>8} {r['startup']:8.2f} {r['tests']:6.2f} {r['end']:5.2f} "
              f"{judge} | {'':15}" + " ".join(f"{g['per_unit'][unit]:7.2f}" for g in graded.values()))
    print("(pytest: the unit's tests in the baseline process; replay: its run from the fork (start-up to collected, "
          "tests, end), then its judgment; in the sandbox: the real run's, fork to the next fork)\n")
    for mode, g in graded.items():
        print(f"minillm grade {mode}: {g['seconds'] / base['wall']:.2f}x the pytest --target process a student; "
              f"{g['wall'] / args.students:.1f} s wall a student with --jobs {args.jobs} (~"
              f"{g['class'] + 20 * g['seconds'] / args.jobs:.0f} s for 20 at this rate: class s + 20 s/student / jobs;"
              f" goal <= 120 s with --jobs 2); "
              f"largest job {g['memory']['largest'] / 1024:.2f} GB (goal <= 0.6 GB)")
    for problem in replayed["problems"]:
        print(f"replay: {problem}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=4, help="copies of the reference to grade (default 4)")
    parser.add_argument("--jobs", type=int, default=2, help="minillm grade --jobs (default 2)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="pytest --target runs and replay passes, median taken (default 3)")
    parser.add_argument("--modes", nargs="+", default=["bwrap", "process"], choices=["bwrap", "process"])
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.students < 1 or args.jobs < 1 or args.repeats < 1:
        parser.error("--students, --jobs and --repeats: give whole numbers of at least 1")
    # Every process below, in a sandbox too, imports this checkout's minillm (not another install's).
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)

    load_start = load_average()
    print(f"load average at the start: {load_start} on {os.cpu_count()} cores"
          + ("  (a busy machine: these are not quiet-machine figures)" if os.getloadavg()[0] > 0.5 else ""))
    with tempfile.TemporaryDirectory(prefix="minillm-bench-grade-") as tmp:
        root = Path(tmp)
        reference = root / "reference"
        shutil.copytree(REPO / "solutions", reference, ignore=shutil.ignore_patterns("__pycache__"))
        subs = root / "class"
        for i in range(args.students):
            shutil.copytree(reference, subs / f"student_{i:03}")
        replayed = grade_phases.replay(reference, AUTOGRADER, root / "replay", args.repeats,
                                       random.SystemRandom().randrange(1, 2**31 - 1))
        base = baseline(reference, root, args.repeats)
        graded = {}
        for mode in args.modes:
            if mode == "bwrap" and isolation.bwrap_problem():
                print(f"--sandbox bwrap skipped: {isolation.bwrap_problem()}")
                continue
            graded[mode] = grade(subs, root, args.jobs, mode)
    report(args, base, replayed, graded)
    load_end = load_average()
    print(f"\nload average at the end: {load_end}")
    if args.json:
        figures = {"load_average": {"start": load_start, "end": load_end}, "cores": os.cpu_count(),
                   "students": args.students, "jobs": args.jobs, "repeats": args.repeats,
                   "pytest_target": base, "minillm_grade": graded, "replay": replayed}
        args.json.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
