"""Mistake: bootstrap_ci seeds NumPy's GLOBAL random generator (np.random.seed) and draws from it.

The interval is right to Monte Carlo error and the same seed gives the same interval, but every
caller's later np.random draws now depend on this call: the docstring asks for
np.random.default_rng(seed), a generator of the function's own.
"""


def bootstrap_ci(nll, tokens, n_resamples=2000, seed=0, level=0.95):
    import numpy as np
    nll_arr, tok_arr = np.asarray(nll, dtype=float), np.asarray(tokens, dtype=float)
    np.random.seed(seed)
    picks = np.random.randint(0, len(nll_arr), size=(n_resamples, len(nll_arr)))
    replicates = np.exp(nll_arr[picks].sum(axis=1) / tok_arr[picks].sum(axis=1))
    tail = (1 - level) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return float(low), float(high)
