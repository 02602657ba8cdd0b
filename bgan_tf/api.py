"""The Python API: ``bgan_tf.load_model(path).encode(...)`` and ``bgan_tf.open_index(path).search(...)``.

    import bgan_tf
    model = bgan_tf.load_model("runs/photos/model")
    codes = model.encode(["a.jpg", "b.png", pixels])   # +-1 float32 [3, L]; any mix of sizes
    index = bgan_tf.open_index("my_index")             # the model it records, from any folder
    for row in index.search("query.jpg", k=10):
        print(row.id, row.distance, row.metadata["path"])

Both go through exactly what ``python -m bgan_tf.index`` runs (`search.indexer`: the one
decoder in `data.images`, images encoded per size group inside the pixel budget, the
model resizing each image itself), so a code from here equals the CLI's bit for bit.
`open_index` uses the index's verified float TFLite encoder when it has one
(`query_encoder`): no TensorFlow import, which is what makes a cold query fast.
"""

from __future__ import annotations

import os
from typing import Any, Sequence, Union

import numpy as np

from bgan_tf import codes as codes_lib
from bgan_tf.errors import UserError
from bgan_tf.inference.encoders import Encoder, load_model as load_encoder
from bgan_tf.search import indexer
from bgan_tf.search.binary_index import BinaryIndex, SearchResult

ImageLike = Union[str, os.PathLike, np.ndarray]


