"""Milvus backend against Milvus Lite (embedded, offline): same answers as the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from bgan_tf.codes import hamming_distances, pack
from bgan_tf.search.backends import make_backend
from bgan_tf.search.binary_index import BinaryIndex

milvus_store = pytest.importorskip("bgan_tf.search.milvus")


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    b = milvus_store.MilvusBackend(64, uri=str(tmp_path_factory.mktemp("mv") / "codes.db"))
    yield b
    b.close()


def test_matches_numpy_reference_and_removes(backend):
    rng = np.random.default_rng(0)
    db = pack(rng.integers(0, 2, (800, 64), dtype=np.uint8))
    ids = rng.permutation(4000)[:800].astype(np.int64)
    backend.add(db, ids)
    assert backend.ntotal == 800
    q = pack(rng.integers(0, 2, (5, 64), dtype=np.uint8))
    ref = make_backend("numpy", 64)
    ref.add(db, ids)
    for k in (1, 10, 50):
        d, i = backend.search(q, k)
        rd, ri = ref.search(q, k)
        np.testing.assert_array_equal(d, rd)  # exact distances, sorted
        full = hamming_distances(q, db)
        pos = {int(x): p for p, x in enumerate(ids)}
        for r in range(len(q)):  # returned ids really have those distances
            assert [full[r, pos[int(x)]] for x in i[r]] == d[r].tolist()
    backend.remove(ids[:100])
    assert backend.ntotal == 700
    _, i = backend.search(db[:100], 1)
    assert not np.isin(i, ids[:100]).any()


def test_reopen_keeps_collection_and_pads(tmp_path):
    uri = str(tmp_path / "keep.db")
    b = milvus_store.MilvusBackend(32, uri=uri, collection="c1")
    b.add(pack(np.ones((2, 32), np.float32)), np.array([4, 9]))
    b.close()
    b2 = milvus_store.MilvusBackend(32, uri=uri, collection="c1", fresh=False)
    d, i = b2.search(pack(np.ones((1, 32), np.float32)), 3)
    assert i[0].tolist() == [4, 9, -1] and d[0, :2].tolist() == [0, 0]
    b2.close()


def test_binary_index_on_milvus(tmp_path):
    signs = np.where(np.random.default_rng(1).random((50, 16)) > 0.5, 1.0, -1.0)
    idx = BinaryIndex.create(16, "m", backend="milvus", uri=str(tmp_path / "bi.db"))
    idx.add(signs, metadata=[{"path": f"{i}.png"} for i in range(50)])
    res = idx.search_one(signs[3], 3)
    assert res[0].distance == 0 and res[0].metadata["path"].endswith(".png")
    idx.backend.close()
