"""Autograder, unit 4 (sampling): temperature, top-k, top-p, seeded draws, generation.

Values are compared with minillm (``minillm.inference.generate``: ``top_k_filter``, ``top_p_filter``,
``generate``) and with the softmax definition, never with solutions/. Logits, temperatures,
k, p and prompts are drawn fresh from ``grader_seed``. While the student's code runs,
minillm's sampling functions and torch's ready-made softmax raise: the exercise is to write
them.

Draws are never compared one for one with minillm's sampler (that would force one particular
use of the generator). Instead: the same seed must give the same draws, greedy decoding must
pick the argmax, and empirical frequencies must match the probabilities within a tolerance
computed from the number of draws (6 standard errors per token, see ``_frequency_tolerance``).
The one exception is generate(): it draws through the grader's sample() (lent), so the only
choice left to it is the generator, and the contract fixes that (one, seeded, made before the
loop): its tokens for a seed are compared with the grader's own loop for that seed.

bfloat16 logits: the softmax gives float32 probabilities, the filters keep the logits' dtype, and
top-p sums the probabilities in float32 (the contracts in solutions/sampling.py say so).
"""

from __future__ import annotations

import random

import pytest
import torch
from grading import GradingError, Unchanged, expect_close, expect_shape

import minillm.inference.generate as mg

pytestmark = pytest.mark.sampling

OBJECTIVES = {
    "SAMP-1": "Computes a softmax with temperature along the vocabulary axis (temperature divides the logits)",
    "SAMP-2": "Implements top-k filtering (all but the k largest logits set to -inf)",
    "SAMP-3": "Implements top-p (nucleus) filtering, keeping the token that crosses p",
    "SAMP-4": "Samples token ids with a seeded generator: greedy at temperature 0, reproducible, only allowed tokens",
    "SAMP-5": "Sampling frequencies over many draws match the filtered, temperature-scaled softmax",
    "SAMP-6": "Generates tokens autoregressively; temperature 0 is deterministic greedy decoding",
}

_REF = {name: getattr(mg, name) for name in ("top_k_filter", "top_p_filter", "sample_next_token", "generate")}


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------

def _grader_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits.float() / temperature, dim=-1)


