"""Meta-tests of the autograder (tests/autograder), each one a pytest subprocess with --grade-json:

* the reference solutions/ earn every point (the modules with a fixed grader seed, the same
  code as notebooks with a fresh one);
* the stubs in exercises/ earn 0 points, and the run completes (no crash, no collection error);
* every known mistake in tests/autograder/mistakes/ loses points in its unit on three grader
  seeds, on both paths the grader grades by: the mistake's functions are appended to a copy of
  solutions/<unit>.py (later definitions win) and the unit is graded in the student's process
  (``-m <unit>``, as `pytest --target` and the Gradescope bundle grade) on two fresh seeds, and
  graded apart (as `minillm grade` grades a unit of graded_apart.txt: the probe records the
  mistake's outputs, the judge decides) on the fixed seed. A unit not graded apart is graded in
  the student's process on the fixed seed too.

A new file in mistakes/ is picked up automatically.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from student_notebooks import reference_notebooks

from minillm.course import verdict
from minillm.course.grade import PYTEST_FLAGS

REPO = Path(__file__).resolve().parents[1]
AUTOGRADER = REPO / "tests" / "autograder"
SOLUTIONS = REPO / "solutions"
EXERCISES = REPO / "exercises"
MISTAKES = sorted((AUTOGRADER / "mistakes").glob("*__*.py"))
APART = verdict.apart_units(AUTOGRADER, [p.stem.removeprefix("test_grade_") for p in AUTOGRADER.glob("test_grade_*.py")])
UNITS = ("logits", "perplexity", "quantization", "sampling", "architecture", "scaling", "training")
FIXED_SEED = 20240917
RUNNERS = 2       # mistake runners at a time (mistake_grades): CI has 2 cores, each runner one torch thread


def run_grader(target: Path, json_path: Path, *args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the autograder on ``target``; returns the process and the parsed results.json."""
    cmd = [sys.executable, "-m", "pytest", str(AUTOGRADER), "--target", str(target),
           "--grade-json", str(json_path), "-q", "-p", "no:cacheprovider", *args]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    # 0: all passed, 1: some tests failed. Anything else (2 interrupted / collection error,
    # 3 internal error, 4 usage error, 5 nothing collected) means the grader itself broke.
    assert proc.returncode in (0, 1), (
        f"the autograder did not complete (exit code {proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    assert json_path.is_file(), f"no {json_path} written:\n{proc.stdout[-4000:]}"
    return proc, json.loads(json_path.read_text(encoding="utf-8"))


def _failures(results: dict) -> str:
    return "\n\n".join(f"{t['name']}:\n{t['output']}" for t in results["tests"] if t["status"] != "passed")


def _check_format(results: dict) -> None:
    """The Gradescope fields are there, and the sums add up."""
    for key in ("score", "max_score", "execution_time", "output", "tests", "extra_data"):
        assert key in results, key
    assert results["tests"], "no graded tests ran"
    for test in results["tests"]:
        assert {"name", "score", "max_score", "status", "output", "tags"} <= test.keys()
        assert test["status"] in ("passed", "failed")
        assert 0 <= test["score"] <= test["max_score"]
    assert results["score"] == sum(t["score"] for t in results["tests"])
    assert results["max_score"] == sum(t["max_score"] for t in results["tests"])
    units = results["extra_data"]["units"]
    assert sum(u["max_score"] for u in units.values()) == results["max_score"]
    assert set(units) <= set(UNITS)
    assert not any("autograder error" in t["output"] for t in results["tests"]), _failures(results)


def _student_command() -> subprocess.CompletedProcess:
    """`pytest --grader-seed 1234 -m logits` in the repository root, as a student types it."""
    script = Path(sys.executable).with_name("pytest")   # the `pytest` command, not `python -m pytest`
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "pytest"]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    return subprocess.run([*cmd, "--grader-seed", "1234", "-m", "logits", "-p", "no:cacheprovider"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def grader_runs(request, tmp_path_factory):
    """The whole-grader runs of the tests below, started together when the first of them needs one and
    run two at a time (CI has 2 cores; each run is one process on one torch thread, and this process only
    waits): ``{run: future of what it returns}``, for the tests that this session selected."""
    root = tmp_path_factory.mktemp("grader-runs")
    runs = {
        "fixed-seed-modules": lambda: run_grader(SOLUTIONS, root / "modules.json", "--grader-seed", str(FIXED_SEED)),
        "fresh-seed-notebooks": lambda: run_grader(reference_notebooks(root / "notebooks"), root / "notebooks.json"),
        "stubs": lambda: run_grader(EXERCISES, root / "stubs.json"),
        "student-command": _student_command,
    }
    by_test = {"test_exercise_stubs_earn_nothing": "stubs", "test_student_command_at_the_repository_root": "student-command"}
    wanted = {item.callspec.params["run"] if hasattr(item, "callspec") else by_test[item.name]
              for item in request.session.items if item.module is request.module and "grader_runs" in item.fixturenames}
    with ThreadPoolExecutor(2) as pool:
        yield {name: pool.submit(run) for name, run in runs.items() if name in wanted}


@pytest.mark.parametrize("run", ["fixed-seed-modules", "fresh-seed-notebooks"])
def test_reference_solutions_earn_every_point(grader_runs, run):
    """The modules of solutions/ on a fixed seed; on a fresh seed, the reference as notebooks, one
    per unit (solutions/<unit>.ipynb, or one built from the module as a student's notebook looks)."""
    proc, results = grader_runs[run].result()
    _check_format(results)
    used = results["extra_data"]["grader_seed"]
    assert results["score"] == results["max_score"] > 0, (
        f"the reference lost points with grader seed {used} (rerun with --grader-seed {used}):\n{_failures(results)}")
    assert proc.returncode == 0
    assert not results["extra_data"]["problems"], results["extra_data"]["problems"]
    if run == "fixed-seed-modules":   # solutions/ holds each unit's .py and .ipynb with the same code: nothing to note
        assert used == FIXED_SEED
        assert not results["extra_data"]["notes"], results["extra_data"]["notes"]
        assert "notes:" not in results["output"], results["output"]
    else:   # every unit was graded from its notebook
        notes = results["extra_data"]["notes"]
        assert all(any(n.startswith(f"{u}.ipynb: ran its") for n in notes.get(u, []))
                   for u in results["extra_data"]["units"]), notes


def test_exercise_stubs_earn_nothing(grader_runs):
    proc, results = grader_runs["stubs"].result()
    _check_format(results)
    earned = [t["name"] for t in results["tests"] if t["score"] > 0]
    assert results["score"] == 0, f"the stubs earned points in: {earned}"
    assert results["max_score"] > 0
    # Every unit with a solution is graded.
    units = set(results["extra_data"]["units"])
    assert {p.stem for p in SOLUTIONS.glob("*.py")} & set(UNITS) <= units


def test_student_command_at_the_repository_root(grader_runs):
    """`pytest --grader-seed 1234 -m logits` in the root, as the README says: the option is known
    (the root conftest.py declares it) and the stubs in exercises/ are graded: exit 1 and the points
    table. (test_grade_notebooks.py runs `pytest --target=PATH` in the root.)"""
    proc = grader_runs["student-command"].result()
    assert proc.returncode == 1, f"exit code {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    table = proc.stdout[proc.stdout.index("minillm autograder:"):]
    assert "(grader seed 1234; rerun with --grader-seed 1234)" in table
    assert f"{EXERCISES}" in table.splitlines()[0]
    assert re.search(r"^TOTAL\s+0/[1-9]\d*\s*$", table, flags=re.M), table


def test_every_unit_has_mistakes():
    units_with_tests = {p.stem.removeprefix("test_grade_") for p in AUTOGRADER.glob("test_grade_*.py")}
    covered = {p.name.split("__")[0] for p in MISTAKES}
    assert units_with_tests <= covered, f"units without a mistake in mistakes/: {sorted(units_with_tests - covered)}"


def test_readme_catalogue_matches_the_folder():
    """README's "The N in the catalogue today" and its table (one '; '-separated entry per mistake)
    count what tests/autograder/mistakes/ holds, per unit, so the two cannot drift apart."""
    import re
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### The mistakes catalogue"):]
    section = section[: section.index("\n## ")]
    total = re.search(r"The (\d+) in the\s+catalogue today", section)
    assert total, "README's catalogue section lost its 'The N in the catalogue today' sentence"
    assert int(total.group(1)) == len(MISTAKES), (
        f"README says {total.group(1)} mistakes, tests/autograder/mistakes/ holds {len(MISTAKES)}")
    rows = dict(re.findall(r"^\| (\w+) \| (.+) \|$", section, flags=re.M))
    rows.pop("unit", None)
    per_unit = {unit: sum(p.name.startswith(unit + "__") for p in MISTAKES) for unit in UNITS}
    in_readme = {unit: len(rows.get(unit, "").split("; ")) if unit in rows else 0 for unit in UNITS}
    assert in_readme == per_unit, f"README's catalogue table lists {in_readme}, the folder holds {per_unit}"


def _fresh_seeds(n: int) -> list[int]:
    import random
    return [random.SystemRandom().randrange(1, 2**31 - 1) for _ in range(n)]


@pytest.fixture(scope="module")
def mistake_grades(tmp_path_factory) -> dict[str, list[dict]]:
    """Every catalogued mistake graded in its unit on three grader seeds: apart on the fixed one, in the
    student's process on two fresh ones (and on the fixed one where the unit is not graded apart).

    ``RUNNERS`` subprocesses share them, each grading its share one after another, each grading a
    separate in-process ``pytest.main`` (see :func:`_grade_jobs`): starting Python and torch once per
    runner instead of once per (mistake, seed) keeps the cost at ~0.2 s of CPU per grading instead of
    ~4 s. Each mistake has its own target folder, and the conftest resets its state in
    ``pytest_configure``, so one grading cannot see another's."""
    root = tmp_path_factory.mktemp("mistakes")
    fresh = _fresh_seeds(2)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    # No third-party pytest plugins in the runners: each of the ~230 pytest.main calls scanned every installed
    # package's entry points and loaded them again; no grade uses them (the control would show it if one did).
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    # The reference's calls on the fixed seed, recorded once as `minillm grade` records them for a class:
    # every mistake graded apart is probed on them and judged.
    plan = root / "plan"
    verdict.place_plan(verdict.plan_calls(AUTOGRADER, APART, FIXED_SEED, env, PYTEST_FLAGS), plan)
    jobs = []
    for mistake in MISTAKES:
        unit = mistake.name.split("__")[0]
        if unit not in UNITS:
            continue                                   # test_mistake_loses_points reports the bad name
        target = root / mistake.stem
        shutil.copytree(SOLUTIONS, target, ignore=shutil.ignore_patterns("__pycache__"))
        module = target / f"{unit}.py"
        module.write_text(module.read_text(encoding="utf-8") + f"\n\n# ---- appended: {mistake.name} ----\n"
                          + mistake.read_text(encoding="utf-8"), encoding="utf-8")
        for seed in fresh if unit in APART else [FIXED_SEED, *fresh]:
            jobs.append({"mistake": mistake.name, "unit": unit, "target": str(target), "seed": seed,
                         "json": str(root / f"{mistake.stem}.{seed}.json")})
        if unit in APART:
            jobs.append({"mistake": mistake.name, "unit": unit, "target": str(target), "seed": FIXED_SEED,
                         "json": str(root / f"{mistake.stem}.apart.json"), "apart": str(root / f"{mistake.stem}.apart"),
                         "plan": str(plan)})
    # The control: the reference, copied and graded by the same runners with the same options, earns
    # every point of each unit, so no mistake loses its points to how the runners grade.
    reference = root / "reference"
    shutil.copytree(SOLUTIONS, reference, ignore=shutil.ignore_patterns("__pycache__"))
    for unit in sorted({job["unit"] for job in jobs}):
        jobs.append({"mistake": f"reference:{unit}", "unit": unit, "target": str(reference), "seed": FIXED_SEED,
                     "json": str(root / f"reference-{unit}.json")})
        if unit in APART:
            jobs.append({"mistake": f"reference:{unit}", "unit": unit, "target": str(reference), "seed": FIXED_SEED,
                         "json": str(root / f"reference-{unit}.apart.json"), "apart": str(root / f"reference-{unit}.apart"),
                         "plan": str(plan)})
    runners = []
    for index in range(RUNNERS):
        share = jobs[index::RUNNERS]                   # every unit in each share: the shares take as long
        jobs_path = root / f"jobs-{index}.json"
        jobs_path.write_text(json.dumps(share), encoding="utf-8")
        log = jobs_path.with_suffix(".log")
        with open(log, "w", encoding="utf-8") as out:   # a file, not a pipe: no runner waits on a full pipe
            runners.append((jobs_path, log, len(share), subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), str(jobs_path)], cwd=REPO, env=env,
                stdout=out, stderr=subprocess.STDOUT)))
    for _, _, count, proc in runners:                  # all of them ended (or killed) before any verdict
        try:
            proc.wait(timeout=60 + 30 * count)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    graded: dict[str, list[dict]] = {}
    for jobs_path, log, _, proc in runners:
        output = log.read_text(encoding="utf-8", errors="replace")
        assert proc.returncode == 0, f"the mistake runner failed ({jobs_path.name}, exit {proc.returncode}):\n{output[-8000:]}"
        for job in json.loads(jobs_path.read_text(encoding="utf-8")):
            graded.setdefault(job["mistake"], []).append(job)
    return graded


