"""Autograder, unit 5 (architecture): a Qwen2/Llama forward pass from plain tensors.

Every check compares the student's function with minillm's model code (``minillm.models.qwen2``,
which tests/test_model_parity.py checks against Hugging Face ``transformers``), never with
solutions/. Shapes, positions, head counts and values are drawn fresh from ``grader_seed``,
and chosen so that each classic mistake changes the numbers: RMSNorm inputs small enough
that ``eps`` matters, RoPE at positions > 0 with head_dim >= 8, grouped-query attention
with at least 2 distinct key/value heads each shared by at least 2 query heads.

While the student's code runs, minillm's own model functions, its NumPy model and torch's
ready-made ``F.scaled_dot_product_attention`` / ``F.rms_norm`` raise: the exercise is to
write them.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

import minillm.models.qwen2 as mm
from grading import GradingError, Unchanged, expect_close, expect_shape
from minillm.models.config import ModelConfig
from minillm.checkpoint.weights import checkpoint_name

pytestmark = pytest.mark.architecture

OBJECTIVES = {
    "ARCH-1": "Implements RMSNorm (mean square over the last dimension, eps inside the square root, learned gain)",
    "ARCH-2": "Computes rotary position embeddings in the half-split layout and applies them to queries/keys",
    "ARCH-3": "Builds a causal mask and scaled dot-product attention (1/sqrt(head_dim) scaling, softmax over keys, masked keys get zero weight)",
    "ARCH-4": "Implements grouped-query attention by giving each key/value head to its group of query heads",
    "ARCH-5": "Implements the SwiGLU feed-forward layer from (out, in) weight matrices",
    "ARCH-6": "Assembles a pre-norm decoder block from a checkpoint's named tensors",
    "ARCH-7": "Runs the full forward pass from a weights dict (embedding lookup, all blocks, final norm, untied or tied LM head)",
}


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------

def _load_student_fn(student, forbid, name: str):
    """The student's function, imported after minillm's answers and torch's built-ins are forbidden.

    Call this AFTER computing the reference (the reference uses minillm.models.qwen2)."""
    forbid(*(f"minillm.models.qwen2.{name}" for name in
                         ("rotate_half", "apply_rotary", "repeat_kv", "attention", "causal_mask",
                          "RMSNorm.forward", "RotaryEmbedding.forward", "Attention.forward", "MLP.forward",
                          "DecoderBlock.forward", "Transformer.forward", "Transformer.hidden_states")))
    forbid(*(f"minillm.models.numpy_model.{name}" for name in
                         ("rms_norm", "rope_cos_sin", "apply_rope", "softmax", "attention", "swiglu_mlp",
                          "decoder_block", "forward")))
    forbid("torch.nn.functional.scaled_dot_product_attention", "torch.nn.functional.rms_norm")
    fn = student.function("architecture", name)

    def checked(*args, **kwargs):
        """The call, failing when it changed its inputs (tensors, the weights dict) or torch's global RNG."""
        inputs = Unchanged("its inputs (the tensors or the weights dict it was given)", *args, *kwargs.values(),
                           rng=True)
        got = fn(*args, **kwargs)
        inputs.check(f"{name}(...)")
        return got
    return checked


def _rng(grader_seed: int, salt: int) -> tuple[random.Random, torch.Generator]:
    """Independent random streams per test, all fixed by the grader seed."""
    return random.Random(grader_seed * 1009 + salt), torch.Generator().manual_seed(grader_seed * 1009 + salt)


def _expect_tensor(got, what: str) -> None:
    if not isinstance(got, torch.Tensor):
        raise GradingError(f"{what}: expected a torch.Tensor, got {type(got).__name__}.")


def _random_config(rng: random.Random, **overrides) -> ModelConfig:
    """A small random Qwen2-style config with real grouped-query attention (n_kv >= 2, n_rep >= 2).

    Confusable quantities always differ, on every seed: query heads per KV head != KV heads (repeating
    K/V by the wrong factor changes the shapes or the grouping), and rope_theta is never the common 10000
    (a hard-coded theta fails)."""
    head_dim = rng.choice([8, 12, 16])
    n_kv, n_rep = _kv_and_rep(rng)
    values = dict(
        model_type="qwen2", vocab_size=rng.randint(40, 90), hidden_size=rng.choice([24, 32, 40]),
        intermediate_size=rng.choice([48, 56, 72]), num_hidden_layers=rng.choice([2, 3]),
        num_attention_heads=n_kv * n_rep, num_key_value_heads=n_kv, head_dim=head_dim,
        rope_theta=_rope_theta(rng), rms_norm_eps=rng.choice([1e-6, 1e-5]),
        max_position_embeddings=512, tie_word_embeddings=False, attention_bias=True,
    )
    values.update(overrides)
    return ModelConfig(**values)


