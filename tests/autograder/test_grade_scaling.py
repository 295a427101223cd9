"""Autograder, unit 6 (scaling): several models on the same stories, the results table, the
corpus perplexity, a power-law fit, a bootstrap interval and the hardest tokens.

Values are compared with minillm (``minillm.inference.scoring.score_many``, ``minillm.experiments.scaling``:
``fit_power_law``, ``bootstrap_interval``), never with solutions/. The models are the trained
family minillm ships (data/models: tiny-s, tiny-m, tiny-l, whose perplexity falls with size), on
the stories they never trained on, cut to fit their 128-token context: every NLL, perplexity and
surprise a student reads in a message is a real model's. Texts and synthetic data are drawn from
``grader_seed``; the numbers recorded for the class comparison (``record_number``) use fixed
stories, so they are comparable across students and runs. While the student's code runs,
minillm's scoring and scaling functions raise: the exercise is to write them.
"""

from __future__ import annotations

import copy
import importlib
import math
import random
from statistics import NormalDist

import numpy as np
import pytest
import torch
from grading import GradingError, Unchanged, expect_close, expect_float, expect_int

ms = importlib.import_module("minillm.inference.scoring")
mes = importlib.import_module("minillm.experiments.scaling")

pytestmark = pytest.mark.scaling

OBJECTIVES = {
    "SCAL-1": "Scores a story: total NLL in nats over the scored tokens (the first token is not scored)",
    "SCAL-2": "Builds the results table of several models on the same stories (model, params, story, tokens, nll, perplexity)",
    "SCAL-3": "Computes a model's corpus perplexity by pooling NLL and tokens over stories (not the mean of perplexities)",
    "SCAL-4": "Fits a power law perplexity = a * N^k by least squares on log-log axes",
    "SCAL-5": "Computes a bootstrap confidence interval of the corpus perplexity by resampling stories",
    "SCAL-6": "Finds the k tokens of a text with the highest surprise",
}

_REF = {"score_many": ms.score_many, "score": ms.score, "fit_power_law": mes.fit_power_law,
        "bootstrap_interval": mes.bootstrap_interval}

# The recorded class numbers use the trained family minillm ships (data/models: tiny-s, -m, -l,
# whose perplexity really falls with size) on the first 6 of the stories it never trained on,
# cut to 280 characters (~110 tokens) so that they fit its 128-token context.
CLASS_STORIES = 6
CLASS_STORY_CHARS = 280


# ------------------------------------------------------------------------------------------
# Helpers and fixtures
# ------------------------------------------------------------------------------------------

def _load_student_fn(student, forbid, name: str):
    """The student's function, imported after minillm's answers are forbidden.

    Call this AFTER computing the reference (the reference uses them)."""
    forbid(*(f"{module}.{name}" for module in ("minillm.inference.scoring", "minillm")
             for name in ("score", "score_many", "perplexity")))
    forbid(*(f"minillm.experiments.scaling.{name}" for name in
                         ("fit_power_law", "bootstrap_interval", "summarize", "run_scaling", "costliest_tokens",
                          "rank_stories", "loss_by_token")))
    return student.function("scaling", name)


def _rng(grader_seed: int, salt: int) -> tuple[random.Random, np.random.Generator]:
    """Independent random streams per test, all fixed by the grader seed."""
    return random.Random(grader_seed * 1031 + salt), np.random.default_rng(grader_seed * 1031 + salt)


@pytest.fixture(scope="module")
def _family_master():
    from minillm import load_model, load_tokenizer
    from minillm.course.family import FAMILY_DIR, SHAPES

    return {name: load_model(FAMILY_DIR / name) for name in SHAPES}, load_tokenizer(FAMILY_DIR / "tiny-s")


@pytest.fixture
def family(_family_master):
    """(models by name, their shared tokenizer): the trained family in data/models, smallest first;
    fresh copies for each test, so that student code that changes a model reaches no other test."""
    models, tokenizer = _family_master
    return {name: copy.deepcopy(model) for name, model in models.items()}, tokenizer


