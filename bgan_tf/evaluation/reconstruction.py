"""How well G(code) reproduces the image the code came from: PSNR and SSIM, and
(`feature_cosine`) how close its pretrained features come to the image's.

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


def feature_cosine(generator, codes: np.ndarray, features: np.ndarray, extractor,
                   batch_size: int = 256) -> float:
    """Mean cosine between ``extractor`` features of ``generator(codes)`` and ``features``
    (the real images' features from the same extractor), over at most MAX_IMAGES images.

    PSNR asks whether G redraws the pixels; this asks whether it redraws what a pretrained
    network sees, the space the neighbourhood graph is built in. extractor: [0,255] images
    of any size -> pooled features (`modeling.backbones.build_feature_extractor`).
    """
    import tensorflow as tf

    codes = np.asarray(codes, np.float32)[:MAX_IMAGES]
    features = np.asarray(features, np.float32)[:MAX_IMAGES]
    if codes.shape[0] != features.shape[0] or features.ndim != 2:
        raise ValueError(f"codes {codes.shape} and features {features.shape} must be [N, L] and [N, D]")
    cos = []
    for i in range(0, len(codes), batch_size):
        recon = tf.cast(generator(tf.constant(codes[i:i + batch_size]), training=False), tf.float32)
        f = tf.math.l2_normalize(tf.cast(extractor(recon * 255.0, training=False), tf.float32), axis=1)
        real = tf.math.l2_normalize(tf.constant(features[i:i + batch_size]), axis=1)
        cos.append(tf.reduce_sum(f * real, axis=1).numpy())
    return float(np.mean(np.concatenate(cos))) if cos else float("nan")