def _kv_and_rep(rng: random.Random) -> tuple[int, int]:
    """(KV heads, query heads per KV head), both > 1 and never equal."""
    return rng.choice([(2, 3), (3, 2), (2, 4), (4, 2)])


def _rope_theta(rng: random.Random) -> float:
    """A RoPE base drawn log-uniformly between 2e4 and 2e6: far from the usual 10000, so a hard-coded
    theta changes the angles of every position > 0."""
    return float(round(10 ** rng.uniform(4.3, 6.3)))


def _randomize(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Weights spread wide enough that every mistake moves the output (norm gains != 1, biases != 0)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * noise)
            elif name.endswith("bias"):
                p.copy_(0.3 * noise)
            elif "embed_tokens" in name:
                p.copy_(noise)
            else:
                p.copy_(noise / math.sqrt(p.shape[-1]))   # keeps activations O(1) through the layers


def _hf_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A model's parameters under Hugging Face checkpoint names (a tied head appears once, as the embedding)."""
    return {checkpoint_name(n): p.detach().clone() for n, p in model.named_parameters()}


# ------------------------------------------------------------------------------------------
# ARCH-1 RMSNorm
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=2, objective="ARCH-1", level="P")
def test_rms_norm_matches_minillm(student, forbid, grader_seed):
    rng, gen = _rng(grader_seed, 1)
    batch, seq, dim = rng.randint(1, 3), rng.randint(3, 9), rng.randint(10, 48)
    x = 2.0 * torch.randn(batch, seq, dim, generator=gen) + 0.5
    weight = 1.0 + 0.5 * torch.randn(dim, generator=gen)
    eps = 1e-6
    ref_norm = mm.RMSNorm(dim, eps)
    with torch.no_grad():
        ref_norm.weight.copy_(weight)
        expected = ref_norm(x)
    rms_norm = _load_student_fn(student, forbid, "rms_norm")
    got = rms_norm(x.clone(), weight.clone(), eps)
    _expect_tensor(got, "rms_norm(x, weight, eps)")
    expect_shape(got, x.shape, "rms_norm(x, weight, eps)")
    # A mean over `dim` (<= 48) terms then one multiply per value: float32 agrees to ~1e-6 relative.
    expect_close(got, expected, f"rms_norm of a ({batch}, {seq}, {dim}) tensor", atol=1e-5, rtol=1e-5)


@pytest.mark.graded(points=2, objective="ARCH-1", level="P")
def test_rms_norm_eps_matters_for_small_inputs(student, forbid, grader_seed):
    rng, gen = _rng(grader_seed, 2)
    seq, dim = rng.randint(3, 8), rng.randint(12, 40)
    # Activations of size ~1e-3: mean square ~1e-6, smaller than eps, so eps changes the result a lot.
    x = 1e-3 * torch.randn(1, seq, dim, generator=gen)
    weight = 1.0 + 0.5 * torch.randn(dim, generator=gen)
    eps = rng.choice([1e-5, 3e-5, 1e-4])
    ref_norm = mm.RMSNorm(dim, eps)
    with torch.no_grad():
        ref_norm.weight.copy_(weight)
        expected = ref_norm(x)
    rms_norm = _load_student_fn(student, forbid, "rms_norm")
    got = rms_norm(x.clone(), weight.clone(), eps)
    _expect_tensor(got, "rms_norm(x, weight, eps)")
    # Same computation as above, outputs O(0.3): 1e-5 relative covers float32 summation order.
    expect_close(got, expected, f"rms_norm of tiny activations (size ~1e-3) with eps={eps:g}: "
                 "eps belongs inside the square root, next to the mean of squares", atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------------
# ARCH-2 Rotary position embeddings
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=2, objective="ARCH-2", level="P")
def test_rope_cos_sin_matches_minillm(student, forbid, grader_seed):
    rng, _ = _rng(grader_seed, 3)
    head_dim, theta = rng.choice([8, 16, 32]), _rope_theta(rng)
    start, seq = rng.randint(3, 60), rng.randint(4, 12)
    positions = torch.arange(start, start + seq)
    cos_ref, sin_ref = mm.RotaryEmbedding(head_dim, theta)(positions[None], torch.float32)
    cos_ref, sin_ref = cos_ref[0, 0], sin_ref[0, 0]                   # (seq, head_dim)
    rope_cos_sin = _load_student_fn(student, forbid, "rope_cos_sin")
    result = rope_cos_sin(positions.clone(), head_dim, theta)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise GradingError(f"rope_cos_sin should return a pair (cos, sin); it returned {type(result).__name__}.")
    cos, sin = result
    for got, ref, name in ((cos, cos_ref, "cos"), (sin, sin_ref, "sin")):
        _expect_tensor(got, f"rope_cos_sin(...) {name}")
        expect_shape(got, (seq, head_dim), f"rope_cos_sin(positions of shape ({seq},), head_dim={head_dim}) {name}")
        # Angles reach ~70 rad; float32 rounds them to ~1e-5 absolute, which cos/sin pass on.
        expect_close(got, ref, f"the RoPE {name} table for positions {start}..{start + seq - 1}, "
                     f"head_dim={head_dim}, theta={theta:g} (half-split layout: [angles, angles])",
                     atol=1e-4, rtol=0)


