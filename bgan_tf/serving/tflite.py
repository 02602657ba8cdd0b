"""Convert a trained encoder to TFLite files, written as one set per folder.

``convert_tflite`` writes one folder per export as a whole set
(``atomic.staged_dir``): a killed run leaves the previous complete set or the
new one, never files of two models side by side. ``bgan_tflite.json`` in the
folder (``tflite_metadata``) names the model and the variants (with each file's
sha256); ``is_tflite_export`` / ``check_tflite_out`` recognise such a folder.
Variants ``float``, ``dynamic_int8`` (int8 weights, float activations) and
``int8`` (full integer, calibrated on ``representative_images``, with the input
normalisation folded into one 1x1 convolution, ``affine_normalisation``); input
stays 0..255 pixels and ``codes`` stays float32, see docs/serving.md. TFLite
models take a FIXED input size, the backbone input size; the runtime that runs
them is ``bgan_tf.inference.tflite.TFLiteEncoder``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from bgan_tf import atomic
from bgan_tf.errors import UserError
from bgan_tf.inference.tflite import TFLITE_METADATA_NAME, quiet_tflite_notices, resize_bilinear
from bgan_tf.serving.saved_model import export_metadata, loaded_encoder, no_space_is_user_error
from bgan_tf.serving.signatures import pack_bits_tf

TFLITE_VARIANTS = ("float", "dynamic_int8", "int8")
TFLITE_WHAT = "TFLite export"
TFLITE_FORMAT = "bgan_tf.tflite/1"  # TFLITE_METADATA_NAME is the runtime's (bgan_tf.inference.tflite)
_TFLITE_FILE_RE = re.compile(r"^encoder_(float|dynamic_int8|int8)\.tflite$")
# The per-file temps the exporter wrote into the folder before it staged whole sets.
_LEGACY_TFLITE_TMP_RE = re.compile(r"^\.encoder_(float|dynamic_int8|int8)\.tflite\.tmp-[a-z0-9_]{8}$")


def affine_normalisation(preprocess, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``Preprocess``'s normalisation as ``y = x @ M + c`` per pixel ([3,3], [3]), or None.

    Found by probing the layer with constant images at its own size (no
    resize), then checked on a random image; None when the layer is not affine
    per pixel (a keras.applications preprocessing could be anything).
    """
    import tensorflow as tf

    def run(pixels: np.ndarray) -> np.ndarray:
        img = np.broadcast_to(np.asarray(pixels, np.float32)[:, None, None, :], (len(pixels), size, size, 3))
        return np.asarray(preprocess(tf.constant(img)))[:, 0, 0, :].astype(np.float64)

    probes = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.float32)
    out = run(probes)
    c = out[0]
    m = (out[1:] - c) / 255.0
    x = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    want = np.asarray(preprocess(tf.constant(x)), np.float64)
    got = x.astype(np.float64) @ m + c
    if not np.allclose(got, want, rtol=0, atol=1e-4 * max(1.0, float(np.abs(want).max()))):
        return None
    return m.astype(np.float32), c.astype(np.float32)


def folds_normalisation(variant: str) -> bool:
    """Whether ``variant`` is converted from the graph whose normalisation is one
    1x1 convolution: full int8 only, the one variant that rounds every activation.
    Float and dynamic-range int8 keep the Keras graph (float stays bit-exact)."""
    return variant == "int8"


def _tflite_fn(encoder, num_bits: int, fold_normalisation: bool = False):
    import tensorflow as tf

    affine = None
    if fold_normalisation:
        affine = affine_normalisation(encoder.preprocess, encoder.preprocess.size)

    def serve(images):
        if affine is None:
            codes = encoder(images, training=False)
        else:
            # One 1x1 convolution instead of Preprocess's chain of elementwise
            # ops: full int8 requantises after every op, and on the CIFAR-10
            # MobileNetV2 model the three roundings of the torch normalisation
            # alone cost 8% of the bits (agreement 0.83 -> 0.92). The input is
            # already at the backbone size, so Preprocess's resize is a no-op.
            m, c = affine
            x = tf.nn.bias_add(tf.nn.conv2d(images, tf.constant(m[None, None]), 1, "VALID"), tf.constant(c))
            codes = encoder.encode_features(encoder.backbone(x, training=False), training=False)
        codes = tf.cast(codes, tf.float32)
        return {"codes": codes, "packed": pack_bits_tf(codes, num_bits)}

    return serve


