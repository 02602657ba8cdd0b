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
on database order. The closed forms are in `tie_aware`. The cosine path
(`evaluate_float`) applies the same rule to exactly equal similarity scores.

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

from bgan_tf import codes as codes_lib
from bgan_tf.errors import UserError
from bgan_tf.evaluation.tie_aware import harmonic, metrics_from_groups

#: Default K values of the precision@K / recall@K curves (those above the
#: database size are dropped).
DEFAULT_PRECISION_AT: tuple[int, ...] = (
    1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000,
)

# Pairs (query, database item) processed at once when chunk_size is not given.
_DEFAULT_PAIR_BUDGET = 8_000_000


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
    mean, prec, rec, emp = _hamming_means(q_packed, d_packed, q_lab, d_lab, n_bits, map_ks, p_ks,
                                          _chunk(chunk_size, n_db))
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


def _hamming_means(q_packed: np.ndarray, d_packed: np.ndarray, q_lab: np.ndarray, d_lab: np.ndarray, n_bits: int,
                   map_ks: list[int], p_ks: list[int], step: int) -> tuple[dict[str, float], np.ndarray, np.ndarray,
                                                                           np.ndarray]:
    """(metric -> mean over queries, and per Hamming radius 0..L the mean precision, recall and
    share of queries with an empty ball), over chunks of ``step`` queries."""
    n_q, harm = q_packed.shape[0], harmonic(d_packed.shape[0])
    per_query: dict[str, list[np.ndarray]] = {}
    cum_prec, cum_rec, empty = [], [], []
    for s in range(0, n_q, step):
        e = min(s + step, n_q)
        rel = _relevance(q_lab[s:e], d_lab)
        counts, rel_counts = hamming_histograms(q_packed[s:e], d_packed, rel, n_bits)
        for key, val in metrics_from_groups(counts, rel_counts, map_ks, p_ks, harm).items():
            per_query.setdefault(key, []).append(val)
        in_ball = np.cumsum(counts, axis=1)
        rel_ball = np.cumsum(rel_counts, axis=1)
        r_tot = rel_ball[:, -1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            cum_prec.append(np.where(in_ball > 0, rel_ball / np.maximum(in_ball, 1), 0.0))
            cum_rec.append(np.where(r_tot > 0, rel_ball / np.maximum(r_tot, 1), 0.0))
        empty.append(in_ball == 0)
    mean = {k: float(np.concatenate(v).mean()) for k, v in per_query.items()}
    return (mean, np.concatenate(cum_prec).mean(axis=0), np.concatenate(cum_rec).mean(axis=0),
            np.concatenate(empty).mean(axis=0))


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
    harm = harmonic(n_db)
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
        for key, val in metrics_from_groups(n, r, map_ks, p_ks, harm).items():
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
