"""A submission that reaches into the grader cannot raise its score or change another unit's (issue 14).

The real autograder's machinery (conftest.py, guard.py, grading.py, ...) grades a one-test unit
per unit name, each asking for ``softmax(x)`` of a vector, so that each hostile case costs a
test, not a whole unit's grading. One student, Mallory, tries a different trick in each unit
while computing a wrong softmax; her training unit is honest and must keep its points after all
the others have run in the same process. A second, Forger, writes her own results file, which
only ``minillm grade`` (signed results, one process per unit) can catch. Code that ends the process,
raises KeyboardInterrupt, writes without end or takes too much memory costs only its own test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minillm.course.grade import grade_submission

REPO = Path(__file__).resolve().parents[1]

UNIT_TEST = '''
import pytest
import torch
from grading import expect_close

pytestmark = pytest.mark.{unit}
OBJECTIVES = {{"X-1": "softmax of a vector"}}


@pytest.mark.graded(points=2, objective="X-1")
def test_softmax(student):
    assert torch.ones(1).dtype == torch.float32, "an earlier unit's default dtype leaked into this test"
    x = torch.arange(4.0)
    expected = torch.exp(x) / torch.exp(x).sum()
    expect_close(student.function("{unit}", "softmax")(x), expected, "softmax(x)", atol=1e-6, rtol=1e-6)
'''

WRONG = "\n\ndef softmax(x):\n    return x / x.sum()\n"
RIGHT = "\n\ndef softmax(x):\n    return torch.exp(x) / torch.exp(x).sum()\n"

MALLORY = {   # unit -> (the trick at the top of the file, what the grader's message must name)
    "architecture": ("import pathlib\nimport minillm\n"
                     "exec((pathlib.Path(minillm.__file__).parents[1] / 'solutions' / 'architecture.py').read_text())\n",
                     "opened solutions/architecture.py, the reference solution"),
    "logits": ("import grading\ngrading.expect_close = lambda *args, **kwargs: None\n",
               "replaced grading.expect_close"),
    "perplexity": ("import grading\ngrading.expect_close.__code__ = (lambda *args, **kwargs: None).__code__\n",
                   "replaced grading.expect_close"),
    "quantization": ("import _pytest.reports\n_pytest.reports.TestReport.passed = property(lambda self: True)\n",
                     "replaced _pytest.reports.TestReport.passed"),
    "sampling": ("import builtins\nbuiltins.abs = lambda x: 0 * x\ntorch.allclose = lambda *args, **kwargs: True\n",
                 "builtins.abs"),
    "scaling": ("torch.set_default_dtype(torch.float64)\ntorch.exp = lambda x: x\n", "replaced torch.exp"),
}


@pytest.fixture(scope="module")
def autograder(tmp_path_factory) -> Path:
    """The real autograder's machinery, with one small test per unit."""
    folder = tmp_path_factory.mktemp("guarded") / "tests" / "autograder"
    folder.mkdir(parents=True)
    for path in (REPO / "tests" / "autograder").glob("*.py"):
        if not path.name.startswith("test_grade_"):
            shutil.copy(path, folder / path.name)
    for unit in (*MALLORY, "training"):
        (folder / f"test_grade_{unit}.py").write_text(UNIT_TEST.format(unit=unit))
    return folder


def test_tricks_score_zero_and_leave_the_other_units_alone(tmp_path, autograder):
    mallory = tmp_path / "mallory"
    mallory.mkdir()
    for unit, (trick, _) in MALLORY.items():
        (mallory / f"{unit}.py").write_text("import torch\n" + trick + WRONG)
    (mallory / "training.py").write_text("import torch\n" + RIGHT)
    results = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", str(autograder), f"--target={mallory}", "-q",
                           "-p", "no:cacheprovider", "--grade-json", str(results)],
                          cwd=autograder.parents[1], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:]
    report = json.loads(results.read_text())
    units, problems = report["extra_data"]["units"], report["extra_data"]["problems"]
    assert units["training"] == {"score": 2, "max_score": 2}, (units, proc.stdout[-3000:])
    for unit, (_, named) in MALLORY.items():
        assert units[unit] == {"score": 0, "max_score": 2}, unit
        assert any(named in problem and "scores 0" in problem for problem in problems[unit]), (unit, problems)
        assert sum(named in problem for problem in problems[unit]) == 1, (unit, problems)   # said once


