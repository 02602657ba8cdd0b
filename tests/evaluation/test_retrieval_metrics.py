"""Retrieval metrics against slow, obviously-correct references.

The references rank the database explicitly (stable sort by distance after a
permutation of the database) and average over ALL permutations (tiny data) or many
random ones (larger data): that is the definition of the tie rule, computed the slow way.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from bgan_tf import codes as codes_lib
from bgan_tf.errors import UserError
from bgan_tf.evaluation.retrieval_metrics import evaluate_codes, evaluate_float, top_k_hamming


# ---------------------------------------------------------------------------
# Slow references
# ---------------------------------------------------------------------------


def ref_metrics_ranked(rel_ranked: np.ndarray, ks: list[int]) -> dict[str, np.ndarray]:
    """AP@K, P@K, R@K for rankings rel_ranked [T, N] (bool), straight from the definitions."""
    t, n = rel_ranked.shape
    hits = np.cumsum(rel_ranked, axis=1)
    ranks = np.arange(1, n + 1)
    prec = hits / ranks
    total = hits[:, -1]
    out = {}
    for k in ks:
        kk = min(k, n)
        num = (prec[:, :kk] * rel_ranked[:, :kk]).sum(axis=1)
        den = hits[:, kk - 1]
        out[f"ap@{k}"] = np.where(den > 0, num / np.maximum(den, 1), 0.0)
        out[f"p@{k}"] = hits[:, kk - 1] / kk
        out[f"r@{k}"] = np.where(total > 0, hits[:, kk - 1] / np.maximum(total, 1), 0.0)
    return out


def ref_expected(dist: np.ndarray, rel: np.ndarray, ks: list[int], perms: np.ndarray) -> dict[str, float]:
    """Mean over database orders `perms` [T, N] of the metrics of the stable ranking."""
    d = dist[perms]  # [T, N]
    r = rel[perms]
    order = np.argsort(d, axis=1, kind="stable")
    ranked = np.take_along_axis(r, order, axis=1)
    return {k: float(v.mean()) for k, v in ref_metrics_ranked(ranked, ks).items()}


def relevance(q_lab, db_lab):
    if np.asarray(q_lab).ndim == 1:
        return np.asarray(q_lab)[:, None] == np.asarray(db_lab)[None, :]
    return (np.asarray(q_lab) @ np.asarray(db_lab).T) > 0


def random_signs(rng, n, bits):
    return rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(n, bits))


def ref_all(q, db, q_lab, db_lab, ks, perms):
    """Reference metrics averaged over queries."""
    dist = codes_lib.hamming_distances(codes_lib.pack(q), codes_lib.pack(db))
    rel = relevance(q_lab, db_lab)
    per = [ref_expected(dist[i], rel[i], ks, perms) for i in range(len(q))]
    return {key: float(np.mean([p[key] for p in per])) for key in per[0]}


def flat(res: dict) -> dict[str, float]:
    out = {"ap@all": res["map_all"]}
    for k, v in res["map_at"].items():
        out[f"ap@{k}"] = v
    pk = res["precision_at_k"]
    for k, p, r in zip(pk["k"], pk["precision"], pk["recall"]):
        out[f"p@{k}"] = p
        out[f"r@{k}"] = r
    return out


# ---------------------------------------------------------------------------
# Hand-checkable examples
# ---------------------------------------------------------------------------


def test_hand_example_with_a_tie():
    # Distances to the query: [0, 1, 1, 2]; relevant: [yes, no, yes, no].
    # The tie at distance 1 is in either order with probability 1/2:
    #   relevant item at rank 2 -> P@2 = 1;  at rank 3 -> P@3 = 2/3.
    # AP@all = (1 + (1 + 2/3) / 2) / 2 = 11/12.
    q = np.array([[1, 1]], dtype=np.float32)
    db = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=np.float32)
    res = evaluate_codes(q, db, np.array([0]), np.array([0, 1, 0, 1]), topk=(1, 2, 3), precision_at=(1, 2, 3, 4))
    assert res["map_all"] == pytest.approx(11 / 12)
    # AP@2: top-2 is item 0 plus one of the tie: either way AP = 1.
    assert res["map_at"] == {1: pytest.approx(1.0), 2: pytest.approx(1.0), 3: pytest.approx(11 / 12)}
    assert res["precision_at_k"]["precision"] == pytest.approx([1.0, 0.75, 2 / 3, 0.5])
    assert res["precision_at_k"]["recall"] == pytest.approx([0.5, 0.75, 1.0, 1.0])
    # Ball radius 0 holds item 0 only; radius 1 holds 3 items, 2 relevant.
    pr = res["pr_curve"]
    assert pr["precision"] == pytest.approx([1.0, 2 / 3, 0.5])
    assert pr["recall"] == pytest.approx([0.5, 1.0, 1.0])


def test_ap_at_k_cutting_a_tie_group_by_hand():
    # Distances [1, 1, 1] with relevance [yes, no, no]; K = 1.
    # The single top item is relevant with prob 1/3 -> AP@1 = 1/3, P@1 = 1/3.
    q = np.array([[1, 1]], dtype=np.float32)
    db = np.array([[1, -1], [-1, 1], [1, -1]], dtype=np.float32)
    res = evaluate_codes(q, db, np.array([0]), np.array([0, 1, 1]), topk=(1, 2), precision_at=(1, 2))
    assert res["map_at"][1] == pytest.approx(1 / 3)
    # K = 2: relevant inside w.p. 2/3, at rank 1 or 2 equally -> AP = 1 or 1/2.
    assert res["map_at"][2] == pytest.approx((2 / 3) * (1 + 0.5) / 2)
    assert res["precision_at_k"]["precision"] == pytest.approx([1 / 3, 1 / 3])


def test_empty_ball_counts_precision_zero_and_is_reported():
    q = np.array([[1, 1, 1, 1], [-1, -1, -1, -1]], dtype=np.float32)
    db = np.array([[1, 1, 1, 1], [1, 1, 1, -1]], dtype=np.float32)
    # Query 2 is at distance 3 and 4: its radius-2 ball is empty.
    res = evaluate_codes(q, db, np.array([0, 0]), np.array([0, 1]), radius=2)
    assert res["precision_at_radius"] == pytest.approx((0.5 + 0.0) / 2)
    assert res["empty_ball_fraction"] == pytest.approx(0.5)
    assert res["recall_at_radius"] == pytest.approx((1.0 + 0.0) / 2)
    assert res["pr_curve"]["empty_fraction"] == pytest.approx([0.5, 0.5, 0.5, 0.0, 0.0])


def test_multi_label_means_sharing_one_label():
    q = np.array([[1, 1]], dtype=np.float32)
    db = np.array([[1, 1], [1, -1], [-1, -1]], dtype=np.float32)
    q_lab = np.array([[1, 0, 1]])
    db_lab = np.array([[0, 1, 0], [0, 0, 1], [1, 1, 1]])  # no, yes, yes
    res = evaluate_codes(q, db, q_lab, db_lab, precision_at=(1, 2, 3))
    # Ranks: 1 irrelevant, 2 relevant (P=1/2), 3 relevant (P=2/3).
    assert res["map_all"] == pytest.approx((0.5 + 2 / 3) / 2)


# ---------------------------------------------------------------------------
# Against the references on random data
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("multi", [False, True])
def test_matches_exact_enumeration_of_all_database_orders(multi):
    rng = np.random.default_rng(1 if multi else 0)
    n_db, bits = 7, 3  # 8 codes over 7 items: many ties
    perms = np.array(list(itertools.permutations(range(n_db))))  # all 5040 orders
    ks = [1, 2, 3, 4, 5, 6, 7]
    for trial in range(3):
        q = random_signs(rng, 4, bits)
        db = random_signs(rng, n_db, bits)
        if multi:
            q_lab = rng.integers(0, 2, size=(4, 3))
            db_lab = rng.integers(0, 2, size=(n_db, 3))
        else:
            q_lab = rng.integers(0, 3, size=4)
            db_lab = rng.integers(0, 3, size=n_db)
        got = flat(evaluate_codes(q, db, q_lab, db_lab, topk=ks, precision_at=ks))
        want = ref_all(q, db, q_lab, db_lab, ks, perms)
        want["ap@all"] = want["ap@7"]
        for key, value in want.items():
            assert got[key] == pytest.approx(value, abs=1e-12), (trial, key)


def test_matches_average_over_random_orders_on_larger_data():
    rng = np.random.default_rng(2)
    n_db, bits, n_q = 300, 5, 6
    q = random_signs(rng, n_q, bits)
    db = random_signs(rng, n_db, bits)
    q_lab = rng.integers(0, 4, size=n_q)
    db_lab = rng.integers(0, 4, size=n_db)
    ks = [7, 50, 133, 300]
    perms = np.argsort(rng.random((4000, n_db)), axis=1)
    got = flat(evaluate_codes(q, db, q_lab, db_lab, topk=ks, precision_at=ks))
    dist = codes_lib.hamming_distances(codes_lib.pack(q), codes_lib.pack(db))
    rel = relevance(q_lab, db_lab)
    # Standard error of a mean of 4000 values in [0, 1] is < 0.008; AP varies far less.
    per = [ref_expected(dist[i], rel[i], ks, perms) for i in range(n_q)]
    for key in per[0]:
        want = float(np.mean([p[key] for p in per]))
        assert got[key] == pytest.approx(want, abs=4e-3), key


def test_brute_force_without_ties_float_path():
    rng = np.random.default_rng(3)
    qf = rng.normal(size=(5, 8))
    df = rng.normal(size=(60, 8))
    q_lab = rng.integers(0, 3, size=5)
    db_lab = rng.integers(0, 3, size=60)
    ks = [1, 10, 25, 60]
    got = flat(evaluate_float(qf, df, q_lab, db_lab, topk=ks, precision_at=ks))
    sim = (qf / np.linalg.norm(qf, axis=1, keepdims=True)) @ (df / np.linalg.norm(df, axis=1, keepdims=True)).T
    ranked = np.take_along_axis(relevance(q_lab, db_lab), np.argsort(-sim, axis=1), axis=1)
    want = {k: float(v.mean()) for k, v in ref_metrics_ranked(ranked, ks).items()}
    want["ap@all"] = want["ap@60"]
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


def test_float_path_ties_use_the_same_rule():
    # Duplicate database vectors give exactly equal cosine scores.
    rng = np.random.default_rng(4)
    base = rng.normal(size=(3, 4)).astype(np.float32)
    df = base[rng.integers(0, 3, size=7)]
    qf = rng.normal(size=(3, 4)).astype(np.float32)
    q_lab = rng.integers(0, 2, size=3)
    db_lab = rng.integers(0, 2, size=7)
    ks = [1, 2, 3, 5, 7]
    got = flat(evaluate_float(qf, df, q_lab, db_lab, topk=ks, precision_at=ks))
    perms = np.array(list(itertools.permutations(range(7))))
    dfn = df / np.linalg.norm(df, axis=1, keepdims=True)
    sim = (qf / np.linalg.norm(qf, axis=1, keepdims=True)) @ dfn.T
    # Rank by -similarity; equal rows give bit-identical scores, so ties are exact.
    rel = relevance(q_lab, db_lab)
    per = [ref_expected(-sim[i], rel[i], ks, perms) for i in range(3)]
    for key in per[0]:
        assert got[key] == pytest.approx(float(np.mean([p[key] for p in per])), abs=1e-9), key


# ---------------------------------------------------------------------------
# Invariances and input forms
# ---------------------------------------------------------------------------


def test_results_do_not_depend_on_database_order_or_chunking():
    rng = np.random.default_rng(5)
    q = random_signs(rng, 20, 8)
    db = random_signs(rng, 500, 8)
    q_lab = rng.integers(0, 5, size=20)
    db_lab = rng.integers(0, 5, size=500)
    a = evaluate_codes(q, db, q_lab, db_lab, topk=(10, 100), chunk_size=20)
    perm = rng.permutation(500)
    b = evaluate_codes(q, db[perm], q_lab, db_lab[perm], topk=(10, 100), chunk_size=3)
    fa, fb = flat(a), flat(b)
    for key in fa:
        assert fb[key] == pytest.approx(fa[key], abs=1e-12), key
    assert b["pr_curve"]["precision"] == pytest.approx(a["pr_curve"]["precision"], abs=1e-12)
    # Breaking ties by database index WOULD change with the order on this data.
    dist = codes_lib.hamming_distances(codes_lib.pack(q), codes_lib.pack(db))
    rel = relevance(q_lab, db_lab)
    naive = [
        ref_expected(dist[0], rel[0], [10], order[None, :])["ap@10"] for order in (np.arange(500), perm)
    ]
    assert naive[0] != pytest.approx(naive[1], abs=1e-6)


def test_packed_input_with_padding_garbage_equals_signs():
    rng = np.random.default_rng(6)
    q = random_signs(rng, 10, 12)
    db = random_signs(rng, 80, 12)
    q_lab = rng.integers(0, 3, size=10)
    db_lab = rng.integers(0, 3, size=80)
    want = evaluate_codes(q, db, q_lab, db_lab)
    qp, dp = codes_lib.pack(q), codes_lib.pack(db)
    dp[:, -1] |= 0x0F  # the 4 padding bits of a 12-bit code must be ignored
    got = evaluate_codes(qp, dp, q_lab, db_lab, num_bits=12)
    assert got["map_all"] == pytest.approx(want["map_all"], abs=1e-12)
    assert got["pr_curve"] == want["pr_curve"]


def test_one_hot_labels_equal_class_ids_and_perfect_codes_score_one():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, size=100)
    class_codes = random_signs(rng, 4, 16)
    codes = class_codes[labels]
    res = evaluate_codes(codes[:10], codes[10:], labels[:10], labels[10:], topk=(5,))
    onehot = np.eye(4, dtype=np.uint8)[labels]
    res2 = evaluate_codes(codes[:10], codes[10:], onehot[:10], onehot[10:], topk=(5,))
    assert flat(res) == pytest.approx(flat(res2))
    if len(np.unique(class_codes, axis=0)) == 4:
        assert res["map_all"] == pytest.approx(1.0)


def test_map_at_k_larger_than_database_is_map_all():
    rng = np.random.default_rng(8)
    q, db = random_signs(rng, 3, 8), random_signs(rng, 30, 8)
    res = evaluate_codes(q, db, np.array([0, 1, 0]), rng.integers(0, 2, size=30), topk=(1000,))
    assert res["map_at"][1000] == pytest.approx(res["map_all"])


def test_bad_inputs_raise_user_error():
    q = np.array([[1, 0]], dtype=np.float32)
    db = np.array([[1, 1]], dtype=np.float32)
    with pytest.raises(UserError, match="-1, \\+1"):
        evaluate_codes(q, db, np.array([0]), np.array([0]))
    with pytest.raises(UserError, match="bits"):
        evaluate_codes(np.ones((1, 3)), np.ones((1, 4)), np.array([0]), np.array([0]))
    with pytest.raises(UserError, match="rows"):
        evaluate_codes(np.ones((1, 4)), np.ones((2, 4)), np.array([0]), np.array([0]))
    with pytest.raises(UserError, match="multi-label"):
        evaluate_codes(np.ones((1, 4)), np.ones((1, 4)), np.array([[2]]), np.array([[1]]))
    with pytest.raises(UserError, match="radius"):
        evaluate_codes(np.ones((1, 4)), np.ones((1, 4)), np.array([0]), np.array([0]), radius=5)


def test_top_k_hamming_orders_by_distance_then_index():
    q = np.array([[1, 1, 1]], dtype=np.float32)
    db = np.array([[-1, -1, -1], [1, 1, -1], [1, 1, 1], [-1, 1, 1]], dtype=np.float32)
    ids, dist = top_k_hamming(q, db, 3)
    assert ids.tolist() == [[2, 1, 3]]
    assert dist.tolist() == [[0, 1, 1]]
