"""A tiny trained model folder for tests (shared by every test module in a session).

Use it from a test module with::

    from model_fixtures import tiny_model_dir  # noqa: F401  (pytest fixture)

    def test_x(tiny_model_dir): ...

The model: small_cnn encoder at 32x32, 16 bits, a few training steps on
scikit-learn digits (offline), tiny generator/discriminator; about 10 s on 2
cores. It is trained once per test process and cached, even when several
modules import the fixture.
"""

from __future__ import annotations

import os

import pytest

TINY_TRAIN = dict(
    dataset="digits",
    backbone="small_cnn",
    backbone_input_size=32,
    graph_features="pixels",
    num_bits=16,
    gen_channels=(16, 8, 8),
    disc_channels=(8, 8, 8, 8),
    disc_feature_dim=16,
    batch_size=16,
    epochs=1,
    steps_per_epoch=4,
    sample_every=100,
    seed=0,
)

_CACHE: dict[str, str] = {}


def build_tiny_model(root: str, **overrides) -> str:
    """Train the tiny model into ``root/run`` and return its ``model`` folder."""
    from bgan_tf.config import BGANConfig
    from bgan_tf.training.trainer import train

    config = BGANConfig(**{**TINY_TRAIN, **overrides, "output_dir": os.path.join(root, "run")})
    return train(config, verbose=0).model_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """Path of a tiny trained model folder (config.json, metadata.json, encoder.weights.h5)."""
    if "tiny" not in _CACHE or not os.path.isdir(_CACHE["tiny"]):
        _CACHE["tiny"] = build_tiny_model(str(tmp_path_factory.mktemp("tiny_model")))
    return _CACHE["tiny"]
