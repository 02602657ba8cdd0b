"""What test modules import (not fixtures: those are in conftest.py).

    from testlib import TINY_TRAIN, build_tiny_model, run_binary, separated_clusters

- TINY_TRAIN / build_tiny_model: the tiny model behind the session fixture
  ``tiny_model_dir`` (small_cnn encoder at 32x32, 16 bits, a few training steps
  on scikit-learn digits, offline; tiny generator/discriminator; about 10 s on
  2 cores), for tests that train a variant of it;
- run_binary: ``python -m <module> ARGS`` from the repository root, quiet;
- separated_clusters: two tight, far-apart clusters of features, for graph tests;
- png_chunk / png_header_only / zero_png_idat: hand-built PNGs whose header claims any
  size, the cheap stand-ins for decompression bombs.

Importable from every tests/<wing>/ folder: pytest puts tests/ on sys.path
when it loads tests/conftest.py (there is no __init__.py in tests/).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SMALL_MOBILENET_SIZE = 32  # input size of tests/training/conftest.py's small_mobilenet

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


def build_tiny_model(root: str, **overrides) -> str:
    """Train the tiny model into ``root/run`` and return its ``model`` folder."""
    from bgan_tf.config import BGANConfig
    from bgan_tf.training.trainer import train

    config = BGANConfig(**{**TINY_TRAIN, **overrides, "output_dir": os.path.join(root, "run")})
    return train(config, verbose=0).model_dir


def run_binary(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` in the repository root; text output captured."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def separated_clusters(per: int = 100, dim: int = 16, spread: float = 0.05, seed: int = 0):
    """(features [2 per, dim] float32, labels): two tight clusters far apart, on the positive
    orthant (so cosines are positive), classes interleaved in index order."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = np.zeros((2, dim), np.float32)
    centres[0, 0], centres[1, 1] = 1.0, 1.0
    labels = np.repeat([0, 1], per)
    x = centres[labels] + spread * np.abs(rng.standard_normal((2 * per, dim))).astype(np.float32)
    order = rng.permutation(2 * per)
    return x[order], labels[order]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body, CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_header_only(width: int, height: int, idat: bytes | None = None) -> bytes:
    """A PNG whose IHDR claims width x height RGB pixels but carries almost no data (or
    ``idat``): the cheap stand-in for a decompression bomb (Pillow reads the header only on
    open)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    if idat is None:
        idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def zero_png_idat(width: int, height: int) -> bytes:
    """The IDAT of a whole black RGB width x height PNG (zlib level 1, fast): with
    ``png_header_only`` a real decompression bomb, e.g. 20000x20000 is 5 MB that decode to
    1.2 GB (about 1.5 s to build)."""
    c = zlib.compressobj(1)
    row = bytes(1 + 3 * width)  # filter byte 0, then the pixels
    return b"".join([c.compress(row) for _ in range(height)] + [c.flush()])
