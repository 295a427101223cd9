"""`minillm grade` under bubblewrap: what a hostile submission can reach, and what it cannot.

Each hostile student below hands in the logits unit's untouched stub (its honest code earns 0)
plus code that runs at import and tries one way around the grader. Under the sandbox each must
score exactly what its honest code earns, the classmates it attacks lose nothing, and the kit's
repository (the package, data/, solutions/, the autograder) is byte-identical afterwards.
The grader is cut down to the logits unit to keep the class quick (as in tests/test_grade.py).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minillm.course import isolation
from minillm.course.feedback import feedback_folder, spreadsheet_safe
from minillm.course.grade import grade_class

REPO = Path(__file__).resolve().parents[1]
AUTOGRADER = REPO / "tests" / "autograder"



def need_bwrap() -> None:
    """Skip the calling test where bubblewrap cannot start (macOS, a container without user
    namespaces); fail under CI, whose .ci/run installs it."""
    problem = isolation.bwrap_problem()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no bubblewrap sandbox on CI: {problem}")
        pytest.skip(f"no bubblewrap sandbox here: {problem}")


def _stub(unit: str = "logits") -> str:
    return (REPO / "exercises" / f"{unit}.py").read_text(encoding="utf-8")


def _reference(unit: str = "logits") -> str:
    return (REPO / "solutions" / f"{unit}.py").read_text(encoding="utf-8")


# Rewrites the grader and the kit on disk: the autograder's conftest (so that every test passes for
# the students graded after it), the package, the reference. Errors are swallowed: the honest stub
# below still loads, so the unit is graded and scores what the stub earns.
EDITOR = '''
from pathlib import Path

import minillm

_targets = [Path({grader!r}) / "conftest.py", Path(minillm.__file__),
            Path(minillm.__file__).parents[1] / "solutions" / "logits.py", Path({repo!r}) / "solutions" / "logits.py"]
for _path in _targets:
    try:
        _path.write_text("raise SystemExit('edited by a student')\\n")
    except OSError:
        pass
'''

# Reads the reference by every route a student found: open(), a subprocess, git (grading used to
# run inside the repository), a hard link. Whatever it reads it runs, replacing its stubs.
READER = '''
import os
import subprocess
import sys
from pathlib import Path

import minillm

_REPO = [Path(minillm.__file__).resolve().parents[1], Path({repo!r})]
_found = None
for _repo in _REPO:
    _ref = _repo / "solutions" / "logits.py"
    _routes = [
        lambda: _ref.read_text(),
        lambda: subprocess.run(["cat", str(_ref)], capture_output=True, text=True, check=True).stdout,
        lambda: subprocess.run(["git", "-C", str(_repo), "show", "HEAD:solutions/logits.py"], capture_output=True,
                               text=True, check=True).stdout,
        lambda: (os.link(_ref, "/tmp/ref.py"), Path("/tmp/ref.py").read_text())[1],
    ]
    for _route in _routes:
        try:
            _text = _route()
        except Exception:
            continue
        if "def next_token_logits" in _text:
            _found = _text
            break
    if _found:
        break
'''
READER_TAIL = '''
if _found:   # defined after the stubs: the reference's functions win
    exec(compile(_found, "reference", "exec"), globals())
'''

# Overwrites a classmate's file, by the path it guesses (its own folder's sibling) and by the real one.
VANDAL = '''
from pathlib import Path

for _path in (Path(__file__).resolve().parent.parent / "victim" / "logits.py", Path({victim!r})):
    try:
        _path.write_text("def next_token_logits(model, tokenizer, text):\\n    return None\\n")
    except OSError:
        pass
'''


def _tree_digest(*roots: Path) -> str:
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(str(path).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def small_autograder(tmp_path) -> Path:
    folder = tmp_path / "grader" / "tests" / "autograder"
    folder.mkdir(parents=True)
    for path in [*AUTOGRADER.glob("*.py"), *AUTOGRADER.glob("*.txt")]:   # graded_apart.txt, preload.txt
        if not path.name.startswith("test_grade_") or path.name == "test_grade_logits.py":
            shutil.copy(path, folder / path.name)
    return folder


def test_hostile_submissions_score_what_their_honest_code_earns(tmp_path, small_autograder):
    """Also in this class (one class keeps the test quick): the frame walker and the forger of
    tests/test_grade_apart.py, which go for the checks themselves (the logits unit is graded apart),
    score the stub's 0 in the real sandbox too; folders named with a leading "." or "_" are graded
    like any other, a name a spreadsheet would run as a formula is written as text, and every
    student gets results.json and feedback.txt beside the CSV."""
    from test_grade_apart import forger_code, walker_code   # (that file imports this one)

    need_bwrap()
    subs = tmp_path / "subs"
    victim = subs / "victim"
    shutil.copytree(REPO / "solutions", victim, ignore=shutil.ignore_patterns("__pycache__", "*.ipynb"))
    victim_file = (victim / "logits.py").read_bytes()
    # The attack after the stub: its `from __future__ import` must come first in the file, or the file is a
    # syntax error and the attack never runs.
    for name, code in [("a_editor", _stub() + EDITOR.format(repo=str(REPO), grader=str(small_autograder))),
                       ("b_reader", _stub() + READER.format(repo=str(REPO)) + READER_TAIL),
                       ("c_vandal", _stub() + VANDAL.format(victim=str(victim / "logits.py"))),
                       ("d_stubs", _stub()), (".dot", _reference()), ("_under", _stub()),
                       ("=HYPERLINK(1)", _reference()), ("f_walker", walker_code("logits")),
                       ("g_forger", forger_code("logits"))]:
        (subs / name).mkdir(parents=True)
        (subs / name / "logits.py").write_text(code, encoding="utf-8")
    (subs / "e_link_to_reference").symlink_to(REPO / "solutions")
    kit = (REPO / "minillm", REPO / "data", REPO / "solutions", small_autograder)
    before = _tree_digest(*kit)

    out = tmp_path / "grades.csv"
    rows = grade_class(subs, out, timeout=240, autograder=small_autograder, seed=11, units=["logits"],
                       sandbox="bwrap", jobs=2)
    by = {r["student"]: r for r in rows}
    assert set(by) == {"a_editor", "b_reader", "c_vandal", "d_stubs", "e_link_to_reference", "victim", ".dot",
                       "_under", "=HYPERLINK(1)", "f_walker", "g_forger"}
    full = by["victim"]["max_total"]
    assert full > 0 and all(r["max_total"] == full for r in rows), rows   # max_total never shrinks
    assert by["victim"]["total"] == full, by["victim"]                      # the classmate loses nothing
    for name in ("a_editor", "b_reader", "c_vandal", "d_stubs", "f_walker", "g_forger"):   # the stub's 0, whatever they tried
        assert by[name]["status"] == "ok" and by[name]["total"] == 0, (name, by[name])
        tests = json.loads((feedback_folder(out) / name / "results.json").read_text(encoding="utf-8"))["tests"]
        assert not any("syntax error" in t["output"] or "importing logits.py failed" in t["output"]
                       for t in tests), (name, tests)                      # its file loaded: its attack ran
    forger = json.loads((feedback_folder(out) / "g_forger" / "results.json").read_text(encoding="utf-8"))["tests"]
    assert all(t["output"].startswith("not implemented yet") for t in forger), [t["output"] for t in forger]
    link = by["e_link_to_reference"]
    assert link["status"] == "refused" and link["total"] == 0 and "is a link to another folder" in link["message"]
    assert _tree_digest(*kit) == before                                     # the kit is byte-identical
    assert (victim / "logits.py").read_bytes() == victim_file               # so is the classmate's file

    with out.open(newline="", encoding="utf-8") as f:
        table = {r["student"]: r for r in csv.DictReader(f)}
    assert "'=HYPERLINK(1)" in table and table["'=HYPERLINK(1)"]["total"] == str(full)
    assert table[".dot"]["total"] == str(full) and table["_under"]["total"] == "0"
    assert table["_under"]["message"].startswith(f"lost {full} points: logits {full} in 5 test(s)"), table["_under"]
    feedback = feedback_folder(out) / "_under"
    text = (feedback / "feedback.txt").read_text(encoding="utf-8")
    assert f"0/{full}" in text and "Tests that lost points" in text and "next_token_logits: your code here" in text
    results = json.loads((feedback / "results.json").read_text(encoding="utf-8"))
    assert results["score"] == 0 and results["max_score"] == full and len(results["tests"]) == 5
    assert all(t["output"] for t in results["tests"])   # each failing test says why
    assert json.loads((feedback_folder(out) / "victim" / "results.json").read_text())["score"] == full


# An autograder that grades in a fraction of a second (no torch): the real conftest's protocol only.
# It signs its results with the key minillm grade hands it, lists one 1-point test per unit it is
# asked for, and passes it when the student's folder holds "ok.txt". Enough to exercise the
# orchestration (spawning, waiting, cleaning up, merging) many times over.
QUICK_CONFTEST = """
import hashlib, hmac, json, os, time
from pathlib import Path

