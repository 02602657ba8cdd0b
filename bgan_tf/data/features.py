"""Frozen-backbone features, computed once and cached on disk; the graph's features.

With a frozen backbone, training only needs its pooled features, so they are
computed once and stored as ``.npy`` keyed by (backbone, weights content
hash, input size, image fingerprint). A second run with the same key loads
them in milliseconds instead of rerunning the network.

Partial fine-tuning (``--trainable_from LAYER``) caches the frozen bottom's
activations instead (`cached_bottom`): float16 ``.npy`` keyed like the features
plus the cut layer, read back memory-mapped, so N x H x W x C x 2 bytes sit on
disk, not in RAM.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Callable

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
    run = xnnpack_forward(build_backbone(spec), spec, images[:8], spec.name)
    if run is None:
        return None
    feats = [run(images[start:start + batch_size]) for start in range(0, len(images), batch_size)]
    logging.info("features of %d images on XNNPACK", len(images))
    return np.concatenate(feats).astype(np.float32)


def image_forward(net, spec: BackboneSpec, images: np.ndarray, what: str,
                  keras_forward: Callable) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 image batches -> float32 outputs of ``net`` for a pass over ``images``: from
    XNNPACK_MIN_IMAGES images on, its XNNPACK copy (`xnnpack_forward`, checked against the
    Keras graph first); below that, or when that fails, ``keras_forward`` (images in [0,255]
    -> outputs, preprocessing included) as a graph function."""
    import tensorflow as tf

    run = xnnpack_forward(net, spec, images[:8], what) if len(images) >= XNNPACK_MIN_IMAGES else None
    if run is not None:
        return run
    graph_forward = tf.function(keras_forward, reduce_retracing=True)
    return lambda batch: np.asarray(graph_forward(tf.constant(batch.astype(np.float32))))


def xnnpack_forward(net, spec: BackboneSpec, probe: np.ndarray, what: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """images [n,H,W,3] -> net(preprocessed images) as float32, through a TFLite copy of the
    Keras model ``net`` (a backbone or its bottom) run with XNNPACK; or None (logged) when
    it does not convert or its outputs on ``probe`` images differ from the Keras graph's
    (so a delegate that computes something else costs a few images, not the whole set)."""
    import tensorflow as tf

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        logging.warning("ai-edge-litert is not installed; computing %s with TensorFlow", what)
        return None
    size = spec.input_size
    prep = Preprocess(size, spec.normalisation)
    forward = tf.function(lambda x: net(prep.normalise(x), training=False),
                          input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    # The converter freezes the variables it finds through this object: Keras 3
    # models do not expose their tf.Variables to tf.Module tracking themselves.
    holder = tf.Module()
    holder.weights = [v.value for v in net.weights]
    try:
        content = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()],
                                                                  holder).convert()
        interpreter = Interpreter(model_content=content, num_threads=len(os.sched_getaffinity(0)))
    except Exception as e:  # noqa: BLE001 -- any conversion failure falls back to the Keras graph
        logging.warning("%s does not convert to TFLite (%s); computing it with TensorFlow", what,
                        (str(e).strip().splitlines() or [type(e).__name__])[0][:200])
        return None
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    shape = None

    def run(batch: np.ndarray) -> np.ndarray:
        nonlocal shape
        x = tf.cast(np.ascontiguousarray(batch), tf.float32)  # a mirrored view has negative strides
        if batch.shape[1:3] != (size, size):  # Preprocess's resize, the same op
            x = tf.image.resize(x, (size, size), method="bilinear")
        if shape != x.shape[0]:
            interpreter.resize_tensor_input(inp, [x.shape[0], size, size, 3])
            interpreter.allocate_tensors()
            shape = x.shape[0]
        interpreter.set_tensor(inp, np.asarray(x))
        interpreter.invoke()
        return interpreter.get_tensor(out).copy()

    if len(probe):
        ref = np.asarray(net(prep(tf.constant(probe.astype(np.float32))), training=False))
        err = float(np.max(np.abs(run(probe) - ref)))
        if not np.isfinite(err) or err > 1e-3 * max(1.0, float(np.max(np.abs(ref)))):
            logging.warning("TFLite %s differs from the Keras graph's by %.3g; computing it with TensorFlow",
                            what, err)
            return None
        logging.info("%s on XNNPACK (max difference from the Keras graph %.2g)", what, err)
    return run


def check_finite(values: np.ndarray, what: str, chunk: int = 4096) -> None:
    """UserError when ``values`` (rows; a memory map is read in chunks) hold NaN or inf."""
    bad = sum(int((~np.isfinite(values[s:s + chunk])).any(axis=tuple(range(1, values.ndim))).sum())
              for s in range(0, len(values), chunk))
    if bad:
        raise UserError(f"{what} are not finite (NaN or inf) for {bad:,} of {len(values):,} images: check "
                        "--backbone_weights (or cut the backbone at another layer)")


def _read_cache(path: str, rows: int, ndim: int, dtype, mmap: bool = False) -> tuple[np.ndarray | None, str | None]:
    """(array, None) when the cache file at ``path`` reads whole with ``rows`` rows of
    ``ndim`` dims of ``dtype``, all finite; else (None, what is wrong with it)."""
    try:
        values = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:  # truncated, not an .npy, unreadable
        return None, f"cannot be read ({(str(e).strip().splitlines() or [type(e).__name__])[0][:200]})"
    if values.ndim != ndim or values.dtype != dtype:
        return None, f"holds {values.dtype} {values.shape}, not {np.dtype(dtype)} of {ndim} dims"
    if values.shape[0] != rows:
        return None, f"holds {values.shape[0]} rows for {rows} images"
    try:
        check_finite(values, "cached values")
    except UserError:
        return None, "holds non-finite values"
    return values, None


