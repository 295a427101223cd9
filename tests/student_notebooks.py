"""Students' notebooks for the autograder's tests, built from a module with nbformat.

A saved student notebook: the module ``solutions/<unit>.py`` (or any unit module) cut into one
code cell per top-level definition, its docstring as markdown, and around them the cells a
student adds: ``!pip install``, ``%matplotlib inline``, loading ``Qwen/Qwen2.5-0.5B`` (the
grader is offline), calling the functions on examples (with saved outputs), ``input()``, a
training loop that never ends at the top level, a ``%%time`` cell, a plot.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO / "solutions"
UNITS = ("logits", "perplexity", "quantization", "sampling", "architecture", "scaling", "training")


def _ran(text: str, count: int) -> nbformat.NotebookNode:
    """A code cell as Jupyter saves it after running: an execution count and its output."""
    return new_code_cell(text, execution_count=count,
                         outputs=[new_output("stream", name="stdout", text="tensor([ 1.25, -0.50, ...])\n")])


def student_notebook(module: Path, *, model_cell: str = "model = load_model(MODEL_ID)",
                     extra: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    """``module`` as a student's notebook (see the module docstring); ``extra``: code cells at the end."""
    source = module.read_text(encoding="utf-8")
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    body = tree.body
    cells = []
    if ast.get_docstring(tree):
        cells.append(new_markdown_cell(ast.get_docstring(tree)))
        body = body[1:]
    cells += [
        new_code_cell("!pip install torch==2.13.0\n!pip install -e .\n%matplotlib inline"),
        _ran("import torch\nfrom minillm import load_model, load_tokenizer\n\n"
             f"MODEL_ID = 'Qwen/Qwen2.5-0.5B'\n{model_cell}\ntokenizer = load_tokenizer(MODEL_ID)\n"
             "print(model)", 1),
        new_code_cell("name = input('Your name: ')"),
    ]
    end = body[0].lineno - 1
    for count, node in enumerate(body, start=2):
        cells.append(new_code_cell("".join(lines[end:node.end_lineno]).strip("\n")))
        end = node.end_lineno
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            cells.append(new_markdown_cell(f"Try `{node.name}` on an example:"))
            cells.append(_ran(f"result = {node.name}(model, tokenizer, 'The cat sat on the mat.')\nresult", count))
    cells += [
        new_code_cell("%%time\nfor step in range(10**12):   # a training loop left in a cell\n    loss = 1 / (step + 1)"),
        new_code_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"),
    ]
    cells += [new_code_cell(text) for text in extra]
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})


def write_notebook(notebook: nbformat.NotebookNode, path: Path) -> Path:
    nbformat.validate(notebook)
    nbformat.write(notebook, path)
    return path


def reference_notebooks(folder: Path) -> Path:
    """``folder`` filled with one reference notebook per unit: ``solutions/<unit>.ipynb`` where the
    kit has one, else a student notebook built from ``solutions/<unit>.py``."""
    folder.mkdir(parents=True, exist_ok=True)
    for unit in UNITS:
        shipped = SOLUTIONS / f"{unit}.ipynb"
        if shipped.is_file():
            (folder / shipped.name).write_bytes(shipped.read_bytes())
        else:
            write_notebook(student_notebook(SOLUTIONS / f"{unit}.py"), folder / f"{unit}.ipynb")
    return folder
