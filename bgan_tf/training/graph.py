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
matrix. Here the K1 lists come from `bgan_tf.training.knn` (FAISS: exact, or an HNSW
graph above ``EXACT_KNN_MAX_ITEMS`` items, with its measured recall).
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

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from bgan_tf.config import check_graph_construction
from bgan_tf.errors import UserError
from bgan_tf.training.diffusion import diffusion_keys, off_diagonal
from bgan_tf.training.knn import (CHUNK_PAIRS, RECALL_SAMPLE, knn, knn_recall, resolve_knn, row_chunks,
                                  sorted_unique, symmetric_keys)


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
    for lo, hi in row_chunks(cost, chunk_pairs):
        ov = a[lo:hi] @ at  # ov[i, j] = |N(i) & N(j)|
        rows = np.repeat(np.arange(hi - lo, dtype=np.int64), np.diff(ov.indptr))
        # Highest overlap first, then smaller j: one int64 sort of (row, K1+1-count, j).
        order = (rows * (k1 + 2) + (k1 + 1 - ov.data)) * n + ov.indices
        order.sort()
        rank = np.arange(order.size) - np.repeat(ov.indptr[:-1], np.diff(ov.indptr))
        top = order[rank < k2]
        trow, tcol = top // n // (k1 + 2), top % n
        # P(i) = union of N(j) over i's top-K2 j.
        pk = sorted_unique((trow[:, None] * n + nb[tcol]).ravel())
        cols[filled:filled + pk.size] = pk % n
        filled += pk.size
        counts.append(np.bincount(pk // n, minlength=hi - lo))
    cols.resize(filled, refcheck=False)
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
    return sp.csr_matrix((np.ones(filled, np.int8), cols, indptr), shape=(n, n))


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
                        "(NaN or inf): check the backbone's weights (--backbone_weights)")
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
