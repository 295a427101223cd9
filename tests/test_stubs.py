"""The exercise stubs: exercises/ is generated from solutions/ and must stay in sync (the CI
check lives here, not in tests/autograder, so a student's filled-in exercises never trip it); a
student's edited exercise is replaced only with --force."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import nbformat
import pytest

from minillm.cli import main as cli_main
from minillm.course.stubs import (
    STUDENT_ANSWER,
    StubError,
    graded_functions,
    make_exercises,
    make_stub,
    out_of_sync,
    render_notebook,
)

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS, EXERCISES = REPO / "solutions", REPO / "exercises"

SAMPLE = textwrap.dedent('''\
    """A sample unit."""

    import math

    SCALE = 2.0


    def helper(x):
        return x * SCALE


    def area(radius: float) -> float:
        """The area of a circle of ``radius``."""
        # BEGIN SOLUTION
        r2 = radius ** 2
        return math.pi * r2
        # END SOLUTION


    class Shapes:
        def perimeter(self, radius: float) -> float:
            """2 pi r."""
            if radius < 0:
                raise ValueError("negative")
            # BEGIN SOLUTION
            return 2 * math.pi * radius
            # END SOLUTION
    ''')


def test_exercises_in_sync_with_solutions():
    problems = out_of_sync(SOLUTIONS, EXERCISES)
    assert not problems, "\n".join(problems) + "\nrun `minillm make-exercises` to regenerate exercises/"


def test_stub_of_sample():
    stub = make_stub(SAMPLE, "sample.py")
    assert "BEGIN SOLUTION" not in stub and "END SOLUTION" not in stub
    assert "r2 = radius" not in stub and "2 * math.pi" not in stub
    assert '    raise NotImplementedError("area: your code here")\n' in stub
    assert '        raise NotImplementedError("perimeter: your code here")\n' in stub
    # Everything outside the regions is kept: imports, constants, helpers, docstrings, other code.
    for kept in ('"""A sample unit."""', "import math", "SCALE = 2.0", "def helper(x):", "return x * SCALE",
                 "def area(radius: float) -> float:", '"""The area of a circle of ``radius``."""',
                 'raise ValueError("negative")', '"""2 pi r."""'):
        assert kept in stub, kept


def test_stub_runs_and_raises(tmp_path):
    namespace: dict = {}
    exec(compile(make_stub(SAMPLE, "sample.py"), "sample.py", "exec"), namespace)
    assert namespace["helper"](3) == 6
    with pytest.raises(NotImplementedError, match="area: your code here"):
        namespace["area"](1.0)
    with pytest.raises(NotImplementedError, match="perimeter: your code here"):
        namespace["Shapes"]().perimeter(1.0)
    assert namespace["area"].__doc__ == "The area of a circle of ``radius``."


@pytest.mark.parametrize("bad, message", [
    ("def f():\n    # BEGIN SOLUTION\n    return 1\n", "never closed"),
    ("def f():\n    return 1\n    # END SOLUTION\n", "without a"),
    ("def f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n", "do not nest"),
    ("# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n", "not inside a function"),
    ("def f():\n    # BEGIN SOLUTION\n    return 1\n  # END SOLUTION\n", "indented differently"),
    ("def f():\n    #BEGIN SOLUTION\n    return 1\n", "not recognised"),
])
def test_malformed_markers(bad, message):
    with pytest.raises(StubError, match=message):
        make_stub(bad, "bad.py")


def test_make_exercises_and_out_of_sync(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    (solutions / "sample.py").write_text(SAMPLE, encoding="utf-8")
    assert out_of_sync(solutions, exercises) == [f"{exercises / 'sample.py'} is missing (solution {solutions / 'sample.py'})."]
    written = make_exercises(solutions, exercises)
    assert written == [exercises / "sample.py"]
    assert out_of_sync(solutions, exercises) == []
    (exercises / "sample.py").write_text("changed", encoding="utf-8")
    (exercises / "extra.py").write_text("", encoding="utf-8")
    problems = out_of_sync(solutions, exercises)
    assert len(problems) == 2 and "differs" in problems[0] and "extra.py" in problems[1]
    assert cli_main(["make-exercises", "--check", "--solutions", str(solutions), "--exercises", str(exercises)]) == 1
    make_exercises(solutions, exercises, force=True)    # the edited file is replaced only when forced
    (exercises / "extra.py").unlink()
    assert cli_main(["make-exercises", "--check", "--solutions", str(solutions), "--exercises", str(exercises)]) == 0


def test_repo_stubs_keep_signatures_and_docstrings():
    """Each exercise has the solution's functions, signatures and docstrings; graded bodies raise."""
    for solution in sorted(SOLUTIONS.glob("*.py")):
        exercise = EXERCISES / solution.name
        sol_defs = _functions(solution.read_text(encoding="utf-8"))
        ex_defs = _functions(exercise.read_text(encoding="utf-8"))
        assert sol_defs.keys() == ex_defs.keys(), solution.name
        for name, (signature, doc, _) in sol_defs.items():
            assert ex_defs[name][:2] == (signature, doc), f"{solution.name}: {name}"
        assert any(raises for _, _, raises in ex_defs.values()), f"{exercise} has no stubbed function"


