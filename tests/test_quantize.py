"""Simulated k-bit quantization: exact values, level counts, model copies, sizes, and the
damage measured on the real stories260K model.

Expected values come from hand arithmetic or from a plain numpy loop over blocks
(``reference_quantize``), never from the functions under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import minillm
from minillm.models.packed import can_pack
from minillm.inference.quantize import model_size_bytes, quantization_error, quantize_model, quantize_tensor, size_table
from checkpoints import make_checkpoint

SCHEMES = ("tensor", "channel", "group")


def blocks(shape: tuple[int, int], scheme: str, group_size: int) -> list[tuple]:
    """Index of every block of a (rows, cols) matrix, the way the scheme is defined."""
    rows, cols = shape
    if scheme == "tensor":
        return [(slice(None), slice(None))]
    if scheme == "channel":
        return [(i, slice(None)) for i in range(rows)]
    return [(i, slice(j, j + group_size)) for i in range(rows) for j in range(0, cols, group_size)]


def reference_quantize(w: np.ndarray, bits: int, scheme: str, group_size: int = 64) -> np.ndarray:
    """Uniform min-max quantization, one block at a time, in float64."""
    levels = 2**bits - 1
    out = w.astype(np.float64).copy()
    for idx in blocks(w.shape, scheme, group_size):
        block = out[idx]
        lo, hi = block.min(), block.max()
        if hi > lo:
            scale = (hi - lo) / levels
            out[idx] = np.clip(np.round((block - lo) / scale), 0, levels) * scale + lo
    return out


# --- quantize_tensor -----------------------------------------------------------------------

# Two rows of six, chosen so that no value falls exactly halfway between two levels.
HAND = torch.tensor([[-1.0, -0.2, 2.0, 0.0, 0.25, 0.9],
                     [0.0, 0.4, 0.6, 1.0, 1.7, 4.0]])


@pytest.mark.parametrize("scheme, group_size, expected", [
    # tensor: lo=-1, hi=4, step 5/3 -> levels -1, 2/3, 7/3, 4; code = round((w + 1) * 0.6),
    # e.g. 2.0 -> 1.8 -> 2 -> 7/3, 0.9 -> 1.14 -> 1 -> 2/3, 1.7 -> 1.62 -> 2 -> 7/3.
    ("tensor", 64, [[-1, -1, 7 / 3, 2 / 3, 2 / 3, 2 / 3],
                    [2 / 3, 2 / 3, 2 / 3, 2 / 3, 7 / 3, 4]]),
    # channel: row 0 lo=-1, hi=2, step 1 (0.9 -> 1.9 -> 2 -> 1); row 1 lo=0, hi=4, step 4/3
    # (0.6 -> 0.45 -> 0 -> 0, 1.7 -> 1.275 -> 1 -> 4/3).
    ("channel", 64, [[-1, 0, 2, 0, 0, 1],
                     [0, 0, 0, 4 / 3, 4 / 3, 4]]),
    # groups of 3: [-1, -0.2, 2] step 1; [0, 0.25, 0.9] step 0.3 (0.25 -> 0.83 -> 1 -> 0.3);
    # [0, 0.4, 0.6] step 0.2 (exact); [1, 1.7, 4] step 1 (1.7 -> 0.7 -> 1 -> 2).
    ("group", 3, [[-1, 0, 2, 0, 0.3, 0.9],
                  [0, 0.4, 0.6, 1, 2, 4]]),
    # groups of 4 over 6 columns: the last group of each row is the ragged [4:6], two values,
    # both kept exactly. [-1, -0.2, 2, 0] step 1; [0, 0.4, 0.6, 1] step 1/3 (0.4 -> 1.2 -> 1,
    # 0.6 -> 1.8 -> 2).
    ("group", 4, [[-1, 0, 2, 0, 0.25, 0.9],
                  [0, 1 / 3, 2 / 3, 1, 1.7, 4]]),
])
def test_two_bits_by_hand(scheme, group_size, expected):
    got = quantize_tensor(HAND, 2, scheme, group_size)
    assert got.dtype == HAND.dtype and got.shape == HAND.shape
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float32), atol=1e-6, rtol=0)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bits", [1, 3, 5, 8])
def test_matches_a_numpy_loop_over_blocks(scheme, bits):
    w = torch.randn(12, 100, generator=torch.Generator().manual_seed(bits))  # 100 = 3 groups of 32 + 4
    expected = reference_quantize(w.numpy(), bits, scheme, group_size=32)
    got = quantize_tensor(w, bits, scheme, group_size=32)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_width_up_to_31_bits_finds_the_nearest_level(scheme):
    """Wide codes too (24 bits: the seed's table): the float64 loop's levels, rounded once to float32.
    (Found in float32, some weights move by more than half a step from 14 bits on, 1.4 steps at 24.)"""
    w = torch.randn(12, 100, generator=torch.Generator().manual_seed(3))
    for bits in range(1, 32):
        got = quantize_tensor(w, bits, scheme, group_size=32).numpy()
        expected = reference_quantize(w.numpy(), bits, scheme, group_size=32).astype(np.float32)
        np.testing.assert_array_equal(got, expected, err_msg=f"{bits} bits")
        for idx in blocks(w.shape, scheme, 32):         # each weight moves by at most half its block's step,
            block = w.numpy()[idx].astype(np.float64)    # plus half a float32 unit for the cast back
            step = (block.max() - block.min()) / (2**bits - 1)
            moved = np.abs(got[idx] - block)
            assert (moved <= step / 2 + np.spacing(np.abs(block).astype(np.float32)) / 2).all(), f"{bits} bits"


def test_the_seeds_bit_table_runs_from_the_command_line(tmp_path, capsys):
    """`minillm quantize --bits 32 24 16 8 4 2 1` (24 was refused by the argument check): one row each,
    24 bits as good as 32 on a trained model, the sizes as model_size_bytes counts them."""
    from minillm.cli import main
    from minillm.course.family import FAMILY_DIR

    bits = [32, 24, 16, 8, 4, 2, 1]
    argv = ["quantize", str(FAMILY_DIR / "tiny-s"), "--bits", *map(str, bits), "--schemes", "tensor",
            "--stories", "1", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["bits", "scheme"]) + 1
    rows = {int(r.split()[0]): r.split() for r in lines[start:start + len(bits)]}
    assert sorted(rows) == sorted(bits)
    model = minillm.load_model(FAMILY_DIR / "tiny-s")
    for b in bits:
        assert float(rows[b][2]) == pytest.approx(model_size_bytes(model, b) / 1e6, abs=0.005)   # printed x.xx MB
    assert float(rows[24][3]) == pytest.approx(float(rows[32][3]), rel=1e-4)   # 24-bit steps: below float32's noise
    assert float(rows[1][3]) > 2 * float(rows[32][3])


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6])
def test_at_most_two_to_the_bits_values_per_block(scheme, bits):
    w = torch.randn(8, 256, generator=torch.Generator().manual_seed(0)) * 3
    got = quantize_tensor(w, bits, scheme, group_size=64).numpy()
    counts = [len(np.unique(got[idx])) for idx in blocks(got.shape, scheme, 64)]
    assert max(counts) <= 2**bits
    if scheme == "tensor" and bits <= 4:  # 2048 Gaussian values fill every one of 16 levels
        assert counts == [2**bits]


def test_constant_blocks_are_kept_as_they_are():
    w = torch.tensor([[0.7, 0.7, 0.7, 0.7], [0.0, 0.0, 5.0, 5.0]])
    torch.testing.assert_close(quantize_tensor(w, 2, "channel"), w, atol=0, rtol=0)
    torch.testing.assert_close(quantize_tensor(w, 1, "group", group_size=2), w, atol=0, rtol=0)
    assert torch.equal(quantize_tensor(torch.full((3, 5), -2.5), 3, "tensor"), torch.full((3, 5), -2.5))


def test_keeps_the_dtype_and_32_bits_is_the_tensor_itself():
    w = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    assert quantize_tensor(w, 32) is w
    assert quantize_tensor(w.bfloat16(), 4, "group").dtype == torch.bfloat16
    assert quantize_tensor(w.reshape(2, 2, 64), 3).shape == (2, 2, 64)  # "tensor" takes any shape


@pytest.mark.parametrize("scheme", SCHEMES)
def test_error_shrinks_as_bits_grow(scheme):
    w = torch.randn(16, 256, generator=torch.Generator().manual_seed(2))
    errors = [quantization_error(w, bits, scheme) for bits in range(1, 11)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    # Each extra bit halves the step; with rounding error uniform in +-step/2 the RMS error
    # is step / sqrt(12). Check it at 8 bits against the hand formula for the tensor range.
    if scheme == "tensor":
        step = (w.max() - w.min()).item() / 255
        assert errors[7] == pytest.approx(step / math.sqrt(12), rel=0.05)
    assert quantization_error(w, 32, scheme) == 0.0


def test_quantization_error_is_the_rms_difference():
    w = torch.randn(6, 50, generator=torch.Generator().manual_seed(3))
    expected = np.sqrt(np.mean((w.numpy() - reference_quantize(w.numpy(), 3, "group", 16)) ** 2))
    assert quantization_error(w, 3, "group", 16) == pytest.approx(expected, rel=1e-5)


def test_per_channel_and_group_lose_less_on_rows_of_different_scales():
    gen = torch.Generator().manual_seed(4)
    scales = torch.logspace(-3, 1, 8)                       # row i has std scales[i]: 0.001 .. 10
    w = torch.randn(8, 256, generator=gen) * scales[:, None]
    tensor, channel, group = (quantization_error(w, 4, s, 32) for s in SCHEMES)
    assert group < channel < tensor, (tensor, channel, group)

    def row_error(scheme: str) -> torch.Tensor:  # RMS error of each row, in units of its std
        return (w - quantize_tensor(w, 4, scheme, 32)).pow(2).mean(1).sqrt() / scales

    # With its own range (~5.5 std for 256 Gaussian values) a row's 4-bit step is ~0.37 std
    # and its RMS error ~0.37 / sqrt(12) = 0.11 std (measured 0.085-0.12; groups 0.07-0.08).
    assert row_error("channel").max() < 0.15 and row_error("group").max() < 0.15
    # Per tensor the step is set by the largest row (~3.7): the smallest row lies inside a
    # single step and is replaced by the level nearest it, its error far beyond its own size.
    assert row_error("tensor")[0] > 1
    assert len(torch.unique(quantize_tensor(w, 4, "tensor")[0])) == 1


# --- quantize_model ------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["qwen2-untied", "llama-tied"])
def tiny(request, tmp_path_factory):
    kind, tying = request.param.split("-")
    folder = make_checkpoint(tmp_path_factory.mktemp(request.param), kind, seed=5, tied=tying == "tied")
    return minillm.load_model(folder)


def test_32_bits_is_the_identity(tiny):
    ids = torch.arange(1, 30)[None]
    copy = quantize_model(tiny, 32)
    assert copy is not tiny
    assert torch.equal(copy(ids), tiny(ids))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_quantize_model_changes_a_copy_of_the_matrices_only(tiny, scheme):
    before = {name: p.clone() for name, p in tiny.named_parameters()}
    q = quantize_model(tiny, 3, scheme, group_size=16)
    tied = tiny.config.tie_word_embeddings
    assert (tiny.lm_head.weight is tiny.embed_tokens.weight) == tied
    assert (q.lm_head.weight is q.embed_tokens.weight) == tied
    assert q.embed_tokens.weight is not tiny.embed_tokens.weight

    for name, p in tiny.named_parameters():
        assert torch.equal(p, before[name]), f"{name} of the original was modified"
    params = dict(q.named_parameters())
    assert params.keys() == before.keys()
    assert any(p.dim() == 1 and "bias" in name for name, p in params.items()) == (tiny.config.model_type == "qwen2")
    for name, p in params.items():
        if p.dim() == 1:  # norm gains and biases stay in full precision
            assert torch.equal(p, before[name]), name
        else:
            assert not torch.equal(p, before[name]), name
            expected = reference_quantize(before[name].numpy(), 3, scheme, group_size=16)
            np.testing.assert_allclose(p.detach().numpy(), expected, rtol=0, atol=1e-5, err_msg=name)


def test_quantized_model_still_runs(tiny):
    ids = torch.arange(1, 30)[None]
    reference = tiny(ids)
    drift = {bits: (quantize_model(tiny, bits, "channel")(ids) - reference).abs().mean().item() for bits in (2, 4, 8)}
    assert drift[8] < drift[4] < drift[2], drift


# --- the real model: next-token cross-entropy ------------------------------------------------

@pytest.fixture(scope="module")
def stories(shared_data):
    return shared_data / "stories260K"


@pytest.fixture(scope="module")
def story_nll(shared_data, stories):
    """Mean next-token cross-entropy (nats/token) of a model on 6 TinyStories paragraphs (~790 tokens)."""
    tok = minillm.load_tokenizer(stories)
    paragraphs = (shared_data / "text" / "tinystories_validation_head.txt").read_text().split("\n\n")
    texts = [torch.tensor([tok.encode(p)]) for p in paragraphs[:6]]

    @torch.no_grad()
    def nll(model) -> float:
        total, count = 0.0, 0
        for ids in texts:
            logprobs = torch.log_softmax(model(ids)[0, :-1].float(), dim=-1)  # predicts ids[1:]
            total -= logprobs.gather(1, ids[0, 1:, None]).sum().item()
            count += ids.shape[1] - 1
        return total / count

    return nll


@pytest.fixture(scope="module")
def real_model(stories):
    return minillm.load_model(stories)


def test_8_bits_barely_matter_and_2_bits_ruin_the_model(real_model, story_nll):
    # Measured (nats/token): full precision 1.465; 8 bits channel 1.464 (-0.1%), tensor 1.461,
    # group 1.463; 2 bits tensor 15.29 (10.4x), worse than a uniform guess over 512 tokens (6.24).
    # 8-bit steps are 1/255 of a row's range, far below what the model notices: the 2% margin
    # is 20x the measured change yet fails if the weights were rounded to 4 bits (+11% per
    # channel, +131% per tensor). 2 bits must at least triple the loss (measured 10x; even
    # 4 bits per tensor gives 2.3x), which a no-op or mis-scaled quantizer would not.
    full = story_nll(real_model)
    assert 1.3 < full < 1.7  # the model is the trained one, text and shift are right
    assert story_nll(quantize_model(real_model, 8, "channel")) == pytest.approx(full, rel=0.02)
    assert story_nll(quantize_model(real_model, 2, "tensor")) > 3 * full


def test_finer_blocks_lose_less_on_the_real_model(real_model, story_nll):
    # Measured at 3 bits (nats/token): tensor 7.73, channel 2.51, group-16 1.96 (full 1.465).
    # The gaps are 3x and 28%; the margins (1.5x, 10%) leave room for other text lengths.
    tensor, channel, group = (story_nll(quantize_model(real_model, 3, s, group_size=16)) for s in SCHEMES)
    assert tensor > 1.5 * channel and channel > 1.1 * group, (tensor, channel, group)


# --- sizes ---------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def small(request, tmp_path_factory):
    """Llama, hidden 8 (2 heads x 4), 1 kv head, intermediate 24, 1 layer, vocab 10, no biases."""
    folder = make_checkpoint(tmp_path_factory.mktemp("small"), "llama", seed=6, heads=2, kv_heads=1,
                             head_dim=4, layers=1, vocab=10, tied=request.param)
    return minillm.load_model(folder)


def test_model_size_by_hand(small):
    # Matrices (rows x cols): q 8x8, k 4x8, v 4x8, o 8x8, gate 24x8, up 24x8, down 8x24,
    # embed 10x8, and lm_head 10x8 unless tied. 1-D: 3 RMSNorm gains of 8.
    # Untied: 928 matrix entries in 9 matrices, 100 rows; groups of 16: 1 per row of 8
    #   columns, 2 per row of 24 (16 + a ragged 8): 92 + 8 * 2 = 108 groups.
    # Tied: lm_head counted once -> 848 entries, 8 matrices, 90 rows, 98 groups.
    # 4 bits = 4 * entries + 32 * blocks + 16 * 24 bits; 32 bits = 32 * (entries + 24).
    if small.config.tie_word_embeddings:
        expected = {"tensor": (4 * 848 + 32 * 8 + 384) // 8,     # 504
                    "channel": (4 * 848 + 32 * 90 + 384) // 8,   # 832
                    "group": (4 * 848 + 32 * 98 + 384) // 8,     # 864
                    1: (1 * 848 + 32 * 8 + 384) // 8,            # 186
                    32: 32 * (848 + 24) // 8}                    # 3488
    else:
        expected = {"tensor": (4 * 928 + 32 * 9 + 384) // 8,     # 548
                    "channel": (4 * 928 + 32 * 100 + 384) // 8,  # 912
                    "group": (4 * 928 + 32 * 108 + 384) // 8,    # 944
                    1: (1 * 928 + 32 * 9 + 384) // 8,            # 200
                    32: 32 * (928 + 24) // 8}                    # 3808
    for scheme in SCHEMES:
        assert model_size_bytes(small, 4, scheme, group_size=16) == expected[scheme], scheme
    assert model_size_bytes(small, 1) == expected[1]
    assert model_size_bytes(small, 32) == expected[32]


def test_size_table_of_the_real_model(real_model):
    rows = size_table(real_model)
    assert [r["bits"] for r in rows] == [32, 16, 8, 6, 4, 3, 2, 1]
    assert all(r["scheme"] == "tensor" for r in rows)
    # 260,032 float32 parameters (tied embedding counted once) = 1.040128 MB.
    assert rows[0] == {"bits": 32, "scheme": "tensor", "size_mb": 1.040128, "ratio_vs_32": 1.0}
    ratios = {r["bits"]: r["ratio_vs_32"] for r in rows}
    assert all(a > b for a, b in zip(ratios.values(), list(ratios.values())[1:]))
    # 8 bits is a quarter of 32 plus the overhead: the 704 norm gains at 16 bits instead of 8,
    # and one 32-bit (lo, scale) pair per matrix (36: embedding + 7 per layer x 5) or per row
    # (3,512: 512 + 5 x (64 + 32 + 32 + 64 + 172 + 172 + 64)). 259,328 matrix entries.
    assert ratios[8] == pytest.approx((8 * 259328 + 32 * 36 + 16 * 704) / (32 * 260032), rel=1e-12)  # 0.2508
    [per_row] = size_table(real_model, (8,), "channel")
    assert per_row["ratio_vs_32"] == pytest.approx((8 * 259328 + 32 * 3512 + 16 * 704) / (32 * 260032), rel=1e-12)  # 0.2642


# --- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [0, 33, -4, 2.5, True])
def test_bad_bits_are_refused(bits, small):
    w = torch.ones(4, 4)
    for call in (lambda: quantize_tensor(w, bits), lambda: quantize_model(small, bits),
                 lambda: model_size_bytes(small, bits)):
        with pytest.raises(ValueError, match=r"bits must be an integer in 1\.\.32 \(32: full precision"):
            call()


def test_bad_scheme_and_group_size_are_refused(small):
    w = torch.ones(4, 4)
    with pytest.raises(ValueError, match="scheme must be one of 'tensor', 'channel', 'group'; got 'foo'"):
        quantize_tensor(w, 4, "foo")
    with pytest.raises(ValueError, match="scheme must be one of"):
        quantize_model(small, 4, "per-row")
    for size in (0, -8, 1.5):
        with pytest.raises(ValueError, match="group_size must be a positive integer"):
            quantize_tensor(w, 4, "group", group_size=size)
    with pytest.raises(ValueError, match="group_size"):
        model_size_bytes(small, 4, "group", group_size=0)
    with pytest.raises(ValueError, match=r"scheme 'channel' needs a 2-D \(out, in\) weight; got shape \(4,\)"):
        quantize_tensor(torch.ones(4), 4, "channel")


def test_a_packed_model_is_refused(stories):
    if not can_pack(torch.float32):
        pytest.skip("this PyTorch cannot pack weights (no oneDNN), so load_model(packed=True) packs nothing")
    packed = minillm.load_model(stories, packed=True)
    for call in (lambda: quantize_model(packed, 4), lambda: model_size_bytes(packed, 4)):
        with pytest.raises(ValueError, match=r"packed \(load_model\(\.\.\., packed=True\)\).*packed=False"):
            call()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("spread", [1e-36, 1e-40, 1e-44])
def test_a_tiny_but_nonzero_range_quantizes_without_nan(dtype, spread):
    """Ranges near or below float32's smallest normal number (1.2e-38): the float32 step (range / levels)
    underflowed to 0 and the codes were 0/0 = NaN (1e-44 at 4 bits and up; 1e-40 and 1e-36 at 16 bits)."""
    w = (torch.linspace(-0.5, 1.0, 64, dtype=torch.float64) * spread).reshape(4, 16).to(dtype)
    tiniest = 2.0 ** -149            # float32's smallest subnormal: the finest rounding of a result this small
    for bits in (2, 4, 8, 16):
        levels = 2**bits - 1
        for scheme in ("tensor", "channel", "group"):
            out = quantize_tensor(w, bits, scheme, group_size=8)
            assert not out.isnan().any() and out.dtype == dtype
            x, y = w.double(), out.double()
            blocks = {"tensor": [(x.reshape(1, -1), y.reshape(1, -1))], "channel": [(x, y)],
                      "group": [(x[:, :8], y[:, :8]), (x[:, 8:], y[:, 8:])]}[scheme]
            for xb, yb in blocks:
                lo, hi = xb.amin(1, keepdim=True), xb.amax(1, keepdim=True)
                # Within the block's range, at most half a step from the input, and at most 2**bits values per
                # block; give or take the rounding of code * step + lo in float32 (two roundings at the block's
                # largest magnitude, or the smallest subnormal) and of the cast to bfloat16 (8 significant bits).
                eps = 2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -23
                rounding = torch.maximum(lo.abs(), hi.abs()) * eps * 2 + tiniest
                assert ((yb >= lo - rounding) & (yb <= hi + rounding)).all()
                assert ((yb - xb).abs() <= (hi - lo) / levels / 2 * (1 + 1e-6) + rounding).all(), (bits, scheme)
                assert all(len(row.unique()) <= 2**bits for row in yb)
