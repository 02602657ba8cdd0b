"""Image sources: formats, bad files and the training pipeline."""

import numpy as np
import pytest
from PIL import Image

from bgan_tf.data.images import decode_image_bytes, load_image_file
from bgan_tf.data.pipeline import training_dataset
from bgan_tf.data.sources import ImageData, load_digits, load_folder, load_images, load_npz
from bgan_tf.errors import UserError


def _write(path, arr, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)


def test_digits_offline_default():
    d = load_digits()
    assert d.images.shape == (1797, 32, 32, 3) and d.images.dtype == np.uint8
    assert set(np.unique(d.labels)) == set(range(10))


def test_folder_with_classes_grayscale_rgba_odd_sizes_and_corrupt_files(tmp_path):
    rng = np.random.default_rng(0)
    _write(tmp_path / "cat" / "a.png", rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    _write(tmp_path / "cat" / "gray.png", rng.integers(0, 255, (20, 20), dtype=np.uint8))
    rgba = rng.integers(0, 255, (20, 20, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent -> white
    _write(tmp_path / "dog" / "rgba.png", rgba)
    _write(tmp_path / "dog" / "odd.jpg", rng.integers(0, 255, (13, 29, 3), dtype=np.uint8))
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"not an image at all")
    (tmp_path / "dog" / "empty.png").write_bytes(b"")
    d = load_folder(str(tmp_path))
    assert len(d) == 4  # two unreadable files skipped, not fatal
    assert d.images.shape == (4, 20, 20, 3)
    assert d.class_names == ["cat", "dog"] and d.labels.tolist() == [0, 0, 1, 1]
    rgba_idx = [i for i, n in enumerate(d.names) if n.endswith("rgba.png")][0]
    assert (d.images[rgba_idx] == 255).all()


def test_folder_max_images_samples_across_classes_reproducibly(tmp_path):
    # Files are listed class by class: the first 9 of 3 x 10 would all be "a".
    rng = np.random.default_rng(0)
    for cls in ("a", "b", "c"):
        for i in range(10):
            _write(tmp_path / cls / f"{i:02d}.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    d = load_folder(str(tmp_path), max_images=9)
    assert len(d) == 9 and len(set(d.labels.tolist())) >= 2
    assert load_folder(str(tmp_path), max_images=9).names == d.names
    assert load_images(str(tmp_path), max_images=9).names == d.names
    assert load_folder(str(tmp_path), max_images=9, seed=1).names != d.names
    assert len(load_folder(str(tmp_path), max_images=100)) == 30


def test_folder_errors_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_folder(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no images"):
        load_folder(str(tmp_path))
    (tmp_path / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(UserError, match="could be decoded"):
        load_folder(str(tmp_path))


def test_single_file_errors(tmp_path):
    with pytest.raises(UserError, match="image not found"):
        load_image_file(str(tmp_path / "nope.png"))
    with pytest.raises(UserError, match="empty"):
        decode_image_bytes(b"")
    with pytest.raises(UserError, match="cannot decode"):
        decode_image_bytes(b"\x89PNG\r\n\x1a\n broken")


def test_npz_source_and_errors(tmp_path):
    p = tmp_path / "a.npz"
    np.savez(p, images=np.zeros((5, 8, 8), np.uint8), labels=np.arange(5))
    d = load_npz(str(p))
    assert d.images.shape == (5, 8, 8, 3) and d.labels.tolist() == list(range(5))
    q = tmp_path / "b.npz"
    np.savez(q, pixels=np.zeros((5, 8, 8)))
    with pytest.raises(UserError, match="no 'images'"):
        load_npz(str(q))
    with pytest.raises(UserError, match="unknown --dataset"):
        load_images("imagenet")


def test_pipeline_batches_are_full_deterministic_and_resume_exactly():
    n, b = 50, 8
    imgs = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 4, 4, 3), np.float32)
    x = np.arange(n, dtype=np.float32)[:, None]

    def epochs(first, last):
        return [batch["index"].numpy() for batch in training_dataset(imgs, x, b, 7, first, last)]

    full = epochs(0, 3)
    assert len(full) == 3 * (n // b) and all(len(i) == b for i in full)
    for batch in training_dataset(imgs, x, b, 7, 0, 1).take(1):
        np.testing.assert_array_equal(batch["x"].numpy()[:, 0], batch["index"].numpy())
        np.testing.assert_array_equal(batch["image"].numpy()[:, 0, 0, 0], batch["index"].numpy())
    # Epochs are permutations: no index twice within an epoch.
    first_epoch = np.concatenate(full[: n // b])
    assert len(set(first_epoch.tolist())) == len(first_epoch)
    # A run resumed at epoch 2 sees the batches the uninterrupted run saw.
    resumed = epochs(2, 3)
    for a, c in zip(full[2 * (n // b):], resumed):
        np.testing.assert_array_equal(a, c)
    assert not np.array_equal(full[0], full[n // b])  # reshuffled each epoch
    with pytest.raises(UserError, match="fewer than --batch_size"):
        training_dataset(imgs[:4], x[:4], b, 0, 0, 1)


def test_flip_shows_each_item_or_its_mirror_consistently_and_resumes_exactly():
    n, b = 64, 8
    rng = np.random.default_rng(0)
    imgs = rng.random((n, 4, 4, 3)).astype(np.float32)
    x = np.arange(n, dtype=np.float32)[:, None]
    mirrored = -x  # the mirror's cached features: told apart by the sign

    def stream(first, last):
        return list(training_dataset(imgs, x, b, 7, first, last, flip=True, mirrored_inputs=mirrored))

    seen = []
    for batch in stream(0, 2):
        idx, xb, im = batch["index"].numpy(), batch["x"].numpy()[:, 0], batch["image"].numpy()
        mirror = xb < 0
        mirror |= (xb == 0) & ~np.isclose(im, imgs[idx]).all(axis=(1, 2, 3))  # item 0: +0 == -0
        np.testing.assert_array_equal(np.abs(xb), idx)
        # The GAN image is mirrored exactly when the encoder input is the mirror's.
        np.testing.assert_allclose(im[mirror], imgs[idx[mirror]][:, :, ::-1])
        np.testing.assert_allclose(im[~mirror], imgs[idx[~mirror]])
        seen.append(mirror)
    share = np.concatenate(seen).mean()
    assert 0.3 < share < 0.7  # a fair coin
    # Coins differ between passes, and a resumed run sees the same ones.
    first_pass = {int(i): bool(m) for bt, m in zip(stream(0, 1), seen[: n // b]) for i, m in zip(bt["index"].numpy(), m)}
    second = {int(i): bool(m) for bt, m in zip(stream(0, 2)[n // b:], seen[n // b:]) for i, m in zip(bt["index"].numpy(), m)}
    assert first_pass != second
    for a, c in zip(stream(0, 2)[n // b:], stream(1, 2)):
        np.testing.assert_array_equal(a["x"].numpy(), c["x"].numpy())
    # Image inputs are mirrored in the graph; cached features need their mirrors.
    for batch in training_dataset(imgs, imgs, b, 7, 0, 1, flip=True).take(1):
        np.testing.assert_array_equal(batch["x"].numpy(), batch["image"].numpy())
    with pytest.raises(ValueError, match="mirrored_inputs"):
        training_dataset(imgs, x, b, 7, 0, 1, flip=True)


def test_other_view_is_the_view_not_shown():
    n, b = 32, 8
    x = np.arange(1, n + 1, dtype=np.float32)[:, None]
    imgs = np.random.default_rng(1).random((n, 4, 4, 3)).astype(np.float32)
    for flip in (False, True):
        for batch in training_dataset(imgs, x, b, 3, 0, 1, flip=flip, mirrored_inputs=-x, other_view=True):
            xb, other = batch["x"].numpy(), batch["x_other"].numpy()
            np.testing.assert_array_equal(other, -xb)
            if not flip:  # no coin: the item itself is shown, its mirror is the other view
                assert (xb > 0).all()
    for batch in training_dataset(imgs, imgs, b, 3, 0, 1, other_view=True).take(1):
        np.testing.assert_array_equal(batch["x_other"].numpy(), batch["x"].numpy()[:, :, ::-1])


def test_subset_and_fingerprint():
    d = ImageData(np.zeros((3, 2, 2, 3), np.uint8), np.array([0, 1, 2]), ["a", "b", "c"])
    s = d.subset(np.array([2, 0]))
    assert s.names == ["c", "a"] and s.labels.tolist() == [2, 0]
    e = ImageData(np.ones((3, 2, 2, 3), np.uint8), None)
    assert d.fingerprint() != e.fingerprint()
