"""`minillm classroom-template`: a GitHub Classroom starter repository whose workflow grades a push.

The workflow's YAML is parsed (PyYAML) and its grading commands run here, in a copy of the
template, as the runner would run them (no network: the install step is only read). A copy
holding the reference's logits files must earn every command-grader step's points, the
untouched template none, and the steps' points must add up to the unit's maximum in the
grader's plan. Both copies are graded at the same time (about 15 s on two cores).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from minillm.course.classroom import KIT_URL_PLACEHOLDER, TORCH_INSTALL, write_template
from minillm.course.grade import GradeError, find_autograder, grading_plan

REPO = Path(__file__).resolve().parents[1]
COMMAND_GRADER = "classroom-resources/autograding-command-grader@v1"
REPORTER = "classroom-resources/autograding-grading-reporter@v1"


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """``command`` in bash, in ``cwd``, with this interpreter as `python` and this kit importable."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(REPO),
               HF_HUB_OFFLINE="1")
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("classroom")
    out = write_template(tmp / "template", "logits", kit_url="https://example.org/course/minillm.git", kit_ref="v1.0")
    flow = yaml.safe_load((out / ".github" / "workflows" / "classroom.yml").read_text(encoding="utf-8"))
    steps = flow["jobs"]["run-autograding-tests"]["steps"]
    grade = next(s for s in steps if s.get("id") == "grade")
    copies = {"reference": tmp / "reference", "stubs": tmp / "stubs"}
    for copy in copies.values():
        shutil.copytree(out, copy)
    for suffix in (".py", ".ipynb"):
        shutil.copy(REPO / "solutions" / f"logits{suffix}", copies["reference"] / f"logits{suffix}")
    with ThreadPoolExecutor(3) as pool:
        runs = {name: pool.submit(_run, grade["run"], copy) for name, copy in copies.items()}
        plan = grading_plan(find_autograder(), ["logits"])
        graded = {name: run.result() for name, run in runs.items()}
    return {"out": out, "flow": flow, "steps": steps, "copies": copies, "graded": graded, "plan": plan}


def _graders(steps: list[dict]) -> list[dict]:
    return [s for s in steps if s.get("uses") == COMMAND_GRADER]


def test_files_and_workflow(template):
    out, steps = template["out"], template["steps"]
    assert sorted(p.name for p in out.iterdir()) == [".github", ".gitignore", "README.md", "logits.ipynb", "logits.py"]
    assert (out / "logits.py").read_bytes() == (REPO / "exercises" / "logits.py").read_bytes()
    install = next(s for s in steps if s.get("id") == "install")["run"]
    assert TORCH_INSTALL in [line.strip() for line in install.splitlines()]
    assert TORCH_INSTALL == "python -m pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
    assert template["flow"]["jobs"]["run-autograding-tests"]["env"] == {
        "KIT_URL": "https://example.org/course/minillm.git", "KIT_REF": "v1.0"}
    assert next(s for s in steps if s.get("id") == "grade")["env"]["HF_HUB_OFFLINE"] == "1"
    graders = _graders(steps)
    assert [g["with"]["test-name"] for g in graders] == [t["name"] for t in template["plan"]["tests"]]
    # The points add up to the unit's maximum in the grader's plan, one step per graded test.
    assert [g["with"]["max-score"] for g in graders] == [t["max_score"] for t in template["plan"]["tests"]]
    assert sum(g["with"]["max-score"] for g in graders) == template["plan"]["extra_data"]["units"]["logits"]["max_score"]
    reporter = steps[-1]
    assert reporter["uses"] == REPORTER and reporter["with"]["runners"] == ",".join(g["id"] for g in graders)
    assert reporter["env"] == {f"{g['id'].upper()}_RESULTS": f"${{{{steps.{g['id']}.outputs.result}}}}" for g in graders}
    assert "13" in (out / "README.md").read_text(encoding="utf-8")   # the unit's points in the students' table


def _points(template: dict, name: str) -> float:
    copy, graded = template["copies"][name], template["graded"][name]
    assert graded.returncode == 0, graded.stdout + graded.stderr
    points = 0
    for step in _graders(template["steps"]):
        done = _run(step["with"]["command"], copy)
        assert done.returncode in (0, 1), done.stdout + done.stderr
        points += step["with"]["max-score"] if done.returncode == 0 else 0
    return points


def test_reference_earns_every_step(template):
    assert _points(template, "reference") == template["plan"]["max_score"] == 13
    assert "TOTAL" in template["graded"]["reference"].stdout   # the feedback, in the Grade step's log


def test_stubs_earn_nothing(template):
    assert _points(template, "stubs") == 0
    assert "your code here" in template["graded"]["stubs"].stdout


def test_placeholder_and_bad_arguments(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    with pytest.raises(GradeError, match="new or empty folder"):
        write_template(tmp_path / "busy", "logits")
    with pytest.raises(GradeError, match="units"):
        write_template(tmp_path / "new", "logit")
    with pytest.raises(GradeError, match="--kit-ref"):
        write_template(tmp_path / "new", "logits", kit_ref="main; rm -rf /")
    assert not (tmp_path / "new").exists()
    out = write_template(tmp_path / "placeholder", "logits")
    assert KIT_URL_PLACEHOLDER in (out / ".github" / "workflows" / "classroom.yml").read_text(encoding="utf-8")