def _fits(tokenizer, model, text: str) -> bool:
    """At least 3 tokens, and no more than the model's context (minillm's scoring cuts a longer text
    into windows, which a single forward pass, the exercise, does not)."""
    return 3 <= len(tokenizer.encode(text)) <= model.config.max_position_embeddings


def _stories(rng: random.Random, stories: list[str], n: int, tokenizer, model) -> list[str]:
    """``n`` stories cut to different lengths (about 20 to 120 tokens), each fitting ``model``'s context."""
    out = []
    for story in rng.sample(stories, n):
        text = story[: rng.randint(60, 320)]
        while not _fits(tokenizer, model, text):
            text = text[: len(text) * 3 // 4]
        out.append(text)
    return out


def _reference_rows(models: dict[str, torch.nn.Module], tokenizer, stories: list[str]) -> list[dict]:
    rows = []
    for name, model in models.items():
        for i, s in enumerate(_REF["score_many"](model, tokenizer, stories, top_k=0)):
            rows.append({"model": name, "params": model.num_parameters(),
                         "non_embedding_params": model.num_parameters(non_embedding=True),
                         "story": i, "tokens": s.n_tokens, "nll": s.total_nll, "perplexity": s.perplexity})
    return rows


def _pooled(rows: list[dict], model: str) -> float:
    mine = [r for r in rows if r["model"] == model]
    return math.exp(sum(r["nll"] for r in mine) / sum(r["tokens"] for r in mine))


def _as_float(value, what: str) -> float:
    try:
        if isinstance(value, torch.Tensor):
            value = value.item()
        return float(value)
    except (TypeError, ValueError):
        raise GradingError(f"{what}: expected a number, got {type(value).__name__} {value!r}.") from None


def _expect_floats(got, what: str) -> None:
    """The contract's "floats": each item of ``got`` a Python float (checked after the values, so a
    wrong number is reported as such first)."""
    for i, value in enumerate(got):
        expect_float(value, f"{what}, item {i}")


def _pair(got, what: str, names: str) -> tuple[float, float]:
    if isinstance(got, (np.ndarray, torch.Tensor)):
        got = list(got.tolist())
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise GradingError(f"{what}: expected a tuple {names} of two numbers, got {type(got).__name__} {got!r}.")
    return _as_float(got[0], what), _as_float(got[1], what)


# ------------------------------------------------------------------------------------------
# SCAL-1 score_story
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=3, objective="SCAL-1", level="P")
def test_score_story(student, forbid, grader_seed, trained_model, trained_tokenizer, held_out_texts):
    rng, _ = _rng(grader_seed, 1)
    texts = _stories(rng, held_out_texts, 3, trained_tokenizer, trained_model)
    expected = [_REF["score"](trained_model, trained_tokenizer, t, top_k=0) for t in texts]
    fn = _load_student_fn(student, forbid, "score_story")
    for text, ref in zip(texts, expected):
        what = f"score_story(model, tokenizer, a text of {len(ref.token_ids)} tokens)"
        got = fn(trained_model, trained_tokenizer, text)
        nll, tokens = _pair(got, what, "(nll, tokens)")
        if int(tokens) != ref.n_tokens:
            hint = ""
            if int(tokens) == ref.n_tokens + 1:
                hint = (" That is every token: the first token has nothing before it to predict it, so only "
                        "n - 1 tokens are scored.")
            raise GradingError(f"{what}: expected {ref.n_tokens} scored tokens, got {tokens}.{hint}")
        # A forward pass, then a sum of a few hundred float32 log-probabilities: 1e-4 relative.
        expect_close(nll, ref.total_nll, what + ": the total NLL in nats", atol=1e-4, rtol=1e-4)
        expect_float(got[0], what + ": the NLL")                      # the contract: a float and an int
        expect_int(got[1], what + ": the number of scored tokens")


# ------------------------------------------------------------------------------------------
# SCAL-2 results_table
# ------------------------------------------------------------------------------------------

_KEYS = ("model", "params", "non_embedding_params", "story", "tokens", "nll", "perplexity")


