"""Neighbourhood graph: FAISS + sparse implementation vs the definition."""

import faiss
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf
from absl import flags

from bgan_tf.config import EXACT_KNN_MAX_ITEMS, BGANConfig
from bgan_tf.errors import UserError
from bgan_tf.training.graph import NeighbourGraph, block_lookup, build_graph, expand
from bgan_tf.training.knn import knn, knn_recall, resolve_knn
from flags.train_flags import define_train_flags


def brute_force_positive_sets(features, k1, k2):
    """The method notes' definition, with Python sets, O(N^2)."""
    n = len(features)
    d = ((features[:, None, :] - features[None, :, :]) ** 2).sum(-1)
    nbr = []
    for i in range(n):
        order = sorted((j for j in range(n) if j != i), key=lambda j: (d[i, j], j))
        nbr.append(set(order[:k1]) | {i})
    pos = [set() for _ in range(n)]
    for i in range(n):
        ranked = sorted(range(n), key=lambda j: (-len(nbr[i] & nbr[j]), j))[:k2]
        for j in ranked:
            pos[i] |= nbr[j]
    for i in range(n):
        for j in list(pos[i]):
            pos[j].add(i)  # symmetrise
    return pos


def test_matches_brute_force_definition():
    rng = np.random.default_rng(3)
    # Distinct distances (no ties) so the K1 lists are unambiguous.
    feats = rng.normal(size=(60, 5)).astype(np.float32)
    g = build_graph(feats, k1=4, k2=3)
    want = brute_force_positive_sets(feats.astype(np.float64), 4, 3)
    for i in range(60):
        assert set(g.positives_of(i).tolist()) == want[i], i


def test_hand_checkable_line():
    # Points on a line at 0,1,2,10,11,12: two clusters of three.
    feats = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]], np.float32)
    g = build_graph(feats, k1=1, k2=1)
    # k2=1: the top-overlap item of i is i itself, so P(i) = N(i) = {i, nearest}.
    # Nearest: 0->1, 1->0 (tie with 2, smaller index), 2->1, 3->4, 4->3, 5->4.
    want = {0: {0, 1}, 1: {0, 1, 2}, 2: {1, 2}, 3: {3, 4}, 4: {3, 4, 5}, 5: {4, 5}}
    for i, s in want.items():
        assert set(g.positives_of(i).tolist()) == s
    s = g.block(np.arange(6), np.arange(6))
    assert (s == s.T).all() and s[0, 3] == -1 and s[0, 1] == 1


def test_in_graph_block_lookup_equals_numpy_block():
    rng = np.random.default_rng(0)
    g = build_graph(rng.normal(size=(200, 8)).astype(np.float32), k1=5, k2=5)
    rows = rng.choice(200, 16, replace=False)
    cols = rng.choice(200, 40, replace=False)
    got = block_lookup(tf.constant(g.keys), g.num_items, tf.constant(rows), tf.constant(cols)).numpy()
    np.testing.assert_array_equal(got, g.block(rows, cols))


def test_memory_is_sparse_and_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    n = 2000
    g = build_graph(rng.normal(size=(n, 16)).astype(np.float32), k1=10, k2=5)
    # At most N * (K1+1) * K2 positives per row before symmetrising.
    assert g.num_positive_pairs <= 2 * n * 11 * 5
    assert g.num_positive_pairs < n * n / 20
    path = str(tmp_path / "g.npz")
    g.save(path)
    g2 = NeighbourGraph.load(path)
    assert g2.num_items == n and np.array_equal(g2.keys, g.keys)


def test_label_agreement_on_separated_clusters():
    rng = np.random.default_rng(2)
    centers = rng.normal(scale=20, size=(4, 6))
    labels = np.repeat(np.arange(4), 30)
    feats = (centers[labels] + rng.normal(size=(120, 6))).astype(np.float32)
    g = build_graph(feats, k1=5, k2=5)
    assert g.label_agreement(labels) > 0.95


# --- the vectorised, chunked expansion and the approximate kNN ------------------------------

def _todays_knn(features, k):
    """knn as it was before approximate search: FAISS exact search, self dropped row by row."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = x.shape[0]
    k = min(k, n - 1)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    _, idx = index.search(x, k + 1)
    out = np.empty((n, k), np.int64)
    for r in range(n):
        row = idx[r]
        out[r] = row[row != r][:k]
    return out


def _todays_build_graph(nbrs, k2):
    """build_graph's expansion as it was before the chunked one: a Python loop over rows."""
    n = len(nbrs)
    rows = np.repeat(np.arange(n), nbrs.shape[1] + 1)
    cols = np.concatenate([np.arange(n)[:, None], nbrs], axis=1).ravel()
    a = sp.csr_matrix((np.ones(rows.size, np.int32), (rows, cols)), shape=(n, n))
    a.sum_duplicates()
    a.data[:] = 1
    overlap = (a @ a.T).tocsr()
    top_rows, top_cols = [], []
    for i in range(n):
        js = overlap.indices[overlap.indptr[i]:overlap.indptr[i + 1]]
        counts = overlap.data[overlap.indptr[i]:overlap.indptr[i + 1]]
        order = np.lexsort((js, -counts))[:min(k2, n)]
        top_rows.append(np.full(order.size, i))
        top_cols.append(js[order])
    t = sp.csr_matrix((np.ones(sum(r.size for r in top_rows), np.int32),
                       (np.concatenate(top_rows), np.concatenate(top_cols))), shape=(n, n))
    p = (t @ a).tocoo()
    i, j = p.row.astype(np.int64), p.col.astype(np.int64)
    return np.unique(np.concatenate([i * n + j, j * n + i]))


