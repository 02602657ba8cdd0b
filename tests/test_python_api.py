"""The Python API of issue 29 item 6: bgan_tf.load_model(path).encode(...) and
bgan_tf.open_index(path).search(...), and that importing bgan_tf imports no TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import bgan_tf
from bgan_tf import codes as codes_lib
from bgan_tf.api.query_encoder_build import write_query_encoder
from bgan_tf.errors import UserError
from bgan_tf.search import indexer
from bgan_tf.search.query_encoder import VerifiedTFLiteEncoder
from bgan_tf.search.store import CodeStore
from testlib import ROOT


def _mixed_images(folder, n: int) -> list[str]:
    """n random PNGs of sizes 16..48 (not square), so one call needs many shape groups."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = int(rng.integers(16, 49)), int(rng.integers(16, 49))
        p = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def indexed(tiny_model_dir, tmp_path_factory):
    """100 mixed-size files indexed by the function `python -m bgan_tf.index build` runs."""
    root = tmp_path_factory.mktemp("api")
    paths = _mixed_images(root / "imgs", 100)
    enc = bgan_tf.load_model(tiny_model_dir).encoder
    indexer.build_index(enc, root / "imgs", root / "idx", progress=False, model_ref=tiny_model_dir)
    return paths, str(root / "idx"), tiny_model_dir


def test_load_model_encodes_100_mixed_size_files_in_one_call_like_the_index_build(indexed):
    """Issue 29 item 6: load_model + encode of 100 mixed-size files works in one call
    (encoder.encode of such a list raised numpy's "inhomogeneous shape") and gives the
    codes `index build` stored, bit for bit; arrays and paths mix in one list."""
    paths, idx, model_dir = indexed
    model = bgan_tf.load_model(model_dir)
    codes = model.encode(paths, batch_size=16)
    assert codes.shape == (100, model.num_bits) and set(np.unique(codes)) <= {-1.0, 1.0}
    store = CodeStore.load(idx)
    row = {m["path"]: i for i, m in enumerate(store.metadata_rows())}
    stored = store.packed[[row[os.path.abspath(p)] for p in paths]]
    np.testing.assert_array_equal(codes_lib.pack(codes), stored)
    pixels = np.asarray(Image.open(paths[3]).convert("RGB"))
    mixed = model.encode([paths[0], pixels, paths[5]])
    np.testing.assert_array_equal(mixed, codes[[0, 3, 5]])
    np.testing.assert_array_equal(model.encode(np.stack([pixels, pixels])), codes[[3, 3]])  # a batch array
    np.testing.assert_array_equal(model.encode_packed(paths[7]), stored[7:8])


def test_open_index_search_finds_an_indexed_image_at_distance_zero_keras_and_tflite(indexed, tmp_path,
                                                                                    monkeypatch):
    """Issue 29 items 4 and 6: open_index(path).search(image, k) with the model the index
    records (absolute path, opened from another working folder); after
    write_query_encoder (what `index build` runs) the same search runs the verified float
    TFLite copy and returns the same rows."""
    paths, idx, _ = indexed
    monkeypatch.chdir(tmp_path)  # the index recorded the model by absolute path
    index = bgan_tf.open_index(idx)
    rows = index.search(paths[10], k=100)
    # The tiny model's codes collide: the image is among the distance-0 rows, not first.
    assert rows[0].distance == 0 and os.path.abspath(paths[10]) in [r.metadata["path"] for r in rows
                                                                     if r.distance == 0]
    assert len(rows) == 100 and [r.distance for r in rows] == sorted(r.distance for r in rows)
    assert "float TFLite copy" in write_query_encoder(idx, index.model.encoder)
    fast = bgan_tf.open_index(idx)
    assert isinstance(fast.model.encoder, VerifiedTFLiteEncoder)
    assert [r.to_dict() for r in fast.search(paths[10], k=100)] == [r.to_dict() for r in rows]
    np.testing.assert_array_equal(fast.model.encode(paths), index.model.encode(paths))


def test_encode_refuses_arrays_that_are_not_uint8_images(indexed):
    """Issue 29 item 6: a bad array is one UserError line, not a TensorFlow traceback."""
    model = bgan_tf.load_model(indexed[2])
    with pytest.raises(UserError, match="uint8"):
        model.encode([np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(UserError, match=r"\[H, W, 3\]"):
        model.encode([np.zeros((8, 8, 4), np.uint8)])
    with pytest.raises(UserError, match="batch_size"):
        model.encode(indexed[0][:2], batch_size=0)


def test_importing_bgan_tf_imports_no_tensorflow():
    """Issue 29 item 6: `import bgan_tf` (and reaching bgan_tf.open_index) stays cheap."""
    code = ("import sys, bgan_tf; bgan_tf.open_index; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported TF'")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_a_tflite_copy_that_differs_from_the_keras_codes_is_not_kept(indexed, tmp_path, monkeypatch):
    """Issue 29 item 4: the fast query path is only taken when its codes were checked bit
    for bit; a conversion whose codes differ leaves queries on the Keras model."""
    paths, _, model_dir = indexed
    model = bgan_tf.load_model(model_dir)
    idx = tmp_path / "idx"
    indexer.build_index(model.encoder, os.path.dirname(paths[0]), idx, progress=False, model_ref=model_dir)
    encode = VerifiedTFLiteEncoder.encode
    monkeypatch.setattr(VerifiedTFLiteEncoder, "encode", lambda self, x: -encode(self, x))  # every bit off
    assert "did not give the same codes" in write_query_encoder(idx, model.encoder)
    assert not (idx / "query_encoder.tflite").exists() and "query_encoder" not in CodeStore.load(idx).extra
    assert not isinstance(bgan_tf.open_index(idx).model.encoder, VerifiedTFLiteEncoder)
