"""Where a unit's code comes from: a module ``<unit>.py`` or a Jupyter notebook ``<unit>.ipynb``.

    from submission import find_unit_file, read_notebook

    path, note = find_unit_file(folder, "logits")      # logits.py or logits.ipynb (None: missing)
    code = read_notebook(path)                          # the statements the grader runs

**Which file.** A folder may hold both ``<unit>.py`` and ``<unit>.ipynb`` (``exercises/`` ships
both; a student fills in one of them). The grader takes the one with fewer unfilled exercise
stubs (``raise NotImplementedError("...: your code here")``), so the file the student worked in
wins whatever the files' dates; on a tie the ``.py`` file wins (the same result on every copy of
the folder). ``note`` says which was graded and why when the choice mattered; on a tie it is
short (the points table gathers the tied units in one line), and empty when the two files hold
the same code (``same_code``: the reference's .py and .ipynb, or two untouched stubs).

**What runs of a notebook.** Only what a graded function may depend on: the code cells'
top-level imports, ``def`` and ``class`` statements, and assignments to ALL_CAPS (or dunder)
names, in notebook order, each statement on its own. Everything else at the top level (calling a
function on an example, loading ``Qwen/Qwen2.5-0.5B``, a training loop, ``input()``, plotting) is
skipped. The graded functions lose nothing by it: the global-variable rule already forbids them
to read any other module-level name, and a notebook whose first cells load a hub model or train
for an hour is graded in seconds, offline. The names that skipped statements bind are kept so
that a function reading one of them gets the global-variable message, not a bare NameError; so
are the names of statements that fail when run (``Statement.names``), so that the grader can say
which failure a graded function depends on.

IPython syntax (``%matplotlib inline``, ``!pip install ...``, ``x = !ls``, ``obj?``) is not
Python: in a cell that does not parse as Python, such lines are replaced by ``pass``. A cell
magic's line is dropped and the cell's body run when IPython runs it in the notebook's namespace
(``%%time``, ``%%capture``, ``%%prun``), skipped otherwise (``%%bash``, ``%%writefile``,
``%%script false``: the cell defines nothing in Jupyter either). The note says which cells. A cell that still does not parse is
skipped, a problem naming the cell and the line. Cells are numbered from 1 at the top of the
notebook, markdown cells included.
"""

from __future__ import annotations
import __future__

import ast
import dataclasses
import linecache
import re
import types
from pathlib import Path

# The stub line that minillm make-exercises writes into every function a student fills in.
_STUB = re.compile(r"""NotImplementedError\(\s*(?:f?["'])[^"'\n]*your code here""")
_ALL_CAPS = re.compile(r"^_*[A-Z][A-Z0-9_]*$")
# A line of IPython syntax: a magic (%), a shell escape (!), help (?x / x? / x??), or `x = !cmd`.
_IPYTHON_LINE = re.compile(r"^(?P<indent>[ \t]*)(?:[%!?]|[\w.]+\?\??[ \t]*$|[\w.,()\[\] \t]+=[ \t]*[%!])")


class NotebookError(ValueError):
    """The file is not a notebook that nbformat can read."""


@dataclasses.dataclass
class Statement:
    """One top-level statement of a code cell that the grader runs."""
    cell: int                 # 1-based, counting every cell (markdown too) from the top
    line: int                 # 1-based line within the cell
    text: str                 # its first line, for messages
    code: types.CodeType
    names: list[str]          # the module-level names it binds


@dataclasses.dataclass
class NotebookCode:
    path: Path
    statements: list[Statement]
    skipped_names: dict[str, int]     # module-level name -> the cell whose statement binding it was skipped
    skipped_statements: int           # top-level statements not run (examples, model loading...)
    problems: list[str]               # cells (or statements) that could not run, for the student
    info: str                         # what ran and what was skipped, in a sentence


def count_stubs(path: Path) -> int:
    """How many unfilled exercise stubs a ``.py`` file or a notebook's code cells hold."""
    if path.suffix == ".ipynb":
        try:
            text = "\n".join(cell.source for cell in _read(path).cells if cell.cell_type == "code")
        except NotebookError:
            return 0
    else:
        text = path.read_text(encoding="utf-8", errors="replace")
    return len(_STUB.findall(text))


