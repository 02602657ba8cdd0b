"""The neighbourhood structure S that BGAN's codes must reproduce.

Definition (method notes, "Neighbourhood matrix S"):
1. N(i) = the K1 nearest neighbours of i by Euclidean distance of the
   features, plus i itself.
2. Rank every j by the overlap |N(i) & N(j)|; keep the top K2 (ties broken
   by the smaller index j, so the graph does not depend on FAISS' tie order
   beyond the K1 lists themselves).
3. P(i) = union of N(j) over those K2 items.
4. s_ij = s_ji = +1 for j in P(i), else -1 (symmetrised).

The released code did this with Python sets in O(N^2 K) and a dense N x N
matrix. Here kNN comes from FAISS: exact (O(N^2 D)) up to ``EXACT_KNN_MAX_ITEMS``
items (``--knn auto``), above it a FAISS HNSW graph (O(N log N) distance evaluations),
whose recall against exact search `knn_recall` measures on sampled queries.
The overlap counts come from a sparse product (only pairs sharing a neighbour
can overlap), computed in row chunks sized by each row's candidate count, so
peak memory is one chunk plus the result; no step loops over items in Python.
Only the positive pairs are stored, as sorted int64 keys ``i * N + j`` (8
bytes a pair: the in-graph lookup needs one sorted array to search), and a
batch block S_B is a ``searchsorted`` away, inside the TF graph.
"""

from __future__ import annotations

import dataclasses
import time

import faiss
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from bgan_tf.config import EXACT_KNN_MAX_ITEMS, KNN_METHODS, check_graph_construction
from bgan_tf.errors import UserError

# Queries whose exact neighbours `build_graph` computes to report the approximate recall.
RECALL_SAMPLE = 1000
# Candidate pairs per row chunk of the overlap product (~16 bytes each across scipy's
# product and the sort): ~256 MB a chunk, whatever N is.
CHUNK_PAIRS = 1 << 24
# Rows per FAISS search call: bounds the distance/index arrays at (k + 1) x rows.
_SEARCH_ENTRIES = 1 << 24


@dataclasses.dataclass
class NeighbourGraph:
    num_items: int
    keys: np.ndarray  # sorted unique int64 keys i * num_items + j of positive pairs (symmetric)
    knn_method: str = "exact"  # how the K1 lists were found: exact | approximate
    knn_recall: float | None = None  # approximate only: recall@K1 on sampled queries
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # build_graph's stages

    @property
    def num_positive_pairs(self) -> int:
        return int(self.keys.size)

    def positives_of(self, i: int) -> np.ndarray:
        lo = np.searchsorted(self.keys, i * self.num_items)
        hi = np.searchsorted(self.keys, (i + 1) * self.num_items)
        return self.keys[lo:hi] - i * self.num_items

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Dense S_B in {-1,+1} (float32) for item indices rows x cols."""
        q = np.asarray(rows, np.int64)[:, None] * self.num_items + np.asarray(cols, np.int64)[None, :]
        pos = np.searchsorted(self.keys, q)
        hit = self.keys[np.minimum(pos, self.keys.size - 1)] == q
        return np.where(hit, 1.0, -1.0).astype(np.float32)

    def label_agreement(self, labels: np.ndarray) -> float:
        """Fraction of positive pairs (i != j) whose labels match: graph quality."""
        i = self.keys // self.num_items
        j = self.keys % self.num_items
        off = i != j
        if not off.any():
            return float("nan")
        return float(np.mean(labels[i[off]] == labels[j[off]]))

    def save(self, path: str) -> None:
        np.savez(path, num_items=self.num_items, keys=self.keys)

    @classmethod
    def load(cls, path: str) -> "NeighbourGraph":
        with np.load(path) as z:
            return cls(int(z["num_items"]), z["keys"].astype(np.int64))


def resolve_knn(method: str, num_items: int) -> str:
    """``auto`` -> exact up to EXACT_KNN_MAX_ITEMS items, else approximate."""
    if method not in KNN_METHODS:
        raise UserError(f"--knn must be one of {', '.join(KNN_METHODS)}, got {method!r}")
    if method == "auto":
        return "exact" if num_items <= EXACT_KNN_MAX_ITEMS else "approximate"
    return method


# FAISS HNSW settings of the approximate search: links per node, and the candidate lists of
# insertion and of search. Chosen on benchmarks/graph_scale.py's clustered 1280-d features
# (K1=20, 2 cores). They replaced ~sqrt(N) k-means cells searched cell by cell (that
# script at commit 8f46d8e: 100k items in 220 s, recall 0.986), where k-means put 17% of the
# items in one cell, whose search then dominated (~21x a balanced search); splitting such
# cells by k-means again lost recall, as a cluster with no centroid of its own ends up in
# cells whose centroids are not near each other. At 1M items efSearch 64 gave recall 0.85;
# 160 gives 0.92 within the 30-minute budget (graph_scale.md).
HNSW_LINKS = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 160


def _drop_self(idx: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """[Q, k+1] search results -> [Q, k]: each row without its own id wherever FAISS put it
    (duplicates can tie), else without its last entry. A row holds each id at most once."""
    is_self = idx == ids[:, None]
    is_self[~is_self.any(1), k] = True
    return idx[~is_self].reshape(len(ids), k)


def _exact_search(x: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """[len(ids), k] exact neighbours of x[ids], self dropped. faiss.knn is the search
    IndexFlatL2 runs, without copying the N x D features into an index."""
    step = max(1, _SEARCH_ENTRIES // (k + 1))
    idx = np.concatenate([faiss.knn(x[ids[s:s + step]], x, k + 1)[1] for s in range(0, len(ids), step)])
    return _drop_self(idx, ids, k)


def _approximate_search(x: np.ndarray, k: int) -> np.ndarray:
    """[N, k+1] ids (-1 where the search found fewer): each item's neighbours in a FAISS HNSW
    graph of all items (O(N log N) distance evaluations, a copy of the features). Rows are
    searched in blocks that bound the result arrays."""
    n, d = x.shape
    index = faiss.IndexHNSWFlat(d, HNSW_LINKS)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.add(x)
    index.hnsw.efSearch = max(HNSW_EF_SEARCH, k + 1)
    step = max(1, _SEARCH_ENTRIES // (k + 1))
    return np.concatenate([index.search(x[s:s + step], k + 1)[1] for s in range(0, n, step)]).astype(np.int64)


def knn(features: np.ndarray, k: int, method: str = "exact") -> np.ndarray:
    """Indices [N, k] of each item's k nearest other items (Euclidean).

    ``approximate``: `_approximate_search`, an HNSW graph (FAISS' own fixed seed for the
    node levels). Rows it could not fill are searched exactly.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = x.shape[0]
    k = min(k, n - 1)
    ids = np.arange(n)
    if resolve_knn(method, n) == "exact":
        return _exact_search(x, ids, k)
    idx = _approximate_search(x, k)
    short = (idx < 0).any(1)
    out = np.empty((n, k), np.int64)
    out[~short] = _drop_self(idx[~short], ids[~short], k)
    if short.any():
        out[short] = _exact_search(x, ids[short], k)
    return out