def _reference_keys(nbrs, k2):
    """Steps 2-4 of the module docstring with Python sets, from given K1 lists. Items that
    share no neighbour with i are never ranked (the sparse product does not see them; this
    matters only when fewer than K2 items overlap)."""
    n = len(nbrs)
    nbr = [set(nbrs[i].tolist()) | {i} for i in range(n)]
    pos = [set() for _ in range(n)]
    for i in range(n):
        overlapping = [j for j in range(n) if nbr[i] & nbr[j]]
        for j in sorted(overlapping, key=lambda j: (-len(nbr[i] & nbr[j]), j))[:k2]:
            pos[i] |= nbr[j]
    keys = {i * n + j for i in range(n) for j in pos[i]} | {j * n + i for i in range(n) for j in pos[i]}
    return np.array(sorted(keys), np.int64)


def _tied_features(seed, n=70):
    # Small integer grid: many equal distances, and exact duplicates.
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(n, 3)).astype(np.float32)
    x[n // 2:n // 2 + 5] = x[0]
    return x


@pytest.mark.parametrize("k1,k2", [(1, 1), (3, 2), (4, 7), (10, 70)])
def test_expansion_equals_reference_with_ties_and_duplicates(k1, k2):
    feats = _tied_features(k1 + k2)
    nbrs = _todays_knn(feats, k1)
    np.testing.assert_array_equal(knn(feats, k1, "exact"), nbrs)  # self dropped the same way
    g = build_graph(feats, k1, k2, knn_method="exact")
    np.testing.assert_array_equal(g.keys, _reference_keys(nbrs, k2))
    np.testing.assert_array_equal(g.keys, _todays_build_graph(nbrs, k2))
    assert g.knn_method == "exact" and g.knn_recall is None


def test_row_chunks_do_not_change_the_expansion():
    rng = np.random.default_rng(5)
    nbrs = knn(rng.normal(size=(300, 4)).astype(np.float32), 6)
    whole = expand(nbrs, 5)
    tiny = expand(nbrs, 5, chunk_pairs=50)  # dozens of chunks, some of a single row
    assert (whole != tiny).nnz == 0


def test_auto_is_exact_up_to_the_threshold():
    assert resolve_knn("auto", EXACT_KNN_MAX_ITEMS) == "exact"
    assert resolve_knn("auto", EXACT_KNN_MAX_ITEMS + 1) == "approximate"
    feats = _tied_features(9, n=120)
    np.testing.assert_array_equal(build_graph(feats, 5, 4, knn_method="auto").keys,
                                  _reference_keys(_todays_knn(feats, 5), 4))
    with pytest.raises(UserError, match="--knn"):
        resolve_knn("fast", 10)


def _clusters(n=3000, d=32, clusters=30, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(clusters, d))
    labels = rng.integers(0, clusters, n)
    return (centers[labels] + rng.normal(size=(n, d))).astype(np.float32)


def test_approximate_knn_recall_and_a_valid_symmetric_graph():
    feats = _clusters()
    approx = knn(feats, 10, "approximate")
    assert approx.shape == (3000, 10)
    assert not (approx == np.arange(3000)[:, None]).any()
    assert knn_recall(feats, approx, sample=300, seed=0) >= 0.9
    g = build_graph(feats, 10, 5, knn_method="approximate", seed=1, recall_sample=300)
    assert g.knn_method == "approximate" and g.knn_recall >= 0.9
    i, j = g.keys // g.num_items, g.keys % g.num_items
    assert np.array_equal(np.sort(j * g.num_items + i), g.keys)  # symmetric
    assert np.all(np.diff(g.keys) > 0)  # sorted, unique
    assert np.array_equal(np.unique(i), np.arange(3000)) and (g.block(np.arange(50), np.arange(50)).diagonal() == 1).all()
    # Same features, same lists (FAISS fixes the seed of HNSW's node levels).
    np.testing.assert_array_equal(knn(feats, 10, "approximate"), approx)


def test_knn_recall_counts_the_exact_neighbours_found():
    feats = _clusters(n=400, d=8)
    exact = knn(feats, 5)
    assert knn_recall(feats, exact, sample=100) == 1.0
    wrong = np.roll(exact, 1, axis=0)  # another item's neighbours: mostly not ours
    assert knn_recall(feats, wrong, sample=400) < 0.5
    half = exact.copy()
    half[:, 3:] = (np.arange(400)[:, None] + [200, 201]) % 400  # 2 of 5 replaced by other items
    assert 0.6 <= knn_recall(feats, half, sample=400) <= 0.65


def test_knn_flag_and_config_validation():
    BGANConfig(knn="approximate").validate()
    with pytest.raises(UserError, match="--knn must be auto, exact or approximate, got 'fast'"):
        BGANConfig(knn="fast").validate()
    fv = flags.FlagValues()
    define_train_flags(fv)
    fv(["train", "--knn", "exact"])
    assert fv.knn == "exact"
    fv2 = flags.FlagValues()
    define_train_flags(fv2)
    with pytest.raises(flags.IllegalFlagValueError):
        fv2(["train", "--knn", "fast"])
