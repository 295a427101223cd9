"""Load what transformers loads, refuse only what it would compute differently.

Each accepted config is loaded by both minillm (readable and packed path) and transformers and
their logits compared; each refused one is shown to change transformers' logits. Tolerance:
float32 logits within 1e-5 (readable path, the parity tests' bound) and 5e-5 (packed path: its
matrix products add in another order; minillm.models.packed's documented bound).
"""

from __future__ import annotations

import shutil

import pytest
import torch
import transformers

import minillm
from minillm.models.config import ConfigError
from checkpoints import VOCAB, edit_config, load_reference, make_checkpoint

IDS = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("edges"), "qwen2", seed=5, layers=2)


@pytest.fixture
def ckpt(pristine, tmp_path):
    return shutil.copytree(pristine, tmp_path / "ckpt")


def reference_logits(folder) -> torch.Tensor:
    with torch.no_grad():
        return load_reference(folder)(IDS).logits


def assert_matches_transformers(folder) -> None:
    expected = reference_logits(folder)
    assert (minillm.load_model(folder)(IDS) - expected).abs().max() <= 1e-5
    assert (minillm.load_model(folder, packed=True)(IDS) - expected).abs().max() <= 5e-5


# Hub configs lack layer_types (transformers derives it from use_sliding_window and max_window_layers).
@pytest.mark.parametrize("changes", [
    dict(use_sliding_window=True, sliding_window=4, max_window_layers=2, layer_types=None),  # = layers
    dict(use_sliding_window=True, sliding_window=4, max_window_layers=50, layer_types=None),
    dict(use_sliding_window=True, sliding_window=None, max_window_layers=0, layer_types=None),  # no window
    dict(use_sliding_window=True, sliding_window=256, max_window_layers=0, layer_types=None),   # >= context
    dict(use_sliding_window=False, sliding_window=4, max_window_layers=0, layer_types=None),    # switched off
    dict(attention_bias=False),        # Qwen2 has q/k/v biases whatever this says
    dict(mlp_bias=True),               # read by Llama only
    dict(rope_scaling={"rope_type": "default"}),
], ids=["window-layers-eq-layers", "window-layers-above", "no-window-size", "window-covers-context",
        "window-off", "attention-bias-false", "qwen2-mlp-bias", "rope-scaling-default"])
def test_configs_that_only_look_unusual_load_with_transformers_logits(ckpt, changes):
    edit_config(ckpt, **changes)
    assert_matches_transformers(ckpt)


@pytest.mark.parametrize("changes, words", [
    (dict(use_sliding_window=True, sliding_window=4, max_window_layers=1, layer_types=None), ["layers [1]", "4"]),
    (dict(use_sliding_window=True, sliding_window=4, layer_types=["sliding_attention", "full_attention"]),
     ["layers [0]"]),
])
def test_sliding_windows_that_hide_keys_are_refused(ckpt, pristine, changes, words):
    edit_config(ckpt, **changes)
    # The refusal is needed: transformers' logits really change (12 tokens > the window of 4).
    assert (reference_logits(ckpt) - reference_logits(pristine)).abs().max() > 1e-2
    with pytest.raises(ConfigError) as err:
        minillm.load_model(ckpt)
    assert all(w in str(err.value) for w in ["sliding_window", "config.json", *words])


def test_llama_mlp_bias_is_refused(tmp_path):
    folder = make_checkpoint(tmp_path / "llama", "llama", seed=1, mlp_bias=True)
    with pytest.raises(ConfigError, match="mlp_bias"):
        minillm.load_model(folder)


def test_auto_dtype_comes_from_the_weights_when_config_json_has_none(pristine, tmp_path):
    # A bfloat16 checkpoint whose config.json records no dtype (older or hand-written configs).
    folder = tmp_path / "bf16"
    transformers.AutoModelForCausalLM.from_pretrained(pristine, dtype=torch.bfloat16).save_pretrained(folder)
    edit_config(folder, dtype=None, torch_dtype=None)
    ref = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype="auto", attn_implementation="eager")
    assert ref.dtype == torch.bfloat16
    for packed in (False, True):
        model = minillm.load_model(folder, dtype="auto", packed=packed)
        assert model.embed_tokens.weight.dtype == torch.bfloat16
        with torch.no_grad():
            expected = ref(IDS).logits
        # bfloat16 kernels round differently: the parity tests' bound, argmax equal at >= 99%.
        assert (model(IDS).argmax(-1) == expected.argmax(-1)).float().mean() >= 0.99
    # A dtype recorded in config.json wins over the weights', in both libraries.
    edit_config(folder, torch_dtype="float32")
    assert transformers.AutoModelForCausalLM.from_pretrained(folder, dtype="auto").dtype == torch.float32
    assert minillm.load_model(folder, dtype="auto").embed_tokens.weight.dtype == torch.float32


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_keys_left_out_of_config_json_take_transformers_defaults(tmp_path, kind):
    folder = make_checkpoint(tmp_path / kind, kind, seed=1)
    # (num_key_value_heads stays: Qwen2Config's default, 32, fits no checkpoint but one with 32 KV heads.)
    edit_config(folder, max_position_embeddings=None, rms_norm_eps=None, tie_word_embeddings=None, head_dim=None, rope_parameters=None, rope_theta=None,
                hidden_act=None, layer_types=None)
    ours = minillm.ModelConfig.from_file(folder)
    theirs = transformers.AutoConfig.from_pretrained(folder)
    assert (ours.max_position_embeddings, ours.rms_norm_eps, ours.tie_word_embeddings, ours.num_key_value_heads,
            ours.head_dim, ours.rope_theta) == (
        theirs.max_position_embeddings, theirs.rms_norm_eps, theirs.tie_word_embeddings,
        theirs.num_key_value_heads, getattr(theirs, "head_dim", None) or theirs.hidden_size // theirs.num_attention_heads,
        theirs.rope_parameters["rope_theta"])


