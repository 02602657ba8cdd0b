"""`Model` (what `load_model` returns) and `Index` (what `open_index` returns).

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
from bgan_tf.search.query_encoder import query_encoder

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
        stderr. One path or image array alone gives a [1, L] result; an array [N, H, W, 3] is N
        images.
        """
        if int(batch_size) < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        if isinstance(images, np.ndarray) and images.ndim == 4:
            items: list[ImageLike] = list(images)  # a batch [N, H, W, 3]
        elif isinstance(images, (str, os.PathLike, np.ndarray)):
            items = [images]
        else:
            items = list(images)
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
    encoder = query_encoder(path, os.fspath(model) if model is not None else None)
    return Index(indexer.open_index(path, encoder), Model(encoder), path)

