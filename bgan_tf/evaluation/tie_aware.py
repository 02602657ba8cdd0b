"""Exact tie-aware expectations of AP@K, P@K and R@K from tie groups in rank order.

With L bits there are only L + 1 distinct Hamming distances, so most database items
are tied with thousands of others; `retrieval_metrics` scores every query by the EXACT
EXPECTED VALUE of each metric when the items of equal distance (or equal cosine score)
are put in uniformly random order, each tie group independently. This module holds that
math: it sees only, per query, the number of items and of relevant items of every tie
group, best group first. Closed forms (McSherry & Najork, ECIR 2008, "Computing
information retrieval performance measures efficiently in the presence of tied scores"):
a tie group holding n items, r of them relevant, after N0 items of which R0 are
relevant, adds to the AP numerator, in expectation,
    (r / n) * sum_{i=1..n} (R0 + 1 + (i - 1)(r - 1)/(n - 1)) / (N0 + i)
(P(position i is relevant) = r/n; given that, the i - 1 earlier positions of the group
hold (i - 1)(r - 1)/(n - 1) relevant items on average), summed with harmonic numbers.
When the cut-off K falls inside a tie group (m = K - N0 of its n items are inside the
top K), the number X of relevant items among those m is hypergeometric(n, r, m) and
the denominator of AP@K depends on it, so AP@K is computed as the exact expectation
    sum_x P(X = x) * (E[numerator before the group] + E[group part | X = x]) / (R0 + x),
using that the order inside earlier groups is independent of X and that, given X = x,
the m positions hold the x relevant items in uniformly random order. P@K and R@K are
linear, so they use E[X] = m r / n.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

# Cells of the (query, x) grid of the hypergeometric expectation at once.
_GRID_BUDGET = 4_000_000


def harmonic(n: int) -> np.ndarray:
    """H[k] = 1 + 1/2 + ... + 1/k for k = 0..n (H[0] = 0)."""
    h = np.zeros(n + 1, dtype=np.float64)
    if n:
        h[1:] = np.cumsum(1.0 / np.arange(1, n + 1, dtype=np.float64))
    return h


def _group_part(x, m, n0, r0, harm):
    """E[sum of P@k over relevant ranks inside the first m positions of a tie group].

    The first m positions of the group hold x relevant items in uniformly random
    order; the group starts after n0 items of which r0 are relevant. Broadcasts.
    """
    x = np.asarray(x, dtype=np.float64)
    m = np.asarray(m, dtype=np.int64)
    mf = m.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(mf > 1, (x - 1.0) / (mf - 1.0), 0.0)
        d_h = harm[n0 + m] - harm[n0]
        out = (x / mf) * ((r0 + 1.0 - a * (n0 + 1.0)) * d_h + a * mf)
    return np.where((x > 0) & (m > 0), out, 0.0)


def _log_comb(a, b):
    return gammaln(a + 1.0) - gammaln(b + 1.0) - gammaln(a - b + 1.0)


def _ap_at_cut(c_before, r0, n0, n, r, m, harm) -> np.ndarray:
    """Exact E[AP@K] per query when K takes m of the n items of its cut group."""
    q = c_before.shape[0]
    out = np.zeros(q, dtype=np.float64)
    random = (m < n) & (r > 0) & (r < n)
    # Deterministic X: whole group inside, no relevant in it, or all relevant.
    det = ~random
    if np.any(det):
        x = np.where(m == n, r, np.where(r == 0, 0, m))[det]
        num = c_before[det] + _group_part(x, m[det], n0[det], r0[det], harm)
        den = r0[det] + x
        out[det] = np.where(den > 0, num / np.maximum(den, 1), 0.0)
    idx = np.flatnonzero(random)
    if idx.size == 0:
        return out
    xmax_all = np.minimum(r[idx], m[idx])
    order = np.argsort(xmax_all, kind="stable")  # similar grid widths together
    start = 0
    while start < idx.size:
        stop = start + 1
        while stop < idx.size and (stop - start + 1) * (int(xmax_all[order[stop]]) + 1) <= _GRID_BUDGET:
            stop += 1
        sel = idx[order[start:stop]]
        width = int(xmax_all[order[stop - 1]]) + 1
        xs = np.arange(width, dtype=np.float64)[None, :]
        nn, rr, mm = (v[sel].astype(np.float64)[:, None] for v in (n, r, m))
        lo = np.maximum(0.0, mm - (nn - rr))
        hi = np.minimum(rr, mm)
        valid = (xs >= lo) & (xs <= hi)
        xs_c = np.where(valid, xs, lo)  # keep gammaln arguments in range
        logp = _log_comb(rr, xs_c) + _log_comb(nn - rr, mm - xs_c) - _log_comb(nn, mm)
        p = np.where(valid, np.exp(logp), 0.0)
        p /= p.sum(axis=1, keepdims=True)  # remove rounding drift
        num = c_before[sel][:, None] + _group_part(
            xs, m[sel][:, None], n0[sel][:, None], r0[sel][:, None], harm
        )
        den = r0[sel][:, None] + xs
        val = np.where(den > 0, num / np.maximum(den, 1.0), 0.0)
        out[sel] = (p * val).sum(axis=1)
        start = stop
    return out


def metrics_from_groups(
    n: np.ndarray, r: np.ndarray, map_ks: list[int], p_ks: list[int], harm: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-query expected metrics from tie groups in rank order.

    n, r: int64 [Q, G] items and relevant items of each tie group, best group first
    (empty groups allowed anywhere). Returns per-query arrays.
    """
    q, width = n.shape
    n_db = int(n[0].sum()) if q else 0
    cum_n = np.cumsum(n, axis=1)
    cum_r = np.cumsum(r, axis=1)
    n0 = cum_n - n
    r0 = cum_r - r
    # Expected AP numerator of every whole group; only groups with a relevant item
    # contribute, so evaluate the closed form there only (most groups in float ranking).
    c = np.zeros((q, width), dtype=np.float64)
    hit = r > 0
    c[hit] = _group_part(r[hit], n[hit], n0[hit], r0[hit], harm)
    cum_c = np.cumsum(c, axis=1)
    r_tot = cum_r[:, -1]
    out: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ap_all"] = np.where(r_tot > 0, cum_c[:, -1] / np.maximum(r_tot, 1), 0.0)
    rows = np.arange(q)
    # Rows of cum_n are non-decreasing in [0, n_db]: offsetting row i by i * (n_db + 1)
    # makes the flattened table sorted, so one searchsorted finds every cut group.
    offset = rows * (n_db + 1)
    flat = (cum_n + offset[:, None]).ravel()

    def cut(k: int):
        k = min(k, n_db)
        g = np.searchsorted(flat, offset + k, side="left") - rows * width
        return k, g, k - n0[rows, g]

    for k in map_ks:
        k_eff, g, m = cut(k)
        if k_eff == n_db:
            out[f"ap@{k}"] = out["ap_all"]
            continue
        out[f"ap@{k}"] = _ap_at_cut(
            cum_c[rows, g] - c[rows, g], r0[rows, g], n0[rows, g], n[rows, g], r[rows, g], m, harm
        )
    for k in p_ks:
        k_eff, g, m = cut(k)
        with np.errstate(divide="ignore", invalid="ignore"):
            hits = r0[rows, g] + m * r[rows, g] / np.maximum(n[rows, g], 1)
            out[f"p@{k}"] = hits / k_eff
            out[f"r@{k}"] = np.where(r_tot > 0, hits / np.maximum(r_tot, 1), 0.0)
    return out
