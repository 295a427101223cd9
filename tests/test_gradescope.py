"""`minillm gradescope-bundle`: the zip Gradescope takes, and its run_autograder run on real uploads.

Each bundle is unzipped into a temporary AUTOGRADER_ROOT laid out as Gradescope lays out
/autograder (source/ = the zip, submission/ = the upload, results/), and its own run_autograder
grades the upload. What differs from Gradescope's container: setup.sh is not run (nothing is
installed here: no apt-get, no venv, no pip), so run_autograder falls back to $PYTHON (this
test's interpreter, which has torch) and the kit is made importable by putting the unzipped
source/ first on PYTHONPATH instead of `pip install -e /autograder/source` (the same effect: the
library, its data/ and the grader are the zip's, which the first test checks); and bubblewrap
starts here, so each unit runs in the sandbox, where Gradescope's container gets the process mode.

The four uploads, all graded on the logits unit, are graded at the same time: the reference's
modules, the reference's notebooks (one misnamed "Copy of logits.ipynb", as students upload
them), the stubs, and a submission whose logits.py kills its process at import.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from minillm.course.feedback import UNITS
from minillm.course.grade import GradeError
from minillm.course.gradescope import (
    KIT_INSTALL,
    TORCH_INSTALL,
    build_bundle,
    find_unit_files,
)

REPO = Path(__file__).resolve().parents[1]
# The grader turns os._exit into a failing test; a signal ends the process all the same.
KILLED = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
GRADED = re.compile(r"@pytest\.mark\.graded\(points=(\d+)")


def _unzip(bundle: Path, root: Path) -> Path:
    for name in ("source", "submission", "results"):
        (root / name).mkdir(parents=True)
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(root / "source")
        for info in zf.infolist():   # extractall drops the mode bits; Gradescope's unzip keeps them
            mode = info.external_attr >> 16
            if mode & 0o111:
                (root / "source" / info.filename).chmod(mode & 0o777)
    return root


def _environment(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTHONPATH")}
    env.update(AUTOGRADER_ROOT=str(root), PYTHON=sys.executable, PYTHONPATH=str(root / "source"))
    return env


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict:
    """{upload: (root, exit code, output)} for the four uploads, graded at the same time."""
    tmp = tmp_path_factory.mktemp("gradescope")
    bundle = build_bundle(tmp / "logits.zip", "logits")
    roots = {name: _unzip(bundle, tmp / name) for name in ("modules", "notebooks", "stubs", "crash")}
    for path in (REPO / "solutions").glob("*.py"):
        shutil.copy(path, roots["modules"] / "submission" / path.name)
    for path in (REPO / "solutions").glob("*.ipynb"):
        name = "Copy of logits.ipynb" if path.name == "logits.ipynb" else path.name
        shutil.copy(path, roots["notebooks"] / "submission" / name)
    for path in (REPO / "exercises").glob("*.py"):
        shutil.copy(path, roots["stubs"] / "submission" / path.name)
    (roots["crash"] / "submission" / "logits.py").write_text(KILLED, encoding="utf-8")
    runs = {name: subprocess.Popen(["bash", str(root / "source" / "run_autograder")], cwd=root, env=_environment(root),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for name, root in roots.items()}
    return {name: (roots[name], run.wait(timeout=600), run.stdout.read()) for name, run in runs.items()}


def _results(graded: dict, name: str) -> dict:
    root, code, output = graded[name]
    assert code == 0, output
    return json.loads((root / "results" / "results.json").read_text(encoding="utf-8"))


def _maxima(graded: dict) -> list[int]:
    """The points of each graded test, read from the bundle's own test file (an independent count)."""
    source = graded["modules"][0] / "source" / "tests" / "autograder" / "test_grade_logits.py"
    return [int(p) for p in GRADED.findall(source.read_text(encoding="utf-8"))]


