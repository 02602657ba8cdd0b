"""What an encoder is to search and evaluation, and how a model spec becomes one.

``Encoder`` is the protocol every encoder meets (``num_bits``, ``model_id``,
``metadata``, ``encode(uint8 images) -> +-1 codes``). ``load_model(spec)`` turns
a spec into an encoder: a trained model folder
(``bgan_tf.inference.keras_model.load_encoder``), an exported ``.tflite`` file
(``bgan_tf.inference.tflite.TFLiteEncoder``) or the training-free
``pixel-lsh:BITS[:SEED]`` baseline (``bgan_tf.inference.pixel_lsh``).
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

from bgan_tf.errors import UserError
from bgan_tf.inference.pixel_lsh import PixelLSHEncoder


class Encoder(Protocol):
    num_bits: int
    model_id: str
    metadata: dict

    def encode(self, images: np.ndarray) -> np.ndarray: ...


def load_model(model: str) -> Encoder:
    """A model folder (bgan_tf.inference.keras_model.load_encoder), a `.tflite` export or `pixel-lsh:BITS[:SEED]`."""
    # An existing folder wins, and the spec is exactly pixel-lsh or pixel-lsh:...: a model
    # folder named pixel-lsh-x was parsed as a bad spec (issue 27 case 21).
    if (model == "pixel-lsh" or model.startswith("pixel-lsh:")) and not os.path.isdir(model):
        parts = model.split(":")
        try:
            if len(parts) > 3:
                raise ValueError
            bits = int(parts[1]) if len(parts) > 1 else 64
            seed = int(parts[2]) if len(parts) > 2 else 0
        except ValueError:
            raise UserError(f"bad model spec {model!r}; use pixel-lsh:BITS[:SEED]") from None
        return PixelLSHEncoder(bits, seed)
    if model.endswith(".tflite"):
        # An exported TFLite encoder (python -m export.tflite): lets a deployment
        # whose devices run the int8 file index with that same file, so device
        # and index codes agree bit for bit.
        from bgan_tf.inference.tflite import TFLiteEncoder

        return TFLiteEncoder(model)
    if not os.path.isdir(model):
        raise UserError(f"model folder not found: {model}; train one with python -m bgan_tf.train")
    try:
        from bgan_tf.inference.keras_model import load_encoder
    except ImportError as e:
        raise UserError(f"cannot load trained models in this build ({e})") from None
    return load_encoder(model)
