"""Autograder, unit 3 (quantization): sizes, uniform min-max quantization, perplexity vs bits.

Every value is compared with minillm's own implementation (``minillm.inference.quantize`` with
``scheme="tensor"``, ``minillm.inference.scoring``), never with solutions/. Tensors, bit widths and
texts are drawn fresh from ``grader_seed``. Perplexities are measured on the trained tiny-s
(``trained_model``) and stories it never saw, so a student reads a real model's numbers (about
100 unquantized, a few hundred at 2 bits). While the student's code runs, minillm's
quantization and scoring functions raise: the exercise is to write them.

Rounding ties: a value whose code ``(w - lo) / scale`` lies within 1e-3 of ``k + 0.5`` may
round either way when the student writes the same formula in another order (float32
rounding), so there, and only there, a difference of exactly one step is accepted.
"""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch
from apart import built
from grading import GradingError, Unchanged, expect_close, expect_float, expect_int, expect_shape

import minillm.inference.quantize as mq
import minillm.inference.scoring as ms
from minillm.models.config import ModelConfig
from minillm.models.qwen2 import Transformer

pytestmark = pytest.mark.quantization

OBJECTIVES = {
    "QUANT-1": "Computes a model's storage size in bytes at a given bit width (bits vs bytes)",
    "QUANT-2": "Quantizes a tensor with uniform min-max levels and one (zero point, scale) per tensor",
    "QUANT-3": "Quantizes a copy of a whole model (2-D weights only) and leaves the original untouched",
    "QUANT-4": "Measures corpus perplexity (pooled NLL) of quantized copies against the number of bits",
    "QUANT-5": "Counts what a real k-bit file stores: codes, per-tensor (lo, scale) pairs, 16-bit vectors",
}


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------

_REF_QUANTIZE_TENSOR = mq.quantize_tensor   # kept before a test blocks minillm's functions

def _load_student_fn(student, forbid, name: str):
    """The student's function, imported after minillm's answers are forbidden.

    Call this AFTER computing the reference (the reference uses them)."""
    forbid(*(f"minillm.inference.quantize.{name}" for name in
             ("quantize_tensor", "quantize_model", "model_size_bytes", "quantization_error", "size_table")))
    forbid(*(f"{module}.{name}" for module in ("minillm.inference.scoring", "minillm")
             for name in ("score", "score_many", "perplexity")))
    forbid("minillm.experiments.quantization.perplexity_vs_bits")
    return student.function("quantization", name)


def _rng(grader_seed: int, salt: int) -> tuple[random.Random, torch.Generator]:
    """Independent random streams per test, all fixed by the grader seed."""
    return random.Random(grader_seed * 1013 + salt), torch.Generator().manual_seed(grader_seed * 1013 + salt)


def _expect_integer(got, what: str) -> int:
    """A whole number of bytes, as a Python int (the contract's type: ``math.ceil`` returns one)."""
    if isinstance(got, float) and math.isfinite(got) and not got.is_integer():
        raise GradingError(f"{what}: expected a whole number of bytes, got {got!r}. A file cannot hold part "
                           "of a byte: round the number of bytes UP (math.ceil).")
    return expect_int(got, what)


def _expect_quantized(got, w: torch.Tensor, bits: int, what: str) -> None:
    """``got`` must equal minillm's per-tensor quantization of ``w``, up to float32 rounding and
    one step at near-ties of the rounding."""
    if not isinstance(got, torch.Tensor):
        raise GradingError(f"{what}: expected a torch.Tensor, got {type(got).__name__}.")
    expect_shape(got, tuple(w.shape), what)
    if got.dtype != w.dtype:
        raise GradingError(f"{what}: the result has dtype {got.dtype} but the input was {w.dtype}; "
                           "return the same dtype (`.to(w.dtype)`).")
    expected = _REF_QUANTIZE_TENSOR(w, bits, "tensor")
    x = w.double()
    lo, hi = x.min(), x.max()
    scale = float((hi - lo) / (2**bits - 1)) if hi > lo else 1.0
    # float32 arithmetic in another order moves a value by a few ulps of max(|lo|, |hi|).
    atol = 1e-6 * max(abs(float(lo)), abs(float(hi)), 1e-30)
    if w.dtype == torch.bfloat16:
        atol = 2**-7 * max(abs(float(lo)), abs(float(hi)))   # one bfloat16 step after the cast
    code = (x - lo) / scale
    near_tie = (code - code.floor() - 0.5).abs() < 1e-3
    diff = (got.detach().double() - expected.double()).abs()
    one_step = near_tie & (diff <= scale * 1.001 + atol)
    expect_close(torch.where(one_step, expected.double(), got.detach().double()), expected, what, atol=atol, rtol=0)


