"""Export a trained encoder for serving: TF Serving SavedModel, TFLite, checks.

SavedModel (``export_saved_model``), written as ``<base>/<version>/`` (the
layout TF Serving watches), built in a hidden temporary folder inside
``<base>`` and renamed into place, so a watching server never sees a
half-written version. Signatures:

- ``serving_default``: ``images`` uint8 [N,H,W,3], any H and W (resized and
  normalised inside the graph exactly as in training) ->
  ``codes`` float32 [N,L] in {-1,+1}, ``packed`` uint8 [N,ceil(L/8)]
  (numpy.packbits order, as ``bgan_tf.codes.pack``), ``hex`` string [N]
  (as ``bgan_tf.codes.to_hex``).
- ``encode_bytes``: ``image_bytes`` string [N] of encoded JPEG/PNG/GIF/BMP
  files (what REST clients send as ``{"b64": ...}``) -> the same outputs.
  Each image is decoded and resized to the backbone input size on its own
  (``tf.map_fn``), so one request may mix image sizes.

Bad input gives an error from the signature, never a crash: the input specs
reject a wrong dtype or rank; an empty batch returns empty outputs; an image
with no pixels or bytes that are not an image give InvalidArgument with a
message naming the problem. Model metadata (code length, backbone,
preprocessing, training data, commit, model id) is written to
``<version>/assets.extra/bgan_metadata.json`` (TF Serving's folder for extra
files) and to ``<version>/bgan_metadata.json`` beside ``saved_model.pb``.

TFLite (``convert_tflite``): variants ``float``, ``dynamic_int8`` (int8
weights, float activations) and ``int8`` (full integer with a representative
dataset; input stays uint8 pixels and ``codes`` stays float32, see
docs/serving.md). TFLite models take a FIXED input size, the backbone input
size: ``TFLiteEncoder`` resizes on the client side with the same bilinear
resize the graph uses, and outputs ``codes`` and ``packed``.

Checks (``check_saved_model``, ``saved_model_cli_show``, ``bit_agreement``)
are library functions shared by the export binaries, tests and benchmark.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Iterable

import numpy as np

from bgan_tf.errors import UserError

METADATA_NAME = "bgan_metadata.json"
SIGNATURES = ("serving_default", "encode_bytes")
TFLITE_VARIANTS = ("float", "dynamic_int8", "int8")
_VERSION_RE = re.compile(r"^\d+$")
# First bytes of the formats tf.io.decode_image reads.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


# --------------------------------------------------------------------------
# graph pieces
# --------------------------------------------------------------------------

def pack_bits_tf(codes, num_bits: int):
    """[N, L] signs -> [N, ceil(L/8)] uint8, numpy.packbits (big-endian) order."""
    import tensorflow as tf

    nbytes = (num_bits + 7) // 8
    bits = tf.cast(codes >= 0, tf.int32)
    pad = nbytes * 8 - num_bits
    if pad:
        bits = tf.pad(bits, [[0, 0], [0, pad]])  # packbits pads with zeros at the end
    bits = tf.reshape(bits, [-1, nbytes, 8])
    weights = tf.constant([128, 64, 32, 16, 8, 4, 2, 1], tf.int32)
    return tf.cast(tf.reduce_sum(bits * weights, axis=-1), tf.uint8)


def hex_tf(packed):
    """[N, B] uint8 -> [N] hex strings (two lowercase digits per byte)."""
    import tensorflow as tf

    table = tf.constant([f"{i:02x}" for i in range(256)])
    return tf.strings.reduce_join(tf.gather(table, tf.cast(packed, tf.int32)), axis=-1)


def _resize_like_preprocess(image, size: int):
    """float32 [H,W,3] -> [size,size,3], the same resize as ``Preprocess``."""
    import tensorflow as tf

    shape = tf.shape(image)
    return tf.cond(
        tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size)),
        lambda: image,
        lambda: tf.image.resize(image, (size, size), method="bilinear"),
    )


def _serving_fns(encoder, num_bits: int, input_size: int):
    """The two signature functions (plain Python; ExportArchive traces them)."""
    import tensorflow as tf

    def outputs(codes):
        codes = tf.ensure_shape(tf.cast(codes, tf.float32), (None, num_bits))
        packed = pack_bits_tf(codes, num_bits)
        return {"codes": codes, "packed": packed, "hex": hex_tf(packed)}

    def serve_images(images):
        # The signature's input spec fixes the dtype; a runtime check (not
        # constant-folded, unlike tf.rank) gives rank/channel errors a clear message.
        images = tf.ensure_shape(images, (None, None, None, 3), name="images_must_be_NxHxWx3")
        shape = tf.shape(images)
        with tf.control_dependencies([tf.debugging.Assert(
                tf.logical_or(tf.equal(shape[0], 0), tf.logical_and(shape[1] > 0, shape[2] > 0)),
                ["images must have height and width >= 1; got shape", shape])]):
            x = tf.cast(images, tf.float32)
        return outputs(encoder(x, training=False))

    def decode_one(args):
        data, index = args
        known = tf.reduce_any(tf.stack([tf.equal(tf.strings.substr(data, 0, len(m)), m) for m in _MAGIC]))
        with tf.control_dependencies([tf.debugging.Assert(
                known, ["image_bytes item", index, "is not a JPEG, PNG, GIF or BMP file; its first bytes are",
                        tf.io.decode_raw(tf.strings.substr(data, 0, 8), tf.uint8),
                        "- send the encoded file bytes (base64 as {\"b64\": ...} in REST requests)"],
                summarize=8)]):
            image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
        image = tf.ensure_shape(image, (None, None, 3))
        hw = tf.shape(image)[:2]
        with tf.control_dependencies([tf.debugging.Assert(
                tf.reduce_all(hw > 0), ["image_bytes item", index, "decodes to an image with no pixels:", hw])]):
            image = tf.cast(image, tf.float32)
        return _resize_like_preprocess(image, input_size)

    def serve_bytes(image_bytes):
        image_bytes = tf.ensure_shape(image_bytes, (None,), name="image_bytes_must_be_a_vector")
        n = tf.shape(image_bytes)[0]
        images = tf.map_fn(decode_one, (image_bytes, tf.range(n)),
                           fn_output_signature=tf.TensorSpec((input_size, input_size, 3), tf.float32))
        return outputs(encoder(images, training=False))

    return serve_images, serve_bytes


# --------------------------------------------------------------------------
# SavedModel export
# --------------------------------------------------------------------------

def export_metadata(loaded) -> dict:
    """What the exported model carries about itself (from the model folder)."""
    meta = loaded.metadata
    cfg = loaded.config
    return {
        "format": "bgan_tf.export/1",
        "model_id": loaded.model_id,
        "num_bits": loaded.num_bits,
        "packed_bytes": (loaded.num_bits + 7) // 8,
        "backbone": meta.get("backbone", {"name": cfg.backbone, "input_size": cfg.backbone_input_size}),
        "preprocessing": meta.get("preprocessing"),
        "training_data": meta.get("training_data"),
        "git_commit": meta.get("git_commit"),
        "created": meta.get("created"),
        "signatures": {
            "serving_default": {"inputs": {"images": "uint8 [N,H,W,3], any H,W"},
                                "outputs": {"codes": "float32 [N,L] +-1", "packed": "uint8 [N,ceil(L/8)] packbits",
                                            "hex": "string [N]"}},
            "encode_bytes": {"inputs": {"image_bytes": "string [N], encoded JPEG/PNG/GIF/BMP"},
                             "outputs": "same as serving_default"},
        },
    }


def list_versions(base: str) -> list[int]:
    if not os.path.isdir(base):
        return []
    return sorted(int(n) for n in os.listdir(base) if _VERSION_RE.match(n) and os.path.isdir(os.path.join(base, n)))


def next_version(base: str) -> int:
    versions = list_versions(base)
    return versions[-1] + 1 if versions else 1


def _loaded(model):
    """A LoadedEncoder from a model folder path or a LoadedEncoder."""
    if isinstance(model, (str, os.PathLike)):
        from bgan_tf.inference import load_encoder

        return load_encoder(os.fspath(model))
    return model


def build_archive(loaded):
    """A keras.export.ExportArchive with the two serving signatures."""
    import keras
    import tensorflow as tf

    enc = loaded.model
    size = int(loaded.config.backbone_input_size)
    serve_images, serve_bytes = _serving_fns(enc, loaded.num_bits, size)
    archive = keras.export.ExportArchive()
    archive.track(enc)
    archive.add_endpoint("serving_default", serve_images,
                         input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8, name="images")])
    archive.add_endpoint("encode_bytes", serve_bytes,
                         input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")])
    return archive


def _write_metadata(folder: str, meta: dict) -> None:
    text = json.dumps(meta, indent=2, sort_keys=True)
    os.makedirs(os.path.join(folder, "assets.extra"), exist_ok=True)
    for path in (os.path.join(folder, "assets.extra", METADATA_NAME), os.path.join(folder, METADATA_NAME)):
        with open(path, "w") as f:
            f.write(text + "\n")


def export_saved_model(model, export_base: str, version: int | None = None) -> str:
    """Write ``<export_base>/<version>/`` atomically; return its path.

    ``model``: a model folder or a LoadedEncoder. ``version`` defaults to one
    more than the largest existing integer version (1 for a new base).
    """
    loaded = _loaded(model)
    if version is not None and (not isinstance(version, int) or version < 0):
        raise UserError(f"--version must be a non-negative integer, got {version!r}")
    os.makedirs(export_base, exist_ok=True)
    if version is None:
        version = next_version(export_base)
    final = os.path.join(export_base, str(version))
    if os.path.exists(final):
        raise UserError(f"version {version} already exists at {final}; omit --version to write "
                        f"version {next_version(export_base)}, or remove the old one")
    # Hidden name that is not an integer: TF Serving ignores it while it is written.
    tmp = tempfile.mkdtemp(dir=export_base, prefix=f".tmp-{version}-")
    try:
        build_archive(loaded).write_out(tmp, verbose=False)
        _write_metadata(tmp, export_metadata(loaded))
        _make_readable(tmp)
        try:
            os.rename(tmp, final)  # fails (ENOTEMPTY/EEXIST) instead of overwriting a racing writer
        except OSError as e:
            raise UserError(f"could not move the export into {final} ({e.strerror}); another export "
                            "may have written that version: rerun without --version") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_export_metadata(version_dir: str) -> dict:
    path = os.path.join(version_dir, "assets.extra", METADATA_NAME)
    if not os.path.isfile(path):
        raise UserError(f"{version_dir} is not a bgan_tf export (no assets.extra/{METADATA_NAME})")
    with open(path) as f:
        return json.load(f)


# --------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------

def bit_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of equal code bits between two [N, L] sign arrays (1.0 if empty)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"code shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 1.0
    return float(np.mean((a >= 0) == (b >= 0)))


# The bar for int8 exports: at most 1 bit in 100 differs from Keras.
INT8_TARGET_AGREEMENT = 0.99


def noise_stability(model, images: np.ndarray, sigma: float = 0.5, seed: int = 0) -> float:
    """Bit agreement of the Keras encoder with itself on ``images`` + N(0, sigma) grey levels.

    int8 activations add rounding noise of about this size at every layer, so
    this is a guide to how far an int8 export can agree with the model: one
    whose codes flip under half a grey level of pixel noise is not rescued by
    better calibration (measured for frozen MobileNetV2 in
    benchmarks/results/encode_throughput.md).
    """
    loaded = _loaded(model)
    x = np.asarray(images, np.float32)
    noisy = x + np.random.default_rng(seed).normal(0.0, sigma, x.shape).astype(np.float32)
    return bit_agreement(loaded.encode(x), loaded.encode(noisy))


def input_rounding_agreement(model, images: np.ndarray) -> float:
    """Bit agreement of the Keras encoder with itself when its resized input is rounded.

    ``images`` of any size are resized to the backbone input size in float (as
    the graph and ``TFLiteEncoder`` do), then encoded once as they are and once
    rounded to whole grey levels. A full-int8 TFLite model stores its input
    tensor in 8 bits, so it cannot agree with the Keras encoder better than
    this on images that arrive at another size (e.g. CIFAR-10's 32 px at
    128 px): the floor set by the model, not by calibration. Images already at
    the input size with whole-number pixels give 1.0.
    """
    loaded = _loaded(model)
    x = resize_bilinear(images, int(loaded.config.backbone_input_size))
    return bit_agreement(loaded.encode(x), loaded.encode(np.round(x)))


def encode_png(images: np.ndarray) -> list[bytes]:
    """uint8 [N,H,W,3] -> PNG bytes per image (lossless, for the bytes signature)."""
    import io

    from PIL import Image

    out = []
    for img in np.asarray(images, np.uint8):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


@dataclasses.dataclass
class SavedModelCheck:
    num_images: int
    identical_codes: bool  # serving_default codes == Keras codes, bit for bit
    bytes_identical_codes: bool  # encode_bytes on PNGs == serving_default on the same pixels
    packed_ok: bool  # packed == codes.pack(codes)
    hex_ok: bool  # hex == codes.to_hex(packed)
    signatures: list[str]

    @property
    def ok(self) -> bool:
        return self.identical_codes and self.bytes_identical_codes and self.packed_ok and self.hex_ok \
            and set(SIGNATURES) <= set(self.signatures)

    def summary(self) -> str:
        return (f"SavedModel check on {self.num_images} images: codes identical to Keras: {self.identical_codes}; "
                f"encode_bytes == serving_default: {self.bytes_identical_codes}; packed ok: {self.packed_ok}; "
                f"hex ok: {self.hex_ok}; signatures: {', '.join(self.signatures)}")


def call_signature(sig, **inputs) -> dict[str, np.ndarray]:
    """Run a loaded signature; outputs as numpy (hex as Python str)."""
    out = {k: v.numpy() for k, v in sig(**inputs).items()}
    if "hex" in out:
        out["hex"] = np.array([h.decode() for h in out["hex"]], dtype=object)
    return out


def check_saved_model(version_dir: str, model, images: np.ndarray) -> SavedModelCheck:
    """Reload with tf.saved_model.load and compare with the Keras encoder."""
    import tensorflow as tf

    from bgan_tf import codes as codes_lib

    loaded = _loaded(model)
    images = np.asarray(images, np.uint8)
    sm = tf.saved_model.load(version_dir)
    ref = loaded.encode(images)
    got = call_signature(sm.signatures["serving_default"], images=tf.constant(images))
    by_bytes = call_signature(sm.signatures["encode_bytes"], image_bytes=tf.constant(encode_png(images)))
    packed_ref = codes_lib.pack(got["codes"])
    return SavedModelCheck(
        num_images=len(images),
        identical_codes=bool(np.array_equal(got["codes"], ref)),
        bytes_identical_codes=bool(np.array_equal(by_bytes["codes"], got["codes"])),
        packed_ok=bool(np.array_equal(got["packed"], packed_ref)),
        hex_ok=list(got["hex"]) == codes_lib.to_hex(packed_ref),
        signatures=sorted(sm.signatures.keys()),
    )


def saved_model_cli_path() -> str:
    """saved_model_cli of this Python environment (beside the interpreter)."""
    cand = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if os.path.isfile(cand):
        return cand
    found = shutil.which("saved_model_cli")
    if not found:
        raise UserError("saved_model_cli not found; it comes with the tensorflow package of this environment")
    return found


def saved_model_cli_show(version_dir: str, timeout: float = 180) -> str:
    """Output of ``saved_model_cli show --dir DIR --all``; raises if it fails or lacks a signature."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    proc = subprocess.run([saved_model_cli_path(), "show", "--dir", version_dir, "--all"],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"saved_model_cli failed ({proc.returncode}): {proc.stderr[-2000:]}")
    missing = [s for s in SIGNATURES if f"signature_def['{s}']" not in proc.stdout]
    if missing:
        raise RuntimeError(f"saved_model_cli does not list signatures {missing}:\n{proc.stdout}")
    return proc.stdout