@pytest.mark.parametrize("mistake", MISTAKES, ids=[p.stem for p in MISTAKES])
def test_mistake_loses_points(mistake_grades, mistake):
    unit = mistake.name.split("__")[0]
    assert unit in UNITS, f"{mistake.name}: name it <unit>__<short_name>.py with a unit among {UNITS}"
    text = mistake.read_text(encoding="utf-8")
    assert text.lstrip().startswith(('"""', "'''")), f"{mistake.name}: start with a docstring naming the mistake"
    for control in mistake_grades[f"reference:{unit}"]:
        graded = json.loads(Path(control["json"]).read_text(encoding="utf-8")) if control["exit_code"] == 0 else {}
        control_score = graded.get("extra_data", {}).get("units", {}).get(unit)
        assert control_score and control_score["score"] == control_score["max_score"], (
            f"the mistake runner lost points on the reference's {unit} unit (grader seed {FIXED_SEED}"
            f"{', graded apart' if 'apart' in control else ''}), so its verdicts on mistakes mean nothing:\n"
            f"{control['output'][-4000:]}")
    jobs = mistake_grades[mistake.name]
    assert len(jobs) == 3
    for job in jobs:
        seed = f"{job['seed']}{' (graded apart)' if 'apart' in job else ''}"
        # 0: all passed, 1: some failed; anything else means the grader itself broke.
        assert job["exit_code"] in (0, 1), (
            f"{mistake.name}, grader seed {seed}: the autograder did not complete (exit code {job['exit_code']}):\n"
            f"{job['output'][-4000:]}")
        results = json.loads(Path(job["json"]).read_text(encoding="utf-8"))
        unit_score = results["extra_data"]["units"].get(unit)
        assert unit_score is not None, f"{mistake.name}, grader seed {seed}: no graded test of unit {unit!r} ran"
        assert unit_score["score"] < unit_score["max_score"], (
            f"{mistake.name}: the mistake earned every point of the {unit} unit with grader seed {seed} "
            f"(rerun with --grader-seed {seed}); the autograder does not catch it on every seed")


