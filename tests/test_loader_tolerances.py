"""A checkpoint transformers loads loads here too, with its logits, or is refused saying what would differ.

The ways transformers' loader tolerates files that differ from what save_pretrained writes, each
checked here against transformers itself (float32 logits within 1e-5, the parity tests' bound):
a tied model whose file (or index) holds only lm_head.weight, or both matrices; one file mixing
float16, bfloat16 and float32 tensors; a base model's checkpoint without the "model." prefix;
rotary-frequency buffers older versions saved. Refused, with what transformers would do: a tied
file whose two matrices differ, an untied one without lm_head.weight, tensors no layer uses.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import minillm
from minillm.checkpoint.weights import WeightsError
from checkpoints import VOCAB, load_reference, make_checkpoint, make_gpt2_checkpoint

IDS = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("tolerances")
    return {"tied": make_checkpoint(root / "tied", "qwen2", seed=1, tied=True),
            "untied": make_checkpoint(root / "untied", "qwen2", seed=2, tied=False),
            "llama": make_checkpoint(root / "llama", "llama", seed=3, tied=False),
            "gpt2": make_gpt2_checkpoint(root / "gpt2", seed=4)}


def rewrite(source, folder, edit, index: bool = False):
    """A copy of ``source`` whose tensors went through ``edit`` (a dict -> dict), in one file or behind an index."""
    shutil.copytree(source, folder)
    tensors = edit(load_file(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    name = "model-00001-of-00001.safetensors" if index else "model.safetensors"
    save_file(tensors, folder / name, metadata={"format": "pt"})
    if index:
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": {key: name for key in tensors}}))
    return folder


def reference_logits(folder):
    with torch.no_grad():
        return load_reference(folder)(IDS).logits


def head_only(t):
    t["lm_head.weight"] = t.pop("model.embed_tokens.weight" if "model.embed_tokens.weight" in t else "transformer.wte.weight")
    return t


def head_copy(t):
    t["lm_head.weight"] = t.get("model.embed_tokens.weight", t.get("transformer.wte.weight")).clone()
    return t


def mixed_dtypes(t):
    return {key: t[key].to((torch.float16, torch.bfloat16, torch.float32)[i % 3]) for i, key in enumerate(sorted(t))}


def rotary_buffers(t):
    layers = {key.split(".")[2] for key in t if key.startswith("model.layers.")}
    return {**t, **{f"model.layers.{i}.self_attn.rotary_emb.inv_freq": torch.ones(4) for i in layers}}


ACCEPTED = [
    ("tied", head_only, False), ("tied", head_only, True), ("gpt2", head_only, False), ("gpt2", head_only, True),
    ("tied", head_copy, False), ("gpt2", head_copy, False),
    ("untied", mixed_dtypes, False), ("tied", mixed_dtypes, True), ("gpt2", mixed_dtypes, False),
    ("tied", lambda t: {k.removeprefix("model."): v for k, v in t.items()}, False),      # saved from Qwen2Model
    ("untied", lambda t: {k.removeprefix("model."): v for k, v in t.items()}, True),
    ("untied", rotary_buffers, False), ("llama", rotary_buffers, False),
]
ACCEPTED_IDS = ["tied-head-only", "tied-head-only-index", "gpt2-head-only", "gpt2-head-only-index", "tied-both",
                "gpt2-both", "mixed-dtypes", "mixed-dtypes-tied-index", "gpt2-mixed-dtypes", "no-model-prefix-tied",
                "no-model-prefix-untied-index", "qwen2-inv-freq", "llama-inv-freq"]


@pytest.mark.parametrize("source, edit, index", ACCEPTED, ids=ACCEPTED_IDS)
def test_what_transformers_tolerates_loads_with_its_logits(sources, tmp_path, source, edit, index):
    folder = rewrite(sources[source], tmp_path / "ckpt", edit, index)
    expected = reference_logits(folder)
    # The edit changed the files, not the model (the mixed dtypes round the weights: both libraries alike).
    if edit is not mixed_dtypes:
        assert (expected - reference_logits(sources[source])).abs().max() <= 1e-5
    for packed in (False, True):
        # 1e-5: the readable path's bound; 5e-5: the packed path's (its products add in another order).
        assert (minillm.load_model(folder, packed=packed)(IDS) - expected).abs().max() <= (5e-5 if packed else 1e-5)


def test_a_tied_file_whose_head_differs_is_refused_saying_transformers_unties_it(sources, tmp_path):
    folder = rewrite(sources["tied"], tmp_path / "ckpt", lambda t: {**t, "lm_head.weight": t["model.embed_tokens.weight"] + 1})
    # transformers loads the two matrices apart: other logits than the tied model's.
    assert (reference_logits(folder) - reference_logits(sources["tied"])).abs().max() > 1e-2
    with pytest.raises(WeightsError, match=r"differs from the token embedding \(transformers then loads the two "
                                           r"apart, as if it were false\)"):
        minillm.load_model(folder)


def test_an_untied_file_without_a_head_is_refused_saying_transformers_would_make_one_up(sources, tmp_path):
    folder = rewrite(sources["untied"], tmp_path / "ckpt", lambda t: {k: v for k, v in t.items() if k != "lm_head.weight"})
    # transformers fills the missing head with random numbers: its logits are not the model's.
    assert (reference_logits(folder) - reference_logits(sources["untied"])).abs().max() > 1e-2
    with pytest.raises(WeightsError, match="has no lm_head.weight, and config.json says tie_word_embeddings=false.*"
                                           "randomly initialised output layer"):
        minillm.load_model(folder)


def test_tensors_no_layer_uses_are_refused_saying_transformers_would_drop_them(sources, tmp_path):
    folder = rewrite(sources["tied"], tmp_path / "ckpt", lambda t: {**t, "model.layers.9.mlp.up_proj.weight": torch.ones(2)})
    with pytest.raises(WeightsError, match=r"\['model.layers.9.mlp.up_proj.weight'\].*transformers would load the "
                                           "checkpoint without them"):
        minillm.load_model(folder)