# --------------------------------------------------------------------------
# TFLite
# --------------------------------------------------------------------------

def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """uint8/float [N,H,W,3] -> float32 [N,size,size,3].

    The same arithmetic as ``tf.image.resize(..., "bilinear")`` (half-pixel
    centres, no antialiasing), in numpy so a TFLite client needs no
    TensorFlow. Images already ``size`` x ``size`` are returned unchanged.
    """
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise UserError(f"expected images [N,H,W,3], got shape {x.shape}")
    n, h, w, _ = x.shape
    if (h, w) == (size, size):
        return x
    if h == 0 or w == 0:
        raise UserError(f"images must have height and width >= 1, got {h}x{w}")

    def axis(in_size):
        scale = np.float32(in_size / size)
        src = (np.arange(size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
        lo_f = np.floor(src)
        frac = (src - lo_f).astype(np.float32)
        lo = np.clip(lo_f.astype(np.int64), 0, in_size - 1)
        hi = np.clip(np.ceil(src).astype(np.int64), 0, in_size - 1)
        return lo, hi, frac

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    top_l, top_r = x[:, y0][:, :, x0], x[:, y0][:, :, x1]
    bot_l, bot_r = x[:, y1][:, :, x0], x[:, y1][:, :, x1]
    fx_ = fx[None, None, :, None]
    fy_ = fy[None, :, None, None]
    top = top_l + (top_r - top_l) * fx_
    bot = bot_l + (bot_r - bot_l) * fx_
    return (top + (bot - top) * fy_).astype(np.float32)


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


def representative_images(source, input_size: int, count: int = 200, seed: int = 0) -> np.ndarray:
    """uint8 [n, S, S, 3] for int8 calibration.

    ``source``: an array [N,H,W,3], a folder of images, a .npz (key ``images``
    or the first array), or a BGANConfig (its training data).
    """
    from bgan_tf.config import BGANConfig

    if isinstance(source, BGANConfig):
        from bgan_tf.training import load_training_data

        arr = load_training_data(source).images
    elif isinstance(source, (str, os.PathLike)):
        from bgan_tf.data import load_folder, load_npz

        path = os.fspath(source)
        if os.path.isdir(path):
            arr = load_folder(path, size=input_size, max_images=count * 4, seed=seed).images
        elif path.endswith(".npz") and os.path.isfile(path):
            arr = load_npz(path).images
        else:
            raise UserError(f"--representative_images {path!r} is neither a folder of images nor a .npz file")
    else:
        arr = np.asarray(source)
    if arr.ndim == 3:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) == 0:
        raise UserError(f"representative images must be a non-empty [N,H,W,3] set, got shape {arr.shape}")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.permutation(len(arr))[:count])
    return np.clip(np.round(resize_bilinear(arr[idx], input_size)), 0, 255).astype(np.uint8)