def test_reading_the_reference_is_allowed_when_grading_the_reference(tmp_path, autograder):
    """The guard refuses solutions/ to a submission, not to an instructor grading the reference."""
    proc = subprocess.run([sys.executable, "-m", "pytest", str(autograder / "test_grade_training.py"),
                           f"--target={REPO / 'solutions'}", "-q", "-p", "no:cacheprovider"],
                          cwd=autograder.parents[1], capture_output=True, text=True, timeout=300)
    assert "opened" not in proc.stdout and "reference solutions" not in proc.stdout, proc.stdout[-2000:]


FORGER = '''import atexit
import json
import sys

import torch

RESULTS = sys.argv[sys.argv.index("--grade-json") + 1]


def forge():   # after pytest wrote the real file: full marks
    with open(RESULTS, "w") as f:
        json.dump({"score": 2, "max_score": 2, "tests": [], "extra_data": {"units": {"logits": {"score": 2,
                   "max_score": 2}}}}, f)


atexit.register(forge)
'''


def test_a_forged_results_file_scores_zero_under_minillm_grade(tmp_path, autograder):
    forger = tmp_path / "forger"
    forger.mkdir()
    (forger / "logits.py").write_text(FORGER + WRONG)
    (forger / "perplexity.py").write_text("import torch\n" + RIGHT)
    graded = grade_submission(forger, autograder, timeout=120, units=["logits", "perplexity"])
    units = graded["results"]["extra_data"]["units"]
    assert units["logits"] == {"score": 0, "max_score": 2} and units["perplexity"] == {"score": 2, "max_score": 2}
    assert "logits: its results file was changed after the grader wrote it" in graded["message"], graded["message"]


MISBEHAVING = '''

import os
import sys


def next_token_logits(model, tokenizer, text):
    os._exit(3)


def most_likely_next_token(model, tokenizer, text):
    raise KeyboardInterrupt


def predict_next_tokens(model, tokenizer, text, k):
    while True:
        sys.stdout.write("x" * 1000)


def next_token_distributions(model, tokenizer, text):
    import torch

    return torch.ones(3 * 2**30 // 4)     # 3 GiB, over the 2 GiB limit the test sets
'''


def test_os_exit_keyboard_interrupt_raw_writes_and_memory_cost_only_their_test(tmp_path):
    """Before issue 15, os._exit ended the grading with no results at all, KeyboardInterrupt stopped
    the run, sys.stdout.write went past the print limit without end, and memory had no limit."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    student = tmp_path / "mallory"
    student.mkdir()
    (student / "logits.py").write_text((repo / "solutions" / "logits.py").read_text() + MISBEHAVING)
    (student / "perplexity.py").write_text("import os\n\nos._exit(4)\n")      # at import time
    json_path = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", str(repo / "tests" / "autograder"), "--target", str(student),
                           "--grade-json", str(json_path), "-q", "-p", "no:cacheprovider", "-k", "logits",
                           "--memory-limit-gb", "2"],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:]
    tests = {t["name"].split(": ")[-1]: t for t in json.loads(json_path.read_text())["tests"]}   # "logits LOG-1 (P): test_..."
    out = {name: (t["status"], t["output"]) for name, t in tests.items()}
    assert "os._exit(3)" in out["test_next_token_logits"][1], out
    assert "raised KeyboardInterrupt" in out["test_most_likely_next_token"][1], out
    assert "wrote more than" in out["test_predict_next_tokens"][1], out
    assert "importing perplexity.py failed" in out["test_token_loss_extreme_logits"][1], out
    assert "os._exit(4)" in out["test_token_loss_extreme_logits"][1], out
    assert "can't allocate memory" in out["test_next_token_distributions"][1], out
    assert out["test_edge_cases"][1].startswith("your code called os._exit(3)"), out   # the unit's other tests ran
    assert len(proc.stdout) < 200_000
