"""One mistake costs one objective (issue 19): a graded function that builds on another graded
function is graded with the grader's version of that one, so a wrong softmax_with_temperature
costs SAMP-1 alone, not sample(), sampling_frequencies(), top_p_filter() and generate() as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Two softmaxes that are wrong at temperature 1 too, where sample() and top_p_filter() call it.
WRONG_SOFTMAX = {
    "overflows": '''

def softmax_with_temperature(logits, temperature):
    """exp() without subtracting each row's max first: inf / inf = NaN for large logits."""
    e = torch.exp(logits / temperature)
    return e / e.sum(dim=-1, keepdim=True)
''',
    "wrong_axis": '''

def softmax_with_temperature(logits, temperature):
    """Normalised over the first axis (the rows of a batch) instead of the vocabulary."""
    return torch.softmax(logits / temperature, dim=0)
''',
}


@pytest.mark.parametrize("mistake", sorted(WRONG_SOFTMAX))
def test_a_wrong_softmax_costs_only_its_own_objective(tmp_path, mistake):
    target = tmp_path / "student"
    target.mkdir()
    (target / "sampling.py").write_text((REPO / "solutions" / "sampling.py").read_text(encoding="utf-8")
                                        + WRONG_SOFTMAX[mistake], encoding="utf-8")
    out = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    proc = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "tests" / "autograder"), "-m", "sampling",
                           "--target", str(target), "--grade-json", str(out), "--grader-seed", "4242", "-q",
                           "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:]
    results = json.loads(out.read_text(encoding="utf-8"))
    lost = {o["objective"] for o in results["extra_data"]["objectives"] if o["score"] < o["max_score"]}
    assert lost == {"SAMP-1"}, [(t["name"], t["output"][:200]) for t in results["tests"] if t["status"] != "passed"]
