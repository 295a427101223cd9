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
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbclient
import nbformat
import pytest
import torch
from jupyter_client.manager import KernelManager

from minillm.course.stubs import graded_functions

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
UNITS = sorted(p.stem for p in (REPO / "solutions" / "notebooks").glob("*.py"))
MARK = "NOTEBOOK-RESULTS "
WORKERS = 2       # kernels at a time: CI has 2 cores, and each kernel runs torch on one thread
# What each reference notebook hands back: a Python expression evaluated in its kernel after the last cell.
RESULTS = {
    "sampling": ("{'freq': {str(t): f.tolist() for t, f in frequencies.items()}, 'n': N_DRAWS,"
                 " 'top3': top3_frequencies.tolist(), 'greedy': greedy, 'sampled': sampled}"),
    "logits": ("{'ids': ids, 'shape': list(logits.shape), 'best': [best_token, best_prob], 'top': top,"
               " 'rows': [float(x) for x in distributions.sum(-1)], 'ppl': perplexities,"
               " 'bits': [[r.bits, r.perplexity] for r in quantized], 'html': scored._repr_html_()}"),
    "perplexity": ("{'table': table, 'phrase': ppl_phrase, 'cont': ppl_continuation, 'corpus': ppl_corpus,"
                   " 'mean': ppl_mean_of_stories}"),
    "quantization": "{'sizes': sizes, 'curve': curve}",
    "architecture": ("{'ids': ids.tolist(), 'weights': attention_weights.tolist(), 'attn': attention_difference,"
                     " 'traced': head_difference,"
                     " 'last': my_logits[0, -1].tolist(), 'final': final_loss, 'quick': QUICK}"),
    "training": ("{'initial': initial_loss, 'val_step': history['val_step'], 'val': history['val_loss'],"
                 " 'train': history['train_loss'], 'resumed': resumed, 'uninterrupted': uninterrupted,"
                 " 'files': sorted(os.listdir(folder)), 'seen': seen_loss, 'unseen': unseen_loss}"),
    "scaling": ("{'corpus': corpus, 'fit': [coefficient, exponent], 'ci': intervals, 'hardest': hardest,"
                " 'hardest_story': hardest_story, 'by_kind': by_kind, 'sizes': sizes}"),
}