@pytest.mark.graded(points=4, objective="SCAL-2", level="P")
@pytest.mark.timeout_s(40)
def test_results_table(student, forbid, grader_seed, family, held_out_texts):
    scaling_models, tokenizer = family
    rng, _ = _rng(grader_seed, 2)
    stories = _stories(rng, held_out_texts, 3, tokenizer, scaling_models["tiny-s"])
    names = list(scaling_models)
    rng.shuffle(names)
    models = {name: scaling_models[name] for name in names}
    expected = _reference_rows(models, tokenizer, stories)
    fn = _load_student_fn(student, forbid, "results_table")
    what = "results_table(models, tokenizer, stories)"
    got = fn(models, tokenizer, list(stories))
    if hasattr(got, "to_dict"):          # a pandas DataFrame is fine too
        got = got.to_dict("records")
    if not isinstance(got, (list, tuple)) or len(got) != len(expected):
        raise GradingError(f"{what}: expected a list of {len(expected)} rows (one per model and story: "
                           f"{len(models)} models x {len(stories)} stories), got {type(got).__name__}"
                           f"{' of length ' + str(len(got)) if hasattr(got, '__len__') else ''}.")
    for i, (row, ref) in enumerate(zip(got, expected)):
        where = f"{what}, row {i} (model {ref['model']!r}, story {ref['story']})"
        if not isinstance(row, dict):
            raise GradingError(f"{where}: each row should be a dict, got {type(row).__name__}.")
        missing = [k for k in _KEYS if k not in row]
        if missing:
            raise GradingError(f"{where}: the row has no key(s) {missing}; a row holds {list(_KEYS)}.")
        if row["model"] != ref["model"] or int(row["story"]) != ref["story"]:
            raise GradingError(f"{where}: got model {row['model']!r}, story {row['story']!r}. Rows go model by model "
                               "in the order of the dict, and for each model story by story.")
        for key in ("params", "non_embedding_params", "tokens"):
            if int(row[key]) != ref[key]:
                raise GradingError(f"{where}: {key} should be {ref[key]}, got {row[key]!r}.")
        # Forward pass + sum of a few hundred float32 terms: 1e-4 relative.
        expect_close(_as_float(row["nll"], where), ref["nll"], where + ": nll (nats)", atol=1e-4, rtol=1e-4)
        expect_close(_as_float(row["perplexity"], where), ref["perplexity"], where + ": perplexity", atol=0, rtol=1e-4)
        for key in ("params", "non_embedding_params", "story", "tokens"):   # the contract's types
            expect_int(row[key], f"{where}: {key}")
        for key in ("nll", "perplexity"):
            expect_float(row[key], f"{where}: {key}")


# ------------------------------------------------------------------------------------------
# SCAL-3 corpus_perplexity
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=3, objective="SCAL-3", level="P")
def test_corpus_perplexity_pooled(student, forbid, grader_seed):
    """Synthetic rows of two models, stories of 5 to 600 tokens with very different NLL per token."""
    rng, _ = _rng(grader_seed, 3)
    rows = []
    for model in ("small", "large"):
        for i in range(rng.randint(4, 8)):
            tokens = rng.randint(5, 600)
            nll = tokens * rng.uniform(0.5, 5.0)
            rows.append({"model": model, "params": 1, "non_embedding_params": 1, "story": i, "tokens": tokens,
                         "nll": nll, "perplexity": math.exp(nll / tokens)})
    rng.shuffle(rows)
    fn = _load_student_fn(student, forbid, "corpus_perplexity")
    for model in ("small", "large"):
        expected = _pooled(rows, model)
        mean_of_ppl = float(np.mean([r["perplexity"] for r in rows if r["model"] == model]))
        what = f"corpus_perplexity(rows, {model!r})"
        answer = fn([dict(r) for r in rows], model)
        got = _as_float(answer, what)
        if not math.isclose(got, expected, rel_tol=1e-9) and math.isclose(got, mean_of_ppl, rel_tol=1e-9):
            raise GradingError(f"{what}: expected {expected:.6g}, got {got:.6g}, the mean of the per-story "
                               "perplexities. Pool instead: exp(sum of nll / sum of tokens) over the model's rows.")
        # Float64 sums of a dozen numbers: 1e-9 relative.
        expect_close(got, expected, what + ": exp(sum of nll / sum of tokens) over that model's rows",
                     atol=0, rtol=1e-9)
        expect_float(answer, what)                                    # the contract: a float


