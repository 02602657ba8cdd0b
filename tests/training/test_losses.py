"""Loss terms: values against their definitions, and replica-split equivalence."""

import numpy as np
import pytest
import tensorflow as tf

from bgan_tf.training import losses


# (scaled by 1/L, diagonal included), written out here rather than read from NBR_FORMS.
FORMS = {"released": (False, True), "paper": (True, False), "released_scaled": (True, True),
         "released_off_diagonal": (False, False)}


def _full_block(z, s, form):
    scaled, diagonal = FORMS[form]
    sq = (z @ z.T / (z.shape[1] if scaled else 1) - s) ** 2
    return np.mean(sq if diagonal else sq[~np.eye(len(z), dtype=bool)])


def test_every_configurable_form_is_tested():
    from bgan_tf.config import NBR_FORMS

    assert set(NBR_FORMS) == set(FORMS)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_neighbourhood_value_and_gradient_match_full_block(form):
    rng = np.random.default_rng(0)
    z = rng.uniform(-1, 1, (6, 5)).astype(np.float64)
    s = np.where(rng.random((6, 6)) < 0.3, 1.0, -1.0)
    s = np.triu(s) + np.triu(s, 1).T  # symmetric
    zt = tf.Variable(z)
    with tf.GradientTape() as tape:
        same = tf.constant(np.eye(6, dtype=bool))
        val = losses.neighbourhood_loss(zt, zt, tf.constant(s), same, form)
    grad = tape.gradient(val, zt).numpy()
    assert val.numpy() == pytest.approx(_full_block(z, s, form), rel=1e-10)
    # Reference gradient of the full symmetric block loss by autodiff without the trick.
    zt2 = tf.Variable(z)
    with tf.GradientTape() as tape:
        inner = tf.matmul(zt2, zt2, transpose_b=True)
        scaled, diagonal = FORMS[form]
        sq = ((inner / 5 if scaled else inner) - s) ** 2
        ref = tf.reduce_mean(sq) if diagonal else tf.reduce_sum(sq * (1 - np.eye(6))) / 30
    np.testing.assert_allclose(grad, tape.gradient(ref, zt2).numpy(), rtol=1e-10)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_two_replica_split_sums_to_one_device_value_and_gradient(form):
    """Each replica scores its rows against the gathered batch; the sums must
    equal the one-device loss and gradient (what tf.distribute adds up)."""
    rng = np.random.default_rng(1)
    z = rng.uniform(-1, 1, (8, 4))
    s = np.where(rng.random((8, 8)) < 0.4, 1.0, -1.0)
    s = np.triu(s) + np.triu(s, 1).T
    eye = np.eye(8, dtype=bool)
    zt = tf.Variable(z)
    with tf.GradientTape() as tape:
        one = losses.neighbourhood_loss(zt, zt, tf.constant(s), tf.constant(eye), form)
    g_one = tape.gradient(one, zt).numpy()
    total, g_total = 0.0, np.zeros_like(z)
    for rows in (slice(0, 4), slice(4, 8)):
        zv = tf.Variable(z)
        with tf.GradientTape() as tape:
            part = losses.neighbourhood_loss(zv[rows], zv, tf.constant(s[rows]), tf.constant(eye[rows]), form)
        total += part.numpy()
        g_total += tape.gradient(part, zv).numpy()
    assert total == pytest.approx(one.numpy(), rel=1e-10)
    np.testing.assert_allclose(g_total, g_one, rtol=1e-9, atol=1e-12)


def test_per_example_terms_divide_by_global_batch():
    # A replica holding 2 of a global batch of 8 contributes sum/8.
    v = tf.constant([1.0, 3.0])
    assert float(losses.per_example_share(v, 8)) == pytest.approx(0.5)
    z = tf.constant([[0.5, -1.0], [1.0, 1.0]])
    # (z - sgn z)^2 per example: mean([0.25, 0]) = 0.125, mean([0, 0]) = 0.
    assert float(losses.quantization_loss(z, 4)) == pytest.approx(0.125 / 4)


def test_adversarial_losses_are_the_non_saturating_gan_losses():
    logits = tf.constant([[0.0], [2.0]])
    g = float(losses.generator_adv_loss(logits, 2))
    want = np.mean([np.log(2), np.log1p(np.exp(-2.0))])
    assert g == pytest.approx(want, rel=1e-6)
    d = float(losses.discriminator_loss(tf.constant([[0.0]]), tf.constant([[0.0]]), 1))
    assert d == pytest.approx(2 * np.log(2), rel=1e-6)


def test_feature_loss_scales_by_image_elements():
    a = tf.constant([[1.0, 0.0]])
    b = tf.constant([[0.0, 0.0]])
    assert float(losses.feature_loss(a, b, 4, 1)) == pytest.approx(0.25)
