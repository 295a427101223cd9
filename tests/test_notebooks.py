"""The course notebooks run top to bottom: the reference ones without an error and with the
right numbers, the students' ones up to their first unfilled function and no further.

Each notebook is executed by a real Jupyter kernel (``nbclient`` + ``ipykernel``), offline, on
the models the kit ships. The key numbers are read back from the kernel by one extra cell the
test appends (the notebook files stay as committed) and compared with minillm's own functions,
computed here independently.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
import torch

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
UNITS = sorted(p.stem for p in (REPO / "solutions" / "notebooks").glob("*.py"))
MARK = "NOTEBOOK-RESULTS "
TIMES: dict[str, float] = {}


def execute(path: Path, results: str | None = None) -> tuple[nbformat.NotebookNode, dict | None, str | None]:
    """Run the notebook at ``path`` in a fresh kernel; return it, the JSON that the appended
    expression ``results`` printed (None without one), and the first error's name and value
    (None when every cell ran)."""
    notebook = nbformat.read(path, as_version=4)
    if results is not None:
        notebook.cells.append(nbformat.v4.new_code_cell(f"import json as _json\nprint({MARK!r} + _json.dumps({results}))"))
    # One thread per kernel: the CI machine has 2 cores; quick mode skips torch.compile's 20+ s.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINILLM_NOTEBOOK_QUICK": "1", "PYTHONPATH": str(REPO),
           "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    error = None
    try:
        client.execute(env=env)
    except nbclient.exceptions.CellExecutionError as err:
        error = f"{err.ename}: {err.evalue}"
    TIMES[str(path.relative_to(REPO))] = time.perf_counter() - start
    printed = None
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("name") == "stdout" and MARK in output.get("text", ""):
                printed = json.loads(output["text"].split(MARK, 1)[1])
    return notebook, printed, error


def outputs_of(notebook) -> str:
    """All text a notebook printed or displayed, for error messages."""
    return "\n".join(o.get("text", "") or str(o.get("data", {}).get("text/plain", ""))
                     for c in notebook.cells for o in c.get("outputs", []))[-3000:]


@pytest.mark.parametrize("unit", UNITS)
def test_exercise_notebook_stops_at_first_unfilled_function(unit):
    notebook, _, error = execute(REPO / "exercises" / f"{unit}.ipynb")
    assert error is not None, f"exercises/{unit}.ipynb ran to the end with every function unfilled"
    assert error.startswith("NotImplementedError: ") and error.endswith(": your code here"), (
        f"exercises/{unit}.ipynb stopped on something worse than an unfilled function: {error}\n{outputs_of(notebook)}")
    # It stops at the first cell that calls an unfilled function: the cells before it ran cleanly.
    ran = [c for c in notebook.cells if c.cell_type == "code" and c.get("execution_count")]
    assert all(o.get("output_type") != "error" for c in ran[:-1] for o in c.outputs)


def test_sampling_notebook():
    notebook, got, error = execute(REPO / "solutions" / "sampling.ipynb", results=(
        "{'freq': {str(t): f.tolist() for t, f in frequencies.items()}, 'n': N_DRAWS, 'top3': top3_frequencies.tolist(),"
        " 'greedy': greedy, 'sampled': sampled}"))
    assert error is None, f"{error}\n{outputs_of(notebook)}"
    logits = torch.tensor([4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79])
    for t, freq in got["freq"].items():
        expected = torch.softmax(logits / float(t), dim=-1)
        # Binomial counts: 5 standard deviations (plus one draw) of the frequency never fails by chance.
        sigma = (expected * (1 - expected) / got["n"]).sqrt()
        assert torch.all((torch.tensor(freq) - expected).abs() <= 5 * sigma + 1 / got["n"]), (t, freq)
    assert got["freq"]["0.1"][6] == 0.0                               # "pizza" at T = 0.1: probability e^-86
    kept = torch.tensor(got["top3"]) > 0
    assert kept.tolist() == [True, False, False, True, False, False, False, True, False]   # closer, forward, toward
    assert got["greedy"][0] == got["greedy"][1]
    (s0, a), (_, b), (s1, c) = got["sampled"]
    assert a == b and a != c and (s0, s1) == (0, 1)
    # Greedy decoding from minillm's own generate, independently.
    from minillm import generate, load_model, load_tokenizer
    from minillm.family import FAMILY_DIR
    model, tok = load_model(FAMILY_DIR / "tiny-m"), load_tokenizer(FAMILY_DIR / "tiny-m")
    assert got["greedy"][0] == generate(model, tok.encode("Once upon a time"), max_new_tokens=20)
