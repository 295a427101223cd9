"""The NumPy decoder (minillm/models/numpy_model.py) computes the same logits as the PyTorch one
and as transformers, on tiny random checkpoints and on the real stories260K model."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import minillm
from minillm.models import numpy_model as nm

TOLERANCE = 1e-4  # max abs logit difference allowed between implementations
NUMPY_MODEL_FILE = Path(nm.__file__)
TINY = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rope_theta=10000.0,
)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Large random weights (and non-zero biases, norm gains) so the logits are far from 0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.2 * noise if "norm" in name else 0.2 * noise)


def _save_tiny(folder: Path, kind: str, seed: int, tied: bool = False, dtype=torch.float32, **save_kwargs) -> Path:
    if kind == "qwen2":
        config = transformers.Qwen2Config(**TINY, tie_word_embeddings=tied)
        model = transformers.Qwen2ForCausalLM(config)
    else:  # llama with attention_bias: biases on q, k, v *and* o
        config = transformers.LlamaConfig(**TINY, tie_word_embeddings=tied, attention_bias=True)
        model = transformers.LlamaForCausalLM(config)
    _randomize(model, seed)
    model.to(dtype).save_pretrained(folder, **save_kwargs)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("numpy_ckpts")
    return {
        "qwen2": _save_tiny(root / "qwen2", "qwen2", seed=0),
        "qwen2-tied": _save_tiny(root / "qwen2-tied", "qwen2", seed=1, tied=True),
        "llama-sharded": _save_tiny(root / "llama-sharded", "llama", seed=2, max_shard_size="20KB"),
        "qwen2-bf16": _save_tiny(root / "qwen2-bf16", "qwen2", seed=3, dtype=torch.bfloat16),
    }


def _reference_models(folder: Path):
    """A function ids -> (minillm PyTorch logits, transformers logits), both float32 NumPy."""
    ours = minillm.load_model(folder, dtype=torch.float32)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()

    def logits(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            ids_t = torch.as_tensor(ids)
            return ours(ids_t).numpy(), theirs(ids_t).logits.float().numpy()

    return logits


BATCHES = [(1, 1), (1, 7), (1, 31), (3, 9)]  # (batch, seq): one token, odd lengths, a batch of rows


@pytest.mark.parametrize("name", ["qwen2", "qwen2-tied", "llama-sharded", "qwen2-bf16"])
def test_numpy_matches_torch_and_transformers(checkpoints, name):
    folder = checkpoints[name]
    weights, config = nm.load_numpy_model(folder)
    reference = _reference_models(folder)
    rng = np.random.default_rng(0)
    for batch, seq in BATCHES:
        ids = rng.integers(0, TINY["vocab_size"], size=(batch, seq))
        logits = nm.forward(weights, config, ids)
        assert logits.shape == (batch, seq, TINY["vocab_size"]) and logits.dtype == np.float32
        assert np.abs(logits).max() > 1.0, "logits are ~0: the test would prove nothing"
        ours, theirs = reference(ids)
        assert np.abs(logits - ours).max() <= TOLERANCE, (name, batch, seq)
        assert np.abs(logits - theirs).max() <= TOLERANCE, (name, batch, seq)


def test_checkpoint_variants_are_what_they_claim(checkpoints):
    assert (checkpoints["llama-sharded"] / "model.safetensors.index.json").is_file()
    weights, config = nm.load_numpy_model(checkpoints["llama-sharded"])
    assert "model.layers.0.self_attn.o_proj.bias" in weights
    weights, config = nm.load_numpy_model(checkpoints["qwen2-tied"])
    assert config["tie_word_embeddings"]
    assert weights["lm_head.weight"] is weights["model.embed_tokens.weight"]


def test_bfloat16_is_converted_exactly(checkpoints):
    from safetensors.torch import load_file

    folder = checkpoints["qwen2-bf16"]
    stored = load_file(folder / "model.safetensors")
    assert all(t.dtype == torch.bfloat16 for t in stored.values())
    weights = nm.load_weights(folder)
    assert set(weights) == set(stored)
    for name, tensor in stored.items():
        assert weights[name].dtype == np.float32
        np.testing.assert_array_equal(weights[name], tensor.float().numpy(), err_msg=name)


def test_stories260k_matches_torch_and_transformers(shared_data):
    folder = shared_data / "stories260K"
    model = nm.NumpyModel(folder)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, model.config["vocab_size"], size=(2, 45))
    logits = model(ids)
    assert np.abs(logits).max() > 1.0
    reference = _reference_models(folder)
    ours, theirs = reference(ids)
    assert np.abs(logits - ours).max() <= TOLERANCE
    assert np.abs(logits - theirs).max() <= TOLERANCE

    # Greedy generation picks the same tokens as the PyTorch model's argmax.
    prompt = [1, 403, 407]
    generated = model.generate(prompt, max_new_tokens=8)
    assert generated[:3] == prompt and len(generated) == 11
    torch_logits = reference(np.array([generated[:-1]]))[0][0]   # (10, vocab) from minillm's PyTorch model
    assert generated[3:] == torch_logits.argmax(-1).tolist()[2:]


def test_generate_stops_at_the_end_ids_like_minillm_generate(checkpoints, tmp_path):
    """Before issue 15 NumpyModel.generate ran past every end id. The ends are taken from the greedy
    continuation itself (its 3rd and 6th tokens), listed in generation_config.json as a chat model does."""
    import json
    import shutil

    folder = shutil.copytree(checkpoints["qwen2"], tmp_path / "qwen2")
    prompt = [5, 17, 42]
    free = minillm.generate(minillm.load_model(folder), prompt, 10, eos_token_id=())   # minillm: never stops
    assert nm.NumpyModel(folder).generate(prompt, 10, eos_token_id=()) == prompt + free
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [free[5], free[2]]}))
    expected = minillm.generate(minillm.load_model(folder), prompt, 10)   # stops at the first listed id it meets
    assert len(expected) < len(free)
    model = nm.NumpyModel(folder)
    assert model.eos_token_ids == (free[5], free[2])
    assert model.generate(prompt, 10) == prompt + expected
    assert model.generate(prompt, 10, eos_token_id=free[5]) == prompt + free[: free.index(free[5]) + 1]


def test_logits_are_causal(checkpoints):
    """A token's logits depend only on the tokens up to it, never on later ones."""
    weights, config = nm.load_numpy_model(checkpoints["qwen2"])
    ids = np.arange(10) % TINY["vocab_size"]
    changed = ids.copy()
    changed[6:] = 5
    a, b = nm.forward(weights, config, ids), nm.forward(weights, config, changed)
    np.testing.assert_array_equal(a[:, :6], b[:, :6])
    assert not np.allclose(a[:, 6:], b[:, 6:])