def _grader_sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """sample() as its contract states it: greedy at 0; else temperature, top-k, top-p, softmax, one draw per row."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    if top_k is not None:
        scaled = _REF["top_k_filter"](scaled, top_k)
    if top_p is not None:
        scaled = _REF["top_p_filter"](scaled, top_p)
    return torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator)[:, 0]


_grader_top_k_filter, _grader_top_p_filter = _REF["top_k_filter"], _REF["top_p_filter"]

# One mistake, one objective: a graded function that builds on other graded functions is graded with
# the grader's versions of those, lent to the student's module for the test (a function finds the
# others by name at call time; the ``lend`` fixture). A wrong softmax then costs SAMP-1 only, not
# SAMP-3/4/5/6 too, and a failing sample() test is about sample() itself.
_BUILDS_ON = {
    "top_p_filter": {"softmax_with_temperature": _grader_softmax},
    "sample": {"softmax_with_temperature": _grader_softmax, "top_k_filter": _grader_top_k_filter,
               "top_p_filter": _grader_top_p_filter},
}
_BUILDS_ON["sampling_frequencies"] = _BUILDS_ON["generate"] = {**_BUILDS_ON["sample"], "sample": _grader_sample}


def _load_student_fn(student, forbid, lend, name: str, block_softmax: bool = False):
    """The student's function, imported after minillm's answers (and, for the softmax itself,
    torch's softmax) are forbidden, with the graded functions it builds on lent by the grader
    (_BUILDS_ON). Call this AFTER computing the reference."""
    forbid(*(f"{module}.{name}" for module in ("minillm.inference.generate", "minillm") for name in _REF))
    if block_softmax:
        forbid("torch.softmax", "torch.nn.functional.softmax", "torch.Tensor.softmax", "torch.special.softmax")
    fn = student.function("sampling", name)
    for helper, grader_version in _BUILDS_ON.get(name, {}).items():
        lend("sampling", helper, grader_version)
    return fn


def _checked(fn, *args):
    """``fn(*args)``, failing the test when the call changed any of its inputs (logits, prompt, model)
    or torch's global random state: every function here draws only from the generator or seed it is given.
    (Graded apart, the student's process measures both, and the judge reads what it saw: grading.Unchanged.)"""
    inputs = Unchanged("its inputs (the logits, prompt or model it was given)", *args, rng=True)
    got = fn(*args)
    inputs.check(f"{getattr(fn, '__name__', 'your function')}(...)")
    return got


def _rng(grader_seed: int, salt: int) -> tuple[random.Random, torch.Generator]:
    """Independent random streams per test, all fixed by the grader seed."""
    return random.Random(grader_seed * 1019 + salt), torch.Generator().manual_seed(grader_seed * 1019 + salt)


def _expect_tensor(got, what: str) -> None:
    if not isinstance(got, torch.Tensor):
        raise GradingError(f"{what}: expected a torch.Tensor, got {type(got).__name__}.")


def _expect_dtype(got: torch.Tensor, dtype: torch.dtype, what: str, why: str) -> None:
    if got.dtype != dtype:
        raise GradingError(f"{what}: expected a {str(dtype).replace('torch.', '')} tensor, got "
                           f"{str(got.dtype).replace('torch.', '')}. {why}")


def _splits_a_tie(logits: torch.Tensor, p: float) -> bool:
    """Whether, in some row, the last token a nucleus of ``p`` keeps (in exact arithmetic) has the same
    logit as the first it drops: which of tied tokens a sort puts first is arbitrary, and the contract
    promises the student no such row."""
    probs = torch.softmax(logits.double(), dim=-1).sort(dim=-1, descending=True).values
    ordered = logits.sort(dim=-1, descending=True).values
    kept = ((probs.cumsum(-1) - probs) < p).sum(-1, keepdim=True)
    inside = kept < ordered.shape[-1]
    return bool((inside & (ordered.gather(-1, kept - 1) == ordered.gather(-1, kept.clamp(max=ordered.shape[-1] - 1)))).any())


def _safe_p(logits: torch.Tensor, rng: random.Random, low: float = 0.3, high: float = 0.95) -> float:
    """A p in [low, high] at least 1e-3 away from every running sum of every row's sorted
    probabilities, so that float32 rounding cannot decide whether a token is kept, and splitting no
    tie (:func:`_splits_a_tie`)."""
    sums = torch.softmax(logits.double(), dim=-1).sort(dim=-1, descending=True).values.cumsum(-1).reshape(-1)
    for _ in range(1000):
        p = rng.uniform(low, high)
        if bool(((sums - p).abs() > 1e-3).all()) and not _splits_a_tie(logits, p):
            return p
    raise RuntimeError("autograder: found no p away from the cumulative sums")  # pragma: no cover


def _bfloat16_sensitive_p(logits: torch.Tensor, rng: random.Random) -> float | None:
    """For bfloat16 ``logits``: a p at least 1e-4 away from every exact running sum of the sorted
    probabilities (float32 or float64 sums decide it as exact arithmetic does) that falls on the other
    side of one of them when the softmax and the running sum are taken in bfloat16 (sums rounded to
    steps of ~0.002-0.004), whether p is compared as it is or rounded to bfloat16 too: a nucleus summed
    in bfloat16 keeps a different set. None if these logits have no such p."""
    probs = torch.softmax(logits.double(), dim=-1).sort(dim=-1, descending=True).values
    exact = probs.cumsum(-1) - probs
    low = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True).values      # bfloat16 arithmetic
    rounded = (low.cumsum(-1) - low).double()
    for _ in range(2000):
        p = rng.uniform(0.2, 0.95)
        p_low = float(torch.tensor(p).bfloat16())           # p itself rounded, as comparing with a bfloat16 tensor does
        # bfloat16 logits tie often: the last kept logit must differ from the first dropped one.
        if (bool(((exact - p).abs() > 1e-4).all()) and not _splits_a_tie(logits, p)
                and not torch.equal(exact < p, rounded < p) and not torch.equal(exact < p, rounded < p_low)):
            return p
    return None


def _separating_p(row: torch.Tensor, temperature: float, rng: random.Random, low: float = 0.3,
                  high: float = 0.9, min_extra: float = 0.0) -> float | None:
    """A safe p (see :func:`_safe_p`) whose nucleus at ``temperature`` differs from the one at
    temperature 1, so that filtering before or after dividing by the temperature keeps different
    tokens. With ``min_extra``, every token in one nucleus but not the other has at least that
    probability after renormalising over the larger nucleus at ``temperature``, so a few hundred
    draws are sure to show it (0.97 ** 400 ~ 5e-6). None when this row has no such p (draw another)."""
    rows = torch.stack([row / temperature, row])
    sums = torch.softmax(rows.double(), dim=-1).sort(dim=-1, descending=True).values.cumsum(-1)
    for _ in range(2000):
        p = rng.uniform(low, high)
        if not bool(((sums - p).abs() > 1e-3).all()):
            continue
        kept = [torch.isfinite(_REF["top_p_filter"](r, p)) for r in rows]
        extra = kept[0] ^ kept[1]
        if not extra.any():
            continue
        probs = torch.softmax((row.double() / temperature).masked_fill(~(kept[0] | kept[1]), float("-inf")), -1)
        if float(probs[extra].min()) >= min_extra:
            return p
    return None


def _order_separating(row: torch.Tensor, rng: random.Random) -> tuple[int, float] | None:
    """(k, p) for which the contract's order, top-k and then top-p over the k kept tokens renormalised,
    keeps fewer tokens than top-p over the whole row and then top-k, every extra token with probability
    >= 0.03 in that wrong order's distribution (so 400 draws are sure to show one); p is 1e-3 away from
    every running sum of both orders. None when this row has none (draw another)."""
    for _ in range(200):
        k, p = rng.randint(3, 6), rng.uniform(0.3, 0.8)
        top_k = _REF["top_k_filter"](row, k)
        sums = torch.stack([torch.softmax(r.double(), -1).sort(descending=True).values.cumsum(-1) for r in (row, top_k)])
        if not bool(((sums - p).abs() > 1e-3).all()):
            continue
        right = torch.isfinite(_REF["top_p_filter"](top_k, p))
        wrong_logits = _REF["top_k_filter"](_REF["top_p_filter"](row, p), k)
        extra = torch.isfinite(wrong_logits) & ~right
        if extra.any() and float(torch.softmax(wrong_logits.double(), -1)[extra].min()) >= 0.03:
            return k, p
    return None


def _far_temperature(rng: random.Random) -> float:
    """A temperature far from 1 (0.4..0.6 or 1.8..2.5), where the order of temperature and filters shows."""
    return rng.uniform(0.4, 0.6) if rng.random() < 0.5 else rng.uniform(1.8, 2.5)


def _frequency_tolerance(probs: torch.Tensor, n: int) -> torch.Tensor:
    """Six binomial standard errors, sqrt(p (1 - p) / n), per token (plus 1/n for rounding).

    A correct sampler lands outside 6 standard errors with probability ~2e-9 per token (normal
    approximation), so with a few hundred token frequencies per run the test does not flake."""
    return 6 * torch.sqrt(probs * (1 - probs) / n) + 1.0 / n


def _row_logits(gen: torch.Generator, vocab: int, spread: float) -> torch.Tensor:
    return spread * torch.randn(vocab, generator=gen)


# ------------------------------------------------------------------------------------------
# SAMP-1 softmax_with_temperature
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=3, objective="SAMP-1", level="P")
def test_softmax_with_temperature(student, forbid, lend, grader_seed):
    rng, gen = _rng(grader_seed, 1)
    cases = []
    for temperature, dtype in ((1.0, torch.float32), (rng.uniform(0.3, 0.8), torch.float32),
                               (rng.uniform(1.3, 3.0), torch.float32), (rng.uniform(0.5, 2.0), torch.bfloat16)):
        logits = (2.0 * torch.randn(rng.randint(2, 5), rng.randint(8, 40), generator=gen)).to(dtype)
        cases.append((logits, temperature, torch.softmax(logits.double() / temperature, dim=-1)))
    fn = _load_student_fn(student, forbid, lend, "softmax_with_temperature", block_softmax=True)
    for logits, temperature, expected in cases:
        what = (f"softmax_with_temperature({str(logits.dtype).replace('torch.', '')} logits of shape "
                f"{tuple(logits.shape)}, {temperature:.3g})")
        got = _checked(fn, logits, temperature)
        _expect_tensor(got, what)
        expect_shape(got, tuple(logits.shape), what)
        _expect_dtype(got, torch.float32, what, "Probabilities are float32 whatever the floating dtype of the "
                      "logits: compute in float32 (logits.float()); bfloat16 keeps only ~3 significant digits.")
        sums = got.detach().double().sum(dim=-1)
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-5):
            hint = ""
            if torch.allclose(got.detach().double().sum(dim=0), torch.ones(logits.shape[1], dtype=torch.float64), atol=1e-5):
                hint = " Each COLUMN sums to 1: the softmax ran over the batch axis; use the last one (dim=-1)."
            elif temperature != 1.0 and torch.allclose(sums, torch.full_like(sums, 1 / temperature), atol=1e-4):
                hint = (" Rows sum to 1/temperature: the temperature divided the probabilities after the softmax; "
                        "it must divide the logits before it.")
            raise GradingError(f"{what}: every row should sum to 1, but the row sums are "
                               f"{[round(float(s), 5) for s in sums]}.{hint}")
        # One exp and a sum of <= 40 float32 terms per row: 1e-6 absolute, 1e-5 relative.
        expect_close(got, expected, what + ": softmax(logits / temperature) over the last axis", atol=1e-6, rtol=1e-5)