def _grade_jobs(jobs_path: Path) -> None:
    """Grade each job (a mistake's target folder, its unit, a seed) with an in-process pytest run;
    record the exit code and the captured output in the jobs file."""
    import contextlib
    import io
    _remember_rewritten_modules()
    jobs = json.loads(jobs_path.read_text(encoding="utf-8"))
    for job in jobs:
        out = io.StringIO()
        if "apart" in job:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                code = _grade_apart(job)
            job["exit_code"], job["output"] = code, out.getvalue()[-6000:]
            continue
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            # -x: the first lost point is enough (tests that did not run count as lost). No unraisable-
            # exception plugin: at the end of every run it calls gc.collect() five times, ~0.5 s each run in
            # a process holding torch, two thirds of a grading's time, for warnings no grade depends on.
            # --tb=native: a failing test's traceback from Python's own formatter, which reads source lines
            # from linecache; pytest's own re-parses the whole test file for each traceback entry. Only the
            # unit's test file is collected (-m picks the same tests from the folder): collecting and
            # deselecting the other six units' tests cost ~0.05 s a grading. The control run is graded so too.
            code = pytest.main([str(AUTOGRADER / f"test_grade_{job['unit']}.py"), "--target", job["target"], "--grade-json", job["json"], "-q",
                                "-p", "no:cacheprovider", "-p", "no:unraisableexception", "-m", job["unit"], "-x",
                                "--tb=native", "--grader-seed", str(job["seed"])])
        job["exit_code"], job["output"] = int(code), out.getvalue()[-6000:]
    jobs_path.write_text(json.dumps(jobs), encoding="utf-8")