def tflite_saved_model(loaded, folder: str, fold_normalisation: bool = False) -> str:
    """A SavedModel for TFLite conversion: float32 [N,S,S,3] in 0..255 at the fixed
    backbone input size S -> codes, packed (no strings: TFLite builtins lack them).

    ``fold_normalisation``: express the input normalisation as one 1x1
    convolution (for full int8; float variants keep the Keras graph, so their
    codes stay bit-exact).
    """
    import keras
    import tensorflow as tf

    size = int(loaded.config.backbone_input_size)
    archive = keras.export.ExportArchive()
    archive.track(loaded.model)
    archive.add_endpoint("serving_default", _tflite_fn(loaded.model, loaded.num_bits, fold_normalisation),
                         input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32, name="images")])
    archive.write_out(folder, verbose=False)
    return folder


def representative_images(source, input_size: int, count: int = 200, seed: int = 0,
                          what: str = "--representative_images") -> np.ndarray:
    """uint8 [n, S, S, 3] for int8 calibration (or for the checks).

    ``source``: an array [N,H,W,3], a folder of images, a .npz (key ``images``
    or the first array), or a BGANConfig (its training data). ``what`` names
    the flag in errors.
    """
    from bgan_tf.config import BGANConfig

    if isinstance(source, BGANConfig):
        from bgan_tf.data.sources import load_training_data

        arr = load_training_data(source).images
    elif isinstance(source, (str, os.PathLike)):
        from bgan_tf.data.sources import load_folder, load_npz

        path = os.fspath(source)
        if not os.path.exists(path):
            raise UserError(f"{what} {path!r} not found; pass a folder of images or a .npz file")
        if os.path.isdir(path):
            arr = load_folder(path, size=input_size, max_images=count * 4, seed=seed).images
        elif path.endswith(".npz") and os.path.isfile(path):
            arr = load_npz(path).images
        else:
            raise UserError(f"{what} {path!r} is neither a folder of images nor a .npz file")
    else:
        arr = np.asarray(source)
    if arr.ndim == 3:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) == 0:
        raise UserError(f"representative images must be a non-empty [N,H,W,3] set, got shape {arr.shape}")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.permutation(len(arr))[:count])
    return np.clip(np.round(resize_bilinear(arr[idx], input_size)), 0, 255).astype(np.uint8)


def tflite_converter(sm_dir: str, variant: str, representative: np.ndarray | None = None):
    """The configured tf.lite.TFLiteConverter of one variant for a tflite_saved_model folder.

    ``representative``: images [n,S,S,3] (0..255) calibrating the int8 variant.
    """
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(sm_dir, signature_keys=["serving_default"])
    if variant == "dynamic_int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        reps = np.asarray(representative, np.float32)

        def gen():
            for i in range(len(reps)):
                yield {"images": reps[i:i + 1]}

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # Input and `codes` stay float32 (0..255 pixels in, +-1 out): a
        # uint8 input would need a quantisation scale of exactly 1 and
        # int8 codes would need dequantising before use; the float
        # boundaries cost one QUANTIZE / DEQUANTIZE op each.
        conv.inference_input_type = tf.float32
        conv.inference_output_type = tf.float32
    return conv


def check_variants(variants: Iterable[str]) -> list[str]:
    """The TFLite variant names, or a UserError naming the unknown ones."""
    names = [v.strip() for v in variants if v.strip()]
    bad = [v for v in names if v not in TFLITE_VARIANTS]
    if bad or not names:
        raise UserError(f"unknown TFLite variants {bad}; choose from {', '.join(TFLITE_VARIANTS)}")
    return list(dict.fromkeys(names))


