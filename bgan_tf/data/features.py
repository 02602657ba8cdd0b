"""Frozen-backbone features, computed once and cached on disk; the graph's features.

With a frozen backbone, training only needs its pooled features, so they are
computed once and stored as ``.npy`` keyed by (backbone, weights content
hash, input size, image fingerprint). A second run with the same key loads
them in milliseconds instead of rerunning the network.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

import numpy as np
from absl import logging

from bgan_tf import atomic
from bgan_tf.errors import UserError
from bgan_tf.modeling.backbones import BackboneSpec, build_feature_extractor

if TYPE_CHECKING:
    from bgan_tf.config import BGANConfig
    from bgan_tf.data.sources import ImageData


def default_cache_dir() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "bgan_tf", "features")


def cache_key(spec: BackboneSpec, data_fingerprint: str) -> str:
    raw = f"{spec.name}|{spec.weights_identity()}|{spec.input_size}|{data_fingerprint}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def compute_features(images: np.ndarray, spec: BackboneSpec, batch_size: int = 100,
                     model=None) -> np.ndarray:
    """uint8 [N,H,W,3] -> float32 [N,D] through preprocessing + backbone."""
    import tensorflow as tf

    extractor = model if model is not None else build_feature_extractor(spec)
    # A graph function, not eager calls: eager Keras runs op by op and was
    # measured 2-4x slower on CPU for MobileNetV2.
    forward = tf.function(lambda v: extractor(v, training=False), reduce_retracing=True)
    out = []
    for start in range(0, len(images), batch_size):
        batch = tf.constant(images[start:start + batch_size].astype(np.float32))
        out.append(np.asarray(forward(batch)))
    return np.concatenate(out).astype(np.float32)


def cache_path(spec: BackboneSpec, data_fingerprint: str, cache_dir: str | None = None) -> str:
    """Where the features of this (backbone, data) are cached."""
    return os.path.join(cache_dir or default_cache_dir(), cache_key(spec, data_fingerprint) + ".npy")


def cached_features(images: np.ndarray, spec: BackboneSpec, data_fingerprint: str,
                    cache_dir: str | None = None, batch_size: int = 100) -> np.ndarray:
    """Load the cached features for this (backbone, data) or compute and store them."""
    cache_dir = cache_dir or default_cache_dir()
    path = cache_path(spec, data_fingerprint, cache_dir)
    if os.path.isfile(path):
        feats = np.load(path)
        if feats.shape[0] == len(images):
            logging.info("features from cache %s", path)
            return feats
    feats = compute_features(images, spec, batch_size)
    with atomic.writing(path) as f:  # never a half-written cache entry, umask mode
        np.save(f, feats)
    logging.info("features cached at %s", path)
    return feats


def graph_features(config: "BGANConfig", data: "ImageData", backbone_feats: np.ndarray | None) -> np.ndarray:
    """The features the neighbourhood graph and the baselines use: pixels at the GAN's
    resolution, or the frozen backbone's (cached) features. The one definition of both."""
    if config.graph_features == "pixels":
        from bgan_tf.data.pipeline import images_for_gan

        return images_for_gan(data.images, config.image_size).reshape(len(data), -1)
    if backbone_feats is not None:
        return backbone_feats
    if config.backbone == "small_cnn":
        raise UserError("--graph_features backbone needs a pretrained backbone; small_cnn is untrained: "
                        "use --graph_features pixels or a pretrained --backbone")
    from bgan_tf.modeling.factory import backbone_spec

    return cached_features(data.images, backbone_spec(config), data.fingerprint(), config.feature_cache_dir)
