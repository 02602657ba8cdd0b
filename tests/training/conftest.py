"""Fixtures of the training wing's tests that need a MobileNetV2 (fine-tuning): a tiny
random-init one, with its weights saved to a file."""

import keras
import numpy as np
import pytest
from testlib import SMALL_MOBILENET_SIZE

from bgan_tf.modeling import backbones
from bgan_tf.modeling.backbones import BackboneSpec


@pytest.fixture(scope="module")
def small_mobilenet(tmp_path_factory):
    """Weights of a random-init MobileNetV2 alpha 0.35 at 32 px, with every
    keras.applications.MobileNetV2 the backbones module builds made at alpha 0.35.

    Its BN statistics are set to those of one batch of digits (momentum 0 for one
    training-mode pass): untouched, the random net's activations shrink to ~1e-7 by
    block 12, where float16 has no precision left; calibrated they are O(1), as in a
    pretrained net."""
    from sklearn.datasets import load_digits

    path = str(tmp_path_factory.mktemp("weights") / "mnv2.weights.h5")
    real = keras.applications.MobileNetV2
    keras.utils.set_random_seed(5)
    net = real(include_top=False, weights=None, pooling="avg", alpha=0.35, input_shape=(SMALL_MOBILENET_SIZE, SMALL_MOBILENET_SIZE, 3))
    digits = np.repeat(load_digits().images[:64, :, :, None] * (255 / 16), 3, axis=-1).astype(np.float32)
    bns = [l for l in net.layers if isinstance(l, keras.layers.BatchNormalization)]
    for bn in bns:
        bn.momentum = 0.0
    net(backbones.Preprocess(SMALL_MOBILENET_SIZE, "torch")(digits), training=True)
    net.save_weights(path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backbones.keras.applications, "MobileNetV2", lambda **kw: real(alpha=0.35, **kw))
        yield BackboneSpec("mobilenet_v2_torch", path, SMALL_MOBILENET_SIZE)
