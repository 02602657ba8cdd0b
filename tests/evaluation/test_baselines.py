"""LSH / PCAH / ITQ on synthetic clustered features."""

from __future__ import annotations

import numpy as np
import pytest

from bgan_tf.evaluation.baselines import ITQ, LSH, PCAH, make_baseline, quantization_error
from bgan_tf.errors import UserError
from bgan_tf.evaluation.retrieval_metrics import evaluate_codes


def clustered(seed: int, n: int = 1200, dim: int = 32, classes: int = 8):
    """Gaussian clusters living in a low-dimensional subspace plus small noise.

    Anisotropic on purpose: PCA directions have very unequal variance, which is where
    ITQ's rotation pays off (PCAH puts most bits on few informative directions).
    Scaled so projections are O(1), the regime in which the sign's quantization error
    is comparable to the projected values (ITQ is usually run on such features).
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    centres = rng.normal(size=(classes, 6)) * 3.0
    mix = rng.normal(size=(6, dim))
    x = (centres[labels] + rng.normal(size=(n, 6))) @ mix + 0.3 * rng.normal(size=(n, dim))
    return (x / 10.0).astype(np.float32) + 5.0, labels  # offset: centring must matter


@pytest.mark.parametrize("name", ["LSH", "PCAH", "ITQ"])
def test_codes_are_signs_never_zero_and_deterministic(name):
    x, _ = clustered(0, n=300)
    a = make_baseline(name, 16, seed=3).fit(x)
    codes = a.encode(x)
    assert codes.dtype == np.float32 and codes.shape == (300, 16)
    assert set(np.unique(codes)) <= {-1.0, 1.0}
    # A feature equal to the training mean projects to exactly 0: still a sign.
    at_mean = a.encode(a.mean_[None, :])
    assert set(np.unique(at_mean)) == {1.0}
    b = make_baseline(name, 16, seed=3).fit(x)
    np.testing.assert_array_equal(codes, b.encode(x))


@pytest.mark.parametrize("cls", [LSH, ITQ])
def test_seed_changes_the_random_parts(cls):
    x, _ = clustered(1, n=300)
    a = cls(16, seed=0).fit(x).encode(x)
    b = cls(16, seed=1).fit(x).encode(x)
    assert np.mean(a != b) > 0.05


def test_itq_lowers_quantization_error_versus_pcah_and_monotonically():
    x, _ = clustered(2)
    pcah = PCAH(16).fit(x)
    itq = ITQ(16, seed=0).fit(x)
    assert quantization_error(itq, x) < 0.5 * quantization_error(pcah, x)
    # The iterations, not just the random rotation, do the work.
    assert quantization_error(itq, x) < 0.8 * quantization_error(ITQ(16, seed=0, n_iter=0).fit(x), x)
    errs = np.array(itq.quantization_errors_)
    assert len(errs) == 50
    assert np.all(np.diff(errs) <= 1e-9)  # alternating minimisation never goes up
    r = itq.rotation_
    np.testing.assert_allclose(r @ r.T, np.eye(16), atol=1e-9)


def test_itq_retrieves_better_than_lsh_on_clustered_data():
    x, labels = clustered(3, n=1500)
    train, query, db = x[:600], x[:100], x[100:]
    q_lab, db_lab = labels[:100], labels[100:]
    scores = {}
    for name in ("LSH", "ITQ"):
        m = make_baseline(name, 16, seed=0).fit(train)
        scores[name] = evaluate_codes(m.encode(query), m.encode(db), q_lab, db_lab, pr_curve=False)["map_all"]
    assert scores["ITQ"] >= scores["LSH"] + 0.02, scores
    assert scores["ITQ"] > 1.5 / 8  # well above chance (1/8 classes)


def test_centring_uses_training_mean():
    x, _ = clustered(4, n=300)
    pcah = PCAH(4).fit(x)
    np.testing.assert_allclose(pcah.mean_, x.mean(axis=0), rtol=1e-5, atol=1e-5)
    # Without centring every feature (offset +5) would land on one side of most
    # hyperplanes; centred codes have balanced bits.
    balance = np.abs(pcah.encode(x).mean(axis=0))
    assert np.all(balance < 0.6)


def test_errors_are_user_errors():
    x, _ = clustered(5, n=100, dim=8)
    for name in ("PCAH", "ITQ"):
        with pytest.raises(UserError, match="only 8 dimensions"):
            make_baseline(name, 12).fit(x)
    assert LSH(12).fit(x).encode(x).shape == (100, 12)  # LSH has no such limit
    with pytest.raises(UserError, match="unknown baseline"):
        make_baseline("SH", 8)
    with pytest.raises(UserError, match="fit"):
        ITQ(4).encode(x)
    with pytest.raises(UserError, match="dimensions"):
        ITQ(4).fit(x).encode(x[:, :5])
    assert isinstance(make_baseline("itq", 4), ITQ)
