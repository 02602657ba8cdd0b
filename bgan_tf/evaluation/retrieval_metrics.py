"""Retrieval metrics for hashing: Hamming ranking of binary codes (and cosine ranking).

What is measured (per query, then averaged over queries):
- AP@K (hashing convention): AP@K = (1 / #relevant in the top K) * sum over the
  ranks k <= K that hold a relevant item of P@k; AP@K = 0 when the top K holds no
  relevant item. mAP@all is AP@K with K = database size (so the denominator is the
  number of relevant items in the whole database).
- P@K, R@K: relevant items in the top K divided by K, resp. by all relevant items
  (R@K = 0 for a query with no relevant item in the database).
- Hamming-radius metrics: the "ball" of radius r holds every database item at
  Hamming distance <= r (no tie problem: it is a set). Precision in the ball is
  #relevant / #in ball, and a query whose ball is EMPTY COUNTS PRECISION 0 (the
  usual hashing convention: the hash lookup returned nothing useful). Because this
  convention pulls the average down at small radii, the fraction of queries with an
  empty ball is returned too. The PR curve over radii 0..L uses the same rule.

Relevance: labels of shape [N] (int class ids) mean "same class"; labels of shape
[N, C] in {0, 1} mean "shares at least one label" (multi-label: NUS-WIDE, MIRFlickr).
The shape is detected automatically. A one-hot [N, C] matrix gives the same result as
the class ids.

Tie rule (why: with L bits there are only L + 1 distinct Hamming distances, so most
database items are tied with thousands of others, and "break ties by database index"
makes the score depend on how the database happens to be ordered):
every metric is the EXACT EXPECTED VALUE when the items of equal distance are put in
uniformly random order (each tie group independently). Results therefore never depend
on database order. Closed forms (McSherry & Najork, ECIR 2008, "Computing information
retrieval performance measures efficiently in the presence of tied scores"):
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
linear, so they use E[X] = m r / n. The cosine path (`evaluate_float`) applies the same
rule to exactly equal similarity scores.

Cost: Hamming distances come from bit counts of XOR-ed packed codes, then one counting
pass turns each query's distances into a histogram over the L + 1 distances (all items,
relevant items). Every metric is computed from those histograms, so no sort is needed.
Queries are processed in chunks so that memory stays bounded (about 10 bytes per
(query, database item) pair of a chunk) whatever the number of queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import gammaln

from bgan_tf import codes as codes_lib
from bgan_tf.errors import UserError

#: Default K values of the precision@K / recall@K curves (those above the
#: database size are dropped).
DEFAULT_PRECISION_AT: tuple[int, ...] = (
    1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000,
)

# Pairs (query, database item) processed at once when chunk_size is not given.
_DEFAULT_PAIR_BUDGET = 8_000_000
# Cells of the (query, x) grid of the hypergeometric expectation at once.
_GRID_BUDGET = 4_000_000


# ---------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------


def _as_packed(codes: np.ndarray, num_bits: int | None, what: str) -> tuple[np.ndarray, int]:
    """Signs [N, L] -> packed; packed uint8 passes through when num_bits is given."""
    arr = np.asarray(codes)
    if arr.ndim != 2:
        raise UserError(f"{what} must be a 2-D array [N, L] (or packed [N, ceil(L/8)]), got shape {arr.shape}")
    if num_bits is not None:
        if arr.dtype != np.uint8:
            raise UserError(f"{what}: num_bits={num_bits} means packed uint8 codes, got dtype {arr.dtype}")
        if arr.shape[1] != (num_bits + 7) // 8:
            raise UserError(
                f"{what}: packed codes of {num_bits} bits need {(num_bits + 7) // 8} bytes per row, got {arr.shape[1]}"
            )
        # Padding bits past num_bits must not count: clear them.
        if num_bits % 8:
            arr = arr.copy()
            arr[:, -1] &= np.uint8((0xFF << (8 - num_bits % 8)) & 0xFF)
        return arr, num_bits
    if arr.size and not np.all((arr == 1) | (arr == -1)):
        raise UserError(
            f"{what} must hold signs in {{-1, +1}} (a 0 usually means np.sign of an exact 0); "
            "for packed uint8 codes pass num_bits="
        )
    return codes_lib.pack(arr), arr.shape[1]


def _labels(labels: np.ndarray, n: int, what: str) -> np.ndarray:
    """Check shape: int [N] (single-label) or {0,1} [N, C] (multi-label)."""
    lab = np.asarray(labels)
    if lab.shape[:1] != (n,):
        raise UserError(f"{what} has {lab.shape[0] if lab.ndim else 0} rows but there are {n} codes")
    if lab.ndim == 1:
        if not np.issubdtype(lab.dtype, np.integer):
            if not np.all(np.equal(np.mod(lab, 1), 0)):
                raise UserError(f"{what}: 1-D labels must be integer class ids")
            lab = lab.astype(np.int64)
        return lab
    if lab.ndim == 2:
        if lab.size and not np.all((lab == 0) | (lab == 1)):
            raise UserError(f"{what}: 2-D labels must be a {{0,1}} multi-label matrix [N, C]; pass class ids as 1-D")
        return lab.astype(np.float32)
    raise UserError(f"{what} must be [N] class ids or [N, C] multi-label, got shape {lab.shape}")


def _relevance(q_lab: np.ndarray, db_lab: np.ndarray) -> np.ndarray:
    """bool [Q, N]: same class (1-D) or at least one shared label (2-D)."""
    if q_lab.ndim == 1:
        return q_lab[:, None] == db_lab[None, :]
    return (q_lab @ db_lab.T) > 0.5


def _check_pair(q_lab: np.ndarray, db_lab: np.ndarray) -> None:
    if q_lab.ndim != db_lab.ndim or (q_lab.ndim == 2 and q_lab.shape[1] != db_lab.shape[1]):
        raise UserError(
            f"query labels {q_lab.shape} and database labels {db_lab.shape} are not the same kind of labels"
        )


def _ks(values: Sequence[int] | None, n_db: int, default: Sequence[int]) -> list[int]:
    if values is None:
        ks = [k for k in default if k <= n_db]
        return ks if ks else [n_db]
    ks = [int(k) for k in values]
    if any(k < 1 for k in ks):
        raise UserError(f"cut-offs K must be >= 1, got {list(values)}")
    return ks


def _chunk(chunk_size: int | None, n_db: int) -> int:
    if chunk_size is not None:
        if chunk_size < 1:
            raise UserError(f"chunk_size must be >= 1, got {chunk_size}")
        return int(chunk_size)
    return int(np.clip(_DEFAULT_PAIR_BUDGET // max(n_db, 1), 1, 16384))


# ---------------------------------------------------------------------------
# Tie-aware core on tie groups
# ---------------------------------------------------------------------------


def _harmonic(n: int) -> np.ndarray:
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


def _metrics_from_groups(
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


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def hamming_histograms(
    query_packed: np.ndarray,
    db_packed: np.ndarray,
    relevant: np.ndarray,
    num_bits: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per query, how many database items (and relevant ones) lie at each distance.

    Why: every Hamming-ranking metric depends only on these two [Q, L + 1] tables, so
    they replace a [Q, N] sort. Distances are accumulated byte by byte (uint16) to keep
    the temporaries at a few bytes per pair.
    """
    q, nbytes = query_packed.shape
    n_db = db_packed.shape[0]
    dist = np.zeros((q, n_db), dtype=np.uint16)
    for b in range(nbytes):
        x = np.bitwise_xor(query_packed[:, b : b + 1], db_packed[None, :, b])
        dist += np.bitwise_count(x)
    width = num_bits + 1
    itype = np.int32 if q * width < 2**31 else np.int64
    key = dist.astype(itype)
    key += (np.arange(q, dtype=itype) * width)[:, None]
    counts = np.bincount(key.ravel(), minlength=q * width).reshape(q, width)
    rel_counts = np.bincount(key[relevant], minlength=q * width).reshape(q, width)
    return counts.astype(np.int64), rel_counts.astype(np.int64)


