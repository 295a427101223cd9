"""minillm's logits against transformers' on tiny random checkpoints saved by transformers.

Tolerances: float32 logits within 1e-5 absolute (the issue's bound; both sides do the same
float32 operations, so in practice the difference is 0). bfloat16/float16: argmax equal at
>= 99% of positions, since two correct 16-bit implementations may round differently.
A padded row against the same row run alone, or a KV-cache pass against the full pass: the matrix products sum in another
order, so float32 rounding (relative 1.2e-7 per operation, a few layers deep, on logits of
magnitude up to ~40) moves logits by ~2e-5; that comparison allows 5e-5.
"""

from __future__ import annotations

import pytest
import torch

import minillm
from checkpoints import VOCAB, load_reference, make_checkpoint, pad_rows

CONFIGS = {
    # name: (kind, checkpoint options)            GQA ratio = heads / kv_heads
    "qwen2-mha-untied": ("qwen2", dict(heads=4, kv_heads=4, tied=False)),          # 1
    "qwen2-gqa2-tied": ("qwen2", dict(heads=4, kv_heads=2, tied=True)),            # 2
    "qwen2-gqa7-tied": ("qwen2", dict(heads=7, kv_heads=1, tied=True, layers=3)),  # 7
    "qwen2-gqa2-sharded": ("qwen2", dict(heads=4, kv_heads=2, shard=True)),
    "llama-gqa2-nobias": ("llama", dict(heads=4, kv_heads=2, tied=False)),
    "llama-gqa2-bias-tied": ("llama", dict(heads=4, kv_heads=2, tied=True, bias=True)),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def checkpoint(request, tmp_path_factory):
    kind, options = CONFIGS[request.param]
    folder = make_checkpoint(tmp_path_factory.mktemp(request.param), kind, seed=len(request.param), **options)
    return folder


def _ids(batch: int, seq: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seq", [1, 7, 33])
def test_float32_logits_match_transformers(checkpoint, seq):
    ours, ref = minillm.load_model(checkpoint), load_reference(checkpoint)
    ids = _ids(3, seq, seed=seq)
    with torch.no_grad():
        expected = ref(ids).logits
    got = ours(ids)
    assert got.shape == (3, seq, VOCAB)
    assert expected.abs().max() > 1, "random checkpoint too tame to catch mistakes"
    assert (got - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_argmax_matches_transformers(checkpoint, dtype):
    ours, ref = minillm.load_model(checkpoint, dtype=dtype), load_reference(checkpoint, dtype)
    ids = _ids(4, 50, seed=1)
    with torch.no_grad():
        expected = ref(ids).logits
    got = ours(ids)
    assert got.dtype == dtype
    agreement = (got.argmax(-1) == expected.argmax(-1)).float().mean().item()
    assert agreement >= 0.99


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_rows_equal_rows_run_alone(checkpoint, side):
    model = minillm.load_model(checkpoint)
    lengths = [9, 4, 13, 1]
    width = max(lengths)
    rows = [_ids(1, n, seed=10 + n)[0] for n in lengths]
    ids, mask = pad_rows(rows, side, width)
    batched = model(ids, attention_mask=mask)
    assert torch.isfinite(batched).all(), "padding positions must not produce NaN"
    for i, row in enumerate(rows):
        alone = model(row[None])[0]
        real = mask[i].bool()
        assert (batched[i, real] - alone).abs().max().item() <= 5e-5


def test_padded_batch_matches_transformers_with_positions(checkpoint):
    model, ref = minillm.load_model(checkpoint), load_reference(checkpoint)
    ids = _ids(2, 11, seed=3)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # left padding on row 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = ref(ids, attention_mask=mask, position_ids=positions).logits
    got = model(ids, attention_mask=mask)
    real = mask.bool()
    assert (got[real] - expected[real]).abs().max().item() <= 1e-5


def test_kv_cache_logits_equal_full_forward(checkpoint):
    model = minillm.load_model(checkpoint)
    ids = _ids(2, 20, seed=4)
    full = model(ids)
    cache = model.new_cache(batch=2, max_len=20)
    pieces = [model(ids[:, :7], cache=cache)]                 # prompt
    pieces += [model(ids[:, i : i + 1], cache=cache) for i in range(7, 12)]  # one token at a time
    pieces.append(model(ids[:, 12:], cache=cache))            # a chunk after a cache
    assert cache.length == 20
    assert (torch.cat(pieces, dim=1) - full).abs().max().item() <= 5e-5


def test_greedy_generation_matches_transformers_generate(checkpoint):
    model, ref = minillm.load_model(checkpoint), load_reference(checkpoint)
    prompt = _ids(1, 5, seed=5)
    with torch.no_grad():
        expected = ref.generate(prompt, max_new_tokens=25, do_sample=False, eos_token_id=None,
                                pad_token_id=0)[0, 5:].tolist()
    assert minillm.generate(model, prompt[0].tolist(), max_new_tokens=25, eos_token_id=()) == expected


def test_parameter_count_matches_transformers(checkpoint):
    model, ref = minillm.load_model(checkpoint), load_reference(checkpoint)
    assert model.num_parameters() == ref.num_parameters()
    emb = ref.get_input_embeddings().weight.numel()
    assert model.num_parameters(non_embedding=True) == ref.num_parameters() - emb