def find_unit_file(folder: Path, unit: str) -> tuple[Path | None, str]:
    """The file that holds ``unit``'s code in ``folder``, and a note for the student ("" when
    there is nothing to say). None when the unit has neither file; the note then names a file that
    looks like a misnamed copy ("Copy of logits.ipynb"), if there is one.

    When both files are there: the note explains the choice when it mattered (one file has fewer
    unfilled stubs); on a tie it is :func:`tie_note` (which the points table gathers into one line
    for all units), or "" when the two files hold the same code (see :func:`same_code`)."""
    module, notebook = folder / f"{unit}.py", folder / f"{unit}.ipynb"
    if module.is_file() and notebook.is_file():
        in_module, in_notebook = count_stubs(module), count_stubs(notebook)
        if in_module == in_notebook:
            return module, "" if same_code(module, notebook) else tie_note(unit)
        chosen = notebook if in_notebook < in_module else module
        return chosen, (f"both {module.name} and {notebook.name} are in the folder: graded {chosen.name}, "
                        f"the one with fewer unfilled functions ({in_module} in {module.name}, "
                        f"{in_notebook} in {notebook.name})")
    for path in (module, notebook):
        if path.is_file():
            return path, ""
    lookalikes = sorted(p.name for p in folder.glob("*") if p.suffix in (".py", ".ipynb")
                        and unit in p.stem.lower() and p.is_file()) if folder.is_dir() else []
    return None, f"Rename {lookalikes[0]!r} to {unit}{Path(lookalikes[0]).suffix}." if lookalikes else ""


def tie_note(unit: str) -> str:
    """The note for a unit whose .py and .ipynb files have as many unfilled stubs but differ."""
    return f"graded {unit}.py; {unit}.ipynb beside it (as many unfilled functions, other code) was not graded"


def _statements(sources: list[str]) -> tuple[set[str], dict[str, str]]:
    """The top-level statements of ``sources`` (a module, or a notebook's cells) as AST dumps, leaving
    out docstrings and ``from __future__`` imports; and the last definition of each function or class."""
    statements, definitions = set(), {}
    for source in sources:
        try:
            tree = ast.parse(_without_ipython(source)[0])
        except SyntaxError:
            continue
        for node in tree.body:
            if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) or (
                    isinstance(node, ast.ImportFrom) and node.module == "__future__"):
                continue
            statements.add(ast.dump(node))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                definitions[node.name] = ast.dump(node)
    return statements, definitions


def same_code(module: Path, notebook: Path) -> bool:
    """Whether ``notebook`` holds every top-level statement of ``module`` (comments, layout and docstrings
    aside), and its last definition of each of the module's functions and classes is the module's: then
    grading either file gives the same result, and the choice needs no note. The notebook may hold more
    (examples, helpers of its examples), which the grader does not run or no test grades."""
    try:
        cells = [c.source for c in _read(notebook).cells if c.cell_type == "code"]
    except NotebookError:
        return False
    ours, our_definitions = _statements([module.read_text(encoding="utf-8", errors="replace")])
    theirs, their_definitions = _statements(cells)
    return bool(ours) and ours <= theirs and all(
        their_definitions.get(name) == code for name, code in our_definitions.items())


def _read(path: Path):
    import nbformat  # only notebooks need it
    try:
        return nbformat.read(path, as_version=4)
    except Exception as err:  # invalid JSON, not a notebook, unknown format version
        raise NotebookError(
            f"{path.name} is not a notebook that Jupyter can open ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Save it again from Jupyter or Colab "
            "(File > Download > .ipynb)."
        ) from None


def constant_name(name: str) -> bool:
    """Whether a module-level name is a constant a graded function may read: ALL_CAPS or dunder."""
    return bool(_ALL_CAPS.match(name)) or (name.startswith("__") and name.endswith("__"))


def _is_definition(node: ast.stmt) -> bool:
    """Whether a graded function may depend on this top-level statement (see the module doc)."""
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return True
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if isinstance(node, ast.AnnAssign) and node.value is None:
            return False
        names = [n for t in targets for n in _bound(t)]
        return bool(names) and len(names) == _n_targets(targets) and all(constant_name(n) for n in names)
    if isinstance(node, ast.Try):  # try: import x / except ImportError: ...
        return all(_is_definition(s) or isinstance(s, ast.Pass) for s in node.body) and all(
            _is_definition(s) or isinstance(s, (ast.Pass, ast.Assign))
            for block in ([h.body for h in node.handlers] + [node.orelse, node.finalbody]) for s in block)
    return False


def _bound(target: ast.expr) -> list[str]:
    """The plain names an assignment target binds (``a``, ``a, b``; not ``a.x`` or ``a[0]``)."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for elt in target.elts for n in _bound(elt)]
    if isinstance(target, ast.Starred):
        return _bound(target.value)
    return []


def _n_targets(targets: list[ast.expr]) -> int:
    """How many things the targets assign to (names, attributes, subscripts)."""
    return sum(_n_targets(list(t.elts)) if isinstance(t, (ast.Tuple, ast.List)) else 1 for t in targets)


def _names_bound_by(node: ast.stmt) -> list[str]:
    """Module-level names a top-level statement binds."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [alias.asname or alias.name.split(".")[0] for alias in node.names if alias.name != "*"]
    if isinstance(node, ast.Try):
        return [n for block in ([node.body, node.orelse, node.finalbody] + [h.body for h in node.handlers])
                for s in block for n in _names_bound_by(s)]
    if isinstance(node, ast.Assign):
        return [n for t in node.targets for n in _bound(t)]
    if isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
        return _bound(node.target)
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return [n for item in node.items if item.optional_vars is not None for n in _bound(item.optional_vars)]
    return []