def test_bundle_runs_on_its_own_copy_of_the_kit(graded):
    root = graded["modules"][0]   # run_autograder runs in the layout's root, as here
    where = subprocess.run([sys.executable, "-c", "import minillm; print(minillm.__file__)"], env=_environment(root),
                           cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(root / "source"), where


def test_reference_modules_and_notebooks_score_full_marks(graded):
    maxima = _maxima(graded)
    modules = _results(graded, "modules")
    for results in (modules, _results(graded, "notebooks")):
        assert [t["max_score"] for t in results["tests"]] == maxima    # one entry per graded test
        assert results["score"] == results["max_score"] == sum(maxima) > 0
        assert all(t["visibility"] == "visible" and t["status"] == "passed" for t in results["tests"])
        assert results["extra_data"]["status"] == "ok"
    notebooks = _results(graded, "notebooks")
    assert [t["name"] for t in notebooks["tests"]] == [t["name"] for t in modules["tests"]]
    assert "graded 'Copy of logits.ipynb' as logits.ipynb" in notebooks["output"]   # shown to the student


def test_stubs_score_zero_with_a_message_per_test(graded):
    results = _results(graded, "stubs")
    assert [t["max_score"] for t in results["tests"]] == _maxima(graded)
    assert results["score"] == 0 and results["max_score"] == sum(_maxima(graded))
    for test in results["tests"]:
        assert test["score"] == 0 and test["status"] == "failed" and "your code here" in test["output"], test


def test_a_crashed_unit_scores_zero_and_says_so(graded):
    # A run stopped at its time-out is reported the same way, through the same status and
    # message (minillm.course.grade); tests/test_grade_sandbox.py grades a hang.
    results = _results(graded, "crash")
    assert [t["max_score"] for t in results["tests"]] == _maxima(graded)   # the maxima are kept
    assert results["score"] == 0 and results["max_score"] == sum(_maxima(graded))
    assert results["extra_data"]["status"] == "crashed"
    killed = re.compile(r"exit code (-9|137)")   # -9 as a process; 137 (128 + SIGKILL) from bubblewrap's init
    for test in results["tests"]:
        assert test["visibility"] == "visible" and killed.search(test["output"]), test
    assert results["output"].startswith("Grading status: crashed") and killed.search(results["output"])


def test_zip_layout_scripts_and_no_reference(tmp_path):
    bundle = build_bundle(tmp_path / "all.zip")   # every unit: the scaling unit's models come along
    with zipfile.ZipFile(bundle) as zf:
        names = zf.namelist()
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
        setup = zf.read("setup.sh").decode()
        run = zf.read("run_autograder").decode()
    assert {"setup.sh", "run_autograder", "pyproject.toml", "pytest_minillm.py", "minillm/__init__.py",
            "tests/autograder/conftest.py", "data/models/tiny-s/model.safetensors",
            "data/models/tiny-l/model.safetensors", "data/texts/stories.txt"} <= set(names)
    assert {f"tests/autograder/test_grade_{u}.py" for u in UNITS} <= set(names)
    for name in names:   # the student's code shares the container: no reference, no near-reference
        assert not name.startswith(("solutions/", "exercises/", "tests/autograder/mistakes/")), name
        assert "__pycache__" not in name, name
    assert modes["run_autograder"] & 0o111 and modes["setup.sh"] & 0o111
    for text in (setup, run):
        subprocess.run(["bash", "-n"], input=text, text=True, check=True)
    lines = [line.strip() for line in setup.splitlines()]
    assert TORCH_INSTALL == "pip install torch==2.13.0" and TORCH_INSTALL in lines
    assert KIT_INSTALL in lines and lines.index(TORCH_INSTALL) < lines.index(KIT_INSTALL)
    assert f"--units {','.join(UNITS)}" in run

    small = build_bundle(tmp_path / "logits.zip", "logits")
    with zipfile.ZipFile(small) as zf:
        names = zf.namelist()
    assert "tests/autograder/test_grade_logits.py" in names and "data/models/tiny-s/config.json" in names
    assert not any(n.startswith(("data/models/tiny-m/", "tests/autograder/test_grade_perplexity")) for n in names)


def test_finding_the_unit_files(tmp_path):
    (tmp_path / "hw" / ".ipynb_checkpoints").mkdir(parents=True)
    for name in ("hw/Copy of Logits.ipynb", "logits (1).ipynb", "hw/.ipynb_checkpoints/logits.py",
                 "perplexity.py", "hw/perplexity.py", "logits_and_perplexity.py", "notes.txt"):
        (tmp_path / name).write_text("", encoding="utf-8")
    chosen, notes = find_unit_files(tmp_path, ["logits", "perplexity", "sampling"])
    assert chosen == {"logits.ipynb": tmp_path / "logits (1).ipynb", "perplexity.py": tmp_path / "perplexity.py"}
    assert notes["logits"] == ["graded 'logits (1).ipynb' as logits.ipynb",
                               "not graded (one .ipynb file per unit): 'hw/Copy of Logits.ipynb'"]
    assert notes["perplexity"] == ["not graded (one .py file per unit): 'hw/perplexity.py'"]


def test_bad_arguments(tmp_path):
    with pytest.raises(GradeError, match="units .*'logit'.*choose among"):
        build_bundle(tmp_path / "a.zip", "logit")
    with pytest.raises(GradeError, match="--out .*a.tar.*zip"):
        build_bundle(tmp_path / "a.tar", "logits")
    with pytest.raises(GradeError, match="time_limit_scale=0"):
        build_bundle(tmp_path / "a.zip", "logits", time_limit_scale=0)
    assert not list(tmp_path.iterdir())   # nothing written, not even a partial zip
