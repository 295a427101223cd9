"""The package's folders follow the data flow (README, "Layout"): a folder imports only folders
before it, and no two modules import each other. Read from the source (imports inside functions
count too), so a shortcut added anywhere fails here."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minillm"
README = PACKAGE.parent / "README.md"
# The flow's order; checkpoint/ builds the models it loads, the one step back the README names.
# data/ (the texts: bundled, TinyStories through the hub, synthetic stories) comes after checkpoint/,
# whose hub.py it downloads with. compat/ (the transformers-shaped face) is for callers, like cli/:
# last, so nothing imports it.
FLOW = ["models", "checkpoint", "data", "inference", "training", "experiments", "reports", "course", "compat"]
TOP = {"errors", "progress"}  # minillm/errors.py, progress.py: used by every folder, import no minillm module
CALLERS = {"cli", "inspect"}  # minillm/cli/ and inspect.py: front doors for callers, imported by no module


def _imports(path: Path) -> set[str]:
    """The minillm modules ``path`` imports, as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("minillm"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)   # `from minillm.x import module`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("minillm"))
    return {name for name in found if _module_path(name) is not None}


def _module_path(name: str) -> Path | None:
    path = PACKAGE.parent.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(path: Path) -> str:
    """The folder ``path`` lies in under minillm/ ("models", ...), or for a top-level module its name."""
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def test_every_folder_and_top_level_module_is_declared():
    """A new folder or top-level module must say where it stands: in the flow, shared (TOP) or a
    front door (CALLERS); the tests below check each by what it is declared to be."""
    parts = {_part(path) for path in PACKAGE.rglob("*.py")} - {"__init__"}
    declared = set(FLOW) | TOP | CALLERS
    assert parts == declared, f"undeclared: {sorted(parts - declared)}; declared but absent: {sorted(declared - parts)}"


def test_folders_import_only_folders_before_them_in_the_flow():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        folder = _part(path)
        if folder not in FLOW:
            continue
        for name in _imports(path):
            parts = name.split(".")
            target = parts[1] if len(parts) > 1 else ""
            if target in FLOW and FLOW.index(target) > FLOW.index(folder):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {name}")
            elif target not in FLOW and target not in TOP and name != "minillm":
                wrong.append(f"{path.relative_to(PACKAGE)} imports {name} (cli/, inspect.py and __init__.py are for callers)")
    assert not wrong, "\n".join(sorted(wrong))


def test_shared_top_level_modules_import_no_minillm_module():
    """progress.py (TOP) is used by every folder, so it may import none of them: an import of
    checkpoint/ from a shared module would let models/ reach checkpoint/ through it."""
    wrong = [f"{path.relative_to(PACKAGE)} imports {name}" for path in PACKAGE.glob("*.py")
             if path.stem in TOP for name in _imports(path)]
    assert not wrong, "\n".join(sorted(wrong))


def test_readme_layout_names_the_flow_and_every_part():
    """The README's Layout section states the flow's order as this file's FLOW, and names every
    folder and top-level module, so that what it draws is what the package holds."""
    layout = README.read_text(encoding="utf-8").split("## Layout", 1)[1].split("\n## ", 1)[0]
    assert " -> ".join(FLOW) in layout, f"the README's Layout should state the flow: {' -> '.join(FLOW)}"
    entries = {path.stem if path.parent == PACKAGE else _part(path) + "/" for path in PACKAGE.rglob("*.py")}
    missing = sorted(entry for entry in entries - {"__init__"}
                     if f"  {entry}{'' if entry.endswith('/') else '.py'} " not in layout)
    assert not missing, f"the README's Layout does not list: {missing}"


def test_no_two_modules_import_each_other():
    graph = {_module_name(path): _imports(path) for path in PACKAGE.rglob("*.py")}
    pairs = sorted({tuple(sorted((a, b))) for a, targets in graph.items() for b in targets
                    if a != b and a in graph.get(b, set()) and "__init__" not in (a, b)})
    pairs = [p for p in pairs if "minillm" not in p]   # the package's __init__ re-exports the API
    assert not pairs, pairs


def test_nothing_in_the_package_imports_the_callers_modules():
    """cli/, inspect.py and compat/ face the user: the kit itself (top-level modules included,
    which the first test does not walk) never imports them."""
    callers = tuple(f"minillm.{name}" for name in sorted(CALLERS)) + ("minillm.compat",)
    wrong = [f"{path.relative_to(PACKAGE)} imports {name}" for path in PACKAGE.rglob("*.py")
             if not _module_name(path).startswith(callers)
             for name in _imports(path) if name.startswith(callers)]
    assert not wrong, "\n".join(sorted(wrong))


def test_the_front_door_imports_each_name_when_it_is_first_used():
    """`import minillm` loads no torch, so the class grader's processes (minillm.course.grade, its
    zygote and its judge) start in a tenth of a second where their autograder needs no torch; every
    public name still arrives with `from minillm import ...`, `minillm.<name>` and `import *`."""
    import subprocess
    import sys

    code = ("import sys, minillm, minillm.course.grade, minillm.course.zygote, minillm.course.verdict\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:3]\n"
            "from minillm import *\n"
            "import minillm as m\n"
            "missing = [n for n in m.__all__ if n not in globals() or getattr(m, n) is not globals()[n]]\n"
            "assert not missing and set(m.__all__) <= set(dir(m)), missing\n"
            "assert m.load_model.__module__ == 'minillm.checkpoint.loading' and m.GPT2.__name__ == 'GPT2'\n"
            "assert m.models.config.ModelConfig is m.ModelConfig and callable(m.inspect.trace)\n"
            "try:\n    m.no_such_name\nexcept AttributeError as err:\n    assert 'no_such_name' in str(err)\n"
            "else:\n    raise AssertionError('no AttributeError')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    from minillm import _PARTS
    assert _PARTS == {*FLOW, *TOP, *CALLERS}, "minillm/__init__.py's _PARTS must name every part of the package"