def _umask_mode(mode: int) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def _make_readable(folder: str) -> None:
    """mkdtemp makes 0700 folders: open the export up as a normal mkdir/open would
    (a model server often runs as another user)."""
    for root, dirs, files in os.walk(folder):
        os.chmod(root, _umask_mode(0o777))
        for name in files:
            os.chmod(os.path.join(root, name), _umask_mode(0o666))


def _atomic_write(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def convert_tflite(model, out_dir: str, variants: Iterable[str] = TFLITE_VARIANTS,
                   representative: np.ndarray | None = None) -> dict[str, str]:
    """Write ``<out_dir>/encoder_<variant>.tflite`` per variant (atomically); return paths.

    ``representative``: uint8 images [n,S,S,3] for full int8 calibration.
    """
    import tensorflow as tf

    loaded = _loaded(model)
    variants = list(variants)
    bad = [v for v in variants if v not in TFLITE_VARIANTS]
    if bad or not variants:
        raise UserError(f"unknown TFLite variants {bad}; choose from {', '.join(TFLITE_VARIANTS)}")
    if "int8" in variants and (representative is None or len(representative) == 0):
        raise UserError("the int8 variant needs representative images (--representative_images, or the "
                        "training data named in the model's config)")
    paths = {}
    with tempfile.TemporaryDirectory(prefix="bgan_tflite_") as tmp:
        sm_dirs = {}
        for variant in variants:
            fold = folds_normalisation(variant)
            if fold not in sm_dirs:
                sm_dirs[fold] = tflite_saved_model(loaded, os.path.join(tmp, f"sm_{int(fold)}"), fold)
            data = tflite_converter(sm_dirs[fold], variant, representative).convert()
            path = os.path.join(out_dir, f"encoder_{variant}.tflite")
            _atomic_write(path, data)
            paths[variant] = path
    return paths


class TFLiteEncoder:
    """Run an exported .tflite encoder with ai-edge-litert.

    ``encode(uint8 [N,H,W,3])`` resizes to the model's fixed input size on the
    client side (numpy bilinear, as the graph does) and returns float32 +-1
    codes; ``encode_packed`` returns packed uint8 codes.
    """

    def __init__(self, path: str, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        if not os.path.isfile(path):
            raise UserError(f"TFLite model not found: {path}")
        self.path = path
        try:
            self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
            self.runner = self.interpreter.get_signature_runner("serving_default")
            detail = self.runner.get_input_details()["images"]
        except (ValueError, KeyError) as e:
            raise UserError(f"{path} is not an encoder exported by python -m export.tflite "
                            f"({str(e).splitlines()[0] if str(e) else e.__class__.__name__}); export it again") from None
        self.input_size = int(detail["shape"][1])
        self.input_dtype = detail["dtype"]
        self.num_bits = int(self.runner.get_output_details()["codes"]["shape"][-1])
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:16]
        # The index seam (bgan_tf.indexing.Encoder) keys an index by model_id:
        # an int8 file's codes differ from its Keras model's in some bits, so an
        # index built with one must refuse queries encoded by the other.
        self.model_id = f"tflite:{digest}"
        self.metadata = {"model_id": self.model_id, "tflite": os.path.abspath(path),
                         "input_size": self.input_size, "num_bits": self.num_bits}

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[None]
        x = resize_bilinear(x, self.input_size).astype(self.input_dtype)
        if len(x) == 0:
            nbytes = (self.num_bits + 7) // 8
            return {"codes": np.zeros((0, self.num_bits), np.float32), "packed": np.zeros((0, nbytes), np.uint8)}
        out = self.runner(images=x)
        # Full int8 dequantises +-1 to +-(1 - 1/255): snap back to exact signs.
        out["codes"] = np.where(out["codes"] >= 0, 1.0, -1.0).astype(np.float32)
        return out

    def encode(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[None]
        parts = [self.run(x[s:s + batch_size])["codes"] for s in range(0, len(x), batch_size)]
        if not parts:
            return np.zeros((0, self.num_bits), np.float32)
        return np.concatenate(parts).astype(np.float32)


@dataclasses.dataclass
class TFLiteCheck:
    variant: str
    path: str
    bytes: int
    bit_agreement: float
    packed_ok: bool

    def summary(self) -> str:
        return (f"tflite {self.variant:13s} {self.bytes:>10,d} bytes  bit agreement with Keras "
                f"{self.bit_agreement:.4f}  packed ok: {self.packed_ok}")


def check_tflite(paths: dict[str, str], model, images: np.ndarray) -> dict[str, TFLiteCheck]:
    """Bit agreement of each TFLite model with the Keras encoder on ``images``."""
    from bgan_tf import codes as codes_lib

    loaded = _loaded(model)
    ref = loaded.encode(images)
    out = {}
    for variant, path in paths.items():
        enc = TFLiteEncoder(path)
        res = [enc.run(images[s:s + 64]) for s in range(0, len(images), 64)]
        got = np.concatenate([r["codes"] for r in res])
        packed = np.concatenate([r["packed"] for r in res])
        out[variant] = TFLiteCheck(variant, path, os.path.getsize(path), bit_agreement(ref, got),
                                   bool(np.array_equal(packed, codes_lib.pack(got))))
    return out


def check_images(model, count: int = 256, seed: int = 1) -> np.ndarray:
    """Images to compare exports on: the model's training data (a seeded sample)."""
    loaded = _loaded(model)
    try:
        return representative_images(loaded.config, loaded.config.backbone_input_size, count, seed)
    except UserError:
        raise
    except Exception as e:  # data not reachable here (e.g. a folder on another machine)
        raise UserError(f"could not load the model's training data ({loaded.config.dataset}) to check the "
                        f"export: {e}; pass --check_images DIR_or_npz") from None
