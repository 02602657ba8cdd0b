"""Issue 14: D's accuracy and each network's loss are logged, and every remedy
against a dominant D changes what it claims to (tiny data, a few steps)."""

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
    assert "d_noise_std" not in h  # instance noise off by default
    # loss_g is G's total: its content terms plus the adversarial term (w_adv 1).
    np.testing.assert_allclose(h["loss_g"], np.add(h["feature"], h["adv_g"]) + np.asarray(h["pixel"]) * cfg.w_pixel,
                               rtol=1e-5)


def test_accuracy_counts_what_d_says():
    real = tf.constant([[2.0], [-1.0], [0.5], [0.0]])
    assert float(losses.judged_right(real, real=True)) == 2.0  # logit > 0 is "real"; 0 is not
    assert float(losses.judged_right(real, real=False)) == 2.0


def test_hinge_loss_on_known_logits():
    real = tf.constant([[2.0], [0.5]])
    fake = tf.constant([[-2.0], [0.5]])
    # D: mean(max(0, 1 - real)) + mean(max(0, 1 + fake)) = (0 + 0.5)/2 + (0 + 1.5)/2
    assert float(losses.discriminator_loss(real, fake, 2, "hinge")) == pytest.approx(1.0)
    # G: -mean(D(fake)) = 0.75
    assert float(losses.generator_adv_loss(fake, 2, "hinge")) == pytest.approx(0.75)
    # A D right by the margin everywhere gets no gradient from the hinge.
    with tf.GradientTape() as tape:
        r, f = tf.Variable([[3.0]]), tf.Variable([[-3.0]])
        loss = losses.discriminator_loss(r, f, 1, "hinge")
    assert all(float(tf.reduce_sum(tf.abs(g))) == 0.0 for g in tape.gradient(loss, [r, f]))


def test_label_smoothing_changes_only_the_real_term():
    real, fake = tf.constant([[3.0], [1.0]]), tf.constant([[-1.0], [2.0]])

    def bce(logit, t):
        p = 1.0 / (1.0 + np.exp(-logit))
        return -(t * np.log(p) + (1 - t) * np.log(1 - p))

    want = np.mean(bce(np.array([3.0, 1.0]), 0.9)) + np.mean(bce(np.array([-1.0, 2.0]), 0.0))
    smoothed = float(losses.discriminator_loss(real, fake, 2, "bce", real_target=0.9))
    assert smoothed == pytest.approx(want, rel=1e-5)
    assert smoothed != pytest.approx(float(losses.discriminator_loss(real, fake, 2)), rel=1e-3)
    # Fakes keep target 0: with no real term the losses agree.
    none = tf.zeros((0, 1))
    assert float(losses.discriminator_loss(none, fake, 2, real_target=0.9)) == \
        pytest.approx(float(losses.discriminator_loss(none, fake, 2)))


def test_instance_noise_std_anneals_to_zero():
    from bgan_tf.training.bgan import instance_noise_std

    got = [float(instance_noise_std(0.2, s, 10)) for s in (0, 5, 10, 15)]
    assert got == pytest.approx([0.2, 0.1, 0.0, 0.0])


def test_instance_noise_is_logged_and_falls_over_the_run(tmp_path):
    from bgan_tf.data.sources import load_digits
    from bgan_tf.training.trainer import train

    cfg = BGANConfig(**TINY_TRAIN).replace(instance_noise=0.3, epochs=3, steps_per_epoch=2,
                                           output_dir=str(tmp_path / "run"))
    h = train(cfg, load_digits().subset(np.arange(160)), verbose=0).history
    # 6 steps: std 0.3 * (1 - step/6); epoch means of steps (0,1), (2,3), (4,5).
    np.testing.assert_allclose(h["d_noise_std"], [0.275, 0.175, 0.075], rtol=1e-5)


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


def test_g_steps_updates_the_generator_that_many_times():
    model, ds = _model_and_data(steps=3, g_steps=3)
    model.fit(ds, epochs=1, verbose=0)
    steps = int(model.e_optimizer.iterations)
    assert steps >= 3 and int(model.d_optimizer.iterations) == steps
    assert int(model.g_optimizer.iterations) == 3 * steps