def as_pixels(item: ImageLike, max_pixels: int | None = None) -> np.ndarray:
    """A path (decoded by the project's one decoder) or an image array -> uint8 [H, W, 3]."""
    if isinstance(item, (str, os.PathLike)):
        return indexer.read_image(item, max_pixels=max_pixels)
    arr = np.asarray(item)
    if arr.ndim == 2:  # grayscale, replicated as the decoder does for grey files
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise UserError(f"an image array must be uint8 [H, W, 3] (or [H, W] grey), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise UserError(f"an image array must be uint8 (0..255 pixels), got {arr.dtype}")
    return arr


class Model:
    """A loaded encoder: ``encode(paths_or_arrays) -> +-1 float32 [N, num_bits]``."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    @property
    def num_bits(self) -> int:
        return int(self.encoder.num_bits)

    @property
    def model_id(self) -> str:
        return str(self.encoder.model_id)

    def encode(self, images: ImageLike | Sequence[ImageLike], batch_size: int = 64,
               progress: bool = False, max_pixels: int | None = None) -> np.ndarray:
        """Codes of file paths and/or uint8 arrays of any sizes, in order.

        ``batch_size`` images are decoded at a time (memory stays bounded for long lists);
        within a batch, images of one size are encoded together. ``progress``: a bar on
        stderr. One path or array alone gives a [1, L] result.
        """
        if int(batch_size) < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        items = [images] if isinstance(images, (str, os.PathLike, np.ndarray)) else list(images)
        out = np.zeros((len(items), self.num_bits), np.float32)
        bar = indexer.Progress(len(items), progress, unit="encoded")
        try:
            for s in range(0, len(items), int(batch_size)):
                part = [as_pixels(x, max_pixels) for x in items[s:s + int(batch_size)]]
                out[s:s + len(part)] = indexer.encode_images(self.encoder, part)
                bar.update(len(part))
        finally:
            bar.close()
        return out

    def encode_packed(self, images: ImageLike | Sequence[ImageLike], **kwargs: Any) -> np.ndarray:
        """`encode`, packed: uint8 [N, ceil(L/8)] (numpy.packbits order, as an index stores them)."""
        return codes_lib.pack(self.encode(images, **kwargs))


def load_model(path: str | os.PathLike[str]) -> Model:
    """A trained model folder, an exported ``.tflite`` file or ``pixel-lsh:BITS[:SEED]``."""
    return Model(load_encoder(os.fspath(path)))


class Index:
    """An index on disk with the encoder its queries need."""

    def __init__(self, index: BinaryIndex, model: Model, path: str) -> None:
        self.index, self.model, self.path = index, model, path

    def __len__(self) -> int:
        return len(self.index)

    def search(self, image: ImageLike, k: int = 10) -> list[SearchResult]:
        """The ``k`` nearest indexed images (rows: id, distance, metadata) of one path or array."""
        return self.index.search_one(self.model.encode(image)[0], int(k))


def open_index(path: str | os.PathLike[str], model: str | os.PathLike[str] | None = None) -> Index:
    """Open an index with ``model`` or, by default, the model it records (from any folder).

    Without ``model`` its verified float TFLite encoder is used when the index has one.
    """
    path = os.fspath(path)
    from bgan_tf.search.query_encoder import query_encoder

    encoder = query_encoder(path, os.fspath(model) if model is not None else None)
    return Index(indexer.open_index(path, encoder), Model(encoder), path)


# Indexed images the float TFLite conversion is checked on, each at its own size and at
# twice it (the resize path), before an index trusts it for queries.
QUERY_ENCODER_CHECK_IMAGES = 32


def write_query_encoder(index_path: str | os.PathLike[str], encoder: Encoder) -> str:
    """Keep a float TFLite conversion of a Keras ``encoder`` in the index for fast queries.

    Written only when its codes equal the Keras model's on a check set of the indexed
    images (at their size and at twice it); returns one line saying what was done. The
    caller holds the index's writer lock. Encoders that are not Keras models (a .tflite
    file, pixel-lsh) already run without TensorFlow: nothing is written.
    """
    import tempfile

    from bgan_tf import atomic
    from bgan_tf.inference.tflite import TFLiteEncoder, quiet_tflite_notices
    from bgan_tf.search.query_encoder import QUERY_ENCODER_FILE, VerifiedTFLiteEncoder
    from bgan_tf.serving.tflite import tflite_converter, tflite_saved_model

    if not hasattr(encoder, "config") or not hasattr(encoder, "model"):
        return "queries run this model as it is (no conversion needed)"
    index = indexer.open_index(index_path, encoder)
    rows = index.store.metadata_rows()[:QUERY_ENCODER_CHECK_IMAGES]
    pixels = [indexer.read_image(m["path"]) for m in rows if os.path.isfile(str(m.get("path", "")))]
    from absl import logging as absl_logging

    verbosity = absl_logging.get_verbosity()
    with tempfile.TemporaryDirectory(prefix="bgan_query_encoder_") as work:
        # The SavedModel writer logs its temp paths at INFO: not the user's business.
        absl_logging.set_verbosity(absl_logging.WARNING)
        try:
            with quiet_tflite_notices():
                data = tflite_converter(tflite_saved_model(encoder, os.path.join(work, "sm")), "float").convert()
        finally:
            absl_logging.set_verbosity(verbosity)
        tmp_file = os.path.join(work, QUERY_ENCODER_FILE)
        with open(tmp_file, "wb") as f:
            f.write(data)
        fast = VerifiedTFLiteEncoder(TFLiteEncoder(tmp_file), encoder.model_id, {})
        checks = pixels + [np.repeat(np.repeat(p, 2, axis=0), 2, axis=1) for p in pixels]
        same = bool(checks) and np.array_equal(indexer.encode_images(fast, checks),
                                               indexer.encode_images(encoder, checks))
    if not same:
        return ("queries load the Keras model: its float TFLite conversion did not give the same codes "
                f"on {len(checks)} check images" if checks else "queries load the Keras model (no image to "
                "check a faster conversion on)")
    import hashlib

    index.store.extra["query_encoder"] = {"file": QUERY_ENCODER_FILE, "sha256": hashlib.sha256(data).hexdigest(),
                                          "model_id": encoder.model_id, "checked_images": len(checks)}
    index.save(index_path)
    # After the save: a save swaps in a new folder, which holds only the index's own files.
    atomic.write_bytes(os.path.join(os.fspath(index_path), QUERY_ENCODER_FILE), data)
    return (f"queries run a float TFLite copy of the model kept in the index (same codes on "
            f"{len(checks)} check images), without TensorFlow")