def execute(path: Path, results: str | None = None) -> tuple[nbformat.NotebookNode, dict | None, str | None]:
    """Run the notebook at ``path`` in a fresh kernel; return it, the JSON that the appended
    expression ``results`` printed (None without one), and the first error's name and value
    (None when every cell ran)."""
    notebook = nbformat.read(path, as_version=4)
    if results is not None:
        notebook.cells.append(nbformat.v4.new_code_cell(f"import json as _json\nprint({MARK!r} + _json.dumps({results}))"))
    # One thread per kernel: the CI machine has 2 cores; quick mode skips torch.compile's 20+ s.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINILLM_NOTEBOOK_QUICK": "1", "PYTHONPATH": str(REPO),
           "HF_HUB_OFFLINE": "1"}
    error = None
    # Kernels talk over Unix sockets in a folder of their own: TCP ports picked by two kernels
    # starting at once can collide ("Address already in use", jupyter/nbconvert#1066). Windows has
    # no Unix sockets: TCP there.
    with tempfile.TemporaryDirectory() as sockets:
        kernel = (KernelManager(kernel_name="python3") if os.name == "nt" else
                  KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(sockets) / "kernel")))
        client = nbclient.NotebookClient(notebook, km=kernel, timeout=120, startup_timeout=120,
                                         resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute(env=env)
        except nbclient.exceptions.CellExecutionError as err:
            error = f"{err.ename}: {err.evalue}"
        finally:   # nbclient leaves a kernel it was handed running (with torch and the models in memory)
            if kernel.has_kernel:
                kernel.shutdown_kernel(now=True)
    printed = None
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("name") == "stdout" and MARK in output.get("text", ""):
                printed = json.loads(output["text"].split(MARK, 1)[1])
    return notebook, printed, error


@pytest.fixture(scope="module")
def executed() -> dict[str, tuple]:
    """Every notebook, reference and exercise, executed once, ``WORKERS`` kernels at a time:
    ``{"solutions/<unit>.ipynb": (notebook, results, error), ...}``."""
    paths = [REPO / "solutions" / f"{u}.ipynb" for u in UNITS] + [REPO / "exercises" / f"{u}.ipynb" for u in UNITS]
    with ThreadPoolExecutor(WORKERS) as pool:
        runs = {path: pool.submit(execute, path, RESULTS.get(path.stem) if path.parent.name == "solutions" else None)
                for path in paths}
    return {f"{path.parent.name}/{path.name}": run.result() for path, run in runs.items()}


def outputs_of(notebook, last: int = 3000) -> str:
    """The ``last`` characters of the text a notebook printed or displayed (for error messages)."""
    return "\n".join(o.get("text", "") or str(o.get("data", {}).get("text/plain", ""))
                     for c in notebook.cells for o in c.get("outputs", []))[-last:]


@pytest.mark.parametrize("unit", UNITS)
def test_exercise_notebook_stops_at_first_unfilled_function(unit, executed):
    notebook, _, error = executed[f"exercises/{unit}.ipynb"]
    assert error is not None, f"exercises/{unit}.ipynb ran to the end with every function unfilled"
    assert error.startswith("NotImplementedError: ") and error.endswith(": your code here"), (
        f"exercises/{unit}.ipynb stopped on something worse than an unfilled function: {error}\n{outputs_of(notebook)}")
    name = error.removeprefix("NotImplementedError: ").removesuffix(": your code here")
    assert name in graded_functions((REPO / "solutions" / f"{unit}.py").read_text(encoding="utf-8"))
    # It stops at the first cell that calls an unfilled function: the cells before it ran cleanly.
    ran = [c for c in notebook.cells if c.cell_type == "code" and c.get("execution_count")]
    assert all(o.get("output_type") != "error" for c in ran[:-1] for o in c.outputs)


def test_sampling_notebook(executed):
    notebook, got, error = executed["solutions/sampling.ipynb"]
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
    from minillm.course.family import FAMILY_DIR
    model, tok = load_model(FAMILY_DIR / "tiny-m"), load_tokenizer(FAMILY_DIR / "tiny-m")
    assert got["greedy"][0] == generate(model, tok.encode("Once upon a time"), max_new_tokens=20)


@pytest.fixture(scope="module")
def tiny_m():
    from minillm import load_model, load_tokenizer
    from minillm.course.family import FAMILY_DIR
    return load_model(FAMILY_DIR / "tiny-m"), load_tokenizer(FAMILY_DIR / "tiny-m")


@pytest.fixture(scope="module")
def tiny_gpt2():
    from minillm import load_model, load_tokenizer
    from minillm.course.family import FAMILY_DIR
    return load_model(FAMILY_DIR / "tiny-gpt2"), load_tokenizer(FAMILY_DIR / "tiny-gpt2")


def surprises(model, tok, text: str) -> torch.Tensor:
    """Every scored token's -log p (nats), computed here with cross_entropy: the independent reference."""
    ids = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        logits = model(ids)[0, :-1].double()
    return torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")


def held_out_openings(tok) -> list[str]:
    from minillm.course.family import held_out_stories
    return [story[: story.rfind(".", 0, 300) + 1] for story in held_out_stories()[:5]]


def test_logits_notebook(tiny_gpt2, executed):
    """The lab runs on the shipped GPT-2 (the seed lab's model), checked against an independent float64 softmax."""
    model, tok = tiny_gpt2
    notebook, got, error = executed["solutions/logits.ipynb"]
    assert error is None, f"{error}\n{outputs_of(notebook)}"
    phrase = "The cat sat on the mat."
    assert got["ids"] == tok.encode(phrase) and got["shape"] == [1, len(got["ids"]), tok.vocab_size]
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([tok.encode("Once upon a")]))[0, -1].double(), -1)
    assert got["best"][0] == tok.token_text(int(probs.argmax()))
    # One float32 softmax over GPT-2's 50,257 logits against float64: measured 2.1e-5 relative here
    # (torch's vectorised float32 exp), so 1e-4; a wrong axis, a missing softmax or a logit is off by far more.
    assert math.isclose(got["best"][1], float(probs.max()), rel_tol=1e-4)
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([tok.encode("Once upon a time, there was a little")]))[0, -1].double(), -1)
    top = torch.topk(probs, 5)
    assert [t for t, _ in got["top"]] == [tok.token_text(i) for i in top.indices.tolist()]
    assert torch.allclose(torch.tensor([p for _, p in got["top"]], dtype=torch.float64), top.values, rtol=1e-4, atol=1e-6)
    # A float32 sum of 50,257 probabilities: rounding of order sqrt(50,257) x 6e-8 = 1.3e-5, so 1e-4.
    assert all(abs(r - 1) < 1e-4 for r in got["rows"])
    # Perplexity: exp(mean surprise) over n - 1 tokens; a whole forward pass in float32 -> rtol 1e-4.
    for text, ppl in got["ppl"].items():
        assert math.isclose(ppl, math.exp(float(surprises(model, tok, text).mean())), rel_tol=1e-4), text
    ppl = got["ppl"]
    assert ppl["The cat sat on the mat."] < ppl["Mat the on sat cat the."]
    bits = {b: p for b, p in got["bits"]}
    assert bits[2] > 2 * bits[32] and abs(bits[8] / bits[32] - 1) < 0.02   # 8 bits is nearly lossless, 2 bits is not
    # The shown score is the phrase's perplexity checked above against the model's own surprises.
    assert '<span title="surprise' in got["html"] and f"perplexity {ppl['The cat sat on the mat.']:.2f}," in got["html"]