def pytest_addoption(parser):
    parser.addoption("--target"); parser.addoption("--grade-json"); parser.addoption("--grade-key-fd", type=int)
    parser.addoption("--grader-seed", type=int)

def pytest_sessionfinish(session):
    opt = session.config.option
    units = sorted({Path(str(a)).stem.removeprefix("test_grade_") for a in session.config.args})
    ok = (Path(opt.target) / "ok.txt").is_file() and not opt.collectonly
    time.sleep(0.1)
    while (Path(opt.target) / "hang.txt").is_file() and not opt.collectonly:   # as a student's endless loop
        time.sleep(0.05)   # (idle, so the test does not take a core from the others; the stop is the same SIGKILL)
    tests = [{"name": f"{u} X-1 (P): test_one", "score": int(ok), "max_score": 1, "output": "" if ok else "no ok.txt",
              "extra_data": {"unit": u}} for u in units]
    data = json.dumps({"score": sum(t["score"] for t in tests), "max_score": len(tests), "tests": tests,
                       "extra_data": {"units": {u: {"score": int(ok), "max_score": 1} for u in units},
                                      "objectives": [], "problems": {}}}).encode()
    key = bytes.fromhex(os.read(opt.grade_key_fd, 100).decode()) if opt.grade_key_fd else None
    for suffix in (".collected.json", ".json"):
        path = Path(opt.grade_json).with_suffix(suffix)
        path.write_bytes(data)
        if key:
            path.with_name(path.name + ".sig").write_text(hmac.new(key, data, hashlib.sha256).hexdigest())