def knn_recall(features: np.ndarray, approx_idx: np.ndarray, sample: int = RECALL_SAMPLE, seed: int = 0) -> float:
    """Recall@k of ``approx_idx`` [N, k] against exact kNN on ``sample`` seeded queries
    (only those queries are searched exactly: O(sample N D))."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    n, k = approx_idx.shape
    q = np.sort(np.random.default_rng(seed).choice(n, min(sample, n), replace=False))
    exact = _exact_search(x, q, k)
    row = np.arange(q.size)[:, None] * np.int64(n)
    hits = np.intersect1d(row + approx_idx[q], row + exact, assume_unique=True).size
    return hits / exact.size


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """np.unique by one in-place sort (NumPy 2's hash-based np.unique was ~10x slower here)."""
    a.sort()
    keep = np.empty(a.size, bool)
    keep[:1] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def _chunks(cost: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Row ranges [lo, hi) covering the rows, each costing at most budget plus one row."""
    ends = np.searchsorted(np.cumsum(cost), np.arange(budget, int(cost.sum()) + budget, budget), side="right")
    bounds = np.unique(np.concatenate([[0], np.maximum(ends, 1), [cost.size]]).clip(0, cost.size))
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def expand(nbrs: np.ndarray, k2: int, chunk_pairs: int = CHUNK_PAIRS) -> sp.csr_matrix:
    """K1 lists [N, K1] -> the (unsymmetrised) positive pattern P as a CSR of ones.

    Rows are processed in chunks of about ``chunk_pairs`` overlap candidates: row i has at
    most sum over m in N(i) of |{j : m in N(j)}| of them.
    """
    n, k1 = nbrs.shape
    nb = np.concatenate([np.arange(n, dtype=np.int32)[:, None], nbrs.astype(np.int32)], axis=1)
    k2 = min(k2, n)
    # A[i, m] = 1 iff m in N(i) (self included); a row of FAISS results holds each id once.
    a = sp.csr_matrix((np.ones(nb.size, np.int32), nb.ravel(), np.arange(0, nb.size + 1, k1 + 1)), shape=(n, n))
    at = a.T.tocsr()
    indegree = np.bincount(nb.ravel(), minlength=n)
    cost = indegree[nb].sum(1) + k2 * (k1 + 1)
    # An upper bound on P's size; pages never written cost no memory, and resize gives back the rest.
    cols = np.empty(n * k2 * (k1 + 1), np.int32)
    filled, counts = 0, []
    for lo, hi in _chunks(cost, chunk_pairs):
        ov = a[lo:hi] @ at  # ov[i, j] = |N(i) & N(j)|
        rows = np.repeat(np.arange(hi - lo, dtype=np.int64), np.diff(ov.indptr))
        # Highest overlap first, then smaller j: one int64 sort of (row, K1+1-count, j).
        order = (rows * (k1 + 2) + (k1 + 1 - ov.data)) * n + ov.indices
        order.sort()
        rank = np.arange(order.size) - np.repeat(ov.indptr[:-1], np.diff(ov.indptr))
        top = order[rank < k2]
        trow, tcol = top // n // (k1 + 2), top % n
        # P(i) = union of N(j) over i's top-K2 j.
        pk = _sorted_unique((trow[:, None] * n + nb[tcol]).ravel())
        cols[filled:filled + pk.size] = pk % n
        filled += pk.size
        counts.append(np.bincount(pk // n, minlength=hi - lo))
    cols.resize(filled, refcheck=False)
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
    return sp.csr_matrix((np.ones(filled, np.int8), cols, indptr), shape=(n, n))


def symmetric_keys(p: sp.csr_matrix, chunk_pairs: int = CHUNK_PAIRS) -> np.ndarray:
    """Sorted unique int64 keys i * N + j of the pattern P | P^T, built in row chunks
    straight into the one output array (no N x N sum, no second copy of the keys)."""
    n = p.shape[0]
    pt = p.T.tocsr()
    keys = np.empty(p.nnz + pt.nnz, np.int64)  # upper bound, as in `expand`
    filled = 0
    for lo, hi in _chunks(np.diff(p.indptr) + np.diff(pt.indptr), chunk_pairs):
        part = []
        for m in (p, pt):
            a, b = m.indptr[lo], m.indptr[hi]
            rows = np.repeat(np.arange(lo, hi, dtype=np.int64), np.diff(m.indptr[lo:hi + 1]))
            part.append(rows * n + m.indices[a:b])
        chunk = _sorted_unique(np.concatenate(part))
        keys[filled:filled + chunk.size] = chunk
        filled += chunk.size
    keys.resize(filled, refcheck=False)
    return keys


def build_graph(features: np.ndarray, k1: int = 20, k2: int = 30, knn_method: str = "exact",
                seed: int = 0, recall_sample: int = RECALL_SAMPLE, construction: str = "k1k2",
                diffusion_alpha: float = 0.99, diffusion_steps: int = 20,
                diffusion_pairs_per_item: float = 0.0) -> NeighbourGraph:
    """Features [N, D] -> the symmetric positive-pair graph of the BGAN definition.

    ``knn_method``: exact, approximate, or auto (`resolve_knn`); an approximate graph
    carries its kNN recall on ``recall_sample`` seeded queries.
    ``construction``: ``k1k2`` (the definition above) or ``diffusion``: the same number of
    positive pairs, re-ranked by manifold ranking over the K1 kNN graph
    (`bgan_tf.training.diffusion`; at most DIFFUSION_MAX_ITEMS items, its cost is
    quadratic in N). ``diffusion_pairs_per_item`` > 0 sets the diffusion graph's density
    instead (positive pairs per item, the item itself included).
    """
    n = int(features.shape[0])
    if n < 2:
        raise ValueError("the neighbourhood graph needs at least two items")
    check_graph_construction(construction, n)
    bad = n - int(np.isfinite(features).all(axis=tuple(range(1, features.ndim))).sum())
    if bad:  # FAISS on NaN features crashed the process (double free, rc 134: issue 27 case 7)
        raise UserError(f"the neighbourhood graph's features of {bad:,} of {n:,} training images are not finite "
                        "(NaN or inf): check the backbone's weights (--backbone_weights, --graph_model)")
    if diffusion_pairs_per_item and not 1.0 < diffusion_pairs_per_item <= n:
        raise UserError(f"--diffusion_pairs_per_item {diffusion_pairs_per_item:g} must be above 1 (an image and "
                        f"at least part of a neighbour) and at most the {n:,} training images")
    method = resolve_knn(knn_method, n)
    clock = [time.perf_counter()]

    def lap() -> float:
        clock.append(time.perf_counter())
        return clock[-1] - clock[-2]

    nbrs = knn(features, k1, method)
    seconds = {"knn": lap()}
    recall = None
    if method == "approximate":
        recall = knn_recall(features, nbrs, recall_sample, seed)
        seconds["recall"] = lap()
    p = expand(nbrs, k2)
    del nbrs
    seconds["expand"] = lap()
    keys = symmetric_keys(p)  # s_ij = s_ji
    seconds["symmetrise"] = lap()
    if construction == "diffusion":
        from bgan_tf.training.diffusion import diffusion_keys, off_diagonal

        target = round((diffusion_pairs_per_item - 1.0) * n) if diffusion_pairs_per_item else off_diagonal(keys, n)
        keys, _ = diffusion_keys(features, k1, target, diffusion_alpha, diffusion_steps, method)
        seconds["diffusion"] = lap()
    return NeighbourGraph(n, keys, method, recall, seconds)



def block_lookup(keys: tf.Tensor, num_items: int, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """In-graph S_B in {-1,+1} for item indices rows [B] x cols [C] (float32)."""
    q = tf.cast(rows, tf.int64)[:, None] * num_items + tf.cast(cols, tf.int64)[None, :]
    flat = tf.reshape(q, [-1])
    pos = tf.searchsorted(keys, flat, side="left")
    pos = tf.minimum(pos, tf.cast(tf.size(keys) - 1, pos.dtype))
    hit = tf.equal(tf.gather(keys, pos), flat)
    s = tf.where(hit, 1.0, -1.0)
    return tf.reshape(s, tf.shape(q))
