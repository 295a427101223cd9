"""Loading checkpoints: both config layouts, the hub path, and a clear error for every bad input (a shard
named outside the folder, NaN or infinite weights, a device torch cannot use); the input check on ids
stays out of compiled graphs."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import minillm
from minillm.models.config import ConfigError, ModelConfig
from minillm.checkpoint.hub import SourceError
from minillm.checkpoint.weights import WeightsError
from minillm.cli import main as cli_main
from minillm.models import numpy_model
from checkpoints import VOCAB, edit_config, load_reference, make_checkpoint, make_tokenizer, put_in_hub_cache


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("pristine"), "qwen2", seed=3, tied=True)


@pytest.fixture
def ckpt(pristine, tmp_path):
    """A fresh copy of a good checkpoint for each test to break."""
    return shutil.copytree(pristine, tmp_path / "ckpt")


def test_hub_style_config_layout_loads_the_same(ckpt, pristine):
    # Qwen2.5's hub config.json: rope_theta/torch_dtype at the top level and a sliding
    # window that is switched off.
    raw = json.loads((ckpt / "config.json").read_text())
    edit_config(ckpt, rope_parameters=None, dtype=None, layer_types=None, rope_theta=raw["rope_parameters"]["rope_theta"],
                 torch_dtype="float32", sliding_window=32768, use_sliding_window=False, max_window_layers=21)
    assert ModelConfig.from_file(ckpt) == ModelConfig.from_file(pristine)
    ids = torch.arange(10)[None]
    assert torch.equal(minillm.load_model(ckpt)(ids), minillm.load_model(pristine)(ids))


def test_rope_theta_is_read_from_either_layout(ckpt):
    edit_config(ckpt, rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    assert ModelConfig.from_file(ckpt).rope_theta == 1e6
    edit_config(ckpt, rope_parameters=None, rope_theta=5e5)
    assert ModelConfig.from_file(ckpt).rope_theta == 5e5


@pytest.mark.parametrize("changes, words", [
    (dict(model_type="gpt2"), ["model_type", "gpt2"]),
    (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}), ["rope scaling"]),
    (dict(rope_scaling={"type": "linear", "factor": 2.0}), ["rope scaling"]),
    (dict(use_sliding_window=True, sliding_window=16, max_window_layers=1, layer_types=None), ["use_sliding_window"]),
    (dict(hidden_act="gelu"), ["hidden_act", "gelu"]),
    (dict(hidden_size=None), ["hidden_size"]),
])
def test_configs_we_do_not_compute_are_refused(ckpt, changes, words):
    edit_config(ckpt, **changes)
    with pytest.raises(ConfigError) as err:
        minillm.load_model(ckpt)
    assert all(w in str(err.value) for w in words)
    assert "config.json" in str(err.value)


def test_missing_config_json(ckpt):
    (ckpt / "config.json").unlink()
    with pytest.raises(ConfigError, match="config.json not found"):
        minillm.load_model(ckpt)


def test_config_json_that_is_not_json(ckpt):
    (ckpt / "config.json").write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        minillm.load_model(ckpt)


def test_missing_safetensors(ckpt):
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="has no model.safetensors"):
        minillm.load_model(ckpt)


@pytest.mark.parametrize("keep", [0.5, 0.001])
def test_truncated_safetensors(ckpt, keep):
    path = ckpt / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(WeightsError) as err:
        minillm.load_model(ckpt)
    assert "model.safetensors" in str(err.value) and "truncated" in str(err.value)


class _Trap:
    """Unpickling this object would create the file named in it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickle_weights_are_refused_never_unpickled(ckpt, tmp_path):
    (ckpt / "model.safetensors").unlink()
    sprung = tmp_path / "trap_sprung"
    (ckpt / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(sprung)))
    with pytest.raises(WeightsError, match="pickle") as err:
        minillm.load_model(ckpt)
    assert "pytorch_model.bin" in str(err.value)
    assert not sprung.exists()


