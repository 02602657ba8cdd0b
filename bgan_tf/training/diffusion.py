"""Diffusion (manifold ranking) over the kNN graph: the ``--graph_construction diffusion`` positives.

Manifold ranking (Zhou et al. 2004; for retrieval, Iscen et al. CVPR 2017) scores every
pair by walks through the kNN graph rather than by one distance, so two images of one
class joined by a chain of close images score high even when they are far apart.
On CIFAR-10's P-BGAN training images, at the same number of positive pairs per item as
the K1/K2 graph, it raises the fraction of positive pairs that share a class from 0.364
to 0.464 (benchmarks/graph_quality.py; results/graph_quality.md).

1. W = max(0, cos)^3 on the symmetrised K1 kNN lists of the L2-normalised features.
2. S = D^-1/2 W D^-1/2.
3. F = (1 - alpha) sum_{t=0..T} alpha^t S^t, a truncated series: S is symmetric, so
   column j of F is item j's row, and the series runs on blocks of identity columns
   (sparse S times a dense N x block matrix a step). Time O(T nnz(S) N), so quadratic in
   N; memory a few N x block float32 arrays.
4. Each item's positives are its top-P items by F, P picked so the symmetrised graph has
   as many pairs as a reference graph (`matched_keys`): a re-ranking of the same budget.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from bgan_tf.training.knn import knn, symmetric_keys

# Columns of F per block, and the cap on one N x block float32 array (~256 MB).
BLOCK_COLUMNS = 1000
BLOCK_FLOATS = 1 << 26


def pattern(ranked: np.ndarray, p: int) -> sp.csr_matrix:
    """Ranked lists [N, >=p] (no repeats in a row) -> CSR of ones, row i = its first p."""
    n = ranked.shape[0]
    cols = np.ascontiguousarray(ranked[:, :p], dtype=np.int32).ravel()
    return sp.csr_matrix((np.ones(cols.size, np.int8), cols, np.arange(0, cols.size + 1, p)), shape=(n, n))


def off_diagonal(keys: np.ndarray, n: int) -> int:
    """Positive pairs i != j among the sorted keys i * n + j (both orders counted)."""
    return int(np.count_nonzero(keys // n != keys % n))


def matched_keys(ranked: np.ndarray, target_pairs: int) -> tuple[np.ndarray, int]:
    """(keys, P): the symmetrised top-P graph of the ranked lists [N, depth] whose number of
    off-diagonal positive pairs is closest to ``target_pairs``, P in [1, depth]. The count
    grows with P, by at most 2N a step, so the match is within N pairs (one an item)."""
    n, depth = ranked.shape
    count: dict[int, int] = {}

    def pairs(p: int) -> int:
        if p not in count:
            count[p] = off_diagonal(symmetric_keys(pattern(ranked, p)), n)
        return count[p]

    lo, hi = 1, depth  # the largest P with pairs(P) <= target, or 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if pairs(mid) <= target_pairs else (lo, mid - 1)
    best = lo
    if lo < depth and abs(pairs(lo + 1) - target_pairs) < abs(pairs(lo) - target_pairs):
        best = lo + 1
    return symmetric_keys(pattern(ranked, best)), best


def normalised(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def affinity(xn: np.ndarray, k: int, knn_method: str = "exact", rows_per_chunk: int = 512) -> sp.csr_matrix:
    """W: max(0, cos)^3 on the union of the K nearest-neighbour lists of the L2-normalised
    features xn (symmetric, no self loops). Dot products in row chunks: the gathered
    neighbours of a chunk are rows_per_chunk x k x D floats, not N x k x D."""
    n = xn.shape[0]
    nbrs = knn(xn, k, knn_method)
    w = np.empty(nbrs.shape, np.float32)
    for s in range(0, n, rows_per_chunk):
        w[s:s + rows_per_chunk] = np.einsum("nd,nkd->nk", xn[s:s + rows_per_chunk], xn[nbrs[s:s + rows_per_chunk]])
    w = np.maximum(w, 0.0) ** 3
    a = sp.csr_matrix((w.ravel(), (np.repeat(np.arange(n), nbrs.shape[1]), nbrs.ravel())), shape=(n, n))
    sym = a.maximum(a.T).tocsr()  # cos is symmetric: the union, each edge with its weight
    sym.eliminate_zeros()
    return sym


def normalised_affinity(w: sp.csr_matrix) -> sp.csr_matrix:
    """S = D^-1/2 W D^-1/2 (float32); an isolated item keeps a zero row."""
    d = np.asarray(w.sum(axis=1)).ravel()
    inv = np.where(d > 0, 1.0 / np.sqrt(np.maximum(d, 1e-30)), 0.0).astype(np.float32)
    s = sp.diags(inv) @ w @ sp.diags(inv)
    return s.astype(np.float32).tocsr()


def top_rows(scores: np.ndarray, depth: int) -> np.ndarray:
    """[N, B] scores (column c = one item's scores of every item) -> [B, depth] item ids
    by score, highest first, ties by the smaller id."""
    part = np.argpartition(-scores, depth - 1, axis=0)[:depth]
    value = np.take_along_axis(scores, part, 0)
    order = np.lexsort((part, -value), axis=0)
    return np.take_along_axis(part, order, 0).T


def diffusion_ranked(s: sp.csr_matrix, alphas: tuple[float, ...], steps: int, depth: int,
                     block: int = BLOCK_COLUMNS) -> dict[float, np.ndarray]:
    """alpha -> [N, depth] each item's top items by F = (1 - alpha) sum_{t<=steps} alpha^t S^t,
    itself excluded. S is symmetric, so column j of F is row j: the series runs on blocks of
    ``block`` identity columns (fewer when N x block would pass BLOCK_FLOATS), one sparse
    product a step shared by all alphas."""
    n = s.shape[0]
    depth = min(depth, n - 1)
    block = max(1, min(block, BLOCK_FLOATS // n))
    out = {a: np.empty((n, depth), np.int64) for a in alphas}
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        cols = np.arange(hi - lo)
        x = np.zeros((n, hi - lo), np.float32)
        x[lo + cols, cols] = 1.0
        acc = {a: x.copy() for a in alphas}
        for t in range(1, steps + 1):
            x = np.asarray(s @ x)
            for a in alphas:
                acc[a] += np.float32(a ** t) * x
        for a in alphas:
            f = acc.pop(a)
            f *= np.float32(1.0 - a)
            f[lo + cols, cols] = -np.inf  # ranks the others; the caller decides about i itself
            out[a][lo:hi] = top_rows(f, depth)
    return out


def diffusion_keys(features: np.ndarray, k1: int, target_pairs: int, alpha: float, steps: int,
                   knn_method: str = "exact") -> tuple[np.ndarray, int]:
    """(keys, P): the symmetric diffusion graph of ``features`` with about ``target_pairs``
    off-diagonal positive pairs, each item also its own positive (as in the K1/K2 graph,
    whose N(i) holds i). Keys are sorted unique int64 i * N + j."""
    n = int(features.shape[0])
    s = normalised_affinity(affinity(normalised(features), k1, knn_method))
    # Symmetrising keeps at least each item's own P lists, so P <= target / N (+1 to choose).
    depth = min(n - 1, -(-target_pairs // n) + 1)
    ranked = diffusion_ranked(s, (alpha,), steps, max(depth, 1))[alpha]
    keys, p = matched_keys(ranked, target_pairs)
    diagonal = np.arange(n, dtype=np.int64) * (n + 1)
    return np.union1d(keys, diagonal), p
