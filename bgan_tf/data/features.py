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
from bgan_tf.modeling.backbones import BackboneSpec, Preprocess, build_backbone, build_feature_extractor

if TYPE_CHECKING:
    from bgan_tf.config import BGANConfig
    from bgan_tf.data.sources import ImageData


def default_cache_dir() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "bgan_tf", "features")


def cache_key(spec: BackboneSpec, data_fingerprint: str) -> str:
    raw = f"{spec.name}|{spec.weights_identity()}|{spec.input_size}|{data_fingerprint}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


# Below this many images the TFLite conversion (~10 s for MobileNetV2) costs more than
# the faster engine saves; tests and small folders keep the TensorFlow path.
XNNPACK_MIN_IMAGES = 2048
ENGINES = ("auto", "tf", "xnnpack")


def compute_features(images: np.ndarray, spec: BackboneSpec, batch_size: int = 100,
                     model=None, engine: str = "auto") -> np.ndarray:
    """uint8 [N,H,W,3] -> float32 [N,D] through preprocessing + backbone.

    ``engine``: ``tf`` runs the Keras graph; ``xnnpack`` converts the backbone to a
    float32 TFLite model once and runs it with the XNNPACK CPU kernels (the CIFAR-10
    encoder at 128 px, batch 64: 360 against 105 images/s for the Keras graph in
    benchmarks/results/encode_throughput.md; this engine's figure is stage_costs.md's),
    after checking its features against the Keras graph on the first images; ``auto``
    picks xnnpack from XNNPACK_MIN_IMAGES images on. Both compute the same float32
    function; they differ in rounding only (~1e-5 of the feature scale).
    """
    if engine not in ENGINES:
        raise UserError(f"unknown feature engine {engine!r}: use one of {', '.join(ENGINES)}")
    if engine == "auto":
        engine = "xnnpack" if model is None and len(images) >= XNNPACK_MIN_IMAGES else "tf"
    if engine == "xnnpack":
        feats = _xnnpack_features(images, spec, batch_size)
        if feats is not None:
            return feats
    return _tf_features(images, spec, batch_size, model)


def _tf_features(images: np.ndarray, spec: BackboneSpec, batch_size: int, model=None) -> np.ndarray:
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


def _xnnpack_features(images: np.ndarray, spec: BackboneSpec, batch_size: int) -> np.ndarray | None:
    """Features through a TFLite copy of the backbone on XNNPACK, or None (logged) when
    the backbone does not convert or its TFLite features disagree with the Keras graph."""
    import tensorflow as tf

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        logging.warning("ai-edge-litert is not installed; computing features with TensorFlow")
        return None
    size = spec.input_size
    backbone = build_backbone(spec)
    prep = Preprocess(size, spec.normalisation)
    forward = tf.function(lambda x: backbone(prep.normalise(x), training=False),
                          input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    # The converter freezes the variables it finds through this object: Keras 3
    # models do not expose their tf.Variables to tf.Module tracking themselves.
    holder = tf.Module()
    holder.weights = [v.value for v in backbone.weights]
    try:
        content = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()],
                                                                  holder).convert()
        interpreter = Interpreter(model_content=content, num_threads=len(os.sched_getaffinity(0)))
    except Exception as e:  # noqa: BLE001 -- any conversion failure falls back to the Keras graph
        logging.warning("%s does not convert to TFLite (%s); computing features with TensorFlow", spec.name,
                        (str(e).strip().splitlines() or [type(e).__name__])[0][:200])
        return None
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    shape = None

    def run(batch: np.ndarray) -> np.ndarray:
        nonlocal shape
        x = tf.cast(batch, tf.float32)
        if batch.shape[1:3] != (size, size):  # Preprocess's resize, the same op
            x = tf.image.resize(x, (size, size), method="bilinear")
        if shape != x.shape[0]:
            interpreter.resize_tensor_input(inp, [x.shape[0], size, size, 3])
            interpreter.allocate_tensors()
            shape = x.shape[0]
        interpreter.set_tensor(inp, np.asarray(x))
        interpreter.invoke()
        return interpreter.get_tensor(out).copy()

    feats = [run(images[start:start + batch_size]) for start in range(0, len(images), batch_size)]
    feats = np.concatenate(feats).astype(np.float32)
    probe = images[:8]
    ref = np.asarray(backbone(prep(tf.constant(probe.astype(np.float32))), training=False))
    err = float(np.max(np.abs(feats[:len(probe)] - ref))) if len(probe) else 0.0
    if not np.isfinite(err) or err > 1e-3 * max(1.0, float(np.max(np.abs(ref)))):
        logging.warning("TFLite features of %s differ from the Keras graph's by %.3g; computing features with "
                        "TensorFlow", spec.name, err)
        return None
    logging.info("features of %d images on XNNPACK (max difference from the Keras graph %.2g)", len(images), err)
    return feats


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