# Values the forward pass is built from, each out of its range: before these checks the first four loaded and
# gave NaN logits with exit 0, the rest raised bare torch errors (negative dimensions) or a misleading shape error.
BAD_VALUES = [
    ("qwen2", dict(rms_norm_eps=-1), "rms_norm_eps"),
    ("qwen2", dict(rms_norm_eps=0), "rms_norm_eps"),
    ("qwen2", dict(rope_theta=0, rope_parameters=None), "rope_theta"),
    ("qwen2", dict(rope_theta=float("nan"), rope_parameters=None), "rope_theta"),
    ("qwen2", dict(rope_parameters={"rope_type": "default", "rope_theta": float("inf")}), "rope_parameters.rope_theta"),
    ("qwen2", dict(rope_parameters=5), "rope_parameters"),
    ("qwen2", dict(num_attention_heads=-2), "num_attention_heads"),
    ("qwen2", dict(num_key_value_heads=0), "num_key_value_heads"),
    ("qwen2", dict(head_dim=0), "head_dim"),
    ("qwen2", dict(max_position_embeddings=0), "max_position_embeddings"),
    ("qwen2", dict(vocab_size=0), "vocab_size"),
    ("qwen2", dict(num_hidden_layers=-1), "num_hidden_layers"),   # (0 layers is a model: see below)
    ("qwen2", dict(intermediate_size=-64), "intermediate_size"),
    ("qwen2", dict(hidden_size=32.5), "hidden_size"),
    ("qwen2", dict(hidden_size="32"), "hidden_size"),
    ("gpt2", dict(layer_norm_epsilon=-1), "layer_norm_epsilon"),
    ("gpt2", dict(layer_norm_epsilon=float("nan")), "layer_norm_epsilon"),
    ("gpt2", dict(n_head=-3), "n_head"),
    ("gpt2", dict(n_positions=0), "n_positions"),
    ("gpt2", dict(n_layer=-1), "n_layer"),
    ("gpt2", dict(n_embd=0), "n_embd"),
    ("gpt2", dict(vocab_size=-1), "vocab_size"),
    ("gpt2", dict(n_inner=0), "n_inner"),
]


@pytest.fixture(scope="module")
def pristine_gpt2(tmp_path_factory):
    from checkpoints import make_gpt2_checkpoint
    return make_gpt2_checkpoint(tmp_path_factory.mktemp("edges-gpt2"), seed=5)


@pytest.mark.parametrize("kind, changes, key", BAD_VALUES, ids=[f"{k}-{key}-{list(c.values())[0]}" for k, c, key in BAD_VALUES])
def test_values_the_forward_pass_cannot_use_are_refused_naming_file_and_key(pristine, pristine_gpt2, tmp_path,
                                                                            capsys, kind, changes, key):
    folder = shutil.copytree(pristine if kind == "qwen2" else pristine_gpt2, tmp_path / "ckpt")
    edit_config(folder, **changes)
    with pytest.raises(ConfigError) as err:
        minillm.load_model(folder)
    message = str(err.value)
    assert message.startswith(f"{folder / 'config.json'}: {key} is ") and "\n" not in message
    # The command line says it in one line and exits 1 (the model is refused before its tokenizer is looked for).
    from minillm.cli import main
    assert main(["logits", str(folder), "hello"]) == 1
    assert capsys.readouterr().err == f"minillm logits: error: {message}\n"


def test_zero_layers_load_as_in_transformers(tmp_path):
    # Embedding, final norm and head alone (a model of the next token given this one): transformers builds
    # it, so the layer count may be 0 where every other size must be positive.
    folder = make_checkpoint(tmp_path / "bigram", "qwen2", seed=2, layers=0)
    assert minillm.ModelConfig.from_file(folder).num_hidden_layers == 0
    assert_matches_transformers(folder)
