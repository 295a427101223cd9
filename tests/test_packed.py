"""The fast path (oneDNN-packed linear layers, fused attention) computes what the plain model computes.

float32: packed products sum in another order, so logits move by float32 rounding (see
test_model_parity: ~2e-5 on logits of magnitude ~40); 5e-5 allowed. bfloat16: argmax
equal at >= 99% of positions to transformers with the same fused attention kernel ("sdpa");
bfloat16 rounds differently in the fused and the explicit softmax, and on these random
101-token models near-ties flip ~1.5% of argmaxes between the two.
"""

from __future__ import annotations

import pytest
import torch

import minillm
from minillm.packed import PackedLinear, can_pack, fused_attention
from checkpoints import VOCAB, load_reference, make_checkpoint

pytestmark = pytest.mark.skipif(not can_pack(torch.float32), reason="this PyTorch build cannot pack weights (no oneDNN)")


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def checkpoint(request, tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("packed"), "qwen2", seed=11, tied=request.param, layers=3)


def _ids(batch, seq):
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seq))


def test_every_linear_is_packed_but_a_tied_head(checkpoint):
    model = minillm.load_model(checkpoint, packed=True)
    assert all(block.self_attn.attend is fused_attention for block in model.layers)
    packed = [m for m in model.modules() if isinstance(m, PackedLinear)]
    tied = model.config.tie_word_embeddings
    assert len(packed) == 7 * model.config.num_hidden_layers + (0 if tied else 1)
    if tied:
        assert model.lm_head.weight is model.embed_tokens.weight


def test_float32_logits_match_transformers(checkpoint):
    model, ref = minillm.load_model(checkpoint, packed=True), load_reference(checkpoint)
    for ids in (_ids(1, 1), _ids(3, 17)):
        with torch.no_grad():
            expected = ref(ids).logits
        assert (model(ids) - expected).abs().max().item() <= 5e-5


def test_bfloat16_argmax_matches_transformers(checkpoint):
    model = minillm.load_model(checkpoint, dtype=torch.bfloat16, packed=True)
    ref = load_reference(checkpoint, torch.bfloat16, attention="sdpa")
    ids = _ids(4, 50)
    with torch.no_grad():
        expected = ref(ids).logits
    assert (model(ids).argmax(-1) == expected.argmax(-1)).float().mean().item() >= 0.99


def test_greedy_generation_matches_transformers(checkpoint):
    model, ref = minillm.load_model(checkpoint, packed=True), load_reference(checkpoint)
    prompt = _ids(1, 6)
    with torch.no_grad():
        expected = ref.generate(prompt, max_new_tokens=20, do_sample=False, eos_token_id=None,
                                pad_token_id=0)[0, 6:].tolist()
    assert minillm.generate(model, prompt[0].tolist(), max_new_tokens=20) == expected


def test_fused_attention_equals_the_explicit_one_with_causal_and_padding_masks():
    from minillm.model import attention, causal_mask

    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 4, 9, 16, generator=gen) for _ in range(3))
    padding = torch.tensor([[1] * 9, [0, 0, 0] + [1] * 6])          # the second row left-padded
    for mask in (causal_mask(9, 0, None, "cpu"), causal_mask(9, 0, padding, "cpu")):
        # One float32 softmax over 9 keys, summed in another order: rounding only.
        assert (fused_attention(q, k, v, mask) - attention(q, k, v, mask)).abs().max().item() <= 1e-6