def _rewrite_tensors(folder, edit):
    path = folder / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_missing_tensor_is_named(ckpt):
    _rewrite_tensors(ckpt, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(WeightsError, match="model.layers.1.mlp.up_proj.weight"):
        minillm.load_model(ckpt)


def test_unexpected_tensor_is_named(ckpt):
    _rewrite_tensors(ckpt, lambda t: t.update({"model.layers.0.mlp.extra.weight": torch.zeros(2)}))
    with pytest.raises(WeightsError, match=r"model\.layers\.0\.mlp\.extra\.weight.*model\.safetensors"):
        minillm.load_model(ckpt)


def test_shape_mismatch_names_tensor_and_file(ckpt):
    edit_config(ckpt, intermediate_size=40)
    with pytest.raises(WeightsError) as err:
        minillm.load_model(ckpt)
    message = str(err.value)
    assert "mlp" in message and "model.safetensors" in message and "40" in message


def test_tied_checkpoint_with_a_different_head_is_refused(ckpt):
    _rewrite_tensors(ckpt, lambda t: t.update({"lm_head.weight": torch.randn(VOCAB, 32)}))
    with pytest.raises(WeightsError, match="tie_word_embeddings"):
        minillm.load_model(ckpt)


def test_tied_checkpoint_with_an_identical_head_copy_loads(ckpt, pristine):
    _rewrite_tensors(ckpt, lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"].clone()}))
    model = minillm.load_model(ckpt)
    assert model.lm_head.weight is model.embed_tokens.weight


def test_sharded_checkpoint_with_a_missing_shard(tmp_path):
    folder = make_checkpoint(tmp_path / "sharded", "qwen2", shard=True)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    (folder / shard).unlink()
    with pytest.raises(WeightsError, match=shard):
        minillm.load_model(folder)


def test_source_that_is_neither_folder_nor_repo_id(tmp_path):
    with pytest.raises(SourceError, match="no such folder"):    # an absolute path is never a hub id
        minillm.load_model(str(tmp_path / "no" / "such" / "model"))
    with pytest.raises(SourceError, match="neither an existing folder nor a hub repo id"):
        minillm.load_model("no/such/model/here")        # three parts: not 'org/name', and no folder 'no' here


@pytest.mark.parametrize("bad, words", [
    (torch.tensor([[3, VOCAB]]), ["token id", str(VOCAB), "vocabulary"]),
    (torch.tensor([[-1, 3]]), ["token id", "-1"]),
    (torch.zeros(1, 0, dtype=torch.long), ["empty"]),
    (torch.zeros(1, 3), ["integer token ids", "float32"]),
    (torch.zeros(1, 257, dtype=torch.long), ["257 tokens", "max_position_embeddings=256"]),
])
def test_bad_input_ids(pristine, bad, words):
    model = minillm.load_model(pristine)
    with pytest.raises(ValueError) as err:
        model(bad)
    assert all(w in str(err.value) for w in words)


def test_dtypes_by_name_and_auto(pristine):
    assert minillm.load_model(pristine, dtype="bfloat16").lm_head.weight.dtype == torch.bfloat16
    assert minillm.load_model(pristine, dtype="auto").lm_head.weight.dtype == torch.float32  # saved as float32
    with pytest.raises(ValueError, match="float64"):
        minillm.load_model(pristine, dtype="float64")


def test_hub_repo_id_loads_from_the_cache_offline(pristine, offline_cache):
    put_in_hub_cache(offline_cache, "minillm-tests/tiny-qwen2", pristine)
    model = minillm.load_model("minillm-tests/tiny-qwen2")
    ids = torch.arange(12)[None]
    with torch.no_grad():
        expected = load_reference(pristine)(ids).logits
    assert (model(ids) - expected).abs().max().item() <= 1e-5


def test_hub_repo_id_not_cached_while_offline(offline_cache):
    with pytest.raises(SourceError) as err:
        minillm.load_model("minillm-tests/not-downloaded")
    message = str(err.value)
    assert "offline" in message and "cache" in message and "minillm-tests/not-downloaded" in message


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("sharded") / "ckpt", "qwen2", shard=True)


def _move_shard_out(sharded, tmp_path, name_in_index):
    """A copy of the sharded checkpoint whose first shard lies one folder up, named in the index
    by ``name_in_index(path)``: before issue 15 such a valid shard loaded silently."""
    folder = shutil.copytree(sharded, tmp_path / "ckpt")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = sorted(set(index["weight_map"].values()))[0]
    outside = (folder / shard).rename(tmp_path / shard)
    index["weight_map"] = {k: (name_in_index(outside) if v == shard else v) for k, v in index["weight_map"].items()}
    index_path.write_text(json.dumps(index))
    return folder, outside


@pytest.mark.parametrize("how", ["dotdot", "absolute"])
def test_index_naming_a_shard_outside_the_folder_is_refused(sharded, tmp_path, how):
    name = (lambda p: f"../{p.name}") if how == "dotdot" else (lambda p: str(p))
    folder, outside = _move_shard_out(sharded, tmp_path, name)
    with pytest.raises(WeightsError, match="outside the checkpoint folder"):
        minillm.load_model(folder)
    with pytest.raises(ValueError, match="outside"):     # the standalone NumPy loader refuses it too
        numpy_model.load_weights(folder)


def test_a_symlinked_shard_inside_the_folder_loads(sharded, tmp_path):
    """The decision: the index's own names must stay inside the folder, but a link the folder
    holds is its owner's (the Hugging Face cache links every snapshot file into blobs/)."""
    folder, outside = _move_shard_out(sharded, tmp_path, lambda p: p.name)
    (folder / outside.name).symlink_to(outside)
    model = minillm.load_model(folder)
    assert model.config.model_type == "qwen2"


def test_weight_map_that_is_a_list_names_the_index(sharded, tmp_path):
    folder = shutil.copytree(sharded, tmp_path / "ckpt")
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": [["model.norm.weight", "a.safetensors"]]}))
    with pytest.raises(WeightsError, match=r"model\.safetensors\.index\.json.*'weight_map' object"):
        minillm.load_model(folder)
    index.write_text("[1, 2]")
    with pytest.raises(WeightsError, match="'weight_map' object"):
        minillm.load_model(folder)


def test_config_that_is_a_json_list_names_the_file(sharded, tmp_path):
    folder = shutil.copytree(sharded, tmp_path / "ckpt")
    (folder / "config.json").write_text('[{"model_type": "qwen2"}]')
    with pytest.raises(ConfigError, match=r"config\.json holds a JSON list, not an object"):
        minillm.load_model(folder)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_weights_are_refused_at_load(tmp_path, capsys, bad):
    folder = make_checkpoint(tmp_path / "ckpt", "qwen2", tied=True, vocab=300)
    make_tokenizer(folder, 300)
    tensors = load_file(folder / "model.safetensors")
    tensors["model.layers.0.mlp.up_proj.weight"][3, 5] = bad
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=r"'model\.layers\.0\.mlp\.up_proj\.weight' in .*model\.safetensors "
                                           r"holds NaN or infinite values"):
        minillm.load_model(folder)
    assert cli_main(["logits", str(folder), "Once upon a time"]) == 1     # before: a NaN table, exit 0
    assert "NaN or infinite" in capsys.readouterr().err


