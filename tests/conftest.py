"""Shared test setup: quiet TensorFlow, never the network; the fixtures several wings' tests use.

Helpers that tests import (the tiny model's config, running a binary) live in
testlib.py; a wing's own shared fixtures live in tests/<wing>/conftest.py.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bgan_tf.runtime import tune_allocator  # noqa: E402

tune_allocator()  # as every binary does (cli_run): the tests run the same allocator settings

import pytest  # noqa: E402
from testlib import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """Path of a tiny trained model folder (config.json, metadata.json, encoder.weights.h5),
    trained once per test session (testlib.build_tiny_model)."""
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny_model")))
