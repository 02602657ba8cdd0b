"""Encoder / generator / discriminator shapes, and the hash-layer normalisation."""

import numpy as np
import tensorflow as tf

from bgan_tf.modeling.backbones import BackboneSpec
from bgan_tf.modeling.networks import Discriminator, Encoder, Generator


def _head_grad(hash_norm: bool, scale: float) -> float:
    # Seeded initial weights: whether a unit sits past the clip depends on them, so an
    # unseeded run passed or failed with whatever ran before it in the process.
    import keras

    keras.utils.set_random_seed(0)
    enc = Encoder(BackboneSpec("small_cnn", None, 32), 12, hidden=(16,), sign_mode="app", hash_norm=hash_norm)
    feats = tf.constant(np.random.default_rng(0).normal(size=(32, 256)).astype(np.float32) * scale)
    enc.encode_features(feats, training=True)
    with tf.GradientTape() as tape:
        z = enc.encode_features(feats, training=True)
        loss = tf.reduce_sum(z * tf.constant(np.random.default_rng(1).normal(size=(32, 12)), tf.float32))
    g = tape.gradient(loss, enc.hash_dense.kernel)
    return float(tf.reduce_sum(tf.abs(g)))


def test_app_sign_units_die_on_large_inputs_unless_normalised():
    # Inputs 1,000x too large push every |beta x| past 1, where clip has no gradient.
    assert _head_grad(hash_norm=False, scale=1000.0) == 0.0
    assert _head_grad(hash_norm=True, scale=1000.0) > 0.0


def test_shapes_and_code_values():
    enc = Encoder(BackboneSpec("small_cnn", None, 32), 24, hidden=(32,), hash_norm=True)
    codes = enc(tf.zeros((3, 40, 28, 3)))  # any input size: resized in the graph
    assert codes.shape == (3, 24) and set(np.unique(codes.numpy())) <= {-1.0, 1.0}
    gen = Generator(64, (32, 16, 16, 8))
    img = gen(codes)
    assert img.shape == (3, 64, 64, 3)
    assert float(tf.reduce_min(img)) >= 0.0 and float(tf.reduce_max(img)) <= 1.0
    logit, phi = Discriminator((8, 8, 16), feature_dim=20)(img)
    assert logit.shape == (3, 1) and phi.shape == (3, 20)
