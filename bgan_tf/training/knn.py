"""The K1 nearest-neighbour lists and the sorted pair keys both graph builders share.

`graph.build_graph` (the K1/K2 graph) and `diffusion.diffusion_keys` (manifold ranking)
both start from `knn`: exact FAISS search (O(N^2 D)) up to ``EXACT_KNN_MAX_ITEMS`` items
(``--knn auto``), above it a FAISS HNSW graph (O(N log N) distance evaluations), whose
recall against exact search `knn_recall` measures on sampled queries. Both store their
positive pairs as sorted unique int64 keys ``i * N + j`` (`symmetric_keys`). This module
sits under both, so neither imports the other for them.
"""

from __future__ import annotations

import faiss
import numpy as np
import scipy.sparse as sp

from bgan_tf.config import EXACT_KNN_MAX_ITEMS, KNN_METHODS
from bgan_tf.errors import UserError

# Queries whose exact neighbours `build_graph` computes to report the approximate recall.
RECALL_SAMPLE = 1000
# Candidate pairs per row chunk of the overlap product (~16 bytes each across scipy's
# product and the sort): ~256 MB a chunk, whatever N is.
CHUNK_PAIRS = 1 << 24
# Rows per FAISS search call: bounds the distance/index arrays at (k + 1) x rows.
_SEARCH_ENTRIES = 1 << 24


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


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """np.unique by one in-place sort (NumPy 2's hash-based np.unique was ~10x slower here)."""
    a.sort()
    keep = np.empty(a.size, bool)
    keep[:1] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def row_chunks(cost: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Row ranges [lo, hi) covering the rows, each costing at most budget plus one row."""
    ends = np.searchsorted(np.cumsum(cost), np.arange(budget, int(cost.sum()) + budget, budget), side="right")
    bounds = np.unique(np.concatenate([[0], np.maximum(ends, 1), [cost.size]]).clip(0, cost.size))
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def symmetric_keys(p: sp.csr_matrix, chunk_pairs: int = CHUNK_PAIRS) -> np.ndarray:
    """Sorted unique int64 keys i * N + j of the pattern P | P^T, built in row chunks
    straight into the one output array (no N x N sum, no second copy of the keys)."""
    n = p.shape[0]
    pt = p.T.tocsr()
    keys = np.empty(p.nnz + pt.nnz, np.int64)  # upper bound, as in `expand`
    filled = 0
    for lo, hi in row_chunks(np.diff(p.indptr) + np.diff(pt.indptr), chunk_pairs):
        part = []
        for m in (p, pt):
            a, b = m.indptr[lo], m.indptr[hi]
            rows = np.repeat(np.arange(lo, hi, dtype=np.int64), np.diff(m.indptr[lo:hi + 1]))
            part.append(rows * n + m.indices[a:b])
        chunk = sorted_unique(np.concatenate(part))
        keys[filled:filled + chunk.size] = chunk
        filled += chunk.size
    keys.resize(filled, refcheck=False)
    return keys