def test_perplexity_notebook(tiny_m, executed):
    model, tok = tiny_m
    notebook, got, error = executed["solutions/perplexity.ipynb"]
    assert error is None, f"{error}\n{outputs_of(notebook)}"
    from minillm import score
    phrase = "The cat sat on the mat."
    reference = surprises(model, tok, phrase)
    # Whole forward passes in float32 against a float64 cross-entropy of the same logits: atol 1e-4.
    assert [t for t, _ in got["table"]] == [tok.token_text(i) for i in tok.encode(phrase)[1:]]
    assert torch.allclose(torch.tensor([s for _, s in got["table"]], dtype=torch.float64), reference, atol=1e-4)
    assert math.isclose(got["phrase"], math.exp(float(reference.mean())), rel_tol=1e-4)
    context, continuation = "Once upon a time, there was a little girl.", " She had a cat."
    assert math.isclose(got["cont"], score(model, tok, continuation, context=context).perplexity, rel_tol=1e-4)
    pooled = torch.cat([surprises(model, tok, s) for s in held_out_openings(tok)])
    assert math.isclose(got["corpus"], math.exp(float(pooled.mean())), rel_tol=1e-4)
    assert got["mean"] > got["corpus"]


def test_quantization_notebook(tiny_m, executed):
    model, tok = tiny_m
    notebook, got, error = executed["solutions/quantization.ipynb"]
    assert error is None, f"{error}\n{outputs_of(notebook)}"
    from minillm.experiments.quantization import perplexity_vs_bits
    from minillm.inference.quantize import model_size_bytes
    for bits, size in got["sizes"].items():
        assert size == model_size_bytes(model, int(bits), "tensor"), bits
    reference = perplexity_vs_bits(model, tok, held_out_openings(tok), (32, 8, 6, 4, 3, 2), schemes=("tensor",))
    # Corpus perplexities from whole forward passes in float32: rtol 1e-4.
    assert [b for b, _ in got["curve"]] == [r.bits for r in reference]
    for (bits, ppl), row in zip(got["curve"], reference):
        assert math.isclose(ppl, row.perplexity, rel_tol=1e-4), bits
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the perplexity-vs-bits figure was not displayed as an image"