@pytest.mark.graded(points=2, objective="ARCH-2", level="P")
def test_apply_rope_matches_minillm(student, forbid, grader_seed):
    rng, gen = _rng(grader_seed, 4)
    batch, heads, seq = rng.randint(1, 2), rng.randint(2, 4), rng.randint(3, 9)
    head_dim, start = rng.choice([8, 16, 24]), rng.randint(5, 40)
    x = torch.randn(batch, heads, seq, head_dim, generator=gen)
    cos, sin = mm.RotaryEmbedding(head_dim, 10000.0)(torch.arange(start, start + seq)[None], torch.float32)
    cos, sin = cos[0, 0], sin[0, 0]                                     # (seq, head_dim)
    expected = mm.apply_rotary(x, cos, sin)
    apply_rope = _load_student_fn(student, forbid, "apply_rope")
    got = apply_rope(x.clone(), cos.clone(), sin.clone())
    _expect_tensor(got, "apply_rope(x, cos, sin)")
    expect_shape(got, x.shape, "apply_rope(x, cos, sin)")
    # Two products and a sum per value: float32 agrees to ~1e-7; 1e-5 leaves room for other orders.
    expect_close(got, expected, f"apply_rope on ({batch}, {heads}, {seq}, {head_dim}) queries at positions "
                 f"{start}..{start + seq - 1} (pair channel i with channel i + head_dim/2, not adjacent channels)",
                 atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------
# ARCH-3 Causal mask and scaled dot-product attention
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=1, objective="ARCH-3", level="P")
def test_causal_mask(student, forbid, grader_seed):
    rng, _ = _rng(grader_seed, 5)
    seq = rng.randint(4, 12)
    expected = mm.causal_mask(seq, 0, None, "cpu")[0, 0]              # (seq, seq) bool, True = allowed
    causal_mask = _load_student_fn(student, forbid, "causal_mask")
    got = causal_mask(seq)
    _expect_tensor(got, f"causal_mask({seq})")
    if got.dtype != torch.bool:
        raise GradingError(f"causal_mask({seq}) should return booleans (True = may attend), got dtype {got.dtype}.")
    expect_shape(got, (seq, seq), f"causal_mask({seq})")
    expect_close(got, expected, f"causal_mask({seq}) (row = query, column = key; True on and below the diagonal)",
                 atol=0, rtol=0)


def _qkv(gen: torch.Generator, batch: int, heads: int, seq_q: int, seq_k: int, head_dim: int):
    q = torch.randn(batch, heads, seq_q, head_dim, generator=gen)
    k = torch.randn(batch, heads, seq_k, head_dim, generator=gen)
    v = torch.randn(batch, heads, seq_k, head_dim, generator=gen)
    return q, k, v