def _functions(source: str) -> dict:
    """Module-level functions and methods (not functions nested in a body, which a region may hold)."""
    tree = ast.parse(source)
    nodes = list(tree.body) + [n for c in tree.body if isinstance(c, ast.ClassDef) for n in c.body]
    out = {}
    for node in nodes:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            raises = any(isinstance(n, ast.Raise) and "your code here" in ast.unparse(n) for n in ast.walk(node))
            out[node.name] = (ast.unparse(node.args), ast.get_docstring(node), raises)
    return out


def test_cli_make_exercises_check(capsys):
    assert cli_main(["make-exercises", "--check"]) == 0
    assert "in sync" in capsys.readouterr().out


NOTEBOOK_SOURCE = textwrap.dedent('''\
    # A comment before the first cell is not part of the notebook.
    # %% [markdown]
    # # Circles
    #
    # Work out an **area**.

    # %%
    r = 2.0

    # %% module: imports SCALE area

    # %% [markdown] answer
    # pi r squared.

    # %%
    print(area(r))
    ''')


def _cells(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def test_render_notebook_reference_and_student():
    reference = render_notebook(NOTEBOOK_SOURCE, SAMPLE, student=False)
    student = render_notebook(NOTEBOOK_SOURCE, SAMPLE, student=True)
    area_source = SAMPLE[SAMPLE.index("def area"):SAMPLE.index("class Shapes")].rstrip()
    assert _cells(reference) == [
        ("markdown", "# Circles\n\nWork out an **area**."),
        ("code", "r = 2.0"),
        ("code", "import math\n\n\nSCALE = 2.0\n\n\n" + area_source),
        ("markdown", "pi r squared."),
        ("code", "print(area(r))"),
    ]
    module_cell = student.cells[2].source
    assert 'raise NotImplementedError("area: your code here")' in module_cell and "r2 = radius" not in module_cell
    assert '"""The area of a circle of ``radius``."""' in module_cell
    assert student.cells[3].source == STUDENT_ANSWER
    assert [c.id for c in student.cells] == [f"cell-{i}" for i in range(5)]
    assert all(c.outputs == [] and c.execution_count is None for c in student.cells if c.cell_type == "code")
    # The reference notebook's code runs and computes with the full solution.
    namespace: dict = {}
    for cell in reference.cells:
        if cell.cell_type == "code" and "print" not in cell.source:
            exec(cell.source, namespace)
    assert namespace["area"](2.0) == pytest.approx(12.566370614359172)


@pytest.mark.parametrize("source, message", [
    ("# %% module: imports nothing_here\n", "nothing_here not defined at the top level"),
    ("# %% module: imports SCALE\n", "area.*in no '# %% module:' cell"),
    ("# %% [markdown]\nnot a comment\n", "markdown cell's lines are comments"),
    ("# %% [raw]\n", "unknown cell header"),
    ("# %% module:\n", "names the definitions"),
    ("# %% module: area\nx = 1\n", "holds no code"),
])
def test_render_notebook_errors(source, message):
    with pytest.raises(StubError, match=message):
        render_notebook(source, SAMPLE, student=True, source_name="nb.py")


def test_notebooks_made_and_checked(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    (solutions / "notebooks").mkdir(parents=True)
    (solutions / "sample.py").write_text(SAMPLE, encoding="utf-8")
    problems = out_of_sync(solutions, exercises)
    assert any("no notebook source" in p and "sample.py" in p for p in problems)
    (solutions / "notebooks" / "sample.py").write_text(NOTEBOOK_SOURCE, encoding="utf-8")
    written = make_exercises(solutions, exercises)
    assert written == sorted([exercises / "sample.py", exercises / "sample.ipynb", solutions / "sample.ipynb"])
    assert out_of_sync(solutions, exercises) == []
    # A notebook saved with outputs (or edited by hand) is stale: notebooks are committed without outputs.
    notebook = nbformat.read(exercises / "sample.ipynb", as_version=4)
    notebook.cells[1].outputs = [nbformat.v4.new_output("stream", text="2.0\n")]
    nbformat.write(notebook, exercises / "sample.ipynb")
    (exercises / "old.ipynb").write_text("{}", encoding="utf-8")
    problems = out_of_sync(solutions, exercises)
    assert len(problems) == 2 and "sample.ipynb differs" in problems[0] and "old.ipynb has no notebook source" in problems[1]
    assert cli_main(["make-exercises", "--check", "--solutions", str(solutions), "--exercises", str(exercises)]) == 1
    (exercises / "old.ipynb").unlink()
    make_exercises(solutions, exercises, force=True)   # a notebook with outputs may be a student's: only when forced
    assert cli_main(["make-exercises", "--check", "--solutions", str(solutions), "--exercises", str(exercises)]) == 0


def test_repo_notebooks_define_every_graded_function():
    """The grader takes each graded function from a notebook's code cells by name: every one is
    defined there with the module's signature, in the reference and in the exercise notebook."""
    for solution in sorted(SOLUTIONS.glob("*.py")):
        graded = graded_functions(solution.read_text(encoding="utf-8"))
        sol_defs = _functions(solution.read_text(encoding="utf-8"))
        for folder in (SOLUTIONS, EXERCISES):
            notebook = nbformat.read(folder / f"{solution.stem}.ipynb", as_version=4)
            code = "\n\n".join(c.source for c in notebook.cells if c.cell_type == "code")
            nb_defs = _functions(code)
            for name in graded:
                assert name in nb_defs, f"{folder.name}/{solution.stem}.ipynb does not define {name}"
                assert nb_defs[name][:2] == sol_defs[name][:2], f"{folder.name}/{solution.stem}.ipynb: {name}"
                assert nb_defs[name][2] == (folder == EXERCISES), f"{folder.name}/{solution.stem}.ipynb: {name}"


def test_make_exercises_keeps_a_students_edits(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    (solutions / "unit.py").write_text('def f():\n    """Doc."""\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n',
                                       encoding="utf-8")
    make_exercises(solutions, exercises)
    # the instructor changes the solution: the generated, untouched exercise is regenerated without --force
    (solutions / "unit.py").write_text('def f():\n    """Doc, clearer."""\n    # BEGIN SOLUTION\n    return 1\n'
                                       '    # END SOLUTION\n', encoding="utf-8")
    make_exercises(solutions, exercises)
    assert "Doc, clearer." in (exercises / "unit.py").read_text(encoding="utf-8")
    work = "def f():\n    return 1  # my answer\n"
    (exercises / "unit.py").write_text(work, encoding="utf-8")
    assert cli_main(["make-exercises", "--solutions", str(solutions), "--exercises", str(exercises)]) == 1
    assert (exercises / "unit.py").read_text(encoding="utf-8") == work
    assert cli_main(["make-exercises", "--check", "--solutions", str(solutions), "--exercises", str(exercises)]) == 1   # unchanged
    assert cli_main(["make-exercises", "--force", "--solutions", str(solutions), "--exercises", str(exercises)]) == 0
    assert "my answer" not in (exercises / "unit.py").read_text(encoding="utf-8")