def test_instance_noise_needs_the_run_length():
    model, ds = _model_and_data(steps=1, instance_noise=0.1)
    with pytest.raises(ValueError, match="set_run_length"):
        model.fit(ds, epochs=1, verbose=0)


@pytest.mark.parametrize("changes, message", [
    (dict(g_steps=6), "--g_steps"),
    (dict(d_label_smoothing=0.6), "--d_label_smoothing"),
    (dict(instance_noise=-0.1), "--instance_noise"),
    (dict(gan_loss="wgan"), "--gan_loss"),
    (dict(gan_loss="hinge", d_label_smoothing=0.1), "bce"),
    (dict(content_to_encoder=1.5), "--content_to_encoder"),
])
def test_bad_remedy_settings_are_refused(changes, message):
    with pytest.raises(UserError, match=message):
        BGANConfig(**TINY_TRAIN).replace(**changes).validate()


def test_defaults_keep_the_original_training():
    c = BGANConfig()
    assert (c.gan_loss, c.disc_spectral_norm, c.d_label_smoothing, c.instance_noise, c.g_steps) == \
        ("bce", False, 0.0, 0.0, 1)


def _networks_after(steps: int, **overrides) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The encoder's and G's weights after `steps` steps of the tiny paper-style config,
    from the same initial weights every call."""
    import keras

    keras.utils.set_random_seed(0)
    # (Adam epsilon 1e-7: with the tiny config's 1.0 the content's small gradient moves the
    # encoder by ~1e-7, too little to tell from float noise.)
    model, ds = _model_and_data(steps=steps, **{"w_pixel": 1.0, "fake_source": "codes", "adam_epsilon": 1e-7,
                                                   **overrides})
    model.set_run_length(steps, 2)  # a 2-step epoch: the warm-up counts these
    model.fit(ds.repeat(), epochs=1, steps_per_epoch=steps, verbose=0)
    assert int(model.e_optimizer.iterations) == steps
    return [v.numpy() for v in model.encoder.trainable_variables], [v.numpy() for v in model.generator.weights]


def _encoder_after(steps: int, **overrides) -> list[np.ndarray]:
    return _networks_after(steps, **overrides)[0]


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def test_content_to_encoder_scales_the_encoders_share_and_leaves_gs_whole():
    # Share 0: over several steps the encoder learns exactly as with no content terms...
    for a, b in zip(_encoder_after(3, content_to_encoder=0.0), _encoder_after(3, w_pixel=0.0, w_feature=0.0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # ...while G's first step is the full-share run's (it gets all of the content gradient).
    e0, g0 = _networks_after(1, content_to_encoder=0.0)
    e1, g1 = _networks_after(1)
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # A share in between moves the encoder unlike either end.
    half = _encoder_after(1, content_to_encoder=0.5)
    assert _max_diff(half, e0) > 1e-5 and _max_diff(half, e1) > 1e-5


def test_content_warmup_keeps_the_content_gradient_from_the_encoder_until_it_ends():
    no_content = dict(w_pixel=0.0, w_feature=0.0)
    # Inside the warm-up (1 epoch = 2 steps) the encoder learns as if there were no content
    # terms (G's updates do not reach it within a step)...
    warm = _encoder_after(2, content_warmup_epochs=1)
    for a, b in zip(warm, _encoder_after(2, **no_content)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # ...which does change it when there is no warm-up...
    plain = _encoder_after(2)
    assert max(float(np.abs(a - b).max()) for a, b in zip(warm, plain)) > 1e-4
    # ...and after the warm-up the content gradient reaches it again.
    late = _encoder_after(4, content_warmup_epochs=1)
    off = _encoder_after(4, **no_content)
    assert max(float(np.abs(a - b).max()) for a, b in zip(late, off)) > 1e-4


def test_content_warmup_needs_the_epoch_length_and_a_gan():
    model, ds = _model_and_data(steps=1, content_warmup_epochs=1)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model.set_run_length(4)
    with pytest.raises(ValueError, match="set_run_length"):
        model.fit(ds, epochs=1, verbose=0)
    with pytest.raises(UserError, match="--content_warmup_epochs"):
        BGANConfig(**TINY_TRAIN).replace(use_gan=False, content_warmup_epochs=1).validate()
