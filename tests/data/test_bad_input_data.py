"""Issue 27, the data wing: bad training input and damaged caches are one line or rebuilt.

- case 15: non-finite pixels in a float npz are an error naming the file and the count
  (one NaN used to make the whole [0, 1] set be read as 0..255);
- case 7: a feature cache that is truncated, of the wrong shape or dtype, or full of NaN
  is rebuilt with a log line (it is the tool's own file); non-finite features from the
  backbone itself are refused before the graph code sees them.
"""

from __future__ import annotations

import numpy as np
import pytest

from bgan_tf.data.sources import load_npz
from bgan_tf.errors import UserError


def test_npz_with_one_nan_pixel_is_refused_with_the_count(tmp_path):
    """Issue 27 case 15."""
    images = np.full((4, 8, 8), 0.5, np.float32)
    images[1, 2, 3] = np.nan
    images[2, 0, 0] = np.inf
    path = tmp_path / "a.npz"
    np.savez(path, images=images)
    with pytest.raises(UserError, match=r"a\.npz: 'images' holds 2 non-finite values"):
        load_npz(str(path))
    np.savez(path, images=np.full((4, 8, 8), 0.5, np.float32))  # the clean set still reads as [0, 1]
    assert int(load_npz(str(path)).images.max()) in (127, 128)


@pytest.fixture
def small_cnn_cache(tmp_path):
    """(images, spec, cache folder, cache file) of the untrained small_cnn's features of 12
    tiny images, cached once."""
    from bgan_tf.data.features import cache_path, cached_features
    from bgan_tf.modeling.backbones import BackboneSpec

    images = np.random.default_rng(0).integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    spec = BackboneSpec("small_cnn", None, 32)
    cached_features(images, spec, "twelve", str(tmp_path))
    return images, spec, str(tmp_path), cache_path(spec, "twelve", str(tmp_path))


@pytest.mark.parametrize("damage", ["truncated", "nan", "float64", "not_npy"])
def test_damaged_feature_cache_is_rebuilt_with_a_log_line(small_cnn_cache, caplog, damage):
    """Issue 27 case 7: a truncated cache was a traceback on every rerun until deleted by
    hand; a NaN one went on to crash the graph build (double free, rc 134)."""
    import logging

    from bgan_tf.data.features import cached_features

    images, spec, cache_dir, path = small_cnn_cache
    good = np.load(path)
    if damage == "truncated":
        data = open(path, "rb").read()
        open(path, "wb").write(data[:len(data) // 2])
    elif damage == "nan":
        np.save(path, np.full_like(good, np.nan))
    elif damage == "float64":
        np.save(path, good.astype(np.float64))
    else:
        open(path, "wb").write(b"not an npy file")
    with caplog.at_level(logging.WARNING):
        feats = cached_features(images, spec, "twelve", cache_dir)
    assert "feature cache" in caplog.text and "computing the features again" in caplog.text
    assert feats.shape == good.shape and feats.dtype == np.float32 and np.isfinite(feats).all()
    reread = np.load(path)  # the rebuilt cache holds the recomputed features
    assert reread.dtype == np.float32 and np.isfinite(reread).all()


def test_non_finite_features_are_refused_before_the_graph_code(tmp_path):
    """Issue 27 case 7: NaN features reached FAISS, which crashed the process (rc 134); run in
    a subprocess so a regression fails this test instead of taking pytest down."""
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "from bgan_tf.training.graph import build_graph\n"
            "from bgan_tf.errors import UserError\n"
            "f = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32); f[3] = np.nan\n"
            "try:\n    build_graph(f, 5, 5)\nexcept UserError as e:\n    print('refused:', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "refused: the neighbourhood graph's features of 1 of 60 training images are not finite" in r.stdout


def test_a_training_folder_reports_the_symbolic_links_it_did_not_follow(tmp_path, caplog):
    """Issue 27 case 21: a folder symlink inside a training folder was skipped without a
    word (the skip warning spoke only of unsupported extensions)."""
    from PIL import Image

    from bgan_tf.data.sources import load_folder

    (tmp_path / "imgs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "elsewhere" / "x.png")
    (tmp_path / "imgs" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with caplog.at_level("WARNING"):
        data = load_folder(str(tmp_path / "imgs"))
    assert len(data.images) == 2
    assert "1 symbolic link(s)" in caplog.text and "not followed" in caplog.text
