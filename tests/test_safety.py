"""Issue 15: bad or hostile input never reads a file outside the checkpoint, never destroys a
user's files, and never passes NaN off as a result; each case gets a clear error."""

from __future__ import annotations

import json
import shutil

import pytest

import minillm
from minillm import numpy_model
from minillm.config import ConfigError
from minillm.weights import WeightsError
from checkpoints import make_checkpoint


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
