"""How well G(code) reproduces the image the code came from: PSNR and SSIM.

Why on held-out images: the codes of training images are what G learned from; a
query's code tells whether the code keeps what the image looks like. Both scores
compare G's output with the image at the GAN's resolution (``image_size``, the
size G makes), pixel values in [0, 1] (``max_val`` 1), via `tf.image.psnr` and
`tf.image.ssim` (11x11 Gaussian window), and are averaged over images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NO_GENERATOR = "the model folder has no generator (trained with use_gan=False), so there is nothing to reconstruct"
MAX_IMAGES = 10_000  # scored images: bounds the time and memory one report asks for


def reconstruction_quality(generator, codes: np.ndarray, images: np.ndarray,
                           batch_size: int = 256) -> dict[str, Any]:
    """PSNR (dB) and SSIM of ``generator(codes)`` against ``images``.

    codes: [N, L] +-1 codes of the images; images: float [N, S, S, 3] in [0, 1] at the
    generator's resolution (`data.pipeline.images_for_gan`). At most MAX_IMAGES are
    scored (the first ones). Returns means, medians and the count; an image G
    reproduces exactly has infinite PSNR, which the mean then is too.
    """
    import tensorflow as tf

    codes = np.asarray(codes, np.float32)[:MAX_IMAGES]
    images = np.asarray(images, np.float32)[:MAX_IMAGES]
    if codes.shape[0] != images.shape[0] or images.ndim != 4:
        raise ValueError(f"codes {codes.shape} and images {images.shape} must be [N, L] and [N, S, S, 3]")
    psnr, ssim = [], []
    for i in range(0, len(codes), batch_size):
        recon = tf.cast(generator(tf.constant(codes[i:i + batch_size]), training=False), tf.float32)
        real = tf.constant(images[i:i + batch_size])
        if recon.shape[1:] != real.shape[1:]:
            raise ValueError(f"G makes {tuple(recon.shape[1:])} images, the images are {tuple(real.shape[1:])}")
        psnr.append(tf.image.psnr(real, recon, max_val=1.0).numpy())
        ssim.append(tf.image.ssim(real, recon, max_val=1.0).numpy())
    p = np.concatenate(psnr) if psnr else np.zeros(0)
    s = np.concatenate(ssim) if ssim else np.zeros(0)
    return {
        "psnr_db": float(np.mean(p)) if p.size else None,
        "psnr_db_median": float(np.median(p)) if p.size else None,
        "ssim": float(np.mean(s)) if s.size else None,
        "ssim_median": float(np.median(s)) if s.size else None,
        "num_images": int(p.size),
        "resolution": int(images.shape[1]),
    }
