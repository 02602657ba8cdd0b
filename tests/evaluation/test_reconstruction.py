"""PSNR/SSIM and feature cosine of G(code): values against their definitions (max_val 1)."""

import numpy as np
import pytest

from bgan_tf.evaluation.reconstruction import feature_cosine, reconstruction_quality


def _generator_of(images):
    """A stand-in G that returns fixed images for the codes' rows (codes hold row ids)."""
    def gen(codes, training=False):
        return images[np.asarray(codes)[:, 0].astype(int)]
    return gen


def test_known_error_gives_known_psnr_and_perfect_copy_ssim_one():
    rng = np.random.default_rng(0)
    images = rng.uniform(0.2, 0.8, (5, 32, 32, 3)).astype(np.float32)
    codes = np.arange(5, dtype=np.float32)[:, None]
    shifted = reconstruction_quality(_generator_of(images + 0.1), codes, images, batch_size=2)
    # MSE 0.01 at max_val 1: 10 log10(1 / 0.01) = 20 dB, whatever the batching.
    assert shifted["psnr_db"] == pytest.approx(20.0, abs=1e-3) and shifted["num_images"] == 5
    assert shifted["ssim"] < 1.0
    same = reconstruction_quality(_generator_of(images), codes, images)
    assert same["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert same["resolution"] == 32


def test_mismatched_shapes_are_refused():
    images = np.zeros((2, 32, 32, 3), np.float32)
    with pytest.raises(ValueError):
        reconstruction_quality(_generator_of(images), np.zeros((3, 1), np.float32), images)
    with pytest.raises(ValueError, match="G makes"):
        reconstruction_quality(_generator_of(np.zeros((2, 16, 16, 3), np.float32)),
                               np.zeros((2, 1), np.float32), images)


def test_feature_cosine_compares_the_extractors_view_of_g_with_the_real_features():
    rng = np.random.default_rng(1)
    images = rng.uniform(0.1, 0.9, (5, 4, 4, 3)).astype(np.float32)
    codes = np.arange(5, dtype=np.float32)[:, None]

    def flat(x, training=False):  # extractor: [0,255] images -> their pixels
        return np.asarray(x, np.float32).reshape(len(x), -1)

    real = flat(images * 255.0)
    # Features of a brighter copy point the same way: cosine 1, whatever the batching.
    assert feature_cosine(_generator_of(images * 0.5), codes, real, flat, batch_size=2) == pytest.approx(1.0, abs=1e-5)
    # Each image's features against another's: the mean of those cosines.
    other = np.roll(codes, -1, axis=0)
    want = np.mean([r @ o / np.linalg.norm(r) / np.linalg.norm(o) for r, o in zip(real, np.roll(real, -1, 0))])
    assert feature_cosine(_generator_of(images), other, real, flat) == pytest.approx(want, abs=1e-5)
    with pytest.raises(ValueError):
        feature_cosine(_generator_of(images), codes, real[:3], flat)
