"""`minillm grade`: a class of submissions graded in subprocesses, one CSV row each.

To keep it quick, the class is graded with a cut-down autograder: the real conftest.py and its
helpers with only the logits unit's tests (``--autograder``), in the process mode (no sandbox:
tests/test_grade_sandbox.py grades under bubblewrap). The submissions are a copy of the
reference, a copy of the stubs, one with a syntax error and an empty folder whose name starts
with a dot. A student whose code hangs for ever is graded by tests/test_grade_sandbox.py, on an
autograder that takes no time, so that no bound here depends on how busy the machine is.
The --out CSV is checked before any grading, and a process the graded code leaves running does
not stall it.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from minillm.cli import main as cli_main
from minillm.course.feedback import CSV_FIELDS, UNITS, compare_numbers, csv_row, problems_message
from minillm.course.grade import DEFAULT_AUTOGRADER, GradeError, find_autograder, grade_class, grade_submission

REPO = Path(__file__).resolve().parents[1]
AUTOGRADER = REPO / "tests" / "autograder"

@pytest.fixture(scope="module")
def small_autograder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("grader") / "tests" / "autograder"
    folder.mkdir(parents=True)
    # conftest.py and its helpers, graded_apart.txt (the logits unit is graded apart), the logits unit's tests
    for path in [*AUTOGRADER.glob("*.py"), *AUTOGRADER.glob("*.txt")]:
        if not path.name.startswith("test_grade_") or path.name == "test_grade_logits.py":
            shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def submissions(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("submissions")
    shutil.copytree(REPO / "solutions", root / "alice_reference", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "exercises", root / "bob_stubs", ignore=shutil.ignore_patterns("__pycache__"))
    broken = root / "carol_syntax_error"
    shutil.copytree(REPO / "solutions", broken, ignore=shutil.ignore_patterns("__pycache__"))
    (broken / "logits.py").write_text("def next_token_logits(model, tokenizer, text)\n    return 1\n", encoding="utf-8")
    (root / ".hidden").mkdir()
    return root


def test_grade_class(tmp_path, small_autograder, submissions):
    out = tmp_path / "grades.csv"
    rows = grade_class(submissions, out, timeout=300, autograder=small_autograder, seed=7, jobs=2, sandbox="process")
    with out.open(newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [r["student"] for r in table] == [".hidden", "alice_reference", "bob_stubs", "carol_syntax_error"]
    assert list(table[0].keys()) == CSV_FIELDS
    by = {r["student"]: r for r in table}
    assert len(rows) == 4

    ref = by["alice_reference"]
    assert ref["status"] == "ok" and int(ref["total"]) == int(ref["max_total"]) == int(ref["logits_max"]) > 0
    assert ref["logits"] == ref["logits_max"] and ref["grader_seed"] == "7"
    assert ref["perplexity"] == ref["perplexity_max"] == ""   # not graded (not in this autograder): blank, not 0

    stubs = by["bob_stubs"]
    assert stubs["status"] == "ok" and stubs["total"] == "0" and stubs["max_total"] == ref["max_total"]

    broken = by["carol_syntax_error"]
    assert broken["status"] == "ok" and broken["total"] == "0"
    # The message says what went wrong with a file, once for the unit (not once per test); else it
    # sums up the points lost, unit by unit, with the first failing test's message.
    assert broken["message"] == "logits: logits.py has a syntax error at line 1: expected ':'", broken["message"]
    assert stubs["message"].startswith("lost 13 points: logits 13 in 5 test(s) (first: test_next_token_logits: "
                                       "not implemented yet"), stubs["message"]
    assert ref["message"] == "" and ref["logits_max"] == "13"

    hidden = by[".hidden"]   # a folder whose name starts with "." is a student's too
    assert hidden["status"] == "ok" and hidden["total"] == "0" and hidden["max_total"] == ref["max_total"]
    assert hidden["message"].startswith("logits: missing: no logits.py or logits.ipynb in .hidden/"), hidden


def test_csv_row_leaves_ungraded_units_blank():
    """`--units logits,sampling`: the other units' cells are blank (a 0 would read as earned), the header
    is the class's one header all the same; a unit graded at 0 points stays 0."""
    results = {"score": 5, "max_score": 20, "extra_data": {"units": {
        "logits": {"score": 5, "max_score": 12}, "sampling": {"score": 0, "max_score": 8}}}}
    row = csv_row("erin", {"status": "ok", "results": results, "seconds": 3.0, "message": ""}, seed=7)
    assert list(row) == CSV_FIELDS
    assert (row["logits"], row["logits_max"], row["sampling"], row["sampling_max"]) == (5, 12, 0, 8)
    assert all(row[u] == row[f"{u}_max"] == "" for u in UNITS if u not in ("logits", "sampling")), row
    assert (row["total"], row["max_total"]) == (5, 20)
    assert row["scaling_numbers"] == row["scaling_matched"] == row["scaling_max_rel_diff"] == ""   # not graded
    timeout = csv_row("finn", {"status": "timeout", "results": None, "seconds": 9.0, "message": "stopped"}, seed=7)
    assert all(timeout[u] == timeout[f"{u}_max"] == "" for u in UNITS)


