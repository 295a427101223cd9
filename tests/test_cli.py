"""The `minillm` command on the real stories260K model."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import minillm
from minillm.cli import main


@pytest.fixture(scope="module")
def stories(shared_data):
    return str(shared_data / "stories260K")


def test_logits_prints_the_next_token_table(stories, capsys):
    assert main(["logits", stories, "Once upon a time, there was a little", "--top-k", "4"]) == 0
    rows = [line.split()[-3:] for line in capsys.readouterr().out.splitlines()[2:]]  # id, logit, prob
    assert len(rows) == 4
    model, tok = minillm.load_model(stories), minillm.load_tokenizer(stories)
    logits = model(torch.tensor([tok.encode("Once upon a time, there was a little")]))[0, -1]
    probs = logits.softmax(-1)
    top = torch.topk(logits, 4).indices.tolist()
    assert [int(r[0]) for r in rows] == top                      # ids, best first
    assert float(rows[0][1]) == pytest.approx(logits[top[0]].item(), abs=1e-3)
    assert float(rows[0][2]) == pytest.approx(probs[top[0]].item(), rel=5e-3)  # 3 significant digits


def test_generate_greedy_and_seeded_sampling(stories, capsys):
    assert main(["generate", stories, "Once upon a time", "--max-new-tokens", "20"]) == 0
    assert capsys.readouterr().out.startswith("Once upon a time, there was a little girl named Lily.")
    args = ["generate", stories, "Lily", "--max-new-tokens", "15", "--temperature", "1.0", "--top-k", "20",
            "--top-p", "0.9", "--seed", "7"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first


def test_errors_are_one_clear_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "minillm.cli", "logits", str(tmp_path), "hi"],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert "config.json not found" in done.stderr and "Traceback" not in done.stderr
