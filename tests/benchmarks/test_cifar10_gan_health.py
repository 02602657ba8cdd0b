"""benchmarks/cifar10_pbgan.py's GAN health: whether G uses the code, against G fed another
query's code and the training images' mean image, in pixels (TensorFlow's PSNR) and in a
feature space (cosines of an extractor's features)."""

import os
import sys

import numpy as np

# realpath: under Bazel this file is a symlink into the source tree, where benchmarks/ is.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))),
                                "benchmarks"))
import cifar10_pbgan as bench  # noqa: E402


def _pooled(images, training=False):
    """A stand-in feature extractor: [0,255] images -> 4x4 average-pooled pixels, centred."""
    x = np.asarray(images, np.float32).reshape(len(images), 4, 8, 4, 8, 3).mean(axis=(2, 4))
    return x.reshape(len(images), -1) - 127.5


def test_gan_health_shows_whether_g_uses_the_code(tmp_path, monkeypatch):
    """A G that reproduces each image from its code scores far above G(another query's
    code) and the mean image; one that ignores the code scores the same for both codes."""
    import types

    from bgan_tf.inference import keras_model

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32, 3)).astype(np.uint8)
    codes = np.eye(6, 8, dtype=np.float32) * 2 - 1  # one distinct code per image
    target = images.astype(np.float32) / 255

    def copier(c, training=False):  # looks the image up by its code
        return target[np.argmax(np.asarray(c), axis=1)] * 0.9 + 0.05

    for gen, uses_code in ((copier, True), (lambda c, training=False: np.full((len(c), 32, 32, 3), 0.5, np.float32), False)):
        monkeypatch.setattr(keras_model, "load_generator", lambda model_dir, g=gen: g)
        res = types.SimpleNamespace(model_dir=str(tmp_path), history={})
        out = bench.gan_health(res, codes, images, 32, train_images=images,
                               q_features=_pooled(images.astype(np.float32)), extractor=_pooled)
        assert (out["psnr_db"] > out["psnr_other_code_db"] + 5) == uses_code
        assert (out["feature_cos"] > out["feature_cos_other_code"] + 0.01) == uses_code
        assert -1.0 <= out["feature_cos_mean_image"] <= 1.0
        if not uses_code:
            assert out["psnr_db"] == out["psnr_other_code_db"]
            assert out["feature_cos"] == out["feature_cos_other_code"]
    mean = target.mean(axis=0)
    want = np.mean([10 * np.log10(1 / ((t - mean) ** 2).mean()) for t in target])
    assert abs(bench.mean_image_psnr(target, target) - want) < 1e-6

