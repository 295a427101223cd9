"""The class grader on GitHub Classroom: a starter repository whose workflow grades each push.

    minillm classroom-template --out DIR [--units logits,perplexity] [--kit-url URL] [--kit-ref REF]

:func:`write_template` writes the repository an instructor makes the assignment's template: the
chosen units' exercise files (``<unit>.py`` and ``<unit>.ipynb`` from ``exercises/``), a README
for students, and ``.github/workflows/classroom.yml``, built on GitHub Classroom's autograding
actions. The workflow installs CPU PyTorch and the kit (from ``--kit-url`` at ``--kit-ref``),
grades the push once with :func:`minillm.course.grade.grade_submission` (``python -m
minillm.course.classroom grade``), then has one ``classroom-resources/autograding-command-grader``
step per graded test whose command (``python -m minillm.course.classroom check``) exits 0 when
that test scored its points, and ``autograding-grading-reporter`` sums them for Classroom.

Why one step per test: the command grader awards its ``max-score`` when the command exits 0 and
nothing otherwise. Every graded test is all-or-nothing in the grader too, so a step per test with
the test's points gives the same partial credit as the grader, where a step per unit would give
a unit's points only for full marks. The steps' points add up to the units' maxima
(:func:`minillm.course.grade.grading_plan`).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from minillm.course.feedback import feedback_text
from minillm.course.grade import (
    GradeError,
    find_autograder,
    grade_submission,
    grading_plan,
)
from minillm.course.gradescope import check_units, kit_root, stage_submission

KIT_URL_PLACEHOLDER = "https://github.com/YOUR-ORG/minillm.git"
RESULTS = ".grading/results.json"   # where the workflow's grading step writes the results, in the checkout
TORCH_INSTALL = "python -m pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
STEP_MINUTES = 1                    # the command grader's timeout per step: a step only reads RESULTS


def _quote(text: str) -> str:
    """A YAML scalar for ``text`` (YAML reads JSON's double-quoted strings as they are)."""
    return json.dumps(text)


def step_id(unit: str, index: int) -> str:
    """The workflow step id of a unit's ``index``-th test (letters, digits and '-'): "logits-1"."""
    return f"{unit}-{index}"


def workflow(plan: dict, units: Sequence[str], kit_url: str, kit_ref: str, time_limit_scale: float,
             timeout: float) -> str:
    """The text of .github/workflows/classroom.yml for the graded tests in ``plan``."""
    grade_cmd = (f"python -m minillm.course.classroom grade --units {','.join(units)} --out {RESULTS} "
                 f"--time-limit-scale {float(time_limit_scale)!r} --timeout {float(timeout)!r}")
    lines = [
        "# Grades every push with the minillm kit's autograder (written by `minillm classroom-template`).",
        "# One command-grader step per graded test: a step awards its max-score when its command exits 0,",
        "# so each test's points come out as the grader gives them; the reporter sums them for Classroom.",
        "name: Autograding Tests",
        "'on': [push, repository_dispatch, workflow_dispatch]",
        "permissions:",
        "  checks: write",
        "  actions: read",
        "  contents: read",
        "jobs:",
        "  run-autograding-tests:",
        "    runs-on: ubuntu-latest",
        "    if: github.actor != 'github-classroom[bot]'",
        "    timeout-minutes: 60",
        "    env:",
        f"      KIT_URL: {_quote(kit_url)}",
        f"      KIT_REF: {_quote(kit_ref)}",
        "    steps:",
        "      - name: Checkout code",
        "        uses: actions/checkout@v4",
        "      - name: Set up Python",
        "        uses: actions/setup-python@v5",
        "        with:",
        "          python-version: '3.12'",
        "      - name: Install CPU PyTorch and the minillm kit",
        "        id: install",
        "        run: |",
        # PyPI's Linux wheels of torch pull in the CUDA libraries (gigabytes, useless on a runner
        # without a GPU); PyTorch's CPU index serves the same version without them.
        "          # PyTorch's CPU index: PyPI's Linux torch wheels bring the CUDA libraries (GBs) a runner cannot use.",
        f"          {TORCH_INSTALL}",
        "          if [ \"$KIT_URL\" = \"" + KIT_URL_PLACEHOLDER + "\" ]; then",
        "            echo \"::error::set KIT_URL in .github/workflows/classroom.yml to your copy of the minillm kit\"",
        "            exit 1",
        "          fi",
        "          # The kit outside the checkout (the grader grades the checkout), editable: its grader",
        "          # (tests/autograder) and data/ sit beside the package. KIT_REF: pin a tag or commit.",
        "          git init -q \"$RUNNER_TEMP/minillm-kit\"",
        "          git -C \"$RUNNER_TEMP/minillm-kit\" fetch -q --depth 1 \"$KIT_URL\" \"$KIT_REF\"",
        "          git -C \"$RUNNER_TEMP/minillm-kit\" checkout -q FETCH_HEAD",
        "          python -m pip install -e \"$RUNNER_TEMP/minillm-kit\"",
        "      - name: Grade (each unit in a run of its own, offline)",
        "        id: grade",
        "        env:",
        "          HF_HUB_OFFLINE: '1'",
        f"        run: {grade_cmd}",
    ]
    ids = []
    counters: dict[str, int] = {}
    for test in plan.get("tests", []):
        unit = test["extra_data"]["unit"]
        counters[unit] = counters.get(unit, 0) + 1
        ids.append(step_id(unit, counters[unit]))
        lines += [
            f"      - name: {_quote(test['name'])}",
            f"        id: {ids[-1]}",
            "        uses: classroom-resources/autograding-command-grader@v1",
            "        with:",
            f"          test-name: {_quote(test['name'])}",
            f"          command: {_quote('python -m minillm.course.classroom check ' + RESULTS + ' ' + _shell_word(test['name']))}",
            f"          timeout: {STEP_MINUTES}",
            f"          max-score: {test['max_score']:g}",
        ]
    lines += ["      - name: Autograding Reporter",
              "        uses: classroom-resources/autograding-grading-reporter@v1",
              "        env:"]
    lines += [f"          {i.upper()}_RESULTS: \"${{{{steps.{i}.outputs.result}}}}\"" for i in ids]
    lines += ["        with:", f"          runners: {','.join(ids)}"]
    return "\n".join(lines) + "\n"


def _shell_word(text: str) -> str:
    """``text`` as one shell word in single quotes (a test's name has spaces and parentheses)."""
    return "'" + text.replace("'", "'\\''") + "'"


def student_readme(units: Sequence[str], kit_url: str, kit_ref: str, plan: dict) -> str:
    """The starter repository's README: how to work, check points locally, and how grading works."""
    maxima = {u: plan["extra_data"]["units"].get(u, {}).get("max_score", 0) for u in units}
    table = "\n".join(f"| {u} | `{u}.py` or `{u}.ipynb` | {maxima[u]:g} |" for u in units)
    first = units[0]
    return f"""# minillm exercises

| unit | your file | points |
|---|---|---|
{table}

## How to work

Fill in the functions that raise `NotImplementedError("...: your code here")`, in the module
(`{first}.py`) or in the notebook (`{first}.ipynb`), whichever you prefer: keep the file names, the
function names and their signatures. If both files of a unit are here, the one with fewer
unfilled functions is graded. A graded function may use only its arguments, imports and
`ALL_CAPS` constants: not variables set elsewhere in your file or notebook.

## Check your points on your machine

Install the kit once (CPU PyTorch, then the kit from its repository, beside this one):

```bash
pip install torch==2.13.0
git clone {kit_url} ../minillm   # then, in ../minillm: git checkout {kit_ref}
pip install -e ../minillm
```

Then, in this folder, grade your work the way the workflow does (offline, a few seconds a unit):

```bash
python -m minillm.course.classroom grade --units {','.join(units)} --out .grading/results.json
```

It prints your points per objective and every test that lost points, with what was expected and
what your function returned. For one unit, with pytest's own output: `python -m pytest
../minillm/tests/autograder -m {first} --target=$PWD`.

## How grading works

Each push runs `.github/workflows/classroom.yml` on GitHub Actions: it installs PyTorch and the
kit, grades your files (each unit in a process of its own with a time limit; the texts and
shapes are drawn fresh each run, so answers cannot be hard-coded), then awards each graded test's
points in a step of its own. Your score is the sum, shown in the Actions tab (and to your
instructor in GitHub Classroom). The log of the "Grade" step holds your feedback. Do not edit the
workflow: your instructor grades with their own copy of it.
"""


def write_template(out: str | Path, units: str | Sequence[str] | None = None, kit_url: str | None = None,
                   kit_ref: str = "HEAD", time_limit_scale: float = 1.0, timeout: float = 300.0) -> Path:
    """Write the starter repository into ``out`` (a new or empty folder); return ``out``.

    ``units``: the assignment's units (default: all). ``kit_url``: the git URL the workflow
    installs the kit from (default: a placeholder the workflow refuses to run with); use a copy
    without ``solutions/`` if students can read it. ``kit_ref``: the branch, tag or commit to
    install (pin a tag or commit so that the grader does not change during the assignment).
    ``time_limit_scale`` and ``timeout``: as for :func:`grade_submission`. Raises GradeError for
    an unknown unit or a folder that already holds files."""
    units = check_units(units)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GradeError(f"--out {out}: give a new or empty folder (it holds files; nothing was written).")
    if kit_url is not None and not kit_url.strip():
        raise GradeError("--kit-url is empty: give the git URL of your copy of the kit, e.g. "
                         "https://github.com/your-org/minillm.git")
    if not re.fullmatch(r"[A-Za-z0-9._/-]+", kit_ref):
        raise GradeError(f"--kit-ref {kit_ref!r}: give a branch, tag or commit (letters, digits, . _ / -).")
    kit = kit_root()
    plan = grading_plan(find_autograder(kit / "tests" / "autograder"), units)
    kit_url = kit_url or KIT_URL_PLACEHOLDER
    out.mkdir(parents=True, exist_ok=True)
    for unit in units:
        for suffix in (".py", ".ipynb"):
            shutil.copyfile(kit / "exercises" / f"{unit}{suffix}", out / f"{unit}{suffix}")
    (out / "README.md").write_text(student_readme(units, kit_url, kit_ref, plan), encoding="utf-8")
    (out / ".gitignore").write_text(".grading/\n__pycache__/\n.ipynb_checkpoints/\n", encoding="utf-8")
    flows = out / ".github" / "workflows"
    flows.mkdir(parents=True)
    (flows / "classroom.yml").write_text(workflow(plan, units, kit_url, kit_ref, time_limit_scale, timeout),
                                         encoding="utf-8")
    return out


# --------------------------------------------------------------------------------------------
# What the workflow runs
# --------------------------------------------------------------------------------------------

def grade_checkout(folder: str | Path, units: str | Sequence[str] | None, out: str | Path,
                   time_limit_scale: float = 1.0, timeout: float = 300.0) -> dict:
    """Grade the unit files found in ``folder`` (as on Gradescope: any depth, misnamed copies
    too), write the results.json to ``out`` and return it."""
    units = check_units(units)
    with tempfile.TemporaryDirectory(prefix="minillm-classroom-") as tmp:
        staged = Path(tmp) / Path(folder).resolve().name
        staged.mkdir()
        notes = stage_submission(folder, staged, units)
        graded = grade_submission(staged, timeout=timeout, units=units, time_limit_scale=time_limit_scale)
    results = graded["results"]
    for unit, texts in notes.items():
        results["extra_data"].setdefault("notes", {}).setdefault(unit, []).extend(texts)
    results["extra_data"]["status"] = graded["status"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def check_test(results_path: str | Path, name: str) -> tuple[bool, str]:
    """(whether the test called ``name`` scored all its points, what to print) from a results.json."""
    try:
        results = json.loads(Path(results_path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        return False, f"{results_path}: no grading results ({err}); see the log of the 'Grade' step."
    test = next((t for t in results.get("tests", []) if t.get("name") == name), None)
    if test is None:
        return False, f"{name}: not in {results_path}; see the log of the 'Grade' step."
    passed = test["score"] >= test["max_score"]
    return passed, f"{name}: {test['score']:g}/{test['max_score']:g}\n{test.get('output', '')}".rstrip()


def main(argv: list[str] | None = None) -> int:
    """``python -m minillm.course.classroom grade|check``: the workflow's commands."""
    parser = argparse.ArgumentParser(prog="python -m minillm.course.classroom",
                                     description="the GitHub Classroom workflow's grading commands")
    commands = parser.add_subparsers(dest="command", required=True)
    grade = commands.add_parser("grade", help="grade the unit files in this folder; write a results.json")
    grade.add_argument("--units", default=None, help="comma-separated units (default: all)")
    grade.add_argument("--out", default=RESULTS, help=f"results.json to write (default {RESULTS})")
    grade.add_argument("--folder", default=".", help="the folder to grade (default: here)")
    grade.add_argument("--time-limit-scale", type=float, default=1.0)
    grade.add_argument("--timeout", type=float, default=300.0, help="seconds one unit's run may take")
    check = commands.add_parser("check", help="exit 0 when one graded test scored all its points")
    check.add_argument("results", help="the results.json written by `grade`")
    check.add_argument("name", help="the test's name in it")
    args = parser.parse_args(argv)
    if args.command == "check":
        passed, text = check_test(args.results, args.name)
        print(text)
        return 0 if passed else 1
    try:
        results = grade_checkout(args.folder, args.units, args.out, args.time_limit_scale, args.timeout)
    except GradeError as err:
        print(f"grade: error: {err}", file=sys.stderr)
        return 1
    print(feedback_text(Path(args.folder).resolve().name, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