def test_problems_message_joins_sentences_cleanly():
    problems = {"training": ["missing: no training.py or training.ipynb in erin/, the files the training unit "
                             "is graded from."],
                "logits": ["logits.py has a syntax error at line 1: expected ':'",
                           "missing: no logits.py. Rename 'Copy of logits.ipynb' to logits.ipynb. "]}
    message = problems_message({"extra_data": {"problems": problems}})
    assert message == ("logits: logits.py has a syntax error at line 1: expected ':'; logits: missing: no logits.py. "
                       "Rename 'Copy of logits.ipynb' to logits.ipynb; training: missing: no training.py or "
                       "training.ipynb in erin/, the files the training unit is graded from")
    assert ".;" not in message and problems_message({"extra_data": {}}) == ""


def test_compare_numbers():
    numbers = [
        {"unit": "scaling", "name": "a", "student": 1.0, "reference": 1.0},
        {"unit": "scaling", "name": "b", "student": 2.0001, "reference": 2.0},
        {"unit": "scaling", "name": "c", "student": None, "reference": 3.0},
        {"unit": "logits", "name": "d", "student": 5.0, "reference": 1.0},
    ]
    got = compare_numbers(numbers)
    assert got["numbers"] == 3 and got["matched"] == 2 and got["max_rel_diff"] == float("inf")
    got = compare_numbers(numbers[:2])
    assert got["matched"] == 2 and got["max_rel_diff"] == pytest.approx(5e-5)
    assert compare_numbers([]) == {"numbers": 0, "matched": 0, "max_rel_diff": None}