def test_building_blocks():
    x = np.array([[1000.0, 1001.0, -np.inf]], dtype=np.float32)
    p = nm.softmax(x)
    assert np.isfinite(p).all() and p[0, 2] == 0.0 and np.isclose(p.sum(), 1.0)

    v = np.array([3.0, 4.0], dtype=np.float32)
    np.testing.assert_allclose(nm.rms_norm(v, np.ones(2, np.float32), 0.0), v / np.sqrt(12.5), rtol=1e-6)

    cos, sin = nm.rope_cos_sin(np.arange(5), head_dim=8, theta=10000.0)
    assert cos.shape == sin.shape == (5, 8)
    q = np.random.default_rng(0).standard_normal((1, 2, 5, 8)).astype(np.float32)
    rotated = nm.apply_rope(q, cos, sin)
    np.testing.assert_allclose(rotated[:, :, 0], q[:, :, 0])  # position 0: no rotation
    np.testing.assert_allclose(np.linalg.norm(rotated, axis=-1), np.linalg.norm(q, axis=-1), rtol=1e-5)

    assert np.all(nm.silu(np.array([-1e4], dtype=np.float32)) == 0.0)  # no overflow warning, no nan


def test_forward_rejects_bad_ids(checkpoints):
    weights, config = nm.load_numpy_model(checkpoints["qwen2"])
    with pytest.raises(ValueError, match="0..96"):
        nm.forward(weights, config, np.array([1, 97]))
    with pytest.raises(ValueError, match="integer"):
        nm.forward(weights, config, np.array([0.5, 1.0]))


def test_numpy_model_never_imports_torch(checkpoints, tmp_path):
    """Loaded as a lone file (minillm/__init__.py imports torch), it runs a whole model torch-free."""
    script = textwrap.dedent(
        """
        import importlib.util, sys
        import numpy as np
        spec = importlib.util.spec_from_file_location("numpy_model", sys.argv[1])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for folder in sys.argv[2:]:
            logits = module.NumpyModel(folder)(np.array([3, 1, 4, 1, 5]))
            assert logits.shape == (1, 5, 97), logits.shape
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "minillm"))
        assert not leaked, leaked
        print("ok")
        """
    )
    folders = [str(checkpoints[name]) for name in ("qwen2", "llama-sharded", "qwen2-bf16")]
    result = subprocess.run(
        [sys.executable, "-c", script, str(NUMPY_MODEL_FILE), *folders],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    imports = [line for line in NUMPY_MODEL_FILE.read_text().splitlines() if line.startswith(("import ", "from "))]
    assert not [line for line in imports if "torch" in line or "minillm" in line or line.startswith("from .")], imports