@pytest.mark.graded(points=2, objective="SAMP-1", level="E")
def test_softmax_is_numerically_stable(student, forbid, lend, grader_seed):
    """Logits in the hundreds or thousands (exp overflows float32 past ~88) and -inf entries."""
    rng, gen = _rng(grader_seed, 2)
    # exp() overflows float32 above ~88 and underflows to 0 below ~-103: both sides are hit.
    # Rows of very different scale in one batch: the max must be taken per row (a max over the whole
    # tensor leaves a row whose every exp underflows to 0, and 0/0 = NaN).
    offsets = torch.tensor([300.0, -300.0, 0.0])[torch.randperm(3, generator=gen)]
    logits = 10.0 * torch.randn(3, rng.randint(10, 30), generator=gen) + offsets[:, None]
    logits[:, rng.randrange(logits.shape[1])] = float("-inf")
    temperature = rng.uniform(0.5, 2.0)
    expected = torch.softmax(logits.double() / temperature, dim=-1)
    fn = _load_student_fn(student, forbid, lend, "softmax_with_temperature", block_softmax=True)
    what = (f"softmax_with_temperature(rows of logits around {[round(float(o)) for o in offsets]}, with -inf "
            f"entries, {temperature:.3g})")
    got = _checked(fn, logits, temperature)
    _expect_tensor(got, what)
    if torch.isnan(got).any():
        raise GradingError(f"{what}: the result holds NaN. exp() of a large logit is inf and inf / inf is NaN: "
                           "subtract each row's maximum from the row before exp().")
    # logits / temperature reach ~700, where float32 values are 6e-5 apart: rounding the scaled logits
    # moves each probability by up to ~1e-4 relative. 1e-6 absolute, 2e-4 relative.
    expect_close(got, expected, what, atol=1e-6, rtol=2e-4)


