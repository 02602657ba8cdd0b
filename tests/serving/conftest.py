"""Fixtures the serving tests share."""

import pytest


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    """The session's tiny model, loaded (bgan_tf.inference.keras_model.load_encoder)."""
    from bgan_tf.inference.keras_model import load_encoder

    return load_encoder(tiny_model_dir)