@pytest.mark.graded(points=2, objective="ARCH-3", level="P")
def test_attention_without_mask(student, forbid, grader_seed):
    rng, gen = _rng(grader_seed, 6)
    batch, heads, head_dim = rng.randint(1, 2), rng.randint(2, 4), rng.choice([8, 16, 32])
    seq_q, seq_k = rng.randint(3, 7), rng.randint(8, 12)              # different lengths: the axes can't be confused
    q, k, v = _qkv(gen, batch, heads, seq_q, seq_k, head_dim)
    expected = mm.attention(q, k, v, None)
    sdpa = _load_student_fn(student, forbid, "scaled_dot_product_attention")
    got = sdpa(q.clone(), k.clone(), v.clone(), None)
    _expect_tensor(got, "scaled_dot_product_attention(q, k, v, None)")
    expect_shape(got, (batch, heads, seq_q, head_dim), "scaled_dot_product_attention(q, k, v, None)")
    # Dot products of head_dim <= 32 terms, a softmax over <= 12 keys, a weighted sum: ~1e-6 in float32.
    expect_close(got, expected, f"attention of {seq_q} queries over {seq_k} keys, head_dim={head_dim} "
                 "(scale by 1/sqrt(head_dim); softmax over the keys, the last dimension)", atol=1e-5, rtol=1e-4)


@pytest.mark.graded(points=2, objective="ARCH-3", level="P")
def test_attention_with_causal_mask(student, forbid, grader_seed):
    rng, gen = _rng(grader_seed, 7)
    batch, heads, seq, head_dim = rng.randint(1, 2), rng.randint(2, 4), rng.randint(5, 10), rng.choice([8, 16])
    q, k, v = _qkv(gen, batch, heads, seq, seq, head_dim)
    mask = mm.causal_mask(seq, 0, None, "cpu")[0, 0]
    expected = mm.attention(q, k, v, mask)
    sdpa = _load_student_fn(student, forbid, "scaled_dot_product_attention")
    got = sdpa(q.clone(), k.clone(), v.clone(), mask.clone())
    _expect_tensor(got, "scaled_dot_product_attention(q, k, v, causal mask)")
    # As above: short reductions in float32.
    expect_close(got, expected, f"causal attention over {seq} positions, head_dim={head_dim} "
                 "(a hidden key gets score -inf before the softmax)", atol=1e-5, rtol=1e-4)


@pytest.mark.graded(points=1, objective="ARCH-3", level="M")
def test_attention_with_arbitrary_mask(student, forbid, grader_seed):
    rng, gen = _rng(grader_seed, 8)
    heads, seq, head_dim = rng.randint(2, 3), rng.randint(5, 9), 8
    q, k, v = _qkv(gen, 2, heads, seq, seq, head_dim)
    # A random (not causal) mask: the function must use the mask it is given. Every query keeps itself.
    mask = (torch.rand(seq, seq, generator=gen) < 0.5) | torch.eye(seq, dtype=torch.bool)
    expected = mm.attention(q, k, v, mask)
    sdpa = _load_student_fn(student, forbid, "scaled_dot_product_attention")
    got = sdpa(q.clone(), k.clone(), v.clone(), mask.clone())
    _expect_tensor(got, "scaled_dot_product_attention(q, k, v, mask)")
    # As above: short reductions in float32.
    expect_close(got, expected, "attention with a random (non-causal) boolean mask: use the mask you are "
                 "given, True = may attend", atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------
# ARCH-4 Grouped-query attention
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=2, objective="ARCH-4", level="P")
def test_repeat_kv_groups_heads(student, forbid, grader_seed):
    rng, gen = _rng(grader_seed, 9)
    batch, (n_kv, n_rep) = rng.randint(1, 2), _kv_and_rep(rng)
    seq, head_dim = rng.randint(3, 7), rng.choice([8, 16])
    x = torch.randn(batch, n_kv, seq, head_dim, generator=gen)       # every KV head different
    expected = mm.repeat_kv(x, n_rep)
    repeat_kv = _load_student_fn(student, forbid, "repeat_kv")
    got = repeat_kv(x.clone(), n_rep)
    _expect_tensor(got, "repeat_kv(x, n_rep)")
    expect_shape(got, (batch, n_kv * n_rep, seq, head_dim), f"repeat_kv of {n_kv} KV heads with n_rep={n_rep}")
    order = ", ".join(f"kv{h // n_rep}" for h in range(n_kv * n_rep))
    expect_close(got, expected, f"repeat_kv of {n_kv} KV heads with n_rep={n_rep}: the heads must come out "
                 f"grouped as {order}", atol=0, rtol=0)


