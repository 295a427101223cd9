"""Exercise stubs from the reference solutions: one source for both.

In ``solutions/<unit>.py`` the lines a student has to write sit between two marker lines::

    def perplexity(nll: float) -> float:
        \"\"\"...docstring for the student...\"\"\"
        # BEGIN SOLUTION
        return math.exp(nll)
        # END SOLUTION

``make_exercises`` writes ``exercises/<unit>.py`` with every such region (markers included)
replaced by ``raise NotImplementedError("<function name>: your code here")`` at the markers'
indentation; imports, signatures, docstrings, helpers and constants stay as they are.
Everything happens on the text: the solution files are read, never imported.

The notebooks come from the same modules. ``solutions/notebooks/<unit>.py`` is a notebook
source in the "percent" format that Jupytext, VS Code and PyCharm read: ``# %%`` starts a
code cell, ``# %% [markdown]`` a markdown cell (its lines are comments), and two kinds of
cell are filled in when the notebooks are rendered::

    # %% module: imports FULL_PRECISION model_size_bytes quantize_tensor
    # %% [markdown] answer
    # The reference's answer to a question, in words.

A ``module:`` cell holds the named top-level definitions of ``solutions/<unit>.py``
(functions, classes, constants; ``imports`` stands for all its imports), copied whole into
``solutions/<unit>.ipynb`` and as stubs into ``exercises/<unit>.ipynb``. An ``answer``
markdown cell is kept in the reference notebook and left for the student to write in the
exercise notebook. Every graded function of a unit must sit in a ``module:`` cell of its
notebook, so that a student can fill it in and hand in the notebook. The notebooks are
written without outputs.

    minillm make-exercises            # (re)generate exercises/ and the notebooks from solutions/
    minillm make-exercises --check    # exit 1 when exercises/ or a notebook is out of date (for CI)
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from minillm.errors import InputError

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"

# The repository is installed editable (`pip install -e .`): solutions/ and exercises/ sit next to the package.
REPO = Path(__file__).resolve().parents[2]   # minillm/course/stubs.py -> the repository
SOLUTIONS_DIR = REPO / "solutions"
EXERCISES_DIR = REPO / "exercises"
GENERATED = ".generated.json"   # in exercises/: the SHA-256 of each file as make_exercises last wrote it
NOTEBOOK_SOURCES = "notebooks"   # solutions/notebooks/<unit>.py: the notebook sources
STUDENT_ANSWER = "*Your answer here.*"

_BEGIN_RE = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION[ \t]*$")
_END_RE = re.compile(r"^(?P<indent>[ \t]*)# END SOLUTION[ \t]*$")
_NEAR_MISS = re.compile(r"(BEGIN|END)[ _]SOLUTION", re.IGNORECASE)
_DEF_RE = re.compile(r"^(?P<indent>[ \t]*)(?:async[ \t]+)?def[ \t]+(?P<name>\w+)")


class StubError(InputError):
    """A solution file's markers are malformed (unmatched, nested, outside a function...)."""


def make_stub(source: str, filename: str = "<solution>") -> str:
    """The exercise text of one solution file's text ``source``.

    Raises StubError (naming ``filename`` and the line) for a malformed marker, and when the
    result is not valid Python.
    """
    lines = source.splitlines(keepends=True)
    out: list[str] = []
    region_start: int | None = None     # line index of the open BEGIN marker
    region_indent = ""
    for i, line in enumerate(lines):
        text = line.rstrip("\r\n")
        begin, end = _BEGIN_RE.match(text), _END_RE.match(text)
        if not begin and not end and _NEAR_MISS.search(text) and text.lstrip().startswith("#"):
            raise StubError(f"{filename}:{i + 1}: marker {text.strip()!r} is not recognised; "
                            f"write exactly {BEGIN!r} and {END!r} on lines of their own.")
        if begin:
            if region_start is not None:
                raise StubError(f"{filename}:{i + 1}: {BEGIN} inside the region opened at line "
                                f"{region_start + 1}; regions do not nest.")
            region_start, region_indent = i, begin.group("indent")
            name = _enclosing_function(lines, i, region_indent)
            if name is None:
                raise StubError(f"{filename}:{i + 1}: {BEGIN} is not inside a function body; "
                                "a region must replace lines of a function.")
            newline = line[len(text):] or "\n"
            out.append(f'{region_indent}raise NotImplementedError("{name}: your code here"){newline}')
        elif end:
            if region_start is None:
                raise StubError(f"{filename}:{i + 1}: {END} without a {BEGIN} before it.")
            if end.group("indent") != region_indent:
                raise StubError(f"{filename}:{i + 1}: {END} is indented differently from the {BEGIN} "
                                f"at line {region_start + 1}; give both the indentation of the code.")
            region_start = None
        elif region_start is None:
            out.append(line)
    if region_start is not None:
        raise StubError(f"{filename}:{region_start + 1}: {BEGIN} is never closed by {END}.")
    stub = "".join(out)
    try:
        compile(stub, filename, "exec", dont_inherit=True)
    except SyntaxError as err:
        raise StubError(f"{filename}: the generated stub is not valid Python ({err.msg}, line {err.lineno} "
                        "of the stub); check the markers' placement.") from None
    return stub