@pytest.mark.graded(points=2, objective="SCAL-3", level="P")
@pytest.mark.timeout_s(40)
def test_class_numbers(student, forbid, family, record_number):
    """The student's own table and corpus perplexities on the fixed class stories, recorded for
    the instructor's comparison (the same numbers for every student)."""
    from minillm.course.family import held_out_stories

    scaling_models, tokenizer = family
    stories = [s[:CLASS_STORY_CHARS] for s in held_out_stories()[:CLASS_STORIES]]
    expected = _reference_rows(scaling_models, tokenizer, stories)
    ref_ppl = {name: _pooled(expected, name) for name in scaling_models}
    ref_fit = _REF["fit_power_law"]([m.num_parameters(non_embedding=True) for m in scaling_models.values()],
                                    list(ref_ppl.values()))
    table = _load_student_fn(student, forbid, "results_table")
    corpus = student.function("scaling", "corpus_perplexity")
    rows = table(dict(scaling_models), tokenizer, stories)
    if hasattr(rows, "to_dict"):
        rows = rows.to_dict("records")
    got = {}
    for name in scaling_models:   # given the rows it returned, as they are (graded apart: as the judge reads them)
        got[name] = _as_float(corpus(rows, name), f"corpus_perplexity(rows, {name!r})")
        record_number(f"corpus_perplexity/{name}", got[name], ref_ppl[name])
    try:
        fit = student.function("scaling", "fit_power_law")
        _, exponent = _pair(fit([m.num_parameters(non_embedding=True) for m in scaling_models.values()],
                                list(got.values())), "fit_power_law", "(coefficient, exponent)")
        record_number("power_law_exponent", exponent, ref_fit.exponent)
    except Exception:  # noqa: BLE001  (fit_power_law is graded on its own, SCAL-4; here it is only recorded)
        record_number("power_law_exponent", None, ref_fit.exponent)
    for name in scaling_models:
        # Forward passes over 6 whole stories, float32 sums: 1e-4 relative.
        expect_close(got[name], ref_ppl[name],
                     f"corpus_perplexity(results_table(...), {name!r}) on the {CLASS_STORIES} class stories",
                     atol=0, rtol=1e-4)


# ------------------------------------------------------------------------------------------
# SCAL-4 fit_power_law
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=3, objective="SCAL-4", level="M")
def test_fit_power_law(student, forbid, grader_seed):
    rng, nrng = _rng(grader_seed, 4)
    # Exactly on a power law: the fit must recover it.
    a, k = rng.uniform(20, 200), -rng.uniform(0.05, 0.4)
    sizes = sorted(rng.sample([10**e for e in (3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7)], rng.randint(3, 6)))
    exact = [a * n**k for n in sizes]
    # Noisy points: compare with minillm's least squares on log-log axes.
    noisy_sizes = sorted(float(x) for x in 10 ** nrng.uniform(3, 8, size=rng.randint(4, 7)))
    noisy = [rng.uniform(20, 200) * n ** -rng.uniform(0.05, 0.3) * math.exp(nrng.normal(0, 0.1)) for n in noisy_sizes]
    ref = _REF["fit_power_law"](noisy_sizes, noisy)
    fn = _load_student_fn(student, forbid, "fit_power_law")

    what = f"fit_power_law({len(sizes)} sizes, perplexities exactly {a:.4g} * N^{k:.4f})"
    got = fn(list(sizes), list(exact))
    coefficient, exponent = _pair(got, what, "(coefficient, exponent)")
    # A least-squares fit through exact points in float64: 1e-6 relative (log/exp round trips).
    expect_close([coefficient, exponent], [a, k], what + ": (coefficient, exponent)", atol=1e-9, rtol=1e-6)
    _expect_floats(got, what + ": (coefficient, exponent)")

    what = f"fit_power_law({len(noisy_sizes)} noisy points)"
    coefficient, exponent = _pair(fn(list(noisy_sizes), list(noisy)), what, "(coefficient, exponent)")
    if abs(exponent) > 5 or coefficient <= 0:
        raise GradingError(f"{what}: got coefficient {coefficient:.4g}, exponent {exponent:.4g}. Fit the line "
                           "through (log N, log perplexity): the slope is the exponent, exp(intercept) the "
                           "coefficient.")
    expect_close([coefficient, exponent], [ref.coefficient, ref.exponent],
                 what + ": (coefficient, exponent) of the least-squares line through (log N, log perplexity)",
                 atol=1e-9, rtol=1e-6)


