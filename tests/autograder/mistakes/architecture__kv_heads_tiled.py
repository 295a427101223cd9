"""Mistake: grouped-query attention with the key/value heads TILED instead of grouped.

``x.repeat(1, n_rep, 1, 1)`` orders the heads kv0, kv1, kv0, kv1, ... but query head h
belongs to key/value head h // n_rep: kv0, kv0, kv1, kv1, ... (``repeat_interleave``).
The shapes are right, so nothing crashes; the numbers are wrong whenever there are at
least 2 key/value heads, each shared by at least 2 query heads.
"""


def repeat_kv(x, n_rep):
    return x.repeat(1, n_rep, 1, 1)
