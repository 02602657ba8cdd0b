"""Neighbourhood graph: FAISS + sparse implementation vs the definition."""

import numpy as np
import tensorflow as tf

from bgan_tf.training.graph import NeighbourGraph, block_lookup, build_graph


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
