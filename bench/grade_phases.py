"""bench/bench_grade.py's replay: the steps of one student's `minillm grade`, run by the bench itself and timed.

    python bench/grade_phases.py zygote SPEC.json   # a zygote-like process: preload, then a forked process per unit
    python bench/grade_phases.py judge SPEC.json    # a judge-like process: one pytest.main per judgment

:func:`replay` drives both on the reference (outside any sandbox, with the grader's own argument
builders: grade.class_plan, verdict.place_plan, verdict.probe_args,
verdict.judge_args), so the bench can say how long each phase takes without timing anything
inside `minillm grade` itself:

* the zygote's start: Python and the autograder's preload.txt imported, until the first fork;
* each unit's run, from its fork: start-up (until its tests are collected), its tests (the probe
  for a unit graded apart, the whole grading for training) and its end (session end, exit);
* each judgment in the judge, split the same way, for a student after the first (the judge has
  imported the test files by then), and the judge's own start (once per class: Python, pytest,
  and what its first judgment of each unit imports);
* the class's grading plan (the tests and their points) and the reference's calls, once per class.

Every record is one JSON line appended to the spec's ``out`` file. The grader does the same steps
in a sandbox (bubblewrap) and with its key pipes and write confinement; those costs show in the
real run's figures that bench_grade.py reads from /proc, beside these.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grade_timing
from minillm.course import zygote

BENCH = Path(__file__).resolve().parent


def _append(path: str, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _zygote(spec: dict) -> None:
    """Like minillm.course.zygote: preload, then fork a process per unit and wait for it."""
    started = grade_timing.process_start(os.getpid())
    zygote.preload(Path(spec["autograder"]), {unit["unit"] for unit in spec["units"]})
    preloaded = time.time()
    runs = []
    for unit in spec["units"]:
        folder = Path(unit["folder"])
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        forked = time.time()
        pid = os.fork()
        if pid == 0:
            _unit_child(unit, spec["out"])
        _, status = os.waitpid(pid, 0)
        runs.append({"unit": unit["unit"], "forked": forked, "ended": time.time(),
                     "exit": os.waitstatus_to_exitcode(status)})
    _append(spec["out"], {"zygote": {"started": started, "preloaded": preloaded, "runs": runs}})


def _unit_child(unit: dict, out: str) -> None:
    """In the forked process: output to the unit's log, pytest with the timing plugin, a record; never returns."""
    code = 3
    try:
        os.setpgid(0, 0)
        log = os.open(Path(unit["folder"]) / "log.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        import pytest

        args = list(unit["args"])
        if unit["signed"]:   # a key on a pipe, as minillm grade hands one to a unit graded in the sandbox
            read_end, write_end = os.pipe()
            os.write(write_end, os.urandom(32).hex().encode())
            os.close(write_end)
            args += ["--grade-key-fd", str(read_end)]
        sys.argv = ["pytest", *args]
        code = int(pytest.main(args, plugins=[grade_timing]))
        _append(out, {"unit": unit["unit"], "exit": code, **grade_timing.LAST})
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _judge(spec: dict) -> None:
    """Like minillm.course.verdict's judge process: pytest imported once, then one pytest.main a job."""
    started = grade_timing.process_start(os.getpid())
    import pytest

    _append(spec["out"], {"judge": {"started": started, "ready": time.time()}})
    for job in spec["jobs"]:
        begun = time.time()
        with open(job["log"], "w", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            code = int(pytest.main(job["args"], plugins=[grade_timing]))
        ended = time.time()
        results = json.loads(Path(job["json"]).read_text(encoding="utf-8")) if Path(job["json"]).is_file() else {}
        _append(spec["out"], {"unit": job["unit"], "pass": job["pass"], "exit": code, "begun": begun, "ended": ended,
                              "score": results.get("score"), "max_score": results.get("max_score"),
                              **grade_timing.LAST})


def read_records(path: Path) -> list[dict]:
    """The JSON lines of ``path``."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _drive(mode: str, spec: dict, folder: Path, cwd: Path, env: dict[str, str]) -> list[dict]:
    """Run this file in ``mode`` on ``spec`` (written to ``folder``); its records."""
    spec = dict(spec, out=str(folder / f"{mode}.jsonl"))
    spec_path = folder / f"{mode}.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    done = subprocess.run([sys.executable, str(BENCH / "grade_phases.py"), mode, str(spec_path)], cwd=cwd, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0 or not Path(spec["out"]).is_file():
        sys.exit(f"the bench's {mode} replay failed (exit code {done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}")
    return read_records(Path(spec["out"]))


def replay(reference: Path, autograder: Path, root: Path, passes: int, seed: int) -> dict:
    """One student's grading, done ``passes`` times by the bench on ``reference``; medians in seconds:
    {"plan" (per class: the tests' points and the reference's calls), "judge_start" (per class), "zygote" (per student), "units": {unit: {"startup",
    "tests", "end", "judge", "judge_startup", "judge_tests"}}, "problems": [anything short of full marks]}."""
    from minillm.course import grade, verdict

    units = [u for u in grade.UNITS if (autograder / f"test_grade_{u}.py").is_file()]
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _, planned = grade.class_plan(autograder, units, seed)
    plan_s = time.perf_counter() - started
    env = grade._environment()   # the environment of minillm grade's own runs (--sandbox process)
    flags = ["-q", *grade.PYTEST_FLAGS, "--grader-seed", str(seed)]
    zygotes, unit_runs, problems = [], [], []
    for k in range(passes):
        results_dir = root / f"replay-{k}"
        results_dir.mkdir()
        verdict.place_plan(planned, results_dir / "plan")
        specs = []
        for unit in units:
            folder = results_dir / unit
            if unit in planned:
                args = [*verdict.probe_args(autograder, unit, str(reference), str(results_dir)), *flags]
            else:
                args = [str(autograder / f"test_grade_{unit}.py"), "--target", str(reference), "--grade-json",
                        str(folder / grade.RESULTS), *flags]
            specs.append({"unit": unit, "args": args, "folder": str(folder), "signed": unit not in planned})
        records = _drive("zygote", {"autograder": str(autograder), "units": specs}, results_dir, autograder, env)
        [zygote] = [r["zygote"] for r in records if "zygote" in r]
        zygotes.append(zygote)
        children = {r["unit"]: r for r in records if "unit" in r}
        for run in zygote["runs"]:
            child = children.get(run["unit"])
            if child is None or run["exit"] not in (0, 1):
                problems.append(f"replay {k}: {run['unit']}'s run ended with exit code {run['exit']}")
                continue
            unit_runs.append({"unit": run["unit"], "startup": child["collected"] - run["forked"],
                              "tests": sum(child["tests"].values()), "end": run["ended"] - child["finish"]})
        for unit in units:
            if unit not in planned:
                results = json.loads((results_dir / unit / grade.RESULTS).read_text(encoding="utf-8"))
                if results["score"] != results["max_score"]:
                    problems.append(f"replay {k}: {unit} scored {results['score']}/{results['max_score']}")
    # The judge: pass 0 judged twice (the first time it imports the test files: the judge's start),
    # then every other pass.
    jobs = [{"unit": unit, "pass": n, "args": verdict.judge_args(
                autograder, unit, reference, root / f"replay-{k}", root / f"judged-{n}-{unit}.json", seed, 1.0,
                grade.PYTEST_FLAGS),
             "json": str(root / f"judged-{n}-{unit}.json"), "log": str(root / f"judged-{n}-{unit}.txt")}
            for n, k in enumerate([0, *range(passes)]) for unit in planned]
    records = _drive("judge", {"jobs": jobs}, root, autograder.parent.parent, env)
    [judge] = [r["judge"] for r in records if "judge" in r]
    judgments = [r for r in records if "unit" in r]
    for r in judgments:
        if r["exit"] not in (0, 1) or r["score"] is None or r["score"] != r["max_score"]:
            problems.append(f"judgment {r['pass']} of {r['unit']}: exit code {r['exit']}, "
                            f"score {r['score']}/{r['max_score']}")
    cold = sum(r["ended"] - r["begun"] for r in judgments if r["pass"] == 0)
    warm_once = sum(r["ended"] - r["begun"] for r in judgments if r["pass"] == 1)
    warm = [r for r in judgments if r["pass"] >= 1]

    def median(rows: list[dict], key) -> float:
        values = [key(r) for r in rows]
        return statistics.median(values) if values else float("nan")

    per_unit = {}
    for unit in units:
        mine = [r for r in unit_runs if r["unit"] == unit]
        judged = [r for r in warm if r["unit"] == unit]
        per_unit[unit] = {"startup": median(mine, lambda r: r["startup"]), "tests": median(mine, lambda r: r["tests"]),
                          "end": median(mine, lambda r: r["end"]), "apart": unit in planned,
                          **({"judge": median(judged, lambda r: r["ended"] - r["begun"]),
                              "judge_startup": median(judged, lambda r: r["collected"] - r["begun"]),
                              "judge_tests": median(judged, lambda r: sum(r["tests"].values()))} if judged else {})}
    return {"plan": plan_s, "passes": passes,
            "zygote": statistics.median(z["runs"][0]["forked"] - z["started"] for z in zygotes),
            "judge_start": (judge["ready"] - judge["started"]) + cold - warm_once,
            "units": per_unit, "problems": problems}


if __name__ == "__main__":
    {"zygote": _zygote, "judge": _judge}[sys.argv[1]](json.loads(Path(sys.argv[2]).read_text(encoding="utf-8")))