"""


@pytest.fixture
def quick_autograder(tmp_path) -> Path:
    folder = tmp_path / "quick" / "tests" / "autograder"
    folder.mkdir(parents=True)
    (folder / "conftest.py").write_text(QUICK_CONFTEST)
    for unit in ("logits", "sampling"):
        (folder / f"test_grade_{unit}.py").write_text("def test_one():\n    pass\n")
    return folder


@pytest.mark.parametrize("sandbox", ["bwrap", "process"])
def test_many_students_at_once_each_unit_found_every_time(tmp_path, quick_autograder, sandbox):
    """The --jobs race (issue 19): a worker's clean-up killed a run another worker had just
    started, and that student's unit vanished from the CSV with its points. Eight students, four
    at a time, twice, two units each: every unit of every student found, every time."""
    if sandbox == "bwrap":
        need_bwrap()
    subs = tmp_path / "subs"
    _quick_class(subs, [f"s{i:02}" if i % 2 == 0 else f"s{i:02}_stub" for i in range(8)])
    for round_ in range(2):
        rows = grade_class(subs, tmp_path / f"grades{round_}.csv", timeout=60, autograder=quick_autograder,
                           seed=5, jobs=4, sandbox=sandbox)
        assert len(rows) == 8
        for i, row in enumerate(rows):
            assert (row["status"], row["max_total"], row["logits_max"], row["sampling_max"]) == ("ok", 2, 1, 1), row
            assert row["total"] == (2 if i % 2 == 0 else 0), row


@pytest.mark.parametrize("sandbox", ["bwrap", "process"])
def test_a_hanging_student_is_stopped_and_the_others_are_graded(tmp_path, quick_autograder, sandbox):
    """A run that never ends is stopped at --timeout: that student's units score 0 of their
    points, with a message, and the students graded beside it (jobs=2) are not disturbed. The
    honest runs take a fraction of a second (a unit's time counts from its fork in the student's
    zygote, after the imports), so the 5 s timeout holds on a busy machine."""
    if sandbox == "bwrap":
        need_bwrap()
    subs = tmp_path / "subs"
    _quick_class(subs, ["alice", "bob", "dave_hangs"])
    (subs / "dave_hangs" / "hang.txt").write_text("")
    rows = grade_class(subs, tmp_path / "grades.csv", timeout=5, autograder=quick_autograder, jobs=2,
                       units=["logits"], sandbox=sandbox)
    by = {r["student"]: r for r in rows}
    assert by["alice"]["total"] == by["bob"]["total"] == 1 and by["alice"]["status"] == "ok"
    hang = by["dave_hangs"]
    assert (hang["status"], hang["total"], hang["max_total"], hang["logits"], hang["logits_max"]) == (
        "timeout", 0, 1, 0, 1), hang
    assert hang["message"] == "logits: grading this unit took longer than 5 s and was stopped", hang["message"]


def test_spreadsheet_safe():
    assert [spreadsheet_safe(v) for v in ("=1+1", "+x", "-2", "@SUM(A1)", "\tx", "\rx", "alice", 3, -2.5, "")] == [
        "'=1+1", "'+x", "'-2", "'@SUM(A1)", "'\tx", "'\rx", "alice", 3, -2.5, ""]


def test_without_bubblewrap_the_grader_says_so_once_and_uses_processes(tmp_path, quick_autograder, monkeypatch,
                                                                       capsys):
    monkeypatch.setitem(isolation._PROBED, "bwrap", "bubblewrap is not installed (Debian/Ubuntu: apt-get install "
                                                    "bubblewrap)")
    subs = tmp_path / "subs"
    _quick_class(subs, ["alice", "bob"])
    with pytest.raises(isolation.SandboxError, match="--sandbox bwrap: bubblewrap is not installed"):
        grade_class(subs, tmp_path / "g.csv", sandbox="bwrap", autograder=quick_autograder)
    rows = grade_class(subs, tmp_path / "grades.csv", timeout=60, autograder=quick_autograder, jobs=2)
    assert [(r["total"], r["max_total"]) for r in rows] == [(2, 2), (2, 2)]
    err = capsys.readouterr().err
    assert err.count("no sandbox: bubblewrap is not installed") == 1, err


def _quick_class(root: Path, names: list[str]) -> Path:
    """Student folders for the quick autograder: each passes (holds ok.txt) unless named *_stub. Each
    holds a file for both units (which the quick grader does not read): a unit without any file is
    not run at all (minillm.course.grade._absent_units)."""
    for name in names:
        (root / name).mkdir(parents=True)
        for unit in ("logits", "sampling"):
            (root / name / f"{unit}.py").write_text("")
        if not name.endswith("_stub"):
            (root / name / "ok.txt").write_text("ok")
    return root


PROCESS_WARNING = "minillm grade: grading without a sandbox (--sandbox process)"


def test_quiet_prints_only_the_sandbox_warning_and_a_one_line_summary(tmp_path, quick_autograder, capsys):
    from minillm.cli import main as cli_main

    subs = _quick_class(tmp_path / "subs", ["alice", "bob_stub"])
    out = tmp_path / "grades.csv"
    assert cli_main(["grade", str(subs), "--out", str(out), "--autograder", str(quick_autograder), "--jobs", "2",
                     "--sandbox", "process", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert re.fullmatch(rf"graded 2 submissions in \d+ s \(2 ok\): wrote {re.escape(str(out))} and each student's "
                        rf"results.json and feedback.txt in {re.escape(str(tmp_path / 'grades-feedback'))}\n",
                        captured.out), captured.out
    assert captured.err.startswith(PROCESS_WARNING) and captured.err.count("\n") == 1, captured.err
    assert [r["total"] for r in csv.DictReader(out.open(encoding="utf-8"))] == ["2", "0"]   # graded all the same


def test_the_bar_counts_every_student_and_a_log_gets_no_clearing(tmp_path, quick_autograder):
    """The real command with its output piped (as in a CI log): a bar over the students on stderr,
    drawn again as each one finishes (--jobs 2, in any order) up to 4/4 with the time left, and a
    plain line per student on stdout. In a log, the bar is never cleared around those lines (a
    clearing is a run of spaces between carriage returns, once per student)."""
    subs = _quick_class(tmp_path / "subs", ["s1", "s2_stub", "s3", "s4"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}   # a bar, whatever the caller set
    done = subprocess.run([sys.executable, "-m", "minillm.cli", "grade", str(subs), "--out", str(tmp_path / "g.csv"),
                           "--autograder", str(quick_autograder), "--jobs", "2", "--sandbox", "process"],
                          env=env, capture_output=True, timeout=300)   # bytes: text mode would turn \r into \n
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, stderr
    lines = stdout.split("\n")[:-1]
    assert lines[0].startswith("grading 4 submissions with ") and lines[-1].startswith("graded 4 submissions in ")
    assert sorted(line.split()[0] for line in lines[1:-1]) == ["s1", "s2_stub", "s3", "s4"], stdout
    assert "\r" not in stdout
    warning, _, bar = stderr.partition("\n")
    assert warning.startswith(PROCESS_WARNING), stderr
    assert bar.startswith("\r") and bar.endswith("\n") and bar.count("\n") == 1, repr(bar)   # tqdm's: \r per redraw
    states = bar.strip("\n").split("\r")[1:]
    assert states and all(re.match(r"grading: +\d+%\|.*\| \d/4 \[", s) for s in states), repr(bar)
    counts = [int(re.search(r"\| (\d)/4 \[", s).group(1)) for s in states]
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == 4, counts
    assert any(re.search(r"\d/4 \[\d\d:\d\d<\d\d:\d\d", s) for s in states if " 0/4" not in s), states  # time left


def test_the_sandbox_sees_no_repository_and_no_network(tmp_path):
    """The view from inside: the kit's package and data are there, read-only; solutions/, .git
    and the submissions folder are not; no network; its own /tmp."""
    need_bwrap()
    probe = tmp_path / "probe"
    probe.mkdir()
    results = tmp_path / "results"
    results.mkdir()
    script = (
        "import os, socket, sys\n"
        f"repo = {str(REPO)!r}\n"
        "print(sorted(os.listdir(repo)))\n"
        "try:\n    open(repo + '/minillm/x.txt', 'w')\nexcept OSError as e:\n    print('read-only', e.errno)\n"
        "try:\n    socket.create_connection(('1.1.1.1', 80), timeout=2)\nexcept OSError as e:\n    print('no network')\n"
        f"print(os.path.exists({str(tmp_path / 'subs')!r}), os.listdir('/tmp'))\n")
    cmd = isolation.bwrap_command([sys.executable, "-c", script], kit_paths=[REPO / "minillm", REPO / "data"],
                                  submission=probe, results=results, cwd="/", hidden=[REPO],
                                  env={"PATH": "/usr/bin:/bin"})
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert out[0] == "['data', 'minillm']", out
    assert out[1].startswith("read-only") and out[2] == "no network" and out[3] == "False []", out


# Two "units" run by the zygote in one sandbox. The first is a student's code trying to reach the
# second's key (through the zygote's /proc/<pid>/fd) and leaving files for it (in /tmp and in its
# results folder); the second reports what it finds, and tries to rewrite the first's records, log and
# status (directly, through a rename of the folder, and through the other processes' /proc/<pid>/root).
PEEK = '''
import glob, os

def test_peek():
    got = []
    for path in glob.glob(f"/proc/{os.getppid()}/fd/*"):
        try:
            with open(path, "rb") as f:
                got.append(f.read(200))
        except OSError as err:
            got.append(type(err).__name__)
    print("PEEK", got)
    open("/tmp/planted", "w").write("for the next unit")
    open(os.environ["RESULTS"] + "/first/results.json", "w").write("honest")
    for path in (os.environ["RESULTS"] + "/second/results.json", os.environ["RESULTS"] + "/planted.json"):
        try:
            open(path, "w").write("{}")
            print("WROTE", path)
        except OSError as err:
            print("REFUSED", type(err).__name__)
'''
SECOND = '''
import os

def test_look():
    results = os.environ["RESULTS"]
    print("TMP", sorted(os.listdir("/tmp")), "PLANTED", os.path.exists(results + "/second/results.json"))
    targets = [results + "/first/" + name for name in ("results.json", "log.txt", "status.json", "new.json")]
    targets += [f"/proc/{pid}/root{results}/first/results.json" for pid in os.listdir("/proc") if pid.isdigit()]
    for path in targets:
        try:
            open(path, "w").write("forged")
            print("WROTE", path)
        except OSError as err:
            print("REFUSED", type(err).__name__)
    for attempt in (lambda: os.rename(results + "/first", results + "/gone"),
                    lambda: os.unlink(results + "/first/results.json")):
        try:
            attempt()
            print("CHANGED")
        except OSError as err:
            print("REFUSED", type(err).__name__)
'''


def test_a_unit_cannot_reach_the_next_units_key_or_leave_it_files(tmp_path):
    """Nor can it write outside its own results folder: a later unit cannot rewrite an earlier unit's
    records (the zygote's runs are confined, isolation.confine_writes)."""
    need_bwrap()
    import minillm

    kit = Path(minillm.__file__).resolve().parents[1]
    grader = tmp_path / "grader"
    grader.mkdir()
    (grader / "test_first.py").write_text(PEEK)
    (grader / "test_second.py").write_text(SECOND)
    results = tmp_path / "results"
    results.mkdir()
    out = isolation.RESULTS_MOUNT
    secret = "ab" * 32
    fds, units = [], []
    for name in ("first", "second"):
        read_end, write_end = os.pipe()
        os.write(write_end, secret.encode())
        os.close(write_end)
        fds.append(read_end)
        units.append({"unit": name, "args": [str(grader / f"test_{name}.py"), "-q", "-s", "-p", "no:cacheprovider"],
                      "timeout": 60, "key_fd": read_end, "folder": f"{out}/{name}"})
    (results / "zygote.json").write_text(json.dumps({"autograder": str(grader), "units": units, "private_tmp": True,
                                                     "confine": True, "results": out}))
    cmd = isolation.bwrap_command([sys.executable, "-m", "minillm.course.zygote", f"{out}/zygote.json"],
                                  kit_paths=[kit / "minillm", grader], submission=tmp_path / "grader",
                                  results=results, cwd=str(grader), hidden=[kit],
                                  env={"PATH": "/usr/bin:/bin", "RESULTS": out, "PYTHONDONTWRITEBYTECODE": "1",
                                       "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",   # as grade.py's sandbox
                                       **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}})
    try:
        subprocess.run(cmd, timeout=120, pass_fds=fds, check=True)
    finally:
        for fd in fds:
            os.close(fd)
    first = (results / "first" / "log.txt").read_text()
    peek = next(line for line in first.splitlines() if line.startswith("PEEK"))
    assert secret not in peek and "PermissionError" in peek, peek    # the zygote's descriptors are out of reach
    assert "WROTE" not in first and first.count("REFUSED") == 2, first   # read-only, or not made yet
    second = (results / "second" / "log.txt").read_text()
    assert "WROTE" not in second and "CHANGED" not in second and second.count("REFUSED") >= 8, second
    assert (results / "first" / "results.json").read_text() == "honest"
    assert json.loads((results / "first" / "status.json").read_text())["returncode"] == 0
    assert json.loads((results / "second" / "status.json").read_text())["returncode"] == 0, second
    assert sorted(p.name for p in results.iterdir()) == ["first", "second", "zygote.json"]
    assert "'planted'" not in second and "PLANTED False" in second, second   # nothing left for the next unit