def test_architecture_notebook(tiny_m, executed):
    import minillm.inspect

    model, tok = tiny_m
    notebook, got, error = executed["solutions/architecture.ipynb"]
    assert error is None, f"{error}\n{outputs_of(notebook)}"
    assert got["quick"] and "torch.compile skipped" in outputs_of(notebook, last=10**6)
    ids = torch.tensor(got["ids"])
    assert got["ids"] == [tok.encode("Once upon a time, there was a little girl who")]
    with torch.no_grad():
        reference = model(ids)[0, -1]
    # The student's forward pass against minillm's, whole model in float32: atol 1e-4.
    assert torch.allclose(torch.tensor(got["last"]), reference, atol=1e-4)
    assert got["attn"] < 1e-4
    weights = torch.tensor(got["weights"])                                # (seq, seq): head 0 of layer 0
    assert torch.allclose(weights.sum(-1), torch.ones(len(weights)), atol=1e-5)
    assert torch.all(weights.triu(diagonal=1) == 0) and weights[0, 0] == 1
    assert got["traced"] < 1e-5                                           # the hand-made head is minillm.inspect's
    # Both architectures learned something from 20K tokens: below ln(512) = 6.24, the uniform guess.
    assert set(got["final"]) == {"transformer", "mlp"} and all(v < 6.0 for v in got["final"].values())
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 3                                  # the attention map, layer 0's heads, the loss curves
    tables = [o["data"]["text/html"] for c in notebook.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    lens = minillm.inspect.logit_lens(model, tok, "Once upon a time, there was a little girl who", top_k=5)
    assert lens._repr_html_() in tables                                   # the logit-lens table, as minillm makes it


def test_training_notebook(executed):
    notebook, got, error = executed["solutions/training.ipynb"]
    assert error is None, f"{error}\n{outputs_of(notebook)}"
    from minillm import load_model, load_tokenizer
    from minillm.data import bundled_texts
    from minillm.course.family import FAMILY_DIR, held_out_stories
    from minillm.training.config import TrainConfig
    from minillm.training.new_model import build_model
    tok = load_tokenizer(FAMILY_DIR / "tiny-m")

    def stream(texts):
        return torch.tensor([i for t in texts for i in tok.encode(t) + [tok.eos_token_id]])

    def loss(model, ids, seq):
        windows = ids[: len(ids) // seq * seq].reshape(-1, seq)
        with torch.no_grad():
            logits = model(windows)[:, :-1].double()
        return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1)))

    stories = bundled_texts("stories")
    config = TrainConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=64, context=64)
    fresh = build_model(config, tok.vocab_size, tok.eos_token_id)
    # One forward pass in float32 against a float64 cross-entropy of the same logits: 1e-4.
    assert math.isclose(got["initial"], loss(fresh, stream(stories[:40])[: 4 * 32], 32), rel_tol=1e-4)
    assert got["val_step"] == [0, 10, 20, 30, 40, 50, 60] and len(got["train"]) == 60
    assert math.isclose(got["val"][0], loss(fresh, stream(stories[40:48]), 32), rel_tol=1e-4)
    assert got["val"][-1] < got["val"][0] - 1.0                           # 60 steps take more than a nat off
    assert got["resumed"] == got["uninterrupted"] and len(got["resumed"]) == 20
    assert got["files"] == ["model.safetensors", "optimizer.safetensors", "training_state.json"]
    pretrained = load_model(FAMILY_DIR / "tiny-m")
    assert math.isclose(got["seen"], loss(pretrained, stream(stories[:20]), 128), rel_tol=1e-4)
    assert math.isclose(got["unseen"], loss(pretrained, stream(held_out_stories()), 128), rel_tol=1e-4)
    assert got["seen"] < got["unseen"]


def test_scaling_notebook(executed):
    notebook, got, error = executed["solutions/scaling.ipynb"]
    assert error is None, f"{error}\n{outputs_of(notebook)}"
    import numpy as np

    from minillm import load_model, load_tokenizer
    from minillm.experiments.scaling import bootstrap_interval
    from minillm.course.family import FAMILY_DIR, held_out_stories
    tok = load_tokenizer(FAMILY_DIR / "tiny-s")
    stories = [s[: s.rfind(".", 0, 300) + 1] for s in held_out_stories()]
    for name in ("tiny-s", "tiny-m", "tiny-l"):
        model = load_model(FAMILY_DIR / name)
        per_story = [surprises(model, tok, s) for s in stories]
        nll = np.array([float(x.sum()) for x in per_story])
        counts = np.array([len(x) for x in per_story], dtype=float)
        # Pooled perplexity from float32 forward passes: rtol 1e-4.
        assert math.isclose(got["corpus"][name], math.exp(nll.sum() / counts.sum()), rel_tol=1e-4), name
        assert got["sizes"][name] == model.num_parameters(non_embedding=True)
        low, high = (math.exp(v) for v in bootstrap_interval(nll, counts, samples=2000, seed=0))
        # The same resamples (seed 0); quantiles of exp(ratio) vs exp of the ratio's quantiles differ only
        # by the interpolation between two neighbouring replicates: 1e-3.
        assert math.isclose(got["ci"][name][0], low, rel_tol=1e-3) and math.isclose(got["ci"][name][1], high, rel_tol=1e-3)
        if name == "tiny-l":
            hardest = max(range(len(stories)), key=lambda i: float(per_story[i].mean()))
            hardest_story = stories[hardest]
            assert got["hardest_story"] == hardest_story
            top = torch.topk(per_story[hardest], 8)
            targets = tok.encode(hardest_story)[1:]
            assert [t for t, _ in got["hardest"]] == [tok.token_text(targets[i]) for i in top.indices.tolist()]
            assert torch.allclose(torch.tensor([v for _, v in got["hardest"]], dtype=torch.float64), top.values, atol=1e-4)
    names = ["tiny-s", "tiny-m", "tiny-l"]
    slope, intercept = np.polyfit(np.log([got["sizes"][n] for n in names]), np.log([got["corpus"][n] for n in names]), 1)
    assert math.isclose(got["fit"][1], slope, rel_tol=1e-6) and math.isclose(got["fit"][0], math.exp(intercept), rel_tol=1e-6)
    assert got["fit"][1] < 0                                              # bigger is better on the held-out stories
    assert got["by_kind"]["stories"] < got["by_kind"]["news"] < got["by_kind"]["code"]
