"""Which encoder a query of an index runs: the model the index records, fast when it can be.

An index records its model by absolute path (``extra["model"]``) and id, so a query works
from any folder. `index build` also keeps a float TFLite conversion of a Keras encoder in
the index (``query_encoder.tflite``, recorded in ``extra["query_encoder"]`` with its sha256
and the Keras model id) after checking that it gives the index's codes bit for bit. A query
given no other --model runs that file with the LiteRT interpreter and never imports
TensorFlow: the import and the Keras model build were 15-17 s of every cold CLI query.
A later save of the index (the service adding images) carries the file over
(`kept_query_encoder`). When it is missing, damaged or from another model, the query
loads the Keras model.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from bgan_tf.errors import UserError
from bgan_tf.inference.encoders import Encoder, load_model
from bgan_tf.search.store import read_manifest

QUERY_ENCODER_FILE = "query_encoder.tflite"


class VerifiedTFLiteEncoder:
    """A float TFLite conversion that `index build` checked against the Keras model's codes:
    it answers to the Keras model's id, so the index accepts its codes."""

    def __init__(self, tflite: Any, model_id: str, metadata: dict) -> None:
        self.tflite = tflite
        self.num_bits = int(tflite.num_bits)
        self.model_id = model_id
        self.metadata = dict(metadata, query_encoder=tflite.path)

    def encode(self, images: np.ndarray) -> np.ndarray:
        return self.tflite.encode(images)


def resolve_recorded_model(index_path: str | os.PathLike[str], model: str | None) -> str:
    """The model to encode queries with: ``model`` if given, else the one recorded at build.

    Indexes built before models were recorded by absolute path hold the path as typed:
    it still works from the folder the index was built in; anywhere else the error names
    the recorded path and says to pass --model.
    """
    if model:
        return model
    recorded = read_manifest(index_path).get("extra", {}).get("model")
    if not recorded or not isinstance(recorded, str):
        raise UserError(f"index {index_path} does not record its model; pass --model")
    is_spec = recorded == "pixel-lsh" or recorded.startswith("pixel-lsh:")
    if not is_spec and not os.path.isabs(recorded) and not os.path.exists(recorded):
        raise UserError(f"index {index_path} records its model as {recorded!r}, relative to the folder it "
                        f"was built in, which is not {os.getcwd()}; run from that folder or pass "
                        "--model MODEL_DIR")
    if not is_spec and not os.path.exists(recorded):
        raise UserError(f"index {index_path} was built by the model {recorded}, which no longer exists; "
                        "pass --model with the model folder that built it")
    return recorded


def kept_query_encoder(index_path: str | os.PathLike[str], extra: dict) -> bytes | None:
    """The bytes of the query encoder in ``index_path`` when ``extra`` (the manifest's, about
    to be saved) records their sha256; else None (`fast_encoder` checks the model id)."""
    rec = extra.get("query_encoder")
    path = os.path.join(os.fspath(index_path), QUERY_ENCODER_FILE)
    if not isinstance(rec, dict) or not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == rec.get("sha256") else None


def fast_encoder(index_path: str | os.PathLike[str]) -> VerifiedTFLiteEncoder | None:
    """The index's verified TFLite query encoder, or None when it has none usable."""
    extra = read_manifest(index_path).get("extra", {})
    rec = extra.get("query_encoder")
    path = os.path.join(os.fspath(index_path), QUERY_ENCODER_FILE)
    if not isinstance(rec, dict) or not os.path.isfile(path):
        return None
    try:
        from bgan_tf.inference.tflite import TFLiteEncoder

        tfl = TFLiteEncoder(path)
    except (UserError, ImportError):
        return None  # damaged or no LiteRT runtime here: the Keras model is the answer
    # The sha256 ties the file to the check `index build` made; the model id ties it to
    # the index (an index rebuilt by another model records another id).
    if tfl.model_id != f"tflite:{str(rec.get('sha256', ''))[:16]}" \
            or rec.get("model_id") != read_manifest(index_path).get("model_id"):
        return None
    return VerifiedTFLiteEncoder(tfl, str(rec["model_id"]), extra.get("model_metadata") or {})


def query_encoder(index_path: str | os.PathLike[str], model: str | None = None) -> Encoder:
    """The encoder for queries of ``index_path``: ``model`` when given; else the fast TFLite
    file when the index has a verified one; else the recorded model."""
    if not model:
        fast = fast_encoder(index_path)
        if fast is not None:
            return fast
    return load_model(resolve_recorded_model(index_path, model))