def _ranking_summary(mean: dict[str, float], n_q: int, n_db: int, map_ks, p_ks) -> dict[str, Any]:
    """The keys both rankings report: sizes, mAP@all, mAP@K and the P@K / R@K curves."""
    return {
        "num_queries": n_q,
        "num_database": n_db,
        "map_all": mean["ap_all"],
        "map_at": {int(k): mean[f"ap@{k}"] for k in map_ks},
        "precision_at_k": {
            "k": [int(k) for k in p_ks],
            "precision": [mean[f"p@{k}"] for k in p_ks],
            "recall": [mean[f"r@{k}"] for k in p_ks],
        },
    }


def evaluate_codes(
    query_codes: np.ndarray,
    db_codes: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    *,
    num_bits: int | None = None,
    topk: Sequence[int] = (1000,),
    pr_curve: bool = True,
    precision_at: Sequence[int] | None = None,
    radius: int = 2,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Hamming-ranking retrieval metrics, tie-aware (see the module docstring).

    Args:
      query_codes, db_codes: signs in {-1, +1} [N, L], or packed uint8
        [N, ceil(L/8)] (`bgan_tf.codes.pack`) together with `num_bits=L`.
      query_labels, db_labels: int class ids [N] or {0,1} multi-label [N, C].
      topk: the K of each mAP@K (K above the database size means the whole database).
      pr_curve: also compute the precision-recall curve over Hamming radii 0..L.
      precision_at: K values of the P@K / R@K curves (default: DEFAULT_PRECISION_AT up
        to the database size; larger explicit K are clipped to the database size).
      radius: Hamming radius of the "precision within radius" metric (2 by custom).
      chunk_size: queries per chunk (default: about 8 million query-item pairs).

    Returns a JSON-ready dict: `map_all`; `map_at` {K: mAP@K};
    `precision_at_k` {"k", "precision", "recall"} lists; `radius`,
    `precision_at_radius`, `recall_at_radius`, `empty_ball_fraction` (queries whose
    radius ball is empty; they count precision 0); `pr_curve` {"radius", "precision",
    "recall", "empty_fraction"} (or None); sizes and the tie rule.
    """
    q_packed, n_bits = _as_packed(query_codes, num_bits, "query codes")
    d_packed, n_bits_db = _as_packed(db_codes, num_bits, "database codes")
    if n_bits != n_bits_db:
        raise UserError(f"query codes have {n_bits} bits but database codes have {n_bits_db}")
    n_q, n_db = q_packed.shape[0], d_packed.shape[0]
    if n_q == 0 or n_db == 0:
        raise UserError(f"need at least one query and one database item, got {n_q} and {n_db}")
    q_lab = _labels(query_labels, n_q, "query labels")
    d_lab = _labels(db_labels, n_db, "database labels")
    _check_pair(q_lab, d_lab)
    if not 0 <= radius <= n_bits:
        raise UserError(f"radius must be in 0..{n_bits}, got {radius}")
    map_ks = _ks(topk, n_db, ())
    p_ks = _ks(precision_at, n_db, DEFAULT_PRECISION_AT)
    harm = _harmonic(n_db)
    step = _chunk(chunk_size, n_db)

    per_query: dict[str, list[np.ndarray]] = {}
    cum_prec, cum_rec, empty = [], [], []
    for s in range(0, n_q, step):
        e = min(s + step, n_q)
        rel = _relevance(q_lab[s:e], d_lab)
        counts, rel_counts = hamming_histograms(q_packed[s:e], d_packed, rel, n_bits)
        for key, val in _metrics_from_groups(counts, rel_counts, map_ks, p_ks, harm).items():
            per_query.setdefault(key, []).append(val)
        in_ball = np.cumsum(counts, axis=1)
        rel_ball = np.cumsum(rel_counts, axis=1)
        r_tot = rel_ball[:, -1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            cum_prec.append(np.where(in_ball > 0, rel_ball / np.maximum(in_ball, 1), 0.0))
            cum_rec.append(np.where(r_tot > 0, rel_ball / np.maximum(r_tot, 1), 0.0))
        empty.append(in_ball == 0)
    mean = {k: float(np.concatenate(v).mean()) for k, v in per_query.items()}
    prec = np.concatenate(cum_prec).mean(axis=0)
    rec = np.concatenate(cum_rec).mean(axis=0)
    emp = np.concatenate(empty).mean(axis=0)
    result: dict[str, Any] = {
        "kind": "hamming",
        "num_bits": n_bits,
        **_ranking_summary(mean, n_q, n_db, map_ks, p_ks),
        "radius": int(radius),
        "precision_at_radius": float(prec[radius]),
        "recall_at_radius": float(rec[radius]),
        "empty_ball_fraction": float(emp[radius]),
        "pr_curve": None,
        "tie_rule": "expected value over uniformly random order within equal-distance groups",
    }
    if pr_curve:
        result["pr_curve"] = {
            "radius": list(range(n_bits + 1)),
            "precision": [float(v) for v in prec],
            "recall": [float(v) for v in rec],
            "empty_fraction": [float(v) for v in emp],
        }
    return result


def evaluate_float(
    query_feats: np.ndarray,
    db_feats: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    *,
    topk: Sequence[int] = (1000,),
    precision_at: Sequence[int] | None = None,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """The same metrics when ranking by cosine similarity of real-valued features.

    Why: it is the reference that binary codes compress; a hashing method is judged
    by how much of the float ranking's mAP it keeps. Exactly equal similarities are
    treated as ties with the same expected-value rule as Hamming ranking. Zero
    vectors get similarity 0 to everything. Returns `map_all`, `map_at`,
    `precision_at_k` (same layout as `evaluate_codes`, without radius metrics).
    """
    qf = np.asarray(query_feats, dtype=np.float32)
    df = np.asarray(db_feats, dtype=np.float32)
    if qf.ndim != 2 or df.ndim != 2 or qf.shape[1] != df.shape[1]:
        raise UserError(f"features must be [N, D] with the same D, got {qf.shape} and {df.shape}")
    n_q, n_db = qf.shape[0], df.shape[0]
    if n_q == 0 or n_db == 0:
        raise UserError(f"need at least one query and one database item, got {n_q} and {n_db}")
    q_lab = _labels(query_labels, n_q, "query labels")
    d_lab = _labels(db_labels, n_db, "database labels")
    _check_pair(q_lab, d_lab)

    def normalise(x: np.ndarray) -> np.ndarray:
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norm > 0, norm, 1.0)

    qf, df = normalise(qf), normalise(df)
    map_ks = _ks(topk, n_db, ())
    p_ks = _ks(precision_at, n_db, DEFAULT_PRECISION_AT)
    harm = _harmonic(n_db)
    # A sort and [Q, N] int64 group tables cost more per pair than Hamming counting.
    step = _chunk(chunk_size, n_db) if chunk_size is not None else _chunk(None, 4 * n_db)
    per_query: dict[str, list[np.ndarray]] = {}
    for s in range(0, n_q, step):
        e = min(s + step, n_q)
        q = e - s
        sim = qf[s:e] @ df.T + np.float32(0.0)  # -0.0 -> +0.0: one tie group
        # Sort one uint64 key per item: (descending-order image of the float32 score,
        # relevance bit). A plain sort of integers is several times faster than an
        # argsort, and the order inside a tie group is irrelevant (ties are grouped).
        u = sim.view(np.uint32)
        u = np.where(u & np.uint32(0x80000000), ~u, u | np.uint32(0x80000000))  # ascending
        sort_key = (~u).astype(np.uint64) << np.uint64(1)  # descending score
        sort_key |= _relevance(q_lab[s:e], d_lab).astype(np.uint64)
        sort_key.sort(axis=1)
        score_sorted = sort_key >> np.uint64(1)
        rel_sorted = (sort_key & np.uint64(1)).astype(bool)
        new_group = np.ones((q, n_db), dtype=bool)
        new_group[:, 1:] = score_sorted[:, 1:] != score_sorted[:, :-1]
        gid = np.cumsum(new_group, axis=1) - 1 + (np.arange(q) * n_db)[:, None]
        n = np.bincount(gid.ravel(), minlength=q * n_db).reshape(q, n_db)
        r = np.bincount(gid[rel_sorted], minlength=q * n_db).reshape(q, n_db)
        for key, val in _metrics_from_groups(n, r, map_ks, p_ks, harm).items():
            per_query.setdefault(key, []).append(val)
    mean = {k: float(np.concatenate(v).mean()) for k, v in per_query.items()}
    return {
        "kind": "cosine",
        **_ranking_summary(mean, n_q, n_db, map_ks, p_ks),
        "pr_curve": None,
        "tie_rule": "expected value over uniformly random order within equal-score groups",
    }


def top_k_hamming(
    query_codes: np.ndarray,
    db_codes: np.ndarray,
    k: int,
    *,
    num_bits: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ids and distances [Q, k] of the k nearest database codes, for DISPLAY.

    Why: the report's example grid needs concrete items; ties are broken by database
    index (deterministic), which is fine for pictures but is not how the metrics treat
    ties. Memory is O(Q * N): pass a few queries.
    """
    q_packed, n_bits = _as_packed(query_codes, num_bits, "query codes")
    d_packed, n_bits_db = _as_packed(db_codes, num_bits, "database codes")
    if n_bits != n_bits_db:
        raise UserError(f"query codes have {n_bits} bits but database codes have {n_bits_db}")
    dist = codes_lib.hamming_distances(q_packed, d_packed)
    k = min(int(k), dist.shape[1])
    ids = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(dist, ids, axis=1)
