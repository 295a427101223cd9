"""pytest_minillm.py, the pytest plugin the kit installs: ``pytest --target PATH`` (a space) where
pytest cannot read the option gets one line naming ``--target=PATH`` instead of pytest's bare
"unrecognized arguments: --target".

The plugin reaches pytest as an installed one does, through a ``pytest11`` entry point: each run
gets a folder holding a distribution's metadata (``*.dist-info``) whose entry point is the one that
pyproject.toml declares, on PYTHONPATH; tests/test_install.py checks that a real install declares it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a pytest run that loads the plugin as the kit's install declares it."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    entry_points = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["entry-points"]
    site = tmp_path_factory.mktemp("site")
    dist = site / "minillm_plugin_probe-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: minillm-plugin-probe\nVersion: 0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(
        "[pytest11]\n" + "".join(f"{name} = {value}\n" for name, value in entry_points["pytest11"].items()),
        encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
    return env


def _pytest(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider"], check=False, cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


def test_space_form_in_the_clone_names_the_equals_form(plugin_env, tmp_path):
    """In the clone, a folder outside it after a space: pytest would take the folder for the tests to
    run and stop on "unrecognized arguments: --target"; the plugin's one line says what to write."""
    homework = tmp_path / "hw"
    homework.mkdir()
    proc = _pytest(REPO, plugin_env, "--target", str(homework), "-m", "logits")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert _error_lines(proc) == [
        (f"ERROR: --target {homework}: write --target={homework} (with '='). With a space, pytest takes {homework} "
         f"for the tests to run before it knows the option, and never reads {REPO}'s conftest.py, which declares it.")]


def test_outside_the_clone_names_the_clone(plugin_env, tmp_path):
    """Started in the student's own folder, outside any clone: no form of --target is known there;
    the line names the clone to run pytest in (the one minillm is imported from) and the folder's full path."""
    homework = tmp_path / "hw"
    homework.mkdir()
    proc = _pytest(homework, plugin_env, "--target", ".")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert _error_lines(proc) == [
        (f"ERROR: --target: the autograder's options are known only to pytest started in the kit's clone "
         f"({homework} is not in one): cd {REPO} && pytest --target={homework}")]


def test_silent_where_pytest_reads_the_option(plugin_env, tmp_path):
    """Where the option is read (a test path in the clone loads its conftest.py first) and in another
    project (which has no --target), the run goes on as without the plugin."""
    homework = tmp_path / "hw"
    homework.mkdir()
    proc = _pytest(REPO, plugin_env, "--target", str(homework), "tests/test_layout.py", "--collect-only", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tests/test_layout.py::test_folders_import_only_folders_before_them_in_the_flow" in proc.stdout
    project = tmp_path / "other"
    project.mkdir()
    (project / "test_one.py").write_text("def test_one():\n    assert 1 + 1 == 2\n", encoding="utf-8")
    proc = _pytest(project, plugin_env, "-q", "--trace-config")
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr
    assert f"<module 'pytest_minillm' from '{REPO / 'pytest_minillm.py'}'>" in proc.stdout   # it was loaded there