# ------------------------------------------------------------------------------------------
# SCAL-5 bootstrap_ci
# ------------------------------------------------------------------------------------------

def _bootstrap_band(nll: np.ndarray, tokens: np.ndarray, n: int, level: float, seed: int) -> tuple[float, float, float]:
    """(low, high) from minillm and the tolerance on each end.

    Two bootstraps with different random draws differ: the q-quantile of n replicates has a
    standard error of about sqrt(q (1 - q) / n) / f(x_q), f the density of the replicates at
    the quantile (normal approximation: f = phi(z_q) / sigma). Two independent estimates differ
    by sqrt(2) times that; 6 of those standard errors make a chance failure ~1e-9."""
    low, high = _REF["bootstrap_interval"](nll, tokens, samples=n, seed=seed, level=level)
    rng = np.random.default_rng(seed + 1)
    picks = rng.integers(0, len(nll), size=(n, len(nll)))
    sigma = float(np.exp(nll[picks].sum(1) / tokens[picks].sum(1)).std())
    q = (1 - level) / 2
    z = NormalDist().inv_cdf(1 - q)
    se = math.sqrt(q * (1 - q) / n) * sigma / NormalDist().pdf(z)
    return math.exp(low), math.exp(high), 6 * math.sqrt(2) * se


@pytest.mark.graded(points=4, objective="SCAL-5", level="M")
def test_bootstrap_ci(student, forbid, grader_seed):
    rng, nrng = _rng(grader_seed, 5)
    stories = rng.randint(20, 40)
    tokens = nrng.integers(20, 600, size=stories).astype(float)
    nll = tokens * nrng.uniform(1.0, 4.0, size=stories)
    n = 10_000
    seed = rng.randrange(2**31)
    checks = []
    for level in (0.95, rng.choice([0.8, 0.9])):
        checks.append((level, *_bootstrap_band(nll, tokens, n, level, seed)))
    point = math.exp(nll.sum() / tokens.sum())
    fn = _load_student_fn(student, forbid, "bootstrap_ci")
    for level, low, high, tol in checks:
        what = f"bootstrap_ci(nll, tokens of {stories} stories, n_resamples={n}, seed={seed}, level={level})"
        got = fn(nll.tolist(), tokens.astype(int).tolist(), n, seed, level)
        got_low, got_high = _pair(got, what, "(low, high)")
        if not got_low <= point <= got_high:
            hint = ""
            if got_low <= math.log(point) <= got_high:
                hint = " It looks like an interval of the mean NLL: exponentiate each replicate (perplexity)."
            raise GradingError(f"{what}: the interval ({got_low:.5g}, {got_high:.5g}) does not contain the corpus "
                               f"perplexity of the data, {point:.5g}.{hint}")
        if abs(got_low - low) > tol or abs(got_high - high) > tol:
            raise GradingError(
                f"{what}: expected about ({low:.5g}, {high:.5g}) (each end within {tol:.3g}, the Monte Carlo "
                f"error of two bootstraps), got ({got_low:.5g}, {got_high:.5g}). Resample whole stories with "
                f"replacement, compute exp(sum nll / sum tokens) of each resample, and take the "
                f"{(1 - level) / 2:.3g} and {1 - (1 - level) / 2:.3g} quantiles.")
        _expect_floats(got, what + ": (low, high)")
    what = f"bootstrap_ci(..., seed={seed})"
    args = (nll.tolist(), tokens.astype(int).tolist())
    inputs = Unchanged("the nll and tokens lists you were given", *args, rng=True)
    first = _pair(fn(*args, 2000, seed, 0.95), what, "(low, high)")
    inputs.check(what)
    second = _pair(fn(*args, 2000, seed, 0.95), what, "(low, high)")
    if first != second:
        raise GradingError(f"{what}: two calls with the same seed gave {first} and {second}; draw with "
                           "np.random.default_rng(seed).")
    # The signature's defaults: n_resamples=2000, seed=0, level=0.95.
    default, explicit = (_pair(fn(*call), "bootstrap_ci", "(low, high)") for call in (args, (*args, 2000, 0, 0.95)))
    if default != explicit:
        raise GradingError(f"bootstrap_ci(nll, tokens) gave {default}, but bootstrap_ci(nll, tokens, 2000, 0, 0.95) "
                           f"gave {explicit}: keep the stub's defaults, n_resamples=2000, seed=0, level=0.95.")