def _grade_apart(job: dict) -> int:
    """Grade a job's unit apart, as `minillm grade` does, with the grader's own arguments
    (minillm.course.verdict): the probe calls the target's functions on the plan's inputs and records
    their outputs; the judge, a pytest run of its own that never imports the target, decides. Both run
    in this process (the mistakes are ours: what keeps a student's code from the judge is
    tests/test_grade_apart.py's). Returns the judge's exit code, or the probe's when it broke."""
    unit, out_dir, seed = job["unit"], Path(job["apart"]), str(job["seed"])
    (out_dir / unit).mkdir(parents=True)
    (out_dir / "plan").symlink_to(job["plan"], target_is_directory=True)
    probe = pytest.main([*verdict.probe_args(AUTOGRADER, unit, job["target"], str(out_dir)), "-q", *PYTEST_FLAGS,
                         "--grader-seed", seed, "--tb=native"])
    if probe not in (0, 1):
        return int(probe)
    return int(pytest.main([*verdict.judge_args(AUTOGRADER, unit, Path(job["target"]), out_dir, Path(job["json"]),
                                                job["seed"], 1.0, PYTEST_FLAGS), "-m", unit, "-x", "--tb=native"]))


def _remember_rewritten_modules() -> None:
    """Rewrite each conftest and test module's asserts once per runner, not once per grading.

    pytest rewrites the asserts of every conftest and test module it imports, in each pytest.main, and
    keeps the result only as a .pyc beside the source, which it does not write when bytecode writing is
    off (PYTHONDONTWRITEBYTECODE, as on CI): each grading then parsed and compiled the 1000-line
    autograder conftest and the unit's test file again. The rewritten code is the same for the same
    file (and the same pytest), so it is kept here in memory, keyed by the file and its modification time."""
    from _pytest.assertion import rewrite
    rewrite_test = getattr(rewrite, "_rewrite_test", None)
    if rewrite_test is None:           # another pytest: rewrite each time, as before
        return
    done: dict = {}

    def remembered(fn, config):
        stat = os.stat(fn)
        key = (str(fn), stat.st_mtime_ns, stat.st_size)
        if key not in done:
            done[key] = rewrite_test(fn, config)
        return done[key]

    rewrite._rewrite_test = remembered


if __name__ == "__main__":
    _grade_jobs(Path(sys.argv[1]))