def cache_path(spec: BackboneSpec, data_fingerprint: str, cache_dir: str | None = None) -> str:
    """Where the features of this (backbone, data) are cached."""
    return os.path.join(cache_dir or default_cache_dir(), cache_key(spec, data_fingerprint) + ".npy")


def cached_features(images: np.ndarray, spec: BackboneSpec, data_fingerprint: str,
                    cache_dir: str | None = None, batch_size: int = 100) -> np.ndarray:
    """Load the cached features for this (backbone, data) or compute and store them."""
    cache_dir = cache_dir or default_cache_dir()
    path = cache_path(spec, data_fingerprint, cache_dir)
    if os.path.isfile(path):
        feats, why = _read_cache(path, len(images), 2, np.float32)
        if why is None:
            logging.info("features from cache %s", path)
            return feats
        # The cache is this tool's own file: a damaged one is rebuilt (a truncated one was a
        # traceback on every rerun, a NaN one crashed the graph build: issue 27 case 7).
        logging.warning("feature cache %s %s; computing the features again", path, why)
    feats = compute_features(images, spec, batch_size)
    check_finite(feats, f"the features of backbone {spec.name}")
    with atomic.writing(path) as f:  # never a half-written cache entry, umask mode
        np.save(f, feats)
    logging.info("features cached at %s", path)
    return feats


# Disk one bottom-activation cache may take (CIFAR-10's 50,000 images at MobileNetV2's
# block_13_expand, 128 px: 8x8x96 float16 = 0.6 GB).
MAX_BOTTOM_CACHE_BYTES = 16 * 2**30
# Relative (L2) error float16 storage may add to a batch of activations: in float16's
# normal range it is about 2**-11 / sqrt(3) = 3e-4.
MAX_FLOAT16_ERROR = 1e-3


def bottom_cache_path(spec: BackboneSpec, layer: str, data_fingerprint: str, cache_dir: str | None = None) -> str:
    """Where the float16 activations below ``layer`` of this (backbone, data) are cached."""
    raw = f"{cache_key(spec, data_fingerprint)}|bottom:{layer}|float16"
    return os.path.join(cache_dir or default_cache_dir(), hashlib.sha256(raw.encode()).hexdigest()[:24] + ".bottom.npy")


def cached_bottom(images: np.ndarray, spec: BackboneSpec, layer: str, data_fingerprint: str,
                  cache_dir: str | None = None, batch_size: int = 100) -> np.ndarray:
    """float16 [N, H, W, C] activations feeding ``layer`` (the frozen bottom of a backbone
    split there), memory-mapped read-only from the cache; computed and stored first if absent."""
    from bgan_tf.modeling.backbones import split_backbone

    if not spec.weights:  # random weights differ between builds: nothing to cache
        raise UserError("--trainable_from caches a pretrained bottom: pass --backbone_weights")
    path = bottom_cache_path(spec, layer, data_fingerprint, cache_dir)
    if os.path.isfile(path):  # the key fixes the activation shape: a hit needs no backbone
        cached, why = _read_cache(path, len(images), 4, np.float16, mmap=True)
        if why is None:
            logging.info("bottom activations from cache %s", path)
            return cached
        logging.warning("bottom-activation cache %s %s; computing it again", path, why)
    bottom, _ = split_backbone(build_backbone(spec), layer)
    shape = (len(images),) + tuple(int(d) for d in bottom.output.shape[1:])
    size = int(np.prod(shape, dtype=np.int64)) * 2
    if size > MAX_BOTTOM_CACHE_BYTES:
        raise UserError(f"the activations below --trainable_from {layer} of {len(images):,} images are "
                        f"{shape[1:]} float16, {size / 2**30:.1f} GiB (limit {MAX_BOTTOM_CACHE_BYTES / 2**30:.0f} "
                        "GiB): cut at a later layer or use fewer images (--max_images)")
    prep = Preprocess(spec.input_size, spec.normalisation)
    run = image_forward(bottom, spec, images, f"the bottom below {layer}", lambda v: bottom(prep(v), training=False))
    # Streamed batch by batch into the .npy: one batch in memory, never a half-written entry.
    with atomic.writing(path) as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f2", "fortran_order": False, "shape": shape})
        for start in range(0, len(images), batch_size):
            acts = run(images[start:start + batch_size])
            half = acts.astype("<f2")
            # float16 keeps 11 significant bits (relative rounding <= 2**-11) between 6e-5 and
            # 65504: refuse activations outside that range rather than cache garbage.
            err = float(np.linalg.norm(half.astype(np.float32) - acts)) / max(float(np.linalg.norm(acts)), 1e-30)
            if not np.isfinite(half).all() or err > MAX_FLOAT16_ERROR:
                raise UserError(f"activations below --trainable_from {layer} do not fit float16 (max |x| "
                                f"{float(np.abs(acts).max()):.3g}, relative rounding error {err:.2g}); cut at "
                                "another layer")
            f.write(half.tobytes())
    logging.info("bottom activations %s of %d images cached at %s", shape[1:], len(images), path)
    return np.load(path, mmap_mode="r")


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
