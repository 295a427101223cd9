"""`import minillm` from the folder that holds the clone (Colab's /content, or Jupyter started
one level up), after `pip install -e .` and after `pip install .`.

There the clone's own folder, named ``minillm`` and without an ``__init__.py``, is on the path
('' is the current folder). With setuptools' default editable install (an import hook that Python
asks after its own search) Python took that folder for an empty namespace package:
``from minillm import load_model`` failed with "unknown location". pyproject.toml's
``package-dir`` makes the editable install a plain path entry instead (see the comment there).

Each install goes into a fresh virtual environment that sees the packages of the environment
running the tests (torch, pip, and the setuptools that pyproject.toml's test extra names) through
a ``.pth`` file, and is built offline with them (``--no-build-isolation --no-index``), from a copy
of the clone in a temporary folder named ``minillm``. Not ``--system-site-packages``: that shows
the packages of the interpreter the environment was made from (a Debian ``python3``: its own old
setuptools, no torch), not those that ``pip install -e ".[test]"`` put in the test environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHERE = "import importlib.util; print(importlib.util.find_spec('minillm').origin)"
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}   # the venv's own sys.path only


def _clone(parent: Path) -> Path:
    clone = parent / "minillm"
    clone.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "pytest_minillm.py"):
        shutil.copy(REPO / name, clone / name)
    shutil.copytree(REPO / "minillm", clone / "minillm", ignore=shutil.ignore_patterns("__pycache__"))
    return clone


def _install(venv: Path, *pip_args: str) -> Path:
    """A virtual environment with minillm installed by ``pip install <pip_args>``; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                   check=True, capture_output=True, text=True, timeout=120)
    python = venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    # The test environment's packages, after the venv's own site-packages (where minillm goes). Plain
    # path entries: the test environment's own .pth files (its editable minillm) are not read.
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True, timeout=60, env=ENV).stdout.strip())
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "zz-test-environment.pth").write_text("".join(f"{path}\n" for path in ours), encoding="utf-8")
    proc = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", *pip_args], capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return python


def _run(python: Path, code: str, cwd: Path) -> str:
    proc = subprocess.run([str(python), "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


def test_import_from_the_clones_parent_folder(tmp_path):
    parent = tmp_path / "content"
    clone = _clone(parent)

    editable = _install(tmp_path / "venv-editable", "-e", str(clone))
    assert _run(editable, WHERE, parent) == str(clone / "minillm" / "__init__.py")
    assert _run(editable, "from minillm import load_model; print(load_model.__module__)", parent) == "minillm.checkpoint.loading"

    installed = _install(tmp_path / "venv-installed", str(clone))
    origin = Path(_run(installed, WHERE, parent))
    assert origin.name == "__init__.py" and origin.parent.parent.name == "site-packages", origin

    # Both installs give pytest the kit's plugin (pytest_minillm.py, tests/test_pytest_plugin.py): the entry
    # point is declared and its module, a top-level one, is imported from the install.
    plugin = ("from importlib.metadata import entry_points; import pytest_minillm; "
              "print([e.value for e in entry_points(group='pytest11') if e.name == 'minillm'], pytest_minillm.__file__)")
    assert _run(editable, plugin, parent) == f"['pytest_minillm'] {clone / 'pytest_minillm.py'}"
    assert _run(installed, plugin, parent) == f"['pytest_minillm'] {origin.parent.parent / 'pytest_minillm.py'}"
