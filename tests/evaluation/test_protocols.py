"""Splits on synthetic labels: sizes, disjointness, per-class counts, seeding."""

from __future__ import annotations

import numpy as np
import pytest

from bgan_tf.errors import UserError
from bgan_tf.evaluation.protocols import (
    Split,
    class_balanced_split,
    cifar10_10k_50k,
    cifar10_pbgan,
    make_split,
    mirflickr25k,
    nuswide_21,
)


def cifar_like_labels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(10), 6000))


def synthetic_multilabel(n: int, concepts: int, seed: int, p_none: float = 0.1) -> np.ndarray:
    """Concept c is present with a frequency falling with c; some rows have no label."""
    rng = np.random.default_rng(seed)
    freq = np.linspace(0.3, 0.02, concepts)
    lab = (rng.random((n, concepts)) < freq).astype(np.uint8)
    lab[rng.random(n) < p_none] = 0
    return lab


def check_partition(split: Split, n_total: int | None = None) -> None:
    q, db, tr = split.query, split.database, split.train
    assert np.intersect1d(q, db).size == 0
    assert np.isin(tr, db).all()  # training drawn from the database
    for arr in (q, db, tr):
        assert np.unique(arr).size == arr.size  # no duplicates
        assert np.all(np.diff(arr) > 0)  # sorted
    if n_total is not None:
        assert q.size + db.size == n_total


def test_cifar10_pbgan_sizes_and_per_class_counts():
    labels = cifar_like_labels()
    s = cifar10_pbgan(labels, seed=0)
    check_partition(s, 60000)
    assert s.sizes() == {"query": 1000, "database": 59000, "train": 10000}
    assert np.all(np.bincount(labels[s.query], minlength=10) == 100)
    assert np.all(np.bincount(labels[s.train], minlength=10) == 1000)
    assert s.map_at is None


def test_cifar10_10k_50k_sizes():
    labels = cifar_like_labels(1)
    s = cifar10_10k_50k(labels, seed=0)
    check_partition(s, 60000)
    assert s.sizes() == {"query": 10000, "database": 50000, "train": 5000}
    assert np.all(np.bincount(labels[s.query], minlength=10) == 1000)
    assert np.all(np.bincount(labels[s.train], minlength=10) == 500)
    assert s.map_at == 1000


def test_seed_determines_the_split():
    labels = cifar_like_labels()
    a, b, c = (cifar10_pbgan(labels, seed=k) for k in (7, 7, 8))
    for x, y in ((a.query, b.query), (a.train, b.train), (a.database, b.database)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.query, c.query)
    assert not np.array_equal(a.train, c.train)


def test_class_balanced_split_general_and_too_few_samples():
    labels = np.repeat(np.arange(3), [20, 30, 25])
    s = class_balanced_split(labels, 5, 10, seed=0)
    check_partition(s, 75)
    assert np.all(np.bincount(labels[s.query]) == 5)
    assert np.all(np.bincount(labels[s.train]) == 10)
    with pytest.raises(UserError, match="class 0 has 20"):
        class_balanced_split(labels, 5, 16, seed=0)
    with pytest.raises(UserError):
        cifar10_pbgan(labels, seed=0)


def test_multilabel_class_balanced_split():
    lab = synthetic_multilabel(6000, 5, seed=0, p_none=0.0)
    lab[lab.sum(axis=1) == 0, 0] = 1
    s = class_balanced_split(lab, 20, 50, seed=1)
    check_partition(s, 6000)
    assert s.query.size == 5 * 20 and s.train.size == 5 * 50
    assert np.all(lab[s.query].sum(axis=0) >= 20)  # each concept carried by >= quota
    assert np.all(lab[s.train].sum(axis=0) >= 50)
    again = class_balanced_split(lab, 20, 50, seed=1)
    np.testing.assert_array_equal(s.query, again.query)
    assert not np.array_equal(s.query, class_balanced_split(lab, 20, 50, seed=2).query)


def test_nuswide_21_keeps_top_concepts_and_labelled_images():
    lab = synthetic_multilabel(30000, 30, seed=3)
    lab[:, 25] = (np.random.default_rng(0).random(30000) < 0.5)  # a frequent late column
    s = nuswide_21(lab, seed=0)
    check_partition(s)
    freq = lab.sum(axis=0)
    assert set(s.label_columns.tolist()) == set(np.argsort(-freq, kind="stable")[:21].tolist())
    assert 25 in s.label_columns
    sub = s.labels_for_relevance(lab)
    assert sub.shape[1] == 21
    kept = np.concatenate([s.query, s.database])
    assert np.all(sub[kept].any(axis=1))  # only images with one of the 21 concepts
    assert kept.size == int(sub.any(axis=1).sum())
    assert s.sizes()["query"] == 2100 and s.sizes()["train"] == 10500
    assert np.all(sub[s.query].sum(axis=0) >= 100)
    assert np.all(sub[s.train].sum(axis=0) >= 500)
    assert s.map_at == 5000


def test_nuswide_too_rare_concept_is_a_user_error():
    lab = synthetic_multilabel(3000, 21, seed=4)  # rarest concept ~2%: ~60 images < 100
    with pytest.raises(UserError, match="concept"):
        nuswide_21(lab, seed=0)


def test_mirflickr25k():
    lab = synthetic_multilabel(25000, 24, seed=5, p_none=0.2)
    s = mirflickr25k(lab, seed=0)
    check_partition(s)
    labelled = np.flatnonzero(lab.any(axis=1))
    np.testing.assert_array_equal(np.union1d(s.query, s.database), labelled)
    assert s.sizes()["query"] == 2000 and s.sizes()["train"] == 5000
    assert not np.array_equal(s.query, mirflickr25k(lab, seed=1).query)
    with pytest.raises(UserError, match="available"):
        mirflickr25k(lab[:5000], seed=0)


def test_make_split_and_label_checks():
    labels = cifar_like_labels()
    assert make_split("cifar10_pbgan", labels, 0).name == "cifar10_pbgan"
    with pytest.raises(UserError, match="unknown protocol"):
        make_split("imagenet", labels, 0)
    with pytest.raises(UserError, match="class ids"):
        cifar10_pbgan(np.eye(10)[labels], 0)
    with pytest.raises(UserError, match="0,1"):
        nuswide_21(np.full((10, 21), 2), 0)
