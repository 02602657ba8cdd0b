"""The two feature engines compute the same function: TensorFlow's Keras graph and the
TFLite/XNNPACK copy `compute_features` switches to for large image sets."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from bgan_tf.data import features as features_lib
from bgan_tf.errors import UserError
from bgan_tf.modeling.backbones import BackboneSpec


@pytest.fixture(scope="module")
def mobilenet_spec(tmp_path_factory) -> BackboneSpec:
    """A random-init MobileNetV2 with torch padding at 48 px: the CIFAR-10 backbone's
    ops (depthwise convs, ZeroPadding, ReLU6, pooling) at a test's cost."""
    path = str(tmp_path_factory.mktemp("weights") / "mnv2.weights.h5")
    keras.utils.set_random_seed(3)
    keras.applications.MobileNetV2(include_top=False, weights=None, pooling="avg", alpha=0.35,
                                   input_shape=(48, 48, 3)).save_weights(path)
    return BackboneSpec("mobilenet_v2_torch", path, 48)


def test_xnnpack_features_match_the_keras_graph(mobilenet_spec, monkeypatch):
    # alpha 0.35 weights do not fit the alpha 1.0 backbone: build it at 0.35 too.
    import bgan_tf.modeling.backbones as backbones

    real = keras.applications.MobileNetV2
    monkeypatch.setattr(backbones.keras.applications, "MobileNetV2",
                        lambda **kw: real(alpha=0.35, **kw))
    images = np.random.default_rng(0).integers(0, 256, (21, 32, 32, 3), dtype=np.uint8)  # resized to 48
    tf_feats = features_lib.compute_features(images, mobilenet_spec, batch_size=8, engine="tf")
    fast = features_lib._xnnpack_features(images, mobilenet_spec, 8)
    assert fast is not None, "the backbone did not run on XNNPACK (conversion or parity check failed)"
    assert fast.shape == tf_feats.shape == (21, 1280) and fast.dtype == np.float32
    scale = float(np.abs(tf_feats).max())
    assert scale > 0
    np.testing.assert_allclose(fast, tf_feats, atol=1e-4 * scale, rtol=0)
    # Same function batch by batch: a last partial batch (21 = 2 * 8 + 5) is not padded garbage.
    np.testing.assert_allclose(fast[16:], tf_feats[16:], atol=1e-4 * scale, rtol=0)


def test_auto_engine_uses_xnnpack_only_for_large_sets(monkeypatch):
    used = []
    monkeypatch.setattr(features_lib, "_xnnpack_features", lambda *a: used.append("xnnpack") or np.zeros((1, 2)))
    monkeypatch.setattr(features_lib, "_tf_features", lambda *a: used.append("tf") or np.zeros((1, 2)))
    spec = BackboneSpec("small_cnn", None, 32)
    small = np.zeros((features_lib.XNNPACK_MIN_IMAGES - 1, 1, 1, 3), np.uint8)
    large = np.zeros((features_lib.XNNPACK_MIN_IMAGES, 1, 1, 3), np.uint8)
    features_lib.compute_features(small, spec)
    features_lib.compute_features(large, spec)
    assert used == ["tf", "xnnpack"]


def test_xnnpack_falls_back_to_tensorflow_when_it_disagrees(monkeypatch):
    import ai_edge_litert.interpreter as litert

    class OffByOne(litert.Interpreter):  # a delegate that computes something else
        def get_tensor(self, index, *args):
            return super().get_tensor(index, *args) + 1.0

    monkeypatch.setattr(litert, "Interpreter", OffByOne)
    spec = BackboneSpec("small_cnn", None, 16)
    images = np.random.default_rng(1).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    monkeypatch.setattr(features_lib, "_tf_features", lambda *a, **k: np.full((5, 256), 7.0, np.float32))
    out = features_lib.compute_features(images, spec, engine="xnnpack")
    assert (out == 7.0).all()  # the TensorFlow path's answer, not the delegate's


def test_unknown_engine_is_a_user_error():
    with pytest.raises(UserError, match="unknown feature engine"):
        features_lib.compute_features(np.zeros((1, 8, 8, 3), np.uint8), BackboneSpec(), engine="gpu")