def _away_from_ties(model: torch.nn.Module, bits_list: list[int]) -> torch.nn.Module:
    """A copy of ``model`` whose 2-D weights are nudged (by <= 1% of a step) so that no weight's
    code lies within 1e-3 of a rounding tie at any of ``bits_list``: any correct rounding then
    gives exactly minillm's levels, and the perplexities can be compared tightly."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() != 2:
                continue
            for _ in range(10):
                lo, hi = p.min(), p.max()
                moved = False
                for bits in bits_list:
                    if bits >= 32:
                        continue
                    scale = (hi - lo) / (2**bits - 1)
                    code = (p - lo) / scale
                    near = ((code - code.floor() - 0.5).abs() < 1e-3) & (p > lo) & (p < hi)
                    if near.any():
                        p[near] += 3e-3 * scale
                        moved = True
                if not moved:
                    break
    return model


def _texts(rng: random.Random, stories: list[str], n: int, tokenizer, model) -> list[str]:
    """``n`` stories cut to different lengths, so a pooled mean and a mean of means differ, each within
    ``model``'s context (minillm's scoring cuts a longer text into windows, a single pass does not)."""
    out = []
    for story in rng.sample(stories, n):
        text = story[: rng.randint(80, 320)]
        while len(tokenizer.encode(text)) > model.config.max_position_embeddings:
            text = text[: len(text) * 3 // 4]
        out.append(text)
    return out


# ------------------------------------------------------------------------------------------
# QUANT-1 model_size_bytes
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=2, objective="QUANT-1", level="P")
def test_model_size_bytes(student, forbid, grader_seed, tiny_model):
    rng, _ = _rng(grader_seed, 1)
    n_params = tiny_model.num_parameters()
    expected_full = mq.model_size_bytes(tiny_model, 32)        # minillm: every entry at 32 bits
    cases = [(rng.randint(1_000, 5_000_000), bits) for bits in (32, 16, 8, 4, 2)]
    cases.append((rng.randrange(1, 10_000, 2), 3))              # odd count at 3 bits: not whole bytes
    fn = _load_student_fn(student, forbid, "model_size_bytes")
    got = _expect_integer(fn(n_params, 32), f"model_size_bytes({n_params}, 32)")
    if got != expected_full:
        raise GradingError(f"model_size_bytes({n_params}, 32): expected {expected_full} bytes "
                           f"(4 bytes per float32 parameter), got {got}."
                           + (" That is 8x too many: it counts bits, not bytes." if got == 8 * expected_full else ""))
    for n, bits in cases:
        expected = math.ceil(n * bits / 8)
        got = _expect_integer(fn(n, bits), f"model_size_bytes({n}, {bits})")
        if got != expected:
            hint = " That is 8x too many: it counts bits, not bytes." if got == n * bits else ""
            if got == n * bits // 8 and expected != got:
                hint = " Round UP: a partly used byte still takes a whole byte."
            raise GradingError(f"model_size_bytes({n}, {bits}): expected {expected} bytes, got {got}.{hint}")


# ------------------------------------------------------------------------------------------
# QUANT-2 quantize_tensor
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=4, objective="QUANT-2", level="P")
def test_quantize_tensor_matches_minillm(student, forbid, grader_seed):
    rng, gen = _rng(grader_seed, 2)
    cases = []
    for bits in (8, 4, 3, 2):
        shape = (rng.randint(5, 40), rng.randint(5, 40))
        # Not centred on 0 and not symmetric, so a missing zero point (lo) shows.
        w = 0.3 * torch.randn(shape, generator=gen) + rng.uniform(-0.5, 0.5)
        w[0, 0] += rng.uniform(0.5, 1.0)
        cases.append((w, bits))
    cases.append((torch.randn(rng.randint(30, 90), generator=gen) * 2.0 + 1.0, rng.choice([4, 5, 6])))  # 1-D
    fn = _load_student_fn(student, forbid, "quantize_tensor")
    for w, bits in cases:
        what = f"quantize_tensor(w of shape {tuple(w.shape)}, bits={bits})"
        given = w.clone()
        inputs = Unchanged("the tensor w it was given", given)
        got = fn(given, bits)
        inputs.check(what)
        _expect_quantized(got, w, bits, what)


@pytest.mark.graded(points=2, objective="QUANT-2", level="P")
def test_quantize_tensor_levels(student, forbid, grader_seed):
    """At most 2**bits distinct values, lo and hi kept, every value moved by at most scale / 2."""
    rng, gen = _rng(grader_seed, 3)
    bits = rng.choice([2, 3, 4])
    w = torch.randn(rng.randint(20, 50), rng.randint(20, 50), generator=gen) * 0.5 + 0.2
    lo, hi = float(w.min()), float(w.max())
    scale = (hi - lo) / (2**bits - 1)
    fn = _load_student_fn(student, forbid, "quantize_tensor")
    got = fn(w.clone(), bits)
    what = f"quantize_tensor(w, bits={bits})"
    if not isinstance(got, torch.Tensor):
        raise GradingError(f"{what}: expected a torch.Tensor, got {type(got).__name__}.")
    expect_shape(got, tuple(w.shape), what)
    distinct = torch.unique(got.detach().float()).numel()
    if distinct > 2**bits:
        raise GradingError(f"{what}: {distinct} distinct values, but {bits} bits allow at most {2**bits}.")
    # lo and hi are exactly representable levels (codes 0 and 2**bits - 1): kept to float32 rounding.
    expect_close(got.min(), lo, f"{what}: the smallest value (it is code 0, lo itself)", atol=1e-6 * abs(hi - lo), rtol=1e-6)
    expect_close(got.max(), hi, f"{what}: the largest value (it is code 2**bits - 1, hi)", atol=1e-6 * abs(hi - lo), rtol=1e-6)
    worst = float((got.detach().float() - w).abs().max())
    if worst > scale / 2 * 1.001 + 1e-6:
        raise GradingError(f"{what}: a value moved by {worst:.4g}, more than half a step (scale / 2 = {scale / 2:.4g}). "
                           "Round to the NEAREST level (torch.round), not down (floor) or towards 0.")
    if torch.equal(got, w):
        raise GradingError(f"{what}: the values came back unchanged: nothing was rounded.")


@pytest.mark.graded(points=2, objective="QUANT-2", level="E")
def test_quantize_tensor_edge_cases(student, forbid, grader_seed):
    """A constant tensor, bits=32, 1 bit, and a bfloat16 tensor."""
    rng, gen = _rng(grader_seed, 4)
    const = torch.full((rng.randint(3, 9), rng.randint(3, 9)), rng.uniform(-2, 2))
    w = torch.randn(rng.randint(10, 30), rng.randint(10, 30), generator=gen)
    w16 = (torch.randn(rng.randint(10, 30), rng.randint(10, 30), generator=gen) * 0.1 + 0.05).to(torch.bfloat16)
    fn = _load_student_fn(student, forbid, "quantize_tensor")

    got = fn(const.clone(), 4)
    expect_close(got, const, "quantize_tensor(a constant tensor, 4): hi == lo, so scale would be 0; "
                 "a constant tensor must come back unchanged (no NaN from 0/0)", atol=1e-6, rtol=1e-6)
    got = fn(w.clone(), 32)
    expect_close(got, w, "quantize_tensor(w, 32): 32 bits means 'not quantized'", atol=0, rtol=0)
    got = fn(w.clone(), 1)
    _expect_quantized(got, w, 1, "quantize_tensor(w, bits=1): two levels, lo and hi")
    got = fn(w16.clone(), 4)
    _expect_quantized(got, w16, 4, "quantize_tensor(a bfloat16 w, 4): compute in float32, return bfloat16")


# ------------------------------------------------------------------------------------------
# QUANT-3 quantize_model
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=3, objective="QUANT-3", level="P")
def test_quantize_model_matches_minillm(student, forbid, grader_seed, tiny_model):
    rng, _ = _rng(grader_seed, 5)
    bits = rng.choice([2, 3, 4, 6])
    original = {name: p.detach().clone() for name, p in tiny_model.named_parameters()}
    fn = _load_student_fn(student, forbid, "quantize_model")
    got = fn(tiny_model, bits)
    if not isinstance(got, torch.nn.Module):
        raise GradingError(f"quantize_model(model, {bits}): expected a model (torch.nn.Module), got {type(got).__name__}.")
    got_params = dict(got.named_parameters())
    for name, w in original.items():
        if name not in got_params:
            raise GradingError(f"quantize_model(model, {bits}): the returned model has no parameter {name!r}.")
        what = f"quantize_model(model, {bits}): parameter {name}"
        if w.dim() == 2:
            _expect_quantized(got_params[name].detach(), w, bits, what + " (2-D: quantized with its own lo and scale)")
        else:
            expect_close(got_params[name], w, what + " (1-D: must stay in full precision)", atol=0, rtol=0)


@pytest.mark.graded(points=3, objective="QUANT-3", level="P")
def test_quantize_model_leaves_original(student, forbid, grader_seed, tiny_model):
    rng, _ = _rng(grader_seed, 6)
    bits = rng.choice([2, 3, 4])
    before = {name: p.detach().clone() for name, p in tiny_model.named_parameters()}
    fn = _load_student_fn(student, forbid, "quantize_model")
    original = Unchanged("the model", tiny_model)    # graded apart: measured where the student's code ran
    got = fn(tiny_model, bits)
    try:
        original.check(f"quantize_model(model, {bits})")
    except GradingError:
        raise GradingError(
            f"quantize_model(model, {bits}) changed the ORIGINAL model's weights. `q = model` is a second name "
            "for the same object, not a copy: make one with copy.deepcopy(model) and quantize the copy.") from None
    if got is tiny_model:
        raise GradingError(f"quantize_model(model, {bits}) returned the model it was given; return a new "
                           "(deep-copied) model.")
    shared = {p.data_ptr() for p in tiny_model.parameters()} & {p.data_ptr() for p in got.parameters()}
    if shared:
        raise GradingError(f"quantize_model(model, {bits}): the returned model shares weight tensors with the "
                           "original, so changing one changes the other. Use copy.deepcopy(model).")
    # bits=32 ("not quantized") is still a copy: the docstring promises an unmodified COPY, and an
    # experiment that quantizes the result further must not reach the original.
    got = fn(tiny_model, 32)
    if got is tiny_model or {p.data_ptr() for p in tiny_model.parameters()} & {p.data_ptr() for p in got.parameters()}:
        raise GradingError("quantize_model(model, 32) returned the original model (or one sharing its weights); "
                           "at 32 bits return an unmodified COPY (copy.deepcopy(model)).")
    for name, p in got.named_parameters():
        expect_close(p, before[name], f"quantize_model(model, 32): parameter {name} (32 bits: unchanged)",
                     atol=0, rtol=0)


# ------------------------------------------------------------------------------------------
# QUANT-5 quantized_model_size_bytes
# ------------------------------------------------------------------------------------------

def _tied_model(vocab: int) -> Transformer:
    config = ModelConfig(
        model_type="llama", vocab_size=vocab, hidden_size=16, intermediate_size=40, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, rope_theta=10000.0, rms_norm_eps=1e-6,
        max_position_embeddings=64, tie_word_embeddings=True, attention_bias=False)
    return Transformer(config).eval()


def _odd_module(seed: int) -> torch.nn.Module:
    """Any torch.nn.Module will do (the contract): two matrices with an odd number of entries, so that at
    4 bits each ends in half a byte, and the total is rounded up once, at the end, not per tensor."""
    rng = random.Random(seed)

    def odd(lo: int, hi: int) -> int:
        return 2 * rng.randint(lo, hi) + 1

    inner = odd(2, 6)
    return torch.nn.Sequential(torch.nn.Embedding(odd(10, 30), inner), torch.nn.Linear(inner, odd(2, 6)))


@pytest.mark.graded(points=2, objective="QUANT-5", level="M")
def test_quantized_model_size_bytes(student, forbid, grader_seed, tiny_model):
    rng, _ = _rng(grader_seed, 7)
    tied = built(_tied_model, rng.randint(50, 90))
    models = (("the tiny model", tiny_model), ("a model with a tied LM head", tied),
              ("a module with two odd-sized matrices", built(_odd_module, rng.randrange(2**31))))
    bits_list = [32, 16, 8, 4, rng.choice([1, 2, 3, 5, 6, 7])]
    expected = {(name, bits): mq.model_size_bytes(model, bits, "tensor") for name, model in models for bits in bits_list}
    fn = _load_student_fn(student, forbid, "quantized_model_size_bytes")
    for name, model in models:
        for bits in bits_list:
            what = f"quantized_model_size_bytes({name}, {bits})"
            got = _expect_integer(fn(model, bits), what)
            want = expected[(name, bits)]
            if got != want:
                hint = ""
                if got == 8 * want or abs(got - 8 * want) <= 8:
                    hint = " That is about 8x too many: bits, not bytes."
                elif "tied" in name:
                    hint = " A tied LM head is the embedding matrix: count it once (model.parameters() yields it once)."
                elif "odd" in name and got > want:
                    hint = (" Add up the bits of every tensor first and round up to bytes once, at the end: rounding "
                            "each tensor up on its own counts a partly used byte per tensor.")
                elif got < want:
                    hint = (" Too small: 1-D tensors are stored at 16 bits, and each matrix also stores its lo and "
                            "scale (two 16-bit floats).")
                raise GradingError(f"{what}: expected {want} bytes, got {got}.{hint}")


# ------------------------------------------------------------------------------------------
# QUANT-4 perplexity_vs_bits
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=4, objective="QUANT-4", level="M")
@pytest.mark.timeout_s(40)
def test_perplexity_vs_bits(student, forbid, grader_seed, trained_model, trained_tokenizer, held_out_texts):
    rng, _ = _rng(grader_seed, 8)
    texts = _texts(rng, held_out_texts, 3, trained_tokenizer, trained_model)
    bits_list = [32] + rng.sample([8, 6, 5, 4, 3, 2], 3)
    rng.shuffle(bits_list)
    model = built(_away_from_ties, trained_model, bits_list)
    expected = []
    for bits in bits_list:
        scores = ms.score_many(mq.quantize_model(model, bits, "tensor"), trained_tokenizer, texts, top_k=0)
        nll, tokens = sum(s.total_nll for s in scores), sum(s.n_tokens for s in scores)
        expected.append(math.exp(nll / tokens))
    fn = _load_student_fn(student, forbid, "perplexity_vs_bits")
    original = Unchanged("the model", model)   # graded apart: measured where the student's code ran
    got = fn(model, trained_tokenizer, list(texts), list(bits_list))
    what = f"perplexity_vs_bits(model, tokenizer, texts, {bits_list})"
    try:
        original.check(what)
    except GradingError:
        raise GradingError(f"{what} changed the weights of the model it was given, so every bit width after the "
                           "first quantized already-quantized weights. quantize_model must quantize a copy.") from None
    if not isinstance(got, (list, tuple)) or len(got) != len(bits_list):
        raise GradingError(f"{what}: expected a list of {len(bits_list)} (bits, perplexity) tuples, got "
                           f"{type(got).__name__}{' of length ' + str(len(got)) if isinstance(got, (list, tuple)) else ''}.")
    for i, item in enumerate(got):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise GradingError(f"{what}: item {i} should be a (bits, perplexity) tuple, got {item!r}.")
    got_bits = [int(b) for b, _ in got]
    if got_bits != bits_list:
        raise GradingError(f"{what}: the bits should come back in the order given, {bits_list}; got {got_bits}.")
    # Each perplexity went through a forward pass and sums of a few hundred float32 log-probs: 1e-4
    # relative (the model was moved away from rounding ties, so the quantized weights agree exactly).
    expect_close([float(p) for _, p in got], expected,
                 f"{what}: the corpus perplexities exp(total NLL / total scored tokens), in the order of bits_list",
                 atol=0, rtol=1e-4)
    for i, (bits, perplexity) in enumerate(got):                    # the contract: (int, float) tuples
        expect_int(bits, f"{what}: the bits in row {i}")
        expect_float(perplexity, f"{what}: the perplexity in row {i} ({bits} bits)")
