"""Progress bars (minillm/progress.py): TQDM_DISABLE and --no-progress hide them, the library draws
them only through that module, and a notebook without ipywidgets gets text bars and no warning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


LOAD_PROGRESS = ("import importlib.util\n"
                 f"spec = importlib.util.spec_from_file_location('progress', {str(ROOT / 'minillm' / 'progress.py')!r})\n"
                 "progress = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(progress)\n")


def test_progress_bars_honour_tqdm_disable_and_no_progress():
    # tqdm reads TQDM_* variables when it is imported, hence a fresh process; it loads progress.py
    # alone (the module needs only tqdm), not the whole package with torch, to start fast.
    code = (LOAD_PROGRESS +
            "list(progress.progress_bar(range(3), desc='bar-on'))\n"
            "list(progress.progress_bar(range(3), enabled=False, desc='bar-off'))\n")
    env = dict(os.environ)
    env.pop("TQDM_DISABLE", None)
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stderr
    assert "bar-on" in shown and "bar-off" not in shown
    hidden = subprocess.run([sys.executable, "-c", code], env={**env, "TQDM_DISABLE": "1"}, capture_output=True,
                            text=True, check=True).stderr
    assert "bar-on" not in hidden
    # The library draws bars through this helper only.
    for path in (ROOT / "minillm").rglob("*.py"):
        if path.name != "progress.py":
            assert "tqdm" not in path.read_text(encoding="utf-8"), path


def test_a_notebook_without_ipywidgets_gets_text_bars_and_no_warning():
    import nbclient   # the test extra's: nbclient (with nbformat) and ipykernel
    import nbformat

    try:
        import ipywidgets  # noqa: F401
        pytest.skip("ipywidgets is installed here: bars are widgets, the case tested is its absence")
    except ImportError:
        pass
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(
        "import warnings\nwarnings.simplefilter('always')\n" + LOAD_PROGRESS +
        "x = list(progress.progress_bar(range(3), desc='in-notebook'))")]
    nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3").execute()
    text = "".join(o.get("text", "") for o in notebook.cells[0].outputs)
    assert "in-notebook" in text and "3/3" in text            # a text bar
    assert "IProgress" not in text and "Warning" not in text