def is_tflite_export(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a TFLite export of ours and nothing else.

    Ours: ``bgan_tflite.json`` with our format plus ``encoder_<variant>.tflite`` files, or
    (folders written before the marker existed) only ``encoder_<variant>.tflite`` files and
    the per-file temps that exporter left when killed. Anything else in the folder makes
    it not ours: replacing the set would delete that file.
    """
    p = Path(path)
    try:
        names = os.listdir(p)
    except OSError:
        return False
    if TFLITE_METADATA_NAME in names:
        try:
            meta = json.loads((p / TFLITE_METADATA_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if not isinstance(meta, dict) or meta.get("format") != TFLITE_FORMAT:
            return False
        names = [n for n in names if n != TFLITE_METADATA_NAME]
    elif not any(_TFLITE_FILE_RE.match(n) for n in names):
        return False
    return all((_TFLITE_FILE_RE.match(n) or _LEGACY_TFLITE_TMP_RE.match(n)) and (p / n).is_file()
               for n in names)


def check_tflite_out(out_dir: str | os.PathLike[str],
                     inputs: Sequence[str | os.PathLike[str] | None] = ()) -> Path:
    """Refuse a TFLite output folder (UserError, nothing touched) that this export must not write:
    a file, an unwritable path, a folder holding anything but a TFLite export of ours, or a
    folder that is, contains or lies inside one of ``inputs`` (the model folder)."""
    out = atomic.claim_output(out_dir, TFLITE_WHAT, is_tflite_export)
    atomic.check_disjoint(out, *inputs, what="TFLite output folder")
    return out


def tflite_metadata(loaded, files: dict[str, dict]) -> dict:
    """The marker of a TFLite export folder: which model, which variants, which bytes."""
    meta = export_metadata(loaded)
    meta.pop("signatures")
    meta.update(format=TFLITE_FORMAT, input_size=int(loaded.config.backbone_input_size), variants=files)
    return meta


def convert_tflite(model, out_dir: str | os.PathLike[str], variants: Iterable[str] = TFLITE_VARIANTS,
                   representative: np.ndarray | None = None,
                   check: Callable[[dict[str, str]], None] | None = None,
                   inputs: Sequence[str | os.PathLike[str] | None] = ()) -> dict[str, str]:
    """Write ``<out_dir>/encoder_<variant>.tflite`` per variant as one set; return the paths.

    The folder is built in a hidden temp folder beside it, with ``bgan_tflite.json``,
    then swapped in whole (``atomic.staged_dir``): a killed run leaves the previous
    set or the new one, never a mix. ``check(paths)`` runs on the staged files; an
    exception from it leaves the folder as it was, and so does a full disk (one
    UserError line). ``representative``: uint8 images [n,S,S,3] for full int8 calibration.
    """
    loaded = loaded_encoder(model)
    variants = check_variants(variants)
    if "int8" in variants and (representative is None or len(representative) == 0):
        raise UserError("the int8 variant needs representative images (--representative_images, or the "
                        "training data named in the model's config)")
    out = check_tflite_out(out_dir, [getattr(loaded, "model_dir", None), *inputs])
    with atomic.staged_dir(out, what=TFLITE_WHAT, is_ours=is_tflite_export) as staged, \
            tempfile.TemporaryDirectory(prefix="bgan_tflite_") as work:
        sm_dirs = {}
        files = {}
        for variant in variants:
            fold = folds_normalisation(variant)
            if fold not in sm_dirs:
                # The graph to convert goes to the temp folder (TMPDIR), not to --out.
                with no_space_is_user_error(work, "free space in the temp folder or point TMPDIR elsewhere "
                                                  f"(nothing was written to {out})"):
                    sm_dirs[fold] = tflite_saved_model(loaded, os.path.join(work, f"sm_{int(fold)}"), fold)
            with quiet_tflite_notices():  # the int8 calibrator's notices (see inference.tflite)
                data = tflite_converter(sm_dirs[fold], variant, representative).convert()
            name = f"encoder_{variant}.tflite"
            with no_space_is_user_error(out, "free space or choose another --out (the folder was left as it was)"):
                atomic.write_bytes(staged / name, data)
            digest = hashlib.sha256(data).hexdigest()
            files[variant] = {"file": name, "bytes": len(data), "sha256": digest,
                              "model_id": f"tflite:{digest[:16]}"}  # what TFLiteEncoder.model_id reports
        with no_space_is_user_error(out, "free space or choose another --out (the folder was left as it was)"):
            atomic.write_json(staged / TFLITE_METADATA_NAME, tflite_metadata(loaded, files))
        if check is not None:
            check({v: str(staged / f["file"]) for v, f in files.items()})
    return {v: str(out / f["file"]) for v, f in files.items()}
