"""Issue 14: D's accuracy and each network's loss are logged; spectral norm in D does what it
claims; the content terms reach the encoder (tiny data, a few steps). The other remedies of
issue 14 (hinge, label smoothing, instance noise, G steps, content warm-up and share) measured
no gain and were removed in issue 28."""

import numpy as np
import pytest
import tensorflow as tf

from bgan_tf.config import BGANConfig
from bgan_tf.errors import UserError
from bgan_tf.training import losses
from testlib import TINY_TRAIN

ACC = ("d_acc_real", "d_acc_recon", "d_acc_prior")


def _model_and_data(steps: int = 3, **overrides):
    """A compiled BGAN of the tiny config on 64 digits, and a dataset of `steps` batches."""
    from bgan_tf.data.features import graph_features
    from bgan_tf.data.pipeline import images_for_gan, training_dataset
    from bgan_tf.data.sources import load_digits
    from bgan_tf.training.graph import build_graph
    from bgan_tf.training.trainer import build_bgan

    cfg = BGANConfig(**TINY_TRAIN).replace(**overrides).validate()
    data = load_digits().subset(np.arange(64))
    graph = build_graph(graph_features(cfg, data, None), 5, 5)
    x = data.images.astype(np.float32)
    model = build_bgan(cfg, graph, x, False, data.images)
    ds = training_dataset(images_for_gan(data.images, cfg.image_size), x, cfg.batch_size, cfg.seed, 0, 1)
    return model, ds.take(steps)


@pytest.mark.parametrize("fake_source", ["codes", "prior"])
def test_accuracy_and_network_losses_are_logged_in_unit_range(tmp_path, fake_source):
    from bgan_tf.data.sources import load_digits
    from bgan_tf.training.trainer import train

    cfg = BGANConfig(**TINY_TRAIN).replace(fake_source=fake_source, epochs=2, steps_per_epoch=3,
                                           output_dir=str(tmp_path / "run"))
    h = train(cfg, load_digits().subset(np.arange(160)), verbose=0).history
    for name in ("loss_e", "loss_g", "loss_d", *ACC):
        assert len(h[name]) == 2 and np.isfinite(h[name]).all(), name
    for name in ACC:
        # Means of per-step fractions of a 16-image batch (16 prior images when only monitored).
        assert all(0.0 <= v <= 1.0 for v in h[name]), (name, h[name])
    # loss_g is G's total: its content terms plus the adversarial term (w_adv 1).
    np.testing.assert_allclose(h["loss_g"], np.add(h["feature"], h["adv_g"]) + np.asarray(h["pixel"]) * cfg.w_pixel,
                               rtol=1e-5)


def test_accuracy_counts_what_d_says():
    real = tf.constant([[2.0], [-1.0], [0.5], [0.0]])
    assert float(losses.judged_right(real, real=True)) == 2.0  # logit > 0 is "real"; 0 is not
    assert float(losses.judged_right(real, real=False)) == 2.0


def test_spectral_norm_wraps_every_d_layer_and_drops_batch_norm():
    import keras

    from bgan_tf.modeling.factory import build_discriminator

    plain = build_discriminator(BGANConfig(**TINY_TRAIN))
    sn = build_discriminator(BGANConfig(**TINY_TRAIN).replace(disc_spectral_norm=True))
    images = tf.random.uniform((4, 32, 32, 3), seed=1)
    plain(images), sn(images)
    wrapped = [l for l in (*sn.convs, sn.feature, sn.logit) if isinstance(l, keras.layers.SpectralNormalization)]
    assert len(wrapped) == len(sn.convs) + 2 and all(b is None for b in sn.bns)
    assert not any(isinstance(l, keras.layers.SpectralNormalization) for l in (*plain.convs, plain.logit))
    assert any(b is not None for b in plain.bns)
    # A training call normalises the kernel (largest singular value -> ~1); inference leaves it.
    kernel = sn.feature.layer.kernel
    before = kernel.numpy().copy()
    sn(images, training=False)
    np.testing.assert_array_equal(kernel.numpy(), before)
    for _ in range(30):  # power iterations converge over calls
        sn(images, training=True)
    top = np.linalg.svd(kernel.numpy().reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
    assert top == pytest.approx(1.0, abs=0.05)
    assert np.linalg.svd(before.reshape(-1, before.shape[-1]), compute_uv=False)[0] > 1.2


def _networks_after(steps: int, **overrides) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The encoder's and G's weights after `steps` steps of the tiny paper-style config,
    from the same initial weights every call."""
    import keras

    keras.utils.set_random_seed(0)
    # (Adam epsilon 1e-7: with the tiny config's 1.0 the content's small gradient moves the
    # encoder by ~1e-7, too little to tell from float noise.)
    model, ds = _model_and_data(steps=steps, **{"w_pixel": 1.0, "fake_source": "codes", "adam_epsilon": 1e-7,
                                                   **overrides})
    model.fit(ds.repeat(), epochs=1, steps_per_epoch=steps, verbose=0)
    assert int(model.e_optimizer.iterations) == steps
    return [v.numpy() for v in model.encoder.trainable_variables], [v.numpy() for v in model.generator.weights]


def _encoder_after(steps: int, **overrides) -> list[np.ndarray]:
    return _networks_after(steps, **overrides)[0]


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def test_content_terms_reach_the_encoder_and_the_adversarial_term_does_not():
    """Issue 28 kept one content path: the encoder learns from the content terms through its
    code (they change its weights), never from the adversarial term (w_adv leaves it alone)."""
    base = _encoder_after(1)
    assert _max_diff(base, _encoder_after(1, w_pixel=0.0, w_feature=0.0)) > 1e-6
    # (One step: from the second on, G itself differs with w_adv, and so does its content gradient.)
    assert _max_diff(base, _encoder_after(1, w_adv=5.0)) == 0.0
