"""Multihash defaults per code length: keys long enough that a probe is not a scan."""

from __future__ import annotations

import numpy as np

from bgan_tf.search.approximate import multihash_defaults
from bgan_tf.search.backends import make_backend
from bgan_tf.codes import pack


def test_multihash_defaults_per_code_length():
    assert multihash_defaults(32) == {"nhash": 2, "b": 16, "nflip": 2}
    assert multihash_defaults(64) == {"nhash": 4, "b": 16, "nflip": 2}
    assert multihash_defaults(16) == {"nhash": 4, "b": 4, "nflip": 2}
    assert multihash_defaults(128)["b"] == 24
    for bits in (8, 12, 16, 24, 32, 48, 64, 96, 128, 256):
        d = multihash_defaults(bits)
        assert d["nhash"] * d["b"] <= 8 * ((bits + 7) // 8) and d["b"] <= 24
    b = make_backend("multihash", 32)
    assert (b.nhash, b.b, b.nflip) == (2, 16, 2)
    b = make_backend("multihash", 32, nhash=4)  # tables given: key = code / tables
    assert (b.nhash, b.b) == (4, 8)
    b = make_backend("multihash", 32, nhash=0, b=None, nflip=None)  # unset CLI flags
    assert (b.nhash, b.b, b.nflip) == (2, 16, 2)


def test_multihash_default_finds_near_codes():
    rng = np.random.default_rng(0)
    db = rng.integers(0, 2, (2000, 32), dtype=np.uint8)
    q = db[:20].copy()
    q[:, :2] ^= 1  # 2 bits away from their source code
    b = make_backend("multihash", 32)
    b.add(pack(db), np.arange(2000))
    dist, ids = b.search(pack(q), 5)
    assert (dist[:, 0] <= 2).all()
    ex = make_backend("numpy", 32)
    ex.add(pack(db), np.arange(2000))
    assert (ex.search(pack(q), 1)[0][:, 0] == dist[:, 0]).all()