@pytest.mark.graded(points=1, objective="ARCH-4", level="M")
def test_repeat_kv_single_repeat(student, forbid, grader_seed):
    rng, gen = _rng(grader_seed, 10)
    x = torch.randn(1, rng.randint(2, 4), rng.randint(3, 6), 8, generator=gen)
    repeat_kv = _load_student_fn(student, forbid, "repeat_kv")
    got = repeat_kv(x.clone(), 1)
    _expect_tensor(got, "repeat_kv(x, 1)")
    expect_close(got, x, "repeat_kv(x, 1) (one query head per KV head: nothing to repeat)", atol=0, rtol=0)


# ------------------------------------------------------------------------------------------
# ARCH-5 SwiGLU MLP
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=2, objective="ARCH-5", level="P")
def test_swiglu_mlp_matches_minillm(student, forbid, grader_seed):
    rng, gen = _rng(grader_seed, 11)
    hidden, inter = rng.choice([16, 24, 32]), rng.choice([40, 56, 72])   # never square: W vs W.T shows
    config = _random_config(rng, hidden_size=hidden, intermediate_size=inter)
    mlp = mm.MLP(config)
    _randomize(mlp, gen)
    x = torch.randn(2, rng.randint(3, 7), hidden, generator=gen)
    with torch.no_grad():
        expected = mlp(x)
    weights = [mlp.gate_proj.weight.detach().clone(), mlp.up_proj.weight.detach().clone(),
               mlp.down_proj.weight.detach().clone()]
    swiglu_mlp = _load_student_fn(student, forbid, "swiglu_mlp")
    got = swiglu_mlp(x.clone(), *weights)
    _expect_tensor(got, "swiglu_mlp(x, gate_w, up_w, down_w)")
    expect_shape(got, x.shape, "swiglu_mlp(x, gate_w, up_w, down_w)")
    # Three matmuls of <= 72 terms in float32: ~1e-6 relative.
    expect_close(got, expected, f"swiglu_mlp with hidden={hidden}, intermediate={inter} "
                 "(down(silu(gate(x)) * up(x)), a weight is (out, in))", atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------
# ARCH-6 Decoder block
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=3, objective="ARCH-6", level="M")
@pytest.mark.timeout_s(30)
def test_decoder_block_matches_minillm(student, forbid, grader_seed):
    rng, gen = _rng(grader_seed, 12)
    config = _random_config(rng)
    layer = rng.randint(0, 3)
    block = mm.DecoderBlock(config, layer)
    _randomize(block, gen)
    decoy = mm.DecoderBlock(config, layer + 1)                          # the next layer: must not be used
    _randomize(decoy, gen)
    weights = {f"model.layers.{layer}.{n}": p.detach().clone() for n, p in block.named_parameters()}
    weights.update({f"model.layers.{layer + 1}.{n}": p.detach().clone() for n, p in decoy.named_parameters()})

    batch, seq = 2, rng.randint(5, 12)
    x = torch.randn(batch, seq, config.hidden_size, generator=gen)
    positions = torch.arange(seq).expand(batch, seq)
    cos, sin = mm.RotaryEmbedding(config.head_dim, config.rope_theta)(positions, torch.float32)
    with torch.no_grad():
        expected = block(x, cos, sin, mm.causal_mask(seq, 0, None, "cpu"), None)

    decoder_block = _load_student_fn(student, forbid, "decoder_block")
    got = decoder_block(x.clone(), weights, layer, config)
    _expect_tensor(got, "decoder_block(x, weights, layer, config)")
    expect_shape(got, x.shape, "decoder_block(x, weights, layer, config)")
    shape = (f"layer {layer}, hidden={config.hidden_size}, {config.num_attention_heads} query heads, "
             f"{config.num_key_value_heads} KV heads, head_dim={config.head_dim}")
    # About ten float32 reductions of <= 72 terms chained: agreement to ~1e-6 relative, 1e-4 is safe.
    expect_close(got, expected, f"decoder_block ({shape}, q/k/v biases)", atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------
# ARCH-7 Full forward pass
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=3, objective="ARCH-7", level="M")
@pytest.mark.timeout_s(30)
def test_forward_matches_minillm_on_tiny_model(student, forbid, grader_seed):
    rng, gen = _rng(grader_seed, 13)
    # Its own random Qwen2 model rather than the shared tiny one (4 query heads over 2 KV heads, theta
    # 10000): here the heads per KV head differ from the KV heads, and rope_theta is drawn, on every seed.
    config = _random_config(rng)
    model = mm.Transformer(config).eval()
    _randomize(model, gen)
    batch, seq = 2, rng.randint(6, 16)
    ids = torch.randint(0, config.vocab_size, (batch, seq), generator=gen)
    with torch.no_grad():
        expected = model(ids)
    weights = _hf_weights(model)
    forward = _load_student_fn(student, forbid, "forward")
    got = forward(weights, config, ids.clone())
    _expect_tensor(got, "forward(weights, config, input_ids)")
    expect_shape(got, (batch, seq, config.vocab_size), "forward(weights, config, input_ids)")
    # A float32 forward pass of <= 3 layers, logits of size ~10: reductions of <= 72 terms, ~1e-6 relative each.
    expect_close(got, expected, f"the logits of a random Qwen2 model ({config.num_hidden_layers} layers, "
                 f"{config.num_attention_heads} query heads, {config.num_key_value_heads} KV heads, "
                 f"rope_theta={config.rope_theta:g})", atol=1e-4, rtol=1e-4)


