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

    python -m minillm.stubs            # (re)generate exercises/ from solutions/
    python -m minillm.stubs --check    # exit 1 when exercises/ is out of date (for CI)
    minillm make-exercises [--check]   # the same through the minillm command
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"

# The repository is installed editable (`pip install -e .`): solutions/ and exercises/ sit next to the package.
REPO = Path(__file__).resolve().parents[1]
SOLUTIONS_DIR = REPO / "solutions"
EXERCISES_DIR = REPO / "exercises"

_BEGIN_RE = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION[ \t]*$")
_END_RE = re.compile(r"^(?P<indent>[ \t]*)# END SOLUTION[ \t]*$")
_NEAR_MISS = re.compile(r"(BEGIN|END)[ _]SOLUTION", re.IGNORECASE)
_DEF_RE = re.compile(r"^(?P<indent>[ \t]*)(?:async[ \t]+)?def[ \t]+(?P<name>\w+)")


class StubError(ValueError):
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


def make_exercises(solutions_dir: str | Path = SOLUTIONS_DIR, exercises_dir: str | Path = EXERCISES_DIR) -> list[Path]:
    """Write the stub of every ``solutions_dir/*.py`` into ``exercises_dir`` (created if needed).

    Returns the exercise files, in name order. Files whose stub is unchanged are left
    untouched; exercise files without a solution are left in place (out_of_sync names them).
    All stubs are generated before any is written, so a malformed marker writes nothing.
    """
    solutions_dir, exercises_dir = Path(solutions_dir), Path(exercises_dir)
    stubs = {path.name: make_stub(path.read_text(encoding="utf-8"), str(path)) for path in _solution_files(solutions_dir)}
    exercises_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, stub in stubs.items():
        target = exercises_dir / name
        if not target.is_file() or target.read_text(encoding="utf-8") != stub:
            target.write_text(stub, encoding="utf-8")
        written.append(target)
    return written


def out_of_sync(solutions_dir: str | Path = SOLUTIONS_DIR, exercises_dir: str | Path = EXERCISES_DIR) -> list[str]:
    """Problems that keep ``exercises_dir`` from being exactly the stubs of ``solutions_dir``.

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
    return problems


def run(check: bool, solutions_dir: Path = SOLUTIONS_DIR, exercises_dir: Path = EXERCISES_DIR) -> int:
    """The command: generate (or only check) and print what happened; returns the exit status."""
    if check:
        problems = out_of_sync(solutions_dir, exercises_dir)
        for problem in problems:
            print(problem)
        if problems:
            print("exercises/ is out of date: run `python -m minillm.stubs` (or `minillm make-exercises`).")
            return 1
        print(f"{exercises_dir} is in sync with {solutions_dir}.")
        return 0
    for path in make_exercises(solutions_dir, exercises_dir):
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minillm.stubs", description="Make exercises/ from solutions/.")
    parser.add_argument("--check", action="store_true", help="only check that exercises/ is up to date (exit 1 if not)")
    parser.add_argument("--solutions", type=Path, default=SOLUTIONS_DIR, help="default: %(default)s")
    parser.add_argument("--exercises", type=Path, default=EXERCISES_DIR, help="default: %(default)s")
    args = parser.parse_args(argv)
    try:
        return run(args.check, args.solutions, args.exercises)
    except (StubError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
