"""The training-free baseline encoder: random hyperplanes over 16x16 pixels.

``PixelLSHEncoder`` (model spec ``pixel-lsh:BITS[:SEED]``, see
``bgan_tf.inference.encoders.load_model``) needs no trained model and no
TensorFlow; the tests, the demo and the load benchmark index and search with it.
"""

from __future__ import annotations

import numpy as np

from bgan_tf.errors import UserError

# pixel-lsh:BITS: a projection matrix of 768 x BITS floats; 4096 bits is 12 MB.
MAX_PIXEL_LSH_BITS = 4096


class PixelLSHEncoder:
    """Training-free baseline encoder: sign of random projections of 16x16 pixels.

    Deterministic for a (num_bits, seed) pair, so its model_id is stable. Similar
    images get similar codes, which is enough for demos, tests and load tests.
    """

    SIZE = 16
    # What encode() resizes to, and how (rows/cols arange(SIZE) * H // SIZE): the
    # search service shrinks uploads the same way before batching them.
    input_size = SIZE
    input_resize = "nearest"

    def __init__(self, num_bits: int = 64, seed: int = 0) -> None:
        if not 1 <= int(num_bits) <= MAX_PIXEL_LSH_BITS:
            raise UserError(f"pixel-lsh takes 1 to {MAX_PIXEL_LSH_BITS} bits, got {num_bits}; "
                            "use e.g. pixel-lsh:64")
        if not 0 <= int(seed) < 2**63:
            raise UserError(f"pixel-lsh seed must be between 0 and 2**63-1, got {seed}")
        self.num_bits = int(num_bits)
        self.seed = int(seed)
        rng = np.random.default_rng(seed)
        self._proj = rng.standard_normal((self.SIZE * self.SIZE * 3, self.num_bits)).astype(np.float32)
        self.model_id = f"pixel-lsh:{self.num_bits}:{self.seed}"
        self.metadata = {"kind": "pixel-lsh", "num_bits": self.num_bits, "seed": self.seed}

    def encode(self, images: np.ndarray) -> np.ndarray:
        imgs = np.asarray(images)
        if imgs.ndim == 3:
            imgs = imgs[None]
        n, h, w = imgs.shape[:3]
        # Nearest-neighbour resize by index sampling: no extra dependency, any size.
        ys = (np.arange(self.SIZE) * h // self.SIZE).astype(np.int64)
        xs = (np.arange(self.SIZE) * w // self.SIZE).astype(np.int64)
        small = imgs[:, ys][:, :, xs].reshape(n, -1).astype(np.float32) / 255.0
        small -= small.mean(axis=1, keepdims=True)
        return np.where(small @ self._proj >= 0, 1.0, -1.0).astype(np.float32)