def _enclosing_function(lines: list[str], index: int, indent: str) -> str | None:
    """Name of the innermost ``def`` above line ``index`` that is less indented than ``indent``."""
    width = len(indent.expandtabs(4))
    for line in reversed(lines[:index]):
        match = _DEF_RE.match(line)
        if match and len(match.group("indent").expandtabs(4)) < width:
            return match.group("name")
    return None


def _solution_files(solutions_dir: Path) -> list[Path]:
    if not solutions_dir.is_dir():
        raise FileNotFoundError(f"{solutions_dir} is not a folder: there are no solutions to make exercises from.")
    return sorted(p for p in solutions_dir.glob("*.py") if p.is_file())


def make_exercises(solutions_dir: str | Path = SOLUTIONS_DIR, exercises_dir: str | Path = EXERCISES_DIR,
                   force: bool = False) -> list[Path]:
    """Write the stub of every ``solutions_dir/*.py`` into ``exercises_dir`` (created if needed),
    and the two notebooks of every notebook source (``solutions_dir/notebooks/<unit>.py``):
    ``solutions_dir/<unit>.ipynb`` and ``exercises_dir/<unit>.ipynb``.

    Returns the files, in path order. Files whose stub is unchanged are left
    untouched; exercise files without a solution are left in place (out_of_sync names them).
    Everything is generated before anything is written, so a malformed marker writes nothing.

    A file of ``exercises_dir`` is replaced only if it is unchanged since make_exercises wrote it
    (its SHA-256 is the one recorded in ``exercises_dir/.generated.json``), so regenerating after
    editing a solution just works. A file edited since (a student's work), or one with no record,
    is kept: unless ``force``, nothing is written and StubError names those files.
    """
    solutions_dir, exercises_dir = Path(solutions_dir), Path(exercises_dir)
    texts = {exercises_dir / path.name: make_stub(path.read_text(encoding="utf-8"), str(path))
             for path in _solution_files(solutions_dir)}
    texts.update(_notebook_texts(solutions_dir, exercises_dir))
    students = {target: text for target, text in texts.items() if target.parent == exercises_dir}
    generated = _generated_hashes(exercises_dir)
    edited = []
    for target, text in students.items():
        current = target.read_text(encoding="utf-8") if target.is_file() else text
        if current != text and generated.get(target.name) != _sha256(current):
            edited.append(target)
    if edited and not force:
        raise StubError(f"{len(edited)} exercise file(s) were edited since they were generated (or have no record in "
                        f"{exercises_dir / GENERATED}), so they may hold a student's work: "
                        f"{', '.join(map(str, edited))}. Nothing was written. Copy them somewhere safe, or pass "
                        "--force (force=True) to replace them.")
    exercises_dir.mkdir(parents=True, exist_ok=True)
    for target, text in texts.items():
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
    hashes = {target.name: _sha256(text) for target, text in students.items()}
    (exercises_dir / GENERATED).write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return sorted(texts)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _generated_hashes(exercises_dir: Path) -> dict[str, str]:
    """{file name: SHA-256} of the files make_exercises last wrote; {} when there is no readable record."""
    try:
        hashes = json.loads((exercises_dir / GENERATED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return hashes if isinstance(hashes, dict) else {}


def out_of_sync(solutions_dir: str | Path = SOLUTIONS_DIR, exercises_dir: str | Path = EXERCISES_DIR) -> list[str]:
    """Problems that keep ``exercises_dir`` and the notebooks from being exactly what
    ``solutions_dir`` and its notebook sources make.

    An empty list means in sync. Each item is one sentence naming the file.
    """
    solutions_dir, exercises_dir = Path(solutions_dir), Path(exercises_dir)
    problems = []
    names = set()
    for path in _solution_files(solutions_dir):
        names.add(path.name)
        try:
            stub = make_stub(path.read_text(encoding="utf-8"), str(path))
        except StubError as err:
            problems.append(str(err))
            continue
        target = exercises_dir / path.name
        if not target.is_file():
            problems.append(f"{target} is missing (solution {path}).")
        elif target.read_text(encoding="utf-8") != stub:
            problems.append(f"{target} differs from the stub generated from {path}.")
    if exercises_dir.is_dir():
        for extra in sorted(exercises_dir.glob("*.py")):
            if extra.name not in names:
                problems.append(f"{extra} has no solution {solutions_dir / extra.name}; delete it or add the solution.")
    return problems + _notebooks_out_of_sync(solutions_dir, exercises_dir)


def _notebooks_out_of_sync(solutions_dir: Path, exercises_dir: Path) -> list[str]:
    sources_dir = solutions_dir / NOTEBOOK_SOURCES
    if not sources_dir.is_dir():
        return []
    problems = []
    for module in _solution_files(solutions_dir):
        source = sources_dir / module.name
        if not source.is_file() and graded_functions(module.read_text(encoding="utf-8"), str(module)):
            problems.append(f"{module} has graded functions but no notebook source {source}; write one.")
    try:
        texts = _notebook_texts(solutions_dir, exercises_dir)
    except StubError as err:
        return problems + [str(err)]
    for target, text in texts.items():
        if not target.is_file():
            problems.append(f"{target} is missing (notebook source {sources_dir / (target.stem + '.py')}).")
        elif target.read_text(encoding="utf-8") != text:
            problems.append(f"{target} differs from the notebook rendered from {sources_dir / (target.stem + '.py')} "
                            "(notebooks are committed without outputs: regenerate it).")
    for folder in (solutions_dir, exercises_dir):
        for extra in sorted(folder.glob("*.ipynb")) if folder.is_dir() else []:
            if extra not in texts:
                problems.append(f"{extra} has no notebook source {sources_dir / (extra.stem + '.py')}; "
                                "delete it or add the source.")
    return problems


@dataclass
class Cell:
    """One cell of a notebook source: ``kind`` is "markdown", "answer", "code" or "module"."""

    kind: str
    text: str                    # markdown text, code, or (module cells) the names, space-separated
    line: int                    # where the cell starts in the source, for error messages


_CELL_RE = re.compile(r"^# %%(?P<header>.*)$")


def parse_notebook_source(source: str, filename: str = "<notebook source>") -> list[Cell]:
    """The cells of a percent-format notebook source (text before the first ``# %%`` is ignored).

    Raises StubError (naming ``filename`` and the line) for an unknown cell header, a
    markdown line that is not a comment, or a ``module:`` cell that names nothing or holds code.
    """
    cells: list[Cell] = []
    header: str | None = None
    start, body = 0, []

    def close() -> None:
        if header is None:
            return
        text = "\n".join(body).strip("\n")
        if header in ("[markdown]", "[markdown] answer"):
            lines = []
            for offset, line in enumerate(text.splitlines()):
                if line != "#" and not line.startswith("# "):
                    raise StubError(f"{filename}:{start + offset + 2}: a markdown cell's lines are comments "
                                    f"('# text', or '#' for a blank line); got {line!r}.")
                lines.append(line[2:])
            cells.append(Cell("answer" if header.endswith("answer") else "markdown", "\n".join(lines), start + 1))
        elif header.startswith("module:"):
            names = header.removeprefix("module:").split()
            if not names or text:
                raise StubError(f"{filename}:{start + 1}: a 'module:' cell names the definitions to copy "
                                "(e.g. '# %% module: imports token_loss') and holds no code of its own.")
            cells.append(Cell("module", " ".join(names), start + 1))
        elif header == "":
            cells.append(Cell("code", text, start + 1))
        else:
            raise StubError(f"{filename}:{start + 1}: unknown cell header '# %%{header}'; use '# %%', "
                            "'# %% [markdown]', '# %% [markdown] answer' or '# %% module: NAMES'.")

    for i, line in enumerate(source.splitlines()):
        match = _CELL_RE.match(line)
        if match:
            close()
            header, start, body = match.group("header").strip(), i, []
        else:
            body.append(line)
    close()
    return cells


def top_level_definitions(source: str, filename: str = "<module>") -> dict[str, str]:
    """The text of every top-level function, class and constant of a module, by name.

    A definition's text runs over whole lines, decorators and same-line comments included, and
    the indented comment lines right after its last statement (an ``# END SOLUTION`` marker).
    The key ``imports`` holds all the module's imports except ``from __future__``.
    """
    lines = source.splitlines()
    found: dict[str, str] = {}
    imports = []
    for node in ast.parse(source, filename).body:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        last = node.end_lineno
        while last < len(lines) and lines[last][:1].isspace() and lines[last].lstrip().startswith("#"):
            last += 1
        text = "\n".join(lines[first - 1 : last])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found[node.name] = text
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = text
        elif isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and node.module != "__future__"):
            imports.append(text)
    found["imports"] = "\n".join(imports)
    return found


def graded_functions(source: str, filename: str = "<solution>") -> list[str]:
    """Names of the top-level functions of a solution module that hold a BEGIN SOLUTION region."""
    lines = source.splitlines()
    return [node.name for node in ast.parse(source, filename).body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and any(_BEGIN_RE.match(line) for line in lines[node.lineno - 1 : node.end_lineno])]


def render_notebook(notebook_source: str, module_source: str, student: bool,
                    source_name: str = "<notebook source>", module_name: str = "<solution>"):
    """The notebook (an ``nbformat`` NotebookNode, no outputs) of one unit.

    ``student=False`` renders the reference (``solutions/<unit>.ipynb``): module cells hold the
    solution's code. ``student=True`` renders ``exercises/<unit>.ipynb``: module cells hold the
    stubs (``make_stub``) and answer cells the placeholder :data:`STUDENT_ANSWER`. Raises
    StubError when a module cell names an unknown definition or a graded function of the
    module is in no module cell.
    """
    module_text = make_stub(module_source, module_name) if student else module_source
    definitions = top_level_definitions(module_text, module_name)
    placed: set[str] = set()
    cells = []
    for cell in parse_notebook_source(notebook_source, source_name):
        if cell.kind == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(cell.text))
        elif cell.kind == "answer":
            cells.append(nbformat.v4.new_markdown_cell(STUDENT_ANSWER if student else cell.text))
        elif cell.kind == "code":
            cells.append(nbformat.v4.new_code_cell(cell.text))
        else:
            missing = [name for name in cell.text.split() if name not in definitions]
            if missing:
                raise StubError(f"{source_name}:{cell.line}: {', '.join(missing)} not defined at the top level "
                                f"of {module_name}; name its functions, classes, constants or 'imports'.")
            placed.update(cell.text.split())
            cells.append(nbformat.v4.new_code_cell("\n\n\n".join(definitions[n] for n in cell.text.split())))
    unplaced = [name for name in graded_functions(module_source, module_name) if name not in placed]
    if unplaced:
        raise StubError(f"{source_name}: the graded function(s) {', '.join(unplaced)} of {module_name} are in no "
                        "'# %% module:' cell; a student could not fill them in the notebook.")
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i}"          # fixed ids: the same source always gives the same file
    notebook = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    })
    nbformat.validate(notebook)
    return notebook


def _notebook_texts(solutions_dir: Path, exercises_dir: Path) -> dict[Path, str]:
    """Every notebook file to write, ``{path: text}``: two per notebook source."""
    sources_dir = solutions_dir / NOTEBOOK_SOURCES
    texts = {}
    for source in sorted(sources_dir.glob("*.py")) if sources_dir.is_dir() else []:
        module = solutions_dir / source.name
        if not module.is_file():
            raise StubError(f"{source}: there is no module {module} to take the functions from; a notebook "
                            "source is named after its unit's module.")
        notebook_source, module_source = source.read_text(encoding="utf-8"), module.read_text(encoding="utf-8")
        for folder, student in ((solutions_dir, False), (exercises_dir, True)):
            notebook = render_notebook(notebook_source, module_source, student, str(source), str(module))
            texts[folder / f"{source.stem}.ipynb"] = nbformat.writes(notebook) + "\n"
    return texts
