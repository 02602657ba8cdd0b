"""PSNR/SSIM of G(code): values against their definitions (max_val 1)."""

import numpy as np
import pytest

from bgan_tf.evaluation.reconstruction import reconstruction_quality


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
