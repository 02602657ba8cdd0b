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
matrix. Here kNN comes from FAISS, the overlap counts from a sparse product
(only pairs sharing a neighbour can overlap), and only the positive pairs
are stored, as sorted int64 keys ``i * N + j``: memory O(N K1 K2) at worst,
and a batch block S_B is a ``searchsorted`` away, inside the TF graph.
"""

from __future__ import annotations

import dataclasses

import faiss
import numpy as np
import scipy.sparse as sp
import tensorflow as tf


@dataclasses.dataclass
class NeighbourGraph:
    num_items: int
    keys: np.ndarray  # sorted unique int64 keys i * num_items + j of positive pairs (symmetric)

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


def knn(features: np.ndarray, k: int) -> np.ndarray:
    """Indices [N, k] of each item's k nearest other items (Euclidean, exact)."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = x.shape[0]
    k = min(k, n - 1)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    _, idx = index.search(x, k + 1)
    out = np.empty((n, k), np.int64)
    for r in range(n):
        row = idx[r]
        row = row[row != r]  # drop self wherever FAISS put it (duplicates can tie)
        out[r] = row[:k]
    return out


def build_graph(features: np.ndarray, k1: int = 20, k2: int = 30) -> NeighbourGraph:
    """Features [N, D] -> the symmetric positive-pair graph of the BGAN definition."""
    n = int(features.shape[0])
    if n < 2:
        raise ValueError("the neighbourhood graph needs at least two items")
    nbrs = knn(features, k1)
    # A[i, j] = 1 iff j in N(i) (self included).
    rows = np.repeat(np.arange(n), nbrs.shape[1] + 1)
    cols = np.concatenate([np.arange(n)[:, None], nbrs], axis=1).ravel()
    a = sp.csr_matrix((np.ones(rows.size, np.int32), (rows, cols)), shape=(n, n))
    a.sum_duplicates()
    a.data[:] = 1
    overlap = (a @ a.T).tocsr()  # overlap[i, j] = |N(i) & N(j)|
    k2 = min(k2, n)
    top_rows, top_cols = [], []
    for i in range(n):
        start, end = overlap.indptr[i], overlap.indptr[i + 1]
        js = overlap.indices[start:end]
        counts = overlap.data[start:end]
        # Highest overlap first, then smaller j: lexsort keys are last-major.
        order = np.lexsort((js, -counts))[:k2]
        top_rows.append(np.full(order.size, i))
        top_cols.append(js[order])
    t = sp.csr_matrix(
        (np.ones(sum(r.size for r in top_rows), np.int32), (np.concatenate(top_rows), np.concatenate(top_cols))),
        shape=(n, n),
    )
    p = (t @ a).tocoo()  # P(i) = union of N(j), j in top-K2(i)
    i = p.row.astype(np.int64)
    j = p.col.astype(np.int64)
    keys = np.unique(np.concatenate([i * n + j, j * n + i]))
    return NeighbourGraph(n, keys)


def block_lookup(keys: tf.Tensor, num_items: int, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """In-graph S_B in {-1,+1} for item indices rows [B] x cols [C] (float32)."""
    q = tf.cast(rows, tf.int64)[:, None] * num_items + tf.cast(cols, tf.int64)[None, :]
    flat = tf.reshape(q, [-1])
    pos = tf.searchsorted(keys, flat, side="left")
    pos = tf.minimum(pos, tf.cast(tf.size(keys) - 1, pos.dtype))
    hit = tf.equal(tf.gather(keys, pos), flat)
    s = tf.where(hit, 1.0, -1.0)
    return tf.reshape(s, tf.shape(q))
