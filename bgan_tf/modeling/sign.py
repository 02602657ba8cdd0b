"""The sign activation that makes BGAN's codes binary.

sgn has zero gradient almost everywhere, so training uses a smooth surrogate
driven towards sgn by a slope ``beta`` that grows during training
(continuation). Three modes:

- ``tanh``: forward tanh(beta x); gradient beta (1 - tanh^2(beta x)).
- ``app``: forward clip(beta x, -1, 1), the paper's piecewise-linear "app";
  gradient beta where |beta x| < 1, else 0.
- ``ste``: straight-through estimator: forward sign(x) (exactly +-1), backward
  the gradient of the chosen surrogate (``tanh`` or ``app``). This is the
  "directly generate binary codes" reading used by BGAN+ (IJCV 2020).

All three are written as custom-gradient ops so the backward pass is exactly
the surrogate's derivative, whatever TensorFlow would otherwise derive.
At inference (``training=False``) every mode returns exact +-1 with
sign(0) = +1, so no code bit is ever 0.

``beta`` is a non-trainable variable on the layer, passed to the op as an
input (not captured), so a callback can change it between epochs and
tf.function does not bake its value into the graph.
"""

from __future__ import annotations

import keras
import tensorflow as tf

MODES = ("tanh", "app", "ste")
SURROGATES = ("tanh", "app")


def hard_sign(x: tf.Tensor) -> tf.Tensor:
    """sign with sign(0) = +1: every output is exactly +-1."""
    return tf.where(x >= 0, tf.ones_like(x), -tf.ones_like(x))


def _surrogate_grad(x: tf.Tensor, beta: tf.Tensor, surrogate: str) -> tf.Tensor:
    bx = beta * x
    if surrogate == "tanh":
        t = tf.tanh(bx)
        return beta * (1.0 - t * t)
    if surrogate == "app":
        return beta * tf.cast(tf.abs(bx) < 1.0, x.dtype)
    raise ValueError(f"unknown surrogate {surrogate!r}; expected one of {SURROGATES}")


def surrogate(x: tf.Tensor, beta: tf.Tensor, kind: str) -> tf.Tensor:
    """The smooth function a mode relaxes sign into: tanh(beta x) or clip(beta x)."""
    if kind == "tanh":
        return tf.tanh(beta * x)
    if kind == "app":
        return tf.clip_by_value(beta * x, -1.0, 1.0)
    raise ValueError(f"unknown surrogate {kind!r}; expected one of {SURROGATES}")


def sign_activation(
    x: tf.Tensor, beta: tf.Tensor, mode: str = "tanh", ste_surrogate: str = "tanh"
) -> tf.Tensor:
    """Training-time sign relaxation with the surrogate's exact gradient.

    Returns the relaxed output for ``tanh``/``app`` and exact +-1 for ``ste``.
    The gradient w.r.t. ``x`` is always the surrogate's derivative; ``beta``
    gets no gradient (it is a schedule, not a parameter).
    """
    if mode not in MODES:
        raise ValueError(f"unknown sign mode {mode!r}; expected one of {MODES}")
    grad_kind = ste_surrogate if mode == "ste" else mode

    @tf.custom_gradient
    def _op(x, beta):
        beta = tf.cast(beta, x.dtype)
        y = hard_sign(x) if mode == "ste" else surrogate(x, beta, mode)

        def grad(dy):
            return dy * _surrogate_grad(x, beta, grad_kind), tf.zeros_like(beta)

        return y, grad

    return _op(x, beta)


@keras.saving.register_keras_serializable(package="bgan_tf")
class SignActivation(keras.layers.Layer):
    """Sign layer with a schedulable slope ``beta`` (non-trainable variable)."""

    def __init__(self, mode: str = "tanh", ste_surrogate: str = "tanh", beta: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"unknown sign mode {mode!r}; expected one of {MODES}")
        if ste_surrogate not in SURROGATES:
            raise ValueError(f"unknown surrogate {ste_surrogate!r}; expected one of {SURROGATES}")
        self.mode = mode
        self.ste_surrogate = ste_surrogate
        self.initial_beta = float(beta)
        # Float32 even under mixed precision: beta multiplies pre-activations.
        self.beta = self.add_weight(
            name="beta",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_beta),
            trainable=False,
            dtype="float32",
        )

    def call(self, x, training=None):
        x = tf.cast(x, "float32")
        if not training:
            return hard_sign(x)
        return sign_activation(x, self.beta, self.mode, self.ste_surrogate)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        cfg = super().get_config()
        cfg.update(mode=self.mode, ste_surrogate=self.ste_surrogate, beta=self.initial_beta)
        return cfg
