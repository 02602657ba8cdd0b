"""The sign activation: values and gradients of every mode."""

import numpy as np
import pytest
import tensorflow as tf

from bgan_tf.modeling.sign import SignActivation, sign_activation, surrogate


def _grad(fn, x):
    x = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(fn(x) * tf.constant(np.linspace(0.5, 1.5, x.shape[-1]), tf.float32))
    return tape.gradient(y, x).numpy()


def _finite_difference(kind, x, beta, eps=1e-3):
    w = np.linspace(0.5, 1.5, x.shape[-1]).astype(np.float64)
    f = lambda v: np.sum(surrogate(tf.constant(v, tf.float64), tf.constant(beta, tf.float64), kind).numpy() * w)
    g = np.zeros_like(x, dtype=np.float64)
    for i in np.ndindex(x.shape):
        up, dn = x.astype(np.float64).copy(), x.astype(np.float64).copy()
        up[i] += eps
        dn[i] -= eps
        g[i] = (f(up) - f(dn)) / (2 * eps)
    return g


@pytest.mark.parametrize("mode,kind", [("tanh", "tanh"), ("app", "app"), ("ste", "tanh")])
@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_gradient_matches_finite_difference_of_surrogate(mode, kind, beta):
    rng = np.random.default_rng(0)
    # Keep clear of app's kinks at |beta x| = 1, where finite differences straddle.
    x = rng.uniform(-1.5, 1.5, (3, 7)).astype(np.float32)
    x[np.abs(np.abs(beta * x) - 1) < 0.05] += 0.1
    got = _grad(lambda v: sign_activation(v, tf.constant(beta), mode, ste_surrogate=kind), x)
    want = _finite_difference(kind, x, beta)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)


def test_ste_forward_is_exact_sign_and_app_surrogate_gradient():
    x = tf.constant([[-2.0, -0.3, 0.0, 0.2, 3.0]])
    y = sign_activation(x, tf.constant(1.0), "ste", ste_surrogate="app")
    np.testing.assert_array_equal(y.numpy(), [[-1, -1, 1, 1, 1]])
    g = _grad(lambda v: sign_activation(v, tf.constant(1.0), "ste", ste_surrogate="app"), x.numpy())
    w = np.linspace(0.5, 1.5, 5)
    np.testing.assert_allclose(g, [[0, w[1], w[2], w[3], 0]], rtol=1e-6)


def test_beta_gets_no_gradient_and_changes_the_slope():
    layer = SignActivation("tanh", beta=1.0)
    x = tf.constant([[0.3, -0.3]])
    y1 = layer(x, training=True).numpy()
    layer.beta.assign(5.0)
    y5 = layer(x, training=True).numpy()
    np.testing.assert_allclose(y1, np.tanh([[0.3, -0.3]]), rtol=1e-6)
    np.testing.assert_allclose(y5, np.tanh([[1.5, -1.5]]), rtol=1e-6)
    assert not layer.trainable_weights  # beta is a schedule, not a parameter


@pytest.mark.parametrize("mode", ["tanh", "app", "ste"])
def test_inference_codes_are_exactly_plus_minus_one_never_zero(mode):
    layer = SignActivation(mode)
    x = tf.constant([[0.0, -0.0, 1e-9, -1e-9, 5.0, -5.0]])
    y = layer(x, training=False).numpy()
    np.testing.assert_array_equal(y, [[1, 1, 1, -1, 1, -1]])


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown sign mode"):
        SignActivation("round")