# ------------------------------------------------------------------------------------------
# SAMP-2 top_k_filter
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=3, objective="SAMP-2", level="P")
def test_top_k_filter(student, forbid, lend, grader_seed):
    rng, gen = _rng(grader_seed, 3)
    vocab = rng.randint(10, 50)
    cases = []
    for shape, k in (((rng.randint(2, 4), vocab), rng.randint(2, vocab // 2)),
                     ((2, 3, vocab), rng.randint(1, 5)),
                     ((1, vocab), 1),
                     ((2, vocab), vocab),
                     ((2, vocab), vocab + rng.randint(1, 3))):            # k > vocab on every seed: keeps all
        logits = 3.0 * torch.randn(shape, generator=gen)
        cases.append((logits, k, _REF["top_k_filter"](logits, k)))
    # bfloat16 logits (a model loaded in bfloat16): filtered in their own dtype, and bfloat16 rounding
    # makes ties at the k-th logit common.
    logits = (3.0 * torch.randn(rng.randint(2, 4), vocab, generator=gen)).bfloat16()
    k = rng.randint(2, vocab // 2)
    cases.append((logits, k, _REF["top_k_filter"](logits, k)))
    # Ties at the k-th logit: the docstring keeps every logit equal to the k-th largest (so more than k).
    k = rng.randint(2, vocab // 2)
    logits = 3.0 * torch.randn(rng.randint(2, 4), vocab, generator=gen)
    order = logits.argsort(dim=-1, descending=True)
    rows = torch.arange(logits.shape[0])
    logits[rows, order[:, k]] = logits[rows, order[:, k - 1]]            # the (k+1)-th largest = the k-th
    cases.append((logits, k, _REF["top_k_filter"](logits, k)))
    fn = _load_student_fn(student, forbid, lend, "top_k_filter")
    for logits, k, expected in cases:
        what = f"top_k_filter({str(logits.dtype).replace('torch.', '')} logits of shape {tuple(logits.shape)}, k={k})"
        got = _checked(fn, logits, k)
        _expect_tensor(got, what)
        expect_shape(got, tuple(logits.shape), what)
        _expect_dtype(got, logits.dtype, what, "A filter only removes tokens: return the logits' own dtype "
                      "(do not convert them).")
        kept = torch.isfinite(got)
        if not torch.equal(kept, torch.isfinite(expected)):
            counts = kept.sum(-1).reshape(-1).tolist()
            want = torch.isfinite(expected).sum(-1).reshape(-1).tolist()
            raise GradingError(f"{what}: the wrong tokens were kept. Each row should keep its k largest logits "
                               f"and every logit EQUAL to the k-th largest (ties), {want}, and set the rest to "
                               f"-inf; your rows keep {counts}.")
        # Kept logits are copied unchanged.
        expect_close(torch.where(kept, got, 0.0), torch.where(kept, expected, 0.0),
                     what + ": the kept logits must be unchanged", atol=0, rtol=0)


# ------------------------------------------------------------------------------------------
# SAMP-3 top_p_filter
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=3, objective="SAMP-3", level="P")
def test_top_p_filter(student, forbid, lend, grader_seed):
    rng, gen = _rng(grader_seed, 4)
    cases = []
    for shape in ((rng.randint(2, 4), rng.randint(10, 40)), (2, 2, rng.randint(10, 30)), (1, rng.randint(5, 15))):
        logits = 1.5 * torch.randn(shape, generator=gen)
        p = _safe_p(logits, rng)
        cases.append((logits, p, _REF["top_p_filter"](logits, p)))
    # bfloat16 logits, and a p that bfloat16 rounding of the running sums would move across a sum.
    p = None
    while p is None:
        logits = (1.5 * torch.randn(rng.randint(2, 4), rng.randint(10, 40), generator=gen)).bfloat16()
        p = _bfloat16_sensitive_p(logits, rng)
    cases.append((logits, p, _REF["top_p_filter"](logits, p)))
    fn = _load_student_fn(student, forbid, lend, "top_p_filter")
    for logits, p, expected in cases:
        what = f"top_p_filter({str(logits.dtype).replace('torch.', '')} logits of shape {tuple(logits.shape)}, p={p:.4f})"
        got = _checked(fn, logits, p)
        _expect_tensor(got, what)
        expect_shape(got, tuple(logits.shape), what)
        _expect_dtype(got, logits.dtype, what, "A filter only removes tokens: return the logits' own dtype.")
        kept, want = torch.isfinite(got), torch.isfinite(expected)
        if not torch.equal(kept, want):
            got_n, want_n = kept.sum(-1).reshape(-1).tolist(), want.sum(-1).reshape(-1).tolist()
            hint = ""
            if all(g == w - 1 for g, w in zip(got_n, want_n)):
                hint = (" Each row keeps one token too few: the token whose probability makes the running sum "
                        "reach p must be kept (drop a token only when the tokens BEFORE it already add up to p).")
            elif logits.dtype == torch.bfloat16:
                hint = (" These logits are bfloat16: take the probabilities and their running sum in float32 "
                        "(your softmax_with_temperature gives float32), not in bfloat16, which rounds the sums "
                        "to steps of ~0.003.")
            raise GradingError(f"{what}: the wrong tokens were kept: rows keep {got_n} tokens, expected {want_n} "
                               f"(the smallest set of most likely tokens whose probabilities add up to >= p).{hint}")
        expect_close(torch.where(kept, got, 0.0), torch.where(kept, expected, 0.0),
                     what + ": the kept logits must be unchanged", atol=0, rtol=0)


@pytest.mark.graded(points=2, objective="SAMP-3", level="E")
def test_top_p_filter_edge_cases(student, forbid, lend, grader_seed):
    """The top token alone above p (only it is kept) and p = 1 (every token is kept)."""
    rng, gen = _rng(grader_seed, 5)
    vocab = rng.randint(8, 20)
    peaked = torch.randn(2, vocab, generator=gen)
    peaked[0, rng.randrange(vocab)] += 8.0      # one token holds > 99% of the probability
    peaked[1, rng.randrange(vocab)] += 8.0
    p_small = rng.uniform(0.3, 0.9)
    flat = 0.5 * torch.randn(2, vocab, generator=gen)   # no probability below 1e-3: p = 1 keeps all
    expected_peaked = _REF["top_p_filter"](peaked, p_small)
    fn = _load_student_fn(student, forbid, lend, "top_p_filter")
    got = _checked(fn, peaked, p_small)
    what = f"top_p_filter(rows whose top token has probability > 0.99, p={p_small:.3f})"
    _expect_tensor(got, what)
    counts = torch.isfinite(got).sum(-1).tolist()
    if counts != [1, 1] or not torch.equal(torch.isfinite(got), torch.isfinite(expected_peaked)):
        raise GradingError(f"{what}: each row should keep exactly its most likely token (it alone reaches p); "
                           f"your rows keep {counts} tokens." + (" The most likely token must always be kept."
                                                                 if 0 in counts else ""))
    got = _checked(fn, flat, 1.0)
    what = "top_p_filter(logits, p=1.0)"
    _expect_tensor(got, what)
    if not torch.isfinite(got).all():
        raise GradingError(f"{what}: with p = 1 every token should be kept; your rows keep "
                           f"{torch.isfinite(got).sum(-1).tolist()} of {vocab}.")


# ------------------------------------------------------------------------------------------
# SAMP-4 sample
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=2, objective="SAMP-4", level="P")
def test_sample_greedy_at_temperature_zero(student, forbid, lend, grader_seed):
    rng, gen = _rng(grader_seed, 6)
    logits = 2.0 * torch.randn(rng.randint(3, 8), rng.randint(10, 60), generator=gen)
    fn = _load_student_fn(student, forbid, lend, "sample")
    what = f"sample(logits of shape {tuple(logits.shape)}, temperature=0)"
    got = _checked(fn, logits, 0.0, None, None, torch.Generator().manual_seed(rng.randrange(2**31)))
    _expect_tensor(got, what)
    expect_shape(got, (logits.shape[0],), what)
    expect_close(got, logits.argmax(dim=-1), what + ": greedy decoding, the argmax of each row", atol=0, rtol=0)


@pytest.mark.graded(points=3, objective="SAMP-4", level="P")
def test_sample_reproducible_and_allowed(student, forbid, lend, grader_seed):
    rng, gen = _rng(grader_seed, 7)
    vocab, rows = rng.randint(20, 50), 400
    # Below 1, far from it, and p chosen so the nucleus of row / t_p is smaller than row's: top-p applied
    # before the temperature keeps tokens that this nucleus does not, each likely enough to be drawn.
    t_p, p = rng.uniform(0.4, 0.6), None
    while p is None:                                   # ~4% of rows have no such p: draw another
        row = _row_logits(gen, vocab, 1.0)
        p = _separating_p(row, t_p, rng, 0.4, 0.8, min_extra=0.03)
    logits = row.expand(rows, vocab).clone()
    seed = rng.randrange(2**31)
    k = rng.randint(3, 6)
    allowed_k = torch.isfinite(_REF["top_k_filter"](row / 1.2, k))
    allowed_p = torch.isfinite(_REF["top_p_filter"](row / t_p, p))
    # Both filters: top-k first, then the nucleus of what it kept (the contract's order).
    k_p = None
    while k_p is None:                                  # most rows have such (k, p); a few do not
        both_row = _row_logits(gen, vocab, 1.0)
        k_p = _order_separating(both_row, rng)
    both_k, both_p = k_p
    both = both_row.expand(rows, vocab).clone()
    allowed_both = torch.isfinite(_REF["top_p_filter"](_REF["top_k_filter"](both_row, both_k), both_p))
    # Large logits, a low temperature, rows of very different scale: logits / t reach ~1e5, so exp()
    # without subtracting each row's max overflows. Each row's largest logit is raised 100 above the
    # runner-up, 100 / t > 2000 nats, so the draw is the argmax (the runner-up has probability < e^-2000).
    huge = 300.0 * torch.randn(3, vocab, generator=gen) + torch.tensor([2000.0, -2000.0, 0.0])[:, None]
    top = huge.argmax(-1)
    huge[torch.arange(3), top] = huge.topk(2, dim=-1).values[:, 1] + 100.0
    t_low = rng.uniform(0.01, 0.05)
    fn = _load_student_fn(student, forbid, lend, "sample")

    what = f"sample({rows} copies of one row of logits, temperature=1.0, generator seeded {seed})"
    first = _checked(fn, logits, 1.0, None, None, torch.Generator().manual_seed(seed))
    _expect_tensor(first, what)
    expect_shape(first, (rows,), what)
    again = _checked(fn, logits, 1.0, None, None, torch.Generator().manual_seed(seed))
    if not torch.equal(first, again):
        raise GradingError(f"{what}: two calls with generators seeded alike gave different ids. Draw with the "
                           "generator you are given: torch.multinomial(probs, 1, generator=generator).")
    if torch.unique(first).numel() < 2:
        raise GradingError(f"{what}: all {rows} draws gave the same id; at temperature 1 the draws should vary "
                           "(is it taking the argmax instead of sampling?).")
    ids = _checked(fn, logits, 1.2, k, None, torch.Generator().manual_seed(seed + 1))
    bad = sorted(set(ids.tolist()) - set(torch.nonzero(allowed_k).flatten().tolist()))
    if bad:
        raise GradingError(f"sample(..., temperature=1.2, top_k={k}): drew ids {bad[:5]} that are not among the "
                           f"{k} most likely tokens.")
    ids = _checked(fn, logits, t_p, None, p, torch.Generator().manual_seed(seed + 2))
    bad = sorted(set(ids.tolist()) - set(torch.nonzero(allowed_p).flatten().tolist()))
    if bad:
        raise GradingError(f"sample(..., temperature={t_p:.3f}, top_p={p:.3f}): drew ids {bad[:5]} outside the "
                           "nucleus (apply the temperature first, then the filter, to the same logits).")
    ids = _checked(fn, both, 1.0, both_k, both_p, torch.Generator().manual_seed(seed + 4))
    bad = sorted(set(ids.tolist()) - set(torch.nonzero(allowed_both).flatten().tolist()))
    if bad:
        raise GradingError(f"sample(..., temperature=1.0, top_k={both_k}, top_p={both_p:.3f}): drew ids {bad[:5]} "
                           f"outside the nucleus of the {both_k} most likely tokens. Apply the filters in the "
                           "contract's order: top-k first, then top-p on what top-k kept.")
    what = (f"sample(3 rows of logits around 2000, -2000 and 0 (std 300), temperature={t_low:.3f}, "
            f"generator seeded {seed + 3})")
    got = _checked(fn, huge, t_low, None, None, torch.Generator().manual_seed(seed + 3))
    _expect_tensor(got, what)
    expect_close(got, top, what + ": each row's runner-up is > 2000 nats behind, so every draw is the row's "
                 "argmax. (Subtract each row's max before exp(), or use your softmax: exp of 1e5 overflows "
                 "to inf, and inf/inf is NaN.)", atol=0, rtol=0)


# ------------------------------------------------------------------------------------------
# SAMP-5 sampling_frequencies
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=4, objective="SAMP-5", level="M")
def test_sampling_frequencies(student, forbid, lend, grader_seed):
    rng, gen = _rng(grader_seed, 8)
    n = 20_000
    vocab = rng.randint(8, 16)
    cases = []
    for temperature, top_k, top_p in ((rng.uniform(0.5, 0.8), None, None),
                                      (rng.uniform(1.5, 2.5), None, None),
                                      (rng.uniform(0.8, 1.2), rng.randint(3, 5), None),
                                      (_far_temperature(rng), None, "separating")):
        row = _row_logits(gen, vocab, 1.5)
        if top_p == "separating":                  # filtering before the temperature keeps other tokens
            top_p = _separating_p(row, temperature, rng, 0.5, 0.9, min_extra=0.01)
            while top_p is None:                   # a few rows have no such p: draw another
                row = _row_logits(gen, vocab, 1.5)
                top_p = _separating_p(row, temperature, rng, 0.5, 0.9, min_extra=0.01)
        scaled = row / temperature
        filtered = scaled
        if top_k is not None:
            filtered = _REF["top_k_filter"](filtered, top_k)
        if top_p is not None:
            filtered = _REF["top_p_filter"](filtered, top_p)
        cases.append((row, temperature, top_k, top_p, torch.softmax(filtered.double(), dim=-1)))
    seed = rng.randrange(2**31)
    fn = _load_student_fn(student, forbid, lend, "sampling_frequencies")
    for i, (row, temperature, top_k, top_p, probs) in enumerate(cases):
        what = (f"sampling_frequencies(logits of {vocab} tokens, n_draws={n}, seed={seed + i}, temperature="
                f"{temperature:.3f}, top_k={top_k}, top_p={None if top_p is None else round(top_p, 4)})")
        got = _checked(fn, row, n, seed + i, temperature, top_k, top_p)
        _expect_tensor(got, what)
        expect_shape(got, (vocab,), what)
        freq = got.detach().double()
        if abs(float(freq.sum()) - 1) > 1e-6:
            raise GradingError(f"{what}: the frequencies should sum to 1 (fractions of the draws); they sum to "
                               f"{float(freq.sum()):.6g}.")
        impossible = (probs == 0) & (freq > 0)
        if impossible.any():
            raise GradingError(f"{what}: tokens {torch.nonzero(impossible).flatten().tolist()} were drawn, but the "
                               "filters remove them (probability 0).")
        tol = _frequency_tolerance(probs, n)
        off = (freq - probs).abs() > tol
        if off.any():
            j = int(torch.nonzero(off)[0])
            hint = ""
            if temperature != 1.0:
                plain = torch.softmax(row.double(), -1)
                if bool(((freq - plain).abs() <= _frequency_tolerance(plain, n)).all()):
                    hint = (" The frequencies match temperature 1: the temperature must divide the logits "
                            "before the softmax (dividing the probabilities changes nothing after normalising).")
            raise GradingError(
                f"{what}: token {j} came up in {float(freq[j]):.4f} of the draws, but its probability is "
                f"{float(probs[j]):.4f}; with {n} draws the frequency should be within {float(tol[j]):.4f} of it "
                f"(6 standard errors).{hint}\n  expected {[round(float(v), 4) for v in probs]}\n"
                f"  got      {[round(float(v), 4) for v in freq]}")
    row, temperature = cases[0][0], cases[0][1]
    first = _checked(fn, row, n, seed, temperature, None, None)
    second = _checked(fn, row, n, seed, temperature, None, None)
    if not torch.equal(torch.as_tensor(first), torch.as_tensor(second)):
        raise GradingError("sampling_frequencies: two calls with the same seed gave different frequencies. Make ONE "
                           "torch.Generator().manual_seed(seed) and draw with it.")


# ------------------------------------------------------------------------------------------
# SAMP-6 generate
# ------------------------------------------------------------------------------------------

def _prompt(rng: random.Random, tokenizer, stories: list[str]) -> list[int]:
    ids = tokenizer.encode(rng.choice(stories))
    start = rng.randrange(0, len(ids) - 40)
    return ids[start : start + rng.randint(3, 20)]


def _grader_generate(model, prompt: list[int], n_new: int, temperature: float, seed: int) -> list[int]:
    """generate() as its contract states it, with the grader's sample: ONE generator seeded before the loop."""
    generator, ids, new = torch.Generator().manual_seed(seed), list(prompt), []
    with torch.no_grad():
        for _ in range(n_new):
            new.append(int(_grader_sample(model(torch.tensor([ids]))[:, -1], temperature, None, None, generator)[0]))
            ids.append(new[-1])
    return new


def _check_greedy(model, prompt: list[int], new: list[int], what: str, reference: list[int]) -> None:
    """Every new token must be the argmax of the model's prediction after the tokens before it
    (within 1e-4 of the top logit: a forward pass in another batch shape moves logits by ~1e-6)."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + new]))[0]
    for j, token in enumerate(new):
        row = logits[len(prompt) - 1 + j]
        gap = float(row.max() - row[token])
        if gap > 1e-4:
            raise GradingError(
                f"{what}: new token {j} is id {token}, but the model's most likely next token there is "
                f"id {int(row.argmax())} (its logit is higher by {gap:.3g}). Temperature 0 must always take the "
                f"argmax of the logits at the LAST position.\n  minillm.generate gives {reference}\n"
                f"  yours gives           {new}")


@pytest.mark.graded(points=4, objective="SAMP-6", level="P")
@pytest.mark.timeout_s(30)
def test_generate_greedy(student, forbid, lend, grader_seed, tiny_model, tiny_tokenizer, story_texts):
    rng, _ = _rng(grader_seed, 9)
    prompt = _prompt(rng, tiny_tokenizer, story_texts)
    n_new = rng.randint(8, 14)
    reference = _REF["generate"](tiny_model, prompt, n_new, temperature=0.0)
    fn = _load_student_fn(student, forbid, lend, "generate")
    what = f"generate(model, prompt of {len(prompt)} ids, max_new_tokens={n_new}, temperature=0)"
    got = _checked(fn, tiny_model, list(prompt), n_new, 0.0)
    if isinstance(got, torch.Tensor):
        got = got.reshape(-1).tolist()
    if not isinstance(got, (list, tuple)) or len(got) != n_new:
        raise GradingError(f"{what}: expected a list of the {n_new} NEW ids (without the prompt), got "
                           f"{type(got).__name__}{' of length ' + str(len(got)) if hasattr(got, '__len__') else ''}.")
    got = [int(t) for t in got]
    _check_greedy(tiny_model, list(prompt), got, what, reference)
    again = [int(t) for t in fn(tiny_model, list(prompt), n_new, 0.0)]
    if again != got:
        raise GradingError(f"{what}: two calls gave different tokens; greedy decoding has no randomness.")


@pytest.mark.graded(points=2, objective="SAMP-6", level="M")
@pytest.mark.timeout_s(30)
def test_generate_seeded_sampling(student, forbid, lend, grader_seed, tiny_model, tiny_tokenizer, story_texts):
    rng, _ = _rng(grader_seed, 10)
    prompt = _prompt(rng, tiny_tokenizer, story_texts)
    n_new = rng.randint(8, 12)
    seed = rng.randrange(2**31)
    reference = _REF["generate"](tiny_model, prompt, n_new, temperature=0.0)
    seeded = _grader_generate(tiny_model, list(prompt), n_new, 1.0, seed)
    vocab = tiny_model.config.vocab_size
    fn = _load_student_fn(student, forbid, lend, "generate")
    what = f"generate(model, prompt, max_new_tokens={n_new}, temperature=1.0, seed={seed})"
    first = _checked(fn, tiny_model, list(prompt), n_new, 1.0, None, None, seed)
    first = first.reshape(-1).tolist() if isinstance(first, torch.Tensor) else [int(t) for t in first]
    if len(first) != n_new or not all(0 <= t < vocab for t in first):
        raise GradingError(f"{what}: expected {n_new} new ids in 0..{vocab - 1}, got {first}.")
    second = _checked(fn, tiny_model, list(prompt), n_new, 1.0, None, None, seed)
    second = second.reshape(-1).tolist() if isinstance(second, torch.Tensor) else [int(t) for t in second]
    if first != second:
        raise GradingError(f"{what}: two calls with the same seed gave {first} and {second}. Create one "
                           "torch.Generator().manual_seed(seed) before the loop and pass it to every draw.")
    if first != seeded:
        raise GradingError(f"{what}: one torch.Generator().manual_seed({seed}) made before the loop and passed to "
                           f"sample at every step gives {seeded}; yours gave {first}. Create the generator ONCE, "
                           "before the loop (a new one per step repeats the seed's first random number), and "
                           "draw every token with it.")
    others = [_checked(fn, tiny_model, list(prompt), n_new, 1.0, None, None, seed + k) for k in (1, 2)]
    others = [o.reshape(-1).tolist() if isinstance(o, torch.Tensor) else [int(t) for t in o] for o in others]
    # Three seeds giving one sequence of 8+ tokens from this model's flat-ish softmax: chance ~1e-9.
    if first == others[0] == others[1]:
        raise GradingError(f"{what}: seeds {seed}, {seed + 1} and {seed + 2} all gave {first}. At temperature 1 "
                           "generate must SAMPLE from the softmax (torch.multinomial with the seeded generator), "
                           "not take the argmax.")
    what_k1 = f"generate(model, prompt, max_new_tokens={n_new}, temperature=1.0, top_k=1, seed={seed})"
    only_top = _checked(fn, tiny_model, list(prompt), n_new, 1.0, 1, None, seed)
    only_top = only_top.reshape(-1).tolist() if isinstance(only_top, torch.Tensor) else [int(t) for t in only_top]
    if len(only_top) != n_new:
        raise GradingError(f"{what_k1}: expected {n_new} new ids, got {len(only_top)}.")
    _check_greedy(tiny_model, list(prompt), only_top, what_k1 + " (top_k=1 leaves only the most likely token)",
                  reference)
