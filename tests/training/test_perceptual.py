"""The perceptual content term (--w_perceptual): 1 - cos of a frozen pretrained backbone's
pooled features of the real image and of G(code). It is scale-free, it trains G and
(through the code) the encoder, and the frozen copy never moves."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from testlib import SMALL_MOBILENET_SIZE, TINY_TRAIN

from bgan_tf.config import BGANConfig
from bgan_tf.errors import UserError
from bgan_tf.training import losses


def test_perceptual_loss_is_one_minus_cosine_and_ignores_scale():
    real = tf.constant([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    recon = tf.constant([[5.0, 0.0], [1.0, 0.0], [-0.3, -0.4]])
    # Per image: same direction 0, orthogonal 1, opposite 2; averaged over a global batch of 3.
    assert float(losses.perceptual_loss(real, recon, 3)) == pytest.approx(1.0, abs=1e-6)
    # A replica's share: the same sum over a global batch of 6.
    assert float(losses.perceptual_loss(real, recon, 6)) == pytest.approx(0.5, abs=1e-6)
    with tf.GradientTape() as tape:
        r, g = tf.Variable(real), tf.Variable(recon)
        loss = losses.perceptual_loss(r, g, 3)
    grad_real, grad_recon = tape.gradient(loss, [r, g])
    assert grad_real is None  # the real image's features are the target
    assert float(tf.reduce_sum(tf.abs(grad_recon))) > 0


def test_config_refuses_perceptual_without_gan_or_pretrained_weights():
    base = BGANConfig(**TINY_TRAIN).replace(w_perceptual=1.0, backbone="MobileNetV2", backbone_weights="imagenet")
    base.validate()
    with pytest.raises(UserError, match="--nouse_gan trains no generator"):
        base.replace(use_gan=False).validate()
    with pytest.raises(UserError, match="pass --backbone_weights"):
        base.replace(backbone_weights=None).validate()
    with pytest.raises(UserError, match="pixels per step"):
        base.replace(batch_size=2000, backbone_input_size=224).validate()
    with pytest.raises(UserError, match="w_perceptual"):
        base.replace(w_perceptual=-1.0).validate()


def _config(small_mobilenet, **overrides) -> BGANConfig:
    # Only the perceptual term trains G (no feature, pixel or adversarial term), so any move
    # of G's weights is its gradient.
    return BGANConfig(**{**TINY_TRAIN, "backbone": "mobilenet_v2_torch", "backbone_weights": small_mobilenet.weights,
                         "backbone_input_size": SMALL_MOBILENET_SIZE, "freeze_backbone": False, "w_feature": 0.0,
                         "w_pixel": 0.0, "w_adv": 0.0, "w_perceptual": 1.0, **overrides}).validate()


def _fit(cfg: BGANConfig, steps: int = 2):
    """A BGAN built and trained `steps` steps on 64 digits; (model, weights before training)."""
    from bgan_tf.data.features import graph_features
    from bgan_tf.data.pipeline import images_for_gan, training_dataset
    from bgan_tf.data.sources import load_digits
    from bgan_tf.training.graph import build_graph
    from bgan_tf.training.trainer import build_bgan

    tf.config.experimental.enable_op_determinism()  # as train() runs: a difference is the term, not noise
    keras.utils.set_random_seed(cfg.seed)
    data = load_digits().subset(np.arange(64))
    graph = build_graph(graph_features(cfg.replace(graph_features="pixels"), data, None), 5, 5)
    x = data.images.astype(np.float32)
    model = build_bgan(cfg, graph, x, False, data.images)
    # All of the frozen copy's weights (batch-norm statistics too); the trained weights of the others.
    before = {name: [v.numpy().copy() for v in weights]
              for name, weights in (("perceptual", model.perceptual.weights if model.perceptual else None),
                                    ("generator", model.generator.trainable_weights),
                                    ("encoder", model.encoder.trainable_weights)) if weights is not None}
    ds = training_dataset(images_for_gan(data.images, cfg.image_size), x, cfg.batch_size, cfg.seed, 0, 1)
    history = model.fit(ds.take(steps), epochs=1, verbose=0).history
    return model, before, history


def _moved(weights, before) -> bool:
    return any(not np.array_equal(v.numpy(), b) for v, b in zip(weights, before))


def test_perceptual_term_trains_g_and_the_encoder_and_never_the_frozen_copy(small_mobilenet):
    model, before, history = _fit(_config(small_mobilenet))
    assert 0.0 <= history["perceptual"][-1] <= 2.0
    # Its weights and batch-norm statistics stay those of the pretrained file.
    assert not model.perceptual.trainable_weights and not _moved(model.perceptual.weights, before["perceptual"])
    assert _moved(model.generator.trainable_weights, before["generator"])  # its only gradient is the perceptual term
    # The term reaches the encoder: the same run without it ends with other encoder weights.
    off, before_off, history_off = _fit(_config(small_mobilenet, w_perceptual=0.0))
    assert off.perceptual is None and "perceptual" not in history_off
    np.testing.assert_array_equal(before_off["encoder"][0], before["encoder"][0])  # same start
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(model.encoder.trainable_weights,
                                                                       off.encoder.trainable_weights))
    assert not _moved(off.generator.trainable_weights, before_off["generator"])  # no term at all: G has no gradient


def test_perceptual_term_is_logged_and_part_of_g_loss_in_a_training_run(small_mobilenet, tmp_path):
    from bgan_tf.data.sources import load_digits
    from bgan_tf.training.trainer import train

    cfg = _config(small_mobilenet, w_feature=1.0, w_adv=1.0, w_perceptual=0.5, epochs=2, steps_per_epoch=2,
                  output_dir=str(tmp_path / "run"))
    h = train(cfg, load_digits().subset(np.arange(96)), verbose=0).history
    assert len(h["perceptual"]) == 2 and all(0.0 <= v <= 2.0 for v in h["perceptual"])
    np.testing.assert_allclose(h["loss_g"], np.add(h["feature"], h["adv_g"]) + 0.5 * np.asarray(h["perceptual"]),
                               rtol=1e-5)