@pytest.mark.graded(points=2, objective="ARCH-7", level="E")
@pytest.mark.timeout_s(30)
def test_forward_tied_llama_from_config_dict(student, forbid, grader_seed):
    rng, gen = _rng(grader_seed, 14)
    config = _random_config(rng, model_type="llama", attention_bias=False, tie_word_embeddings=True)
    model = mm.Transformer(config).eval()
    _randomize(model, gen)
    weights = _hf_weights(model)                                         # no "lm_head.weight": tied
    # The config as a config.json dict, the way a checkpoint ships it.
    raw = {
        "model_type": "llama", "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size, "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads, "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim, "rope_theta": config.rope_theta, "rms_norm_eps": config.rms_norm_eps,
        "max_position_embeddings": config.max_position_embeddings, "tie_word_embeddings": True,
        "attention_bias": False, "hidden_act": "silu",
    }
    ids = torch.randint(0, config.vocab_size, (2, rng.randint(5, 12)), generator=gen)
    with torch.no_grad():
        expected = model(ids)
    forward = _load_student_fn(student, forbid, "forward")
    got = forward(weights, raw, ids.clone())
    _expect_tensor(got, "forward(weights, config_json_dict, input_ids)")
    expect_shape(got, tuple(expected.shape), "forward(weights, config_json_dict, input_ids)")
    # As above, with up to 3 layers.
    expect_close(got, expected, f"the logits of a {config.num_hidden_layers}-layer Llama-style model with a TIED "
                 "head (no lm_head.weight in the dict: the embedding matrix is the head) and no biases",
                 atol=1e-4, rtol=1e-4)


@pytest.mark.graded(points=1, objective="ARCH-7", level="E")
def test_forward_is_causal(student, forbid, grader_seed, tiny_model, tiny_model_config):
    rng, gen = _rng(grader_seed, 15)
    seq = rng.randint(6, 12)
    cut = rng.randint(2, seq - 2)
    ids = torch.randint(0, tiny_model_config.vocab_size, (1, seq), generator=gen)
    changed = ids.clone()
    changed[0, cut:] = (changed[0, cut:] + 1 + torch.randint(0, 50, (seq - cut,), generator=gen)) % tiny_model_config.vocab_size
    weights = _hf_weights(tiny_model)
    with torch.no_grad():
        expected = tiny_model(ids)                                   # minillm, before its code is blocked
    forward = _load_student_fn(student, forbid, "forward")
    first, second = forward(weights, tiny_model_config, ids), forward(weights, tiny_model_config, changed)
    _expect_tensor(first, "forward(weights, config, input_ids)")
    # A whole forward pass against minillm, as in the tests above.
    expect_close(first[0, :cut], expected[0, :cut], "forward(weights, config, input_ids): the logits of the "
                 f"first {cut} positions", atol=1e-4, rtol=1e-4)
    # The same computation twice on identical prefixes: only summation-order noise may differ.
    expect_close(second[0, :cut], first[0, :cut],
                 f"the logits of positions 0..{cut - 1} after changing only the tokens from position {cut} on "
                 "(a token must not see the future: apply the causal mask in every layer)", atol=1e-5, rtol=1e-5)