# ------------------------------------------------------------------------------------------
# SCAL-6 hardest_tokens
# ------------------------------------------------------------------------------------------

@pytest.mark.graded(points=3, objective="SCAL-6", level="M")
def test_hardest_tokens(student, forbid, grader_seed, trained_model, trained_tokenizer, held_out_texts):
    rng, _ = _rng(grader_seed, 6)
    text = _stories(rng, held_out_texts, 1, trained_tokenizer, trained_model)[0]
    k = rng.randint(3, 8)
    ref = _REF["score"](trained_model, trained_tokenizer, text, top_k=0)
    ranked = sorted(((r.token, r.surprise) for r in ref.rows), key=lambda t: t[1], reverse=True)
    short = "hi there"
    ref_short = sorted(((r.token, r.surprise) for r in _REF["score"](trained_model, trained_tokenizer, short, top_k=0).rows),
                       key=lambda t: t[1], reverse=True)
    fn = _load_student_fn(student, forbid, "hardest_tokens")
    for text_, k_, full in ((text, k, ranked), (short, len(ref_short) + 3, ref_short)):
        expected = full[:k_]
        what = f"hardest_tokens(model, tokenizer, a text of {len(trained_tokenizer.encode(text_))} tokens, k={k_})"
        got = fn(trained_model, trained_tokenizer, text_, k_)
        if not isinstance(got, (list, tuple)) or len(got) != len(expected):
            raise GradingError(f"{what}: expected a list of {len(expected)} (token, surprise) tuples"
                               + (" (the text has fewer scored tokens than k: return them all)" if k_ > len(expected) else "")
                               + f", got {type(got).__name__}{' of length ' + str(len(got)) if hasattr(got, '__len__') else ''}.")
        pairs = []
        for item in got:
            if not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str):
                raise GradingError(f"{what}: each item should be a (token text, surprise) tuple, got {item!r}.")
            pairs.append((item[0], _as_float(item[1], what)))
        # Surprises come out of a forward pass: 1e-4 relative, 1e-4 absolute.
        expect_close([s for _, s in pairs], [s for _, s in expected],
                     what + ": the surprises (nats), largest first", atol=1e-4, rtol=1e-4)
        _expect_floats([surprise for _, surprise in got], what + ": the surprises")   # the contract: (str, float)
        for j, ((token, _), (want, surprise)) in enumerate(zip(pairs, expected)):
            # Two surprises within 1e-3 of each other may come out in either order.
            tied = any(0 <= i < len(full) and abs(full[i][1] - surprise) < 1e-3 for i in (j - 1, j + 1))
            if token != want and not tied:
                raise GradingError(f"{what}: item {j} should be the token {want!r} (surprise {surprise:.4f}), "
                                   f"got {token!r}. Use tokenizer.token_text(id) of the token that was predicted "
                                   "(the target), not of the token before it.")
