"""Fitting the power law in linear space: a straight line through (N, perplexity) instead of
(log N, log perplexity), reported as (intercept, slope)."""


def fit_power_law(n_params, perplexities):
    slope, intercept = np.polyfit(np.asarray(n_params, dtype=float), np.asarray(perplexities, dtype=float), deg=1)
    return float(intercept), float(slope)