def test_missing_autograder_and_submissions(tmp_path):
    assert find_autograder() == DEFAULT_AUTOGRADER.resolve()
    with pytest.raises(GradeError, match="no autograder"):
        find_autograder(tmp_path / "nowhere")
    with pytest.raises(GradeError, match="not a folder"):
        grade_class(tmp_path / "absent", tmp_path / "g.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GradeError, match="no student folders"):
        grade_class(tmp_path / "empty", tmp_path / "g.csv")


def test_cli_reports_missing_autograder(tmp_path, capsys):
    (tmp_path / "subs" / "eve").mkdir(parents=True)
    status = cli_main(["grade", str(tmp_path / "subs"), "--out", str(tmp_path / "g.csv"),
                       "--autograder", str(tmp_path / "nowhere")])
    assert status == 1
    assert "no autograder" in capsys.readouterr().err



def test_a_submission_named_dot_is_graded_under_its_folders_name(tmp_path, monkeypatch):
    """`grade_submission(".")` from inside a student's folder: the copy is named after the folder
    (it was named "", the temporary folder itself, and the copy failed with FileExistsError)."""
    student = tmp_path / "alice"
    student.mkdir()
    shutil.copy(REPO / "solutions" / "logits.py", student / "logits.py")
    monkeypatch.chdir(student)
    graded = grade_submission(".", units=["logits"], timeout=120, sandbox="process")
    assert graded["status"] == "ok", graded["message"] + graded["output"][-2000:]
    assert graded["results"]["score"] == graded["results"]["max_score"] > 0


def test_grade_refuses_to_replace_a_csv_before_grading(tmp_path, capsys):
    (tmp_path / "subs" / "eve").mkdir(parents=True)
    old = tmp_path / "grades.csv"
    old.write_text("student,total\nann,10\n")
    # --autograder points nowhere: a refusal that came only after grading would say "no autograder"
    args = ["grade", str(tmp_path / "subs"), "--out", str(old), "--autograder", str(tmp_path / "nowhere")]
    assert cli_main(args) == 1
    assert "--overwrite" in capsys.readouterr().err and old.read_text() == "student,total\nann,10\n"
    assert cli_main([*args, "--overwrite"]) == 1
    assert "no autograder" in capsys.readouterr().err


def test_grade_out_that_is_a_folder_is_refused_before_grading(tmp_path, capsys):
    (tmp_path / "subs" / "eve").mkdir(parents=True)
    assert cli_main(["grade", str(tmp_path / "subs"), "--out", str(tmp_path), "--overwrite",
                     "--autograder", str(tmp_path / "nowhere")]) == 1
    assert "is a folder, but a file name is needed" in capsys.readouterr().err


LEAVES_A_CHILD = '''
import hashlib, hmac, json, os, subprocess, sys

import pytest


def pytest_addoption(parser):
    for option in ("--target", "--grade-json", "--grader-seed", "--grade-key-fd"):
        parser.addoption(option)


def pytest_sessionfinish(session):
    if session.config.option.collectonly:   # minillm grade's plan: the tests and their points
        data = json.dumps({"score": 0, "max_score": 1, "tests": []}).encode()
        open(session.config.getoption("--grade-json"), "wb").write(data)
        return
    # as a student's code might: start processes that outlive pytest, one holding its output open,
    # one that also left the process group (setsid), out of reach of a process-group kill
    pids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=new).pid
            for new in (False, True)]
    with open(os.environ["MINILLM_TEST_PIDS"], "w") as f:
        f.write(" ".join(map(str, pids)))
    key = bytes.fromhex(os.read(int(session.config.getoption("--grade-key-fd")), 100).decode())
    data = json.dumps({"score": 1, "max_score": 1, "tests": []}).encode()
    path = session.config.getoption("--grade-json")
    with open(path, "wb") as f:
        f.write(data)
    with open(path + ".sig", "w") as f:
        f.write(hmac.new(key, data, hashlib.sha256).hexdigest())
'''


def test_a_process_left_running_does_not_stall_the_grading(tmp_path, monkeypatch):
    """A small autograder whose run leaves children, one holding the output: before issue 15 the
    grading waited for the pipe to close, i.e. until the timeout, and the student got "timeout".
    The one that called setsid is found too (minillm grade is its subreaper) and stopped. This is
    the process mode's guarantee (no sandbox); under bubblewrap the run's PID namespace ends with
    it (tests/test_grade_sandbox.py)."""
    import os
    import time

    from minillm.course.grade import grade_submission

    autograder = tmp_path / "tests" / "autograder"
    autograder.mkdir(parents=True)
    (autograder / "conftest.py").write_text(LEAVES_A_CHILD)
    (autograder / "test_grade_logits.py").write_text("def test_one():\n    pass\n")
    student = tmp_path / "alice"
    student.mkdir()
    (student / "logits.py").write_text("", encoding="utf-8")   # the unit has a file, so its run starts
    pids = tmp_path / "children.pid"
    monkeypatch.setenv("MINILLM_TEST_PIDS", str(pids))
    graded = grade_submission(student, autograder, timeout=40, sandbox="process")
    assert graded["status"] == "ok" and graded["results"]["score"] == 1 and graded["seconds"] < 30
    for child in map(int, pids.read_text().split()):
        for _ in range(50):
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the process {child} the graded code started is still running")


def test_a_unit_without_files_is_not_run_and_scores_as_the_autograder_would(tmp_path, small_autograder):
    """A folder with no logits file: no run is started for the unit (it could only fail each test with
    the same message), and its tests, points and problem are what the autograder itself reports on it."""
    import json
    import subprocess
    import sys

    student = tmp_path / "dora"
    student.mkdir()
    (student / "notes.txt").write_text("nothing to grade here", encoding="utf-8")
    graded = grade_submission(student, small_autograder, timeout=120, units=["logits"], sandbox="process")
    assert graded["status"] == "ok" and graded["output"] == "", graded   # no run: nothing printed
    direct_json = tmp_path / "direct.json"
    done = subprocess.run([sys.executable, "-m", "pytest", str(small_autograder / "test_grade_logits.py"), "--target",
                           str(student), "--grade-json", str(direct_json), "-q", "-p", "no:cacheprovider"],
                          cwd=small_autograder.parent.parent, capture_output=True, text=True)
    assert direct_json.is_file(), done.stdout[-2000:] + done.stderr[-2000:]
    direct = json.loads(direct_json.read_text(encoding="utf-8"))
    ours = graded["results"]
    assert [(t["name"], t["score"], t["max_score"]) for t in ours["tests"]] == [
        (t["name"], t["score"], t["max_score"]) for t in direct["tests"]]
    assert ours["extra_data"]["problems"] == direct["extra_data"]["problems"] == {
        "logits": ["missing: no logits.py or logits.ipynb in dora/, the files the logits unit is graded from."]}
    assert (ours["score"], ours["max_score"]) == (direct["score"], direct["max_score"])


@pytest.mark.parametrize("units, imported", [({"logits", "sampling"}, False), ({"logits", "training"}, True)])
def test_the_zygote_preloads_only_what_the_graded_units_need(tmp_path, units, imported):
    """preload.txt's modules are imported once per student before the units fork; a module listed with
    the units that need it (torch._dynamo: training, ~1.5 s of CPU) only when one of them is graded."""
    import subprocess
    import sys

    code = ("import sys\nfrom pathlib import Path\nfrom minillm.course import zygote\n"
            f"zygote.preload(Path({str(DEFAULT_AUTOGRADER)!r}), set({sorted(units)!r}))\n"
            "print('torch' in sys.modules, 'torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", str(imported)], done.stdout + done.stderr


def test_the_class_plan_lists_what_the_listing_run_lists():
    """class_plan takes a unit graded apart's tests and points from the run that records the reference's
    calls, instead of a listing run of its own: the same tests, points and objectives, each at 0."""
    from minillm.course.grade import class_plan, grading_plan

    listed = grading_plan(DEFAULT_AUTOGRADER, ["logits"])
    plan, planned = class_plan(DEFAULT_AUTOGRADER, ["logits"], 7)
    assert set(planned) == {"logits"}
    fields = ("name", "score", "max_score", "status", "tags")
    assert [{k: t[k] for k in fields} for t in plan["tests"]] == [{k: t[k] for k in fields} for t in listed["tests"]]
    assert (plan["score"], plan["max_score"]) == (listed["score"], listed["max_score"]) == (0, 13)
    assert plan["extra_data"]["objectives"] == listed["extra_data"]["objectives"]
    assert plan["extra_data"]["units"] == listed["extra_data"]["units"]
