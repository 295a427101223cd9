"""Sampling filters at their edges, against transformers' logits processors and exact arithmetic.

transformers applies temperature, then top-k, then top-p (TemperatureLogitsWarper,
TopKLogitsWarper, TopPLogitsWarper); minillm.inference.generate.next_token_distribution does the same.
"""

from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from minillm.inference.generate import TOP_P_TOLERANCE, next_token_distribution, sample_next_token, top_k_filter, top_p_filter

QWEN_VOCAB = 151_936
NEG_INF = float("-inf")


def kept(logits: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(logits)


def exact_nucleus(logits: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference for one row: (kept mask, probability of the tokens strictly more
    likely than each token), in float64 with NumPy; tied logits share one verdict."""
    x = logits.astype(np.float64)
    probs = np.exp(x - x.max())
    probs /= probs.sum()
    values, group = np.unique(-x, return_inverse=True)        # groups of equal logits, most likely first
    group_mass = np.zeros(len(values))
    np.add.at(group_mass, group, probs)
    ahead = np.concatenate([[0.0], np.cumsum(group_mass)[:-1]])[group]
    return ahead < p, ahead


def test_p_one_keeps_every_token():
    # The example: the old filter kept only the argmax here.
    logits = torch.tensor([[0.0, -30.0, -30.0, -30.0]])
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    # Qwen2.5's vocabulary of random logits: transformers drops none (of those with probability > 0).
    big = 3 * torch.randn(2, QWEN_VOCAB, generator=torch.Generator().manual_seed(0))
    assert kept(TopPLogitsWarper(1.0)(None, big.clone())).all()
    assert torch.equal(top_p_filter(big, 1.0), big)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.95])
def test_top_p_on_qwen_sized_random_logits_matches_transformers_and_exact_sums(p):
    gen = torch.Generator().manual_seed(int(p * 100))
    logits = 2 * torch.randn(3, QWEN_VOCAB, generator=gen)
    ours = kept(top_p_filter(logits, p))
    theirs = kept(TopPLogitsWarper(p)(None, logits.clone()))
    for row in range(3):
        want, ahead = exact_nucleus(logits[row].numpy(), p)
        # Exact float64 sums, with the documented tolerance: a token is dropped when the
        # tokens ahead of it reach p - TOP_P_TOLERANCE.
        assert np.array_equal(ours[row].numpy(), ahead < p - TOP_P_TOLERANCE)
        # ...which differs from the exact rule only for tokens within the tolerance of p, and from
        # transformers (float32 sums from the bottom) only there too.
        near = np.abs(ahead - p) < TOP_P_TOLERANCE
        assert np.array_equal(ours[row].numpy()[~near], want[~near])
        assert np.array_equal(ours[row].numpy()[~near], theirs[row].numpy()[~near])
        assert near.sum() <= 2
    assert 1 < ours.sum(-1).min() < QWEN_VOCAB


def test_exact_boundaries_are_not_moved_by_rounding():
    """Distributions with exact rational probabilities and p equal to the sum of the top k of them:
    the nucleus is exactly those k tokens. float32 softmax sums miss this in ~10% of cases (both
    the old filter and transformers did); here none may."""
    rng = random.Random(0)
    cases = 0
    for _ in range(1500):
        denominator, n = rng.choice([10, 20, 100, 1000]), rng.randint(3, 8)
        cuts = sorted(rng.sample(range(1, denominator), n - 1))
        weights = sorted((b - a for a, b in zip([0, *cuts], [*cuts, denominator])), reverse=True)
        if len(set(weights)) < n:
            continue                                            # ties are the next test's subject
        k = rng.randint(1, n - 1)
        p = float(Fraction(sum(weights[:k]), denominator))
        logits = torch.tensor([[w / denominator for w in weights]]).log()
        assert kept(top_p_filter(logits, p)).sum().item() == k, (weights, p)
        cases += 1
    assert cases > 500


def test_ties_are_kept_or_dropped_together():
    # Three tokens of probability 0.2 after one of 0.4: p = 0.5 is reached after the first of the
    # three, whichever it is; all three are kept (the result cannot depend on sort order).
    logits = torch.tensor([[0.2, 0.4, 0.2, 0.2]]).log()
    assert kept(top_p_filter(logits, 0.5)).tolist() == [[True, True, True, True]]
    assert kept(top_p_filter(logits, 0.4)).tolist() == [[False, True, False, False]]
    # Integer logits over a Qwen-sized vocabulary: many ties everywhere, checked against NumPy.
    gen = torch.Generator().manual_seed(1)
    tied = torch.randint(-8, 3, (2, QWEN_VOCAB), generator=gen).float()
    for p in (0.3, 0.8):
        ours = kept(top_p_filter(tied, p))
        for row in range(2):
            want, ahead = exact_nucleus(tied[row].numpy(), p)
            assert not (np.abs(ahead - p) < TOP_P_TOLERANCE).any()
            assert np.array_equal(ours[row].numpy(), want)


def test_all_but_one_minus_infinity():
    logits = torch.tensor([[NEG_INF, 2.0, NEG_INF], [NEG_INF, NEG_INF, -5.0]])
    for p in (0.01, 0.5, 0.999999, 1.0):
        assert kept(top_p_filter(logits, p)).tolist() == [[False, True, False], [False, False, True]]
    assert kept(top_k_filter(logits, 2)).tolist() == [[False, True, False], [False, False, True]]
    assert sample_next_token(logits, 0.7, top_k=2, top_p=0.9).tolist() == [1, 2]
    with pytest.raises(ValueError, match="finite largest logit"):
        sample_next_token(torch.full((1, 3), NEG_INF), 1.0)


def test_top_k_keeps_every_logit_equal_to_the_kth_largest_like_transformers():
    gen = torch.Generator().manual_seed(2)
    tied = torch.randint(0, 6, (4, 50), generator=gen).float()    # ties at every k
    for k in (1, 2, 5, 20, 50, 60):
        ours = top_k_filter(tied, k)
        assert torch.equal(kept(ours), kept(TopKLogitsWarper(k)(None, tied.clone())))
        kth = tied.sort(dim=-1, descending=True).values[:, min(k, 50) - 1 : min(k, 50)]
        assert torch.equal(kept(ours), tied >= kth)               # independently: >= the k-th largest


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, 0.9), (0.7, 40, 0.95), (1.3, 1000, None),
                                                     (0.05, None, 0.5), (2.0, 5, 0.3)])
def test_full_pipeline_matches_transformers_processors(temperature, top_k, top_p):
    gen = torch.Generator().manual_seed(3)
    logits = 4 * torch.randn(2, QWEN_VOCAB, generator=gen)
    scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k is not None:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p is not None:
        scores = TopPLogitsWarper(top_p)(None, scores)
    want = torch.softmax(scores, dim=-1)
    got = next_token_distribution(logits, temperature, top_k, top_p)
    # Same kept sets; probabilities equal up to float32 rounding of a softmax over 151,936 terms
    # (our logits are shifted by their maximum before dividing, transformers' are not).
    assert torch.equal(got > 0, want > 0)
    torch.testing.assert_close(got, want, atol=1e-7, rtol=1e-4)


def test_temperature_near_zero_samples_among_the_largest_logits():
    logits = torch.tensor([[3.0, 1.0, 3.0, -2.0]]).expand(400, 4)
    for temperature in (1e-3, 1e-20, 1e-40):                      # 1e-40: logits / T overflow float32
        probs = next_token_distribution(logits[:1], temperature)
        assert not probs.isnan().any()
        torch.testing.assert_close(probs, torch.tensor([[0.5, 0.0, 0.5, 0.0]]), atol=1e-6, rtol=0)
        drawn = sample_next_token(logits, temperature, generator=torch.Generator().manual_seed(0))
        assert set(drawn.tolist()) == {0, 2}                      # both tied maxima, nothing else
    # Greedy (temperature 0) is the argmax; its distribution is one-hot.
    assert sample_next_token(logits[:1], 0.0).tolist() == [0]
    assert next_token_distribution(logits[:1], 0.0).tolist() == [[1.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("options, word", [(dict(temperature=float("nan")), "temperature"),
                                           (dict(temperature=-0.1), "temperature"),
                                           (dict(top_p=float("nan")), "top_p"), (dict(top_p=1.5), "top_p"),
                                           (dict(top_k=0), "top_k")])
def test_generate_refuses_settings_that_mean_nothing(options, word):
    from minillm.inference.generate import _check_sampling_args

    settings = dict(max_new_tokens=5, temperature=1.0, top_k=None, top_p=None) | options
    with pytest.raises(ValueError, match=word):
        _check_sampling_args(**settings)