def test_float16_overflow_is_caught_too(tmp_path):
    """A finite float32 weight beyond float16's largest value (65504) becomes inf when loaded as float16."""
    folder = make_checkpoint(tmp_path / "ckpt", "qwen2")
    tensors = load_file(folder / "model.safetensors")
    tensors["model.norm.weight"][0] = 1e6
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    assert minillm.load_model(folder).norm.weight[0].item() == 1e6
    with pytest.raises(WeightsError, match="too large for float16"):
        minillm.load_model(folder, dtype="float16")


def test_a_device_torch_cannot_use_is_named_before_any_file_is_read(sharded):
    """On this CPU-only torch, "cuda" says so (before: "could not be read... Download it again");
    on a machine with GPUs a device index that does not exist stands in for it."""
    import torch

    device = "cuda:99" if torch.cuda.is_available() else "cuda"
    with pytest.raises(ValueError, match=f"device '{device}' is not available here") as info:
        minillm.load_model(sharded, device=device)
    assert "Download it again" not in str(info.value)
    if not torch.backends.cuda.is_built():
        assert "This torch build has no CUDA support" in str(info.value)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random Qwen2 checkpoint with 320 token rows; no tokenizer: the test feeds ids."""
    return make_checkpoint(tmp_path_factory.mktemp("loading-tiny"), "qwen2", seed=9, vocab=320)


def test_the_input_check_stays_out_of_compiled_graphs(tiny):
    model = minillm.load_model(tiny)
    ids = torch.randint(0, 320, (2, 16), generator=torch.Generator().manual_seed(0))
    explained = torch._dynamo.explain(model)(ids)     # traces as torch.compile would, without compiling
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    with pytest.raises(ValueError, match="outside this model's vocabulary"):
        model(torch.tensor([[5, 320]]))                 # eager calls still check the ids' range


def test_loading_builds_no_random_weights_it_would_throw_away():
    """load_model builds the model on the meta device without running the layers' random init (every
    parameter comes from the checkpoint): initialising meta tensors makes PyTorch import its compiler,
    ~1.5 s of CPU in each process that loads a model. Checked in a fresh process, GPT-2 and Qwen2 alike
    (that the weights are the file's, tests/test_model_parity.py checks against transformers)."""
    import subprocess
    import sys
    from pathlib import Path

    models = Path(__file__).resolve().parents[1] / "data" / "models"
    code = ("import sys, minillm\n"
            f"for name in ('tiny-s', 'tiny-gpt2'):\n"
            f"    minillm.load_model({str(models)!r} + '/' + name)\n"
            "print(sorted(m for m in ('torch._dynamo', 'torch._inductor') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
