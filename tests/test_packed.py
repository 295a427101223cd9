"""The fast path (oneDNN-packed linear layers, fused MLP, grouped attention) computes what the
plain model computes.

float32: packed products sum in another order, so logits move by float32 rounding (see
test_model_parity: ~2e-5 on logits of magnitude ~40); 5e-5 allowed. bfloat16: argmax
equal to transformers' at >= 97% of positions, and every disagreement a near-tie: the fused
MLP rounds silu(gate) once where the reference rounds twice, and these random models' logits
(~3 apart at most, untied) hold ties within one bfloat16 step.
"""

from __future__ import annotations

import pytest
import torch

import minillm
from minillm.models.packed import PackedLinear, PackedMLP, can_pack, grouped_attention
from checkpoints import VOCAB, load_reference, make_checkpoint

pytestmark = pytest.mark.skipif(not can_pack(torch.float32), reason="this PyTorch build cannot pack weights (no oneDNN)")


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def checkpoint(request, tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("packed"), "qwen2", seed=11, tied=request.param, layers=3)


def _ids(batch, seq):
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seq))


def test_every_linear_is_packed_but_the_head(checkpoint):
    model = minillm.load_model(checkpoint, packed=True)
    assert all(block.self_attn.attend is grouped_attention for block in model.layers)
    assert all(isinstance(block.mlp, PackedMLP) for block in model.layers)
    packed = [m for m in model.modules() if isinstance(m, PackedLinear)]
    assert len(packed) == 7 * model.config.num_hidden_layers
    assert type(model.lm_head) is torch.nn.Linear
    if model.config.tie_word_embeddings:
        assert model.lm_head.weight is model.embed_tokens.weight


def test_float32_head_is_column_major_with_the_same_values_and_one_copy(checkpoint):
    plain, model = minillm.load_model(checkpoint), minillm.load_model(checkpoint, packed=True)
    head = model.lm_head.weight
    assert head.shape == plain.lm_head.weight.shape and head.stride() == (1, head.shape[0])
    assert torch.equal(head, plain.lm_head.weight)
    assert (model.embed_tokens.weight is head) == bool(model.config.tie_word_embeddings)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())
    bf16 = minillm.load_model(checkpoint, dtype=torch.bfloat16, packed=True)
    assert bf16.lm_head.weight.is_contiguous()   # row-major is bfloat16's faster layout


def test_float32_logits_match_transformers(checkpoint):
    model, ref = minillm.load_model(checkpoint, packed=True), load_reference(checkpoint)
    for ids in (_ids(1, 1), _ids(3, 17)):
        with torch.no_grad():
            expected = ref(ids).logits
        assert (model(ids) - expected).abs().max().item() <= 5e-5


def test_bfloat16_argmax_matches_transformers_but_for_near_ties(checkpoint):
    model = minillm.load_model(checkpoint, dtype=torch.bfloat16, packed=True)
    ref16, ref32 = load_reference(checkpoint, torch.bfloat16), load_reference(checkpoint)
    ids = _ids(4, 50)
    with torch.no_grad():
        expected, exact = ref16(ids).logits.argmax(-1), ref32(ids).logits
    got = model(ids).argmax(-1)
    assert (got == expected).float().mean().item() >= 0.97
    # Every disagreement is a near-tie: in transformers' float32 logits the two tokens are
    # within one bfloat16 step (2^-7 of the largest logit) of each other.
    step = exact.abs().max().item() * 2**-7
    differ = got != expected
    gaps = (exact.gather(-1, expected[..., None]) - exact.gather(-1, got[..., None]))[..., 0]
    assert all(abs(gap) <= step for gap in gaps[differ].tolist()), (gaps[differ].tolist(), step)


def test_greedy_generation_matches_transformers(checkpoint):
    model, ref = minillm.load_model(checkpoint, packed=True), load_reference(checkpoint)
    prompt = _ids(1, 6)
    with torch.no_grad():
        expected = ref.generate(prompt, max_new_tokens=20, do_sample=False, eos_token_id=None,
                                pad_token_id=0)[0, 6:].tolist()
    assert minillm.generate(model, prompt[0].tolist(), max_new_tokens=20, eos_token_id=()) == expected


def test_grouped_attention_equals_the_explicit_one_with_causal_and_padding_masks():
    from minillm.models.qwen2 import attention, causal_mask

    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 6, 9, 16, generator=gen)                        # 6 query heads
    k, v = (torch.randn(2, 2, 9, 16, generator=gen) for _ in range(2))  # 2 key/value heads: groups of 3
    padding = torch.tensor([[1] * 9, [0, 0, 0] + [1] * 6])          # the second row left-padded
    for mask in (None, causal_mask(9, 0, None, "cpu"), causal_mask(9, 0, padding, "cpu")):
        # The same products and float32 softmax, batched differently: rounding only.
        assert (grouped_attention(q, k, v, mask) - attention(q, k, v, mask)).abs().max().item() <= 1e-6
    # Decoding: one new query against 9 cached keys, no mask.
    assert (grouped_attention(q[:, :, -1:], k, v, None) - attention(q[:, :, -1:], k, v, None)).abs().max() <= 1e-6