def _without_ipython(source: str) -> tuple[str, int]:
    """``source`` with each line of IPython syntax replaced by ``pass`` (same indentation, so the
    line numbers and blocks stay as they are); and how many lines were replaced."""
    lines, replaced = [], 0
    for line in source.splitlines():
        match = _IPYTHON_LINE.match(line)
        if match:
            lines.append(f"{match['indent']}pass  # IPython syntax, not run by the grader: {line.strip()}")
            replaced += 1
        else:
            lines.append(line)
    return "\n".join(lines) + "\n", replaced


# The cell magics whose body IPython runs as Python in the notebook's namespace, defining what it
# defines (tests/test_grade_notebooks.py checks each against IPython itself). Every other one runs
# its body elsewhere or not as Python (%%script, %%writefile, %%bash, %%html, %%python, %%timeit
# (a function's scope), an unknown magic: an error), so the cell defines nothing.
CELL_MAGICS_RUN_HERE = ("%%time", "%%capture", "%%prun")


def _cell_magic_body(source: str) -> tuple[str, str | None]:
    """(the cell's Python with its magic lines turned into ``pass``, None), or (source, the magic)
    when IPython would not run the body here. Stacked magics (%%time then %%capture) each count."""
    lines = source.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line:
            i += 1
            continue
        if not line.startswith("%%"):
            break
        magic = line.split()[0]
        if magic not in CELL_MAGICS_RUN_HERE:
            return source, magic
        lines[i] = f"pass  # {line}\n"
        i += 1
    return "".join(lines), None


def read_notebook(path: Path) -> NotebookCode:
    """Parse ``path``'s code cells into the statements the grader runs (see the module doc).

    Raises NotebookError when nbformat cannot read the file. The cells' text is registered with
    ``linecache`` (under ``"<path>, cell <n>"``) so that tracebacks show the student's lines.
    """
    notebook = _read(path)
    statements: list[Statement] = []
    skipped_names: dict[str, int] = {}
    problems: list[str] = []
    ipython: list[str] = []      # cells with IPython lines skipped
    not_python: list[str] = []   # cells of a cell magic whose body is not Python (%%bash, %%html)
    skipped = 0
    flags = 0   # `from __future__ import annotations` in one cell holds for the later ones, as in Jupyter
    for index, cell in enumerate(notebook.cells, start=1):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        source = cell.source
        first = source.lstrip().splitlines()[0].strip()
        filename = f"{path}, cell {index}"
        if first.startswith("%%"):  # a cell magic: IPython runs its body here (%%time) or not (%%bash)
            source, magic = _cell_magic_body(source)
            if magic is not None:
                not_python.append(f"{index} ({magic})")
                continue
            ipython.append(str(index))
        try:
            tree = ast.parse(source, filename)
        except SyntaxError:
            source, replaced = _without_ipython(source)
            try:
                tree = ast.parse(source, filename)
            except SyntaxError as err:
                problems.append(f"{path.name}, cell {index}: syntax error at line {err.lineno}: {err.msg}; "
                                "the cell was not run")
                continue
            if replaced and str(index) not in ipython:
                ipython.append(str(index))
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        for node in tree.body:
            if not _is_definition(node):
                skipped += 1
                for name in _names_bound_by(node):
                    skipped_names.setdefault(name, index)
                continue
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                for alias in node.names:   # an unknown feature fails to compile below
                    if alias.name in __future__.all_feature_names:
                        flags |= getattr(__future__, alias.name).compiler_flag
            text = source.splitlines()[node.lineno - 1].strip()
            try:
                code = compile(ast.Module(body=[node], type_ignores=[]), filename, "exec",
                               flags=flags, dont_inherit=True)
            except SyntaxError as err:  # e.g. `return` outside a function: found by the compiler
                problems.append(f"{path.name}, cell {index}, line {err.lineno}: {err.msg}; `{text}` was not run")
                continue
            statements.append(Statement(cell=index, line=node.lineno, text=text, code=code,
                                        names=_names_bound_by(node)))
    info = (f"{path.name}: ran its {len(statements)} imports, definitions and ALL_CAPS constants; skipped "
            f"{skipped} other top-level statement(s) (examples, model loading, training...)"
            + (f", the IPython lines (%, !) of cell(s) {', '.join(ipython)}" if ipython else "")
            + (f", the non-Python cell(s) {', '.join(not_python)}" if not_python else ""))
    return NotebookCode(path=path, statements=statements, skipped_names=skipped_names,
                        skipped_statements=skipped, problems=problems, info=info)
