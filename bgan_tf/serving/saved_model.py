"""Export a trained encoder for serving: TF Serving SavedModel, TFLite, checks.

SavedModel (``export_saved_model``, ``staged_saved_model``), written as
``<base>/<version>/`` (the layout TF Serving watches). The version is built
and checked in a hidden temporary folder inside ``<base>`` and renamed into
place only when the checks pass, so a watching server never sees a
half-written or failed version. TF Serving loads every integer subfolder of
its base, so a base that holds anything else is refused before anything is
written (``check_export_base``). Signatures:

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

TFLite (``convert_tflite``): one folder per export, written as a whole set
(``atomic.staged_dir``): a killed run leaves the previous complete set or the
new one, never files of two models side by side. ``bgan_tflite.json`` in the
folder names the model and the variants (with each file's sha256). Variants
``float``, ``dynamic_int8`` (int8 weights, float activations) and ``int8`` (full integer with a representative
dataset; input stays uint8 pixels and ``codes`` stays float32, see
docs/serving.md). TFLite models take a FIXED input size, the backbone input
size: ``TFLiteEncoder`` resizes on the client side with the same bilinear
resize the graph uses, and outputs ``codes`` and ``packed``.

Checks (``check_saved_model``, ``saved_model_cli_show``, ``bit_agreement``)
are library functions shared by the export binaries, tests and benchmark.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from bgan_tf import atomic
from bgan_tf.errors import UserError

METADATA_NAME = "bgan_metadata.json"
SIGNATURES = ("serving_default", "encode_bytes")
TFLITE_VARIANTS = ("float", "dynamic_int8", "int8")
_VERSION_RE = re.compile(r"^\d+$")
# TF Serving versions are int64.
MAX_VERSION = 2**63 - 1
EXPORT_BASE_WHAT = "TF Serving export base"
# Versions are staged in BASE/.bgan_export.tmp-* (atomic.make_temp_dir's name for the
# target BASE/bgan_export, which is never created): hidden and not an integer, so TF
# Serving ignores them, and atomic.clean_stale removes the ones killed runs left.
_STAGE_NAME = "bgan_export"
# What this exporter named its temp folders before it used atomic (tempfile.mkdtemp).
_LEGACY_TMP_RE = re.compile(r"^\.tmp-\d+-[a-z0-9_]{8}$")
TFLITE_WHAT = "TFLite export"
TFLITE_METADATA_NAME = "bgan_tflite.json"
TFLITE_FORMAT = "bgan_tf.tflite/1"
_TFLITE_FILE_RE = re.compile(r"^encoder_(float|dynamic_int8|int8)\.tflite$")
# The per-file temps the exporter wrote into the folder before it staged whole sets.
_LEGACY_TFLITE_TMP_RE = re.compile(r"^\.encoder_(float|dynamic_int8|int8)\.tflite\.tmp-[a-z0-9_]{8}$")
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


def list_versions(base: str | os.PathLike[str]) -> list[int]:
    if not os.path.isdir(base):
        return []
    return sorted(int(n) for n in os.listdir(base) if _VERSION_RE.match(n) and os.path.isdir(os.path.join(base, n)))


def next_version(base: str | os.PathLike[str]) -> int:
    versions = list_versions(base)
    return versions[-1] + 1 if versions else 1


def _loaded(model):
    """A LoadedEncoder from a model folder path or a LoadedEncoder."""
    if isinstance(model, (str, os.PathLike)):
        from bgan_tf.inference.keras_model import load_encoder

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
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    for path in (os.path.join(folder, "assets.extra", METADATA_NAME), os.path.join(folder, METADATA_NAME)):
        atomic.write_text(path, text)


def _is_our_temp(name: str) -> bool:
    return name.startswith(f".{_STAGE_NAME}{atomic.TMP_INFIX}") or bool(_LEGACY_TMP_RE.match(name))


def _strangers_in_base(base: Path) -> list[str]:
    """Entries of an export base that are neither integer version folders nor our temps."""
    try:
        entries = sorted(os.scandir(base), key=lambda e: e.name)
    except OSError:
        return []
    return [e.name for e in entries
            if not ((_VERSION_RE.match(e.name) or _is_our_temp(e.name)) and e.is_dir())]


def is_export_base(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding only integer version folders (and our temps)."""
    p = Path(path)
    return p.is_dir() and not _strangers_in_base(p)


def check_export_base(export_base: str | os.PathLike[str], version: int | None = None,
                      inputs: Sequence[str | os.PathLike[str] | None] = ()) -> Path:
    """Refuse an export base (UserError, nothing touched) that this export must not write.

    Refused: a file; a folder holding anything but integer version folders and our own
    temps (TF Serving would try to load every integer subfolder, and an export must not
    mix into someone else's folder); a base that is, contains or lies inside one of
    ``inputs`` (the model folder); an unwritable path; an existing ``version``.
    Returns the absolute base.
    """
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)
                                or not 0 <= version <= MAX_VERSION):
        raise UserError(f"--version must be an integer from 0 to {MAX_VERSION}, got {version!r}")
    base = Path(export_base).absolute()
    if base.is_dir():
        strangers = _strangers_in_base(base)
        if strangers:
            shown = ", ".join(strangers[:3]) + (", ..." if len(strangers) > 3 else "")
            raise UserError(f"the export base {export_base} holds entries that are not SavedModel "
                            f"versions ({shown}); TF Serving loads every integer subfolder of its base, so "
                            "give the export a folder of its own (a new or empty one; nothing was changed)")
    base = atomic.claim_output(base, EXPORT_BASE_WHAT, is_export_base)
    atomic.check_disjoint(base, *inputs, what=EXPORT_BASE_WHAT)
    if version is not None and os.path.lexists(base / str(version)):
        raise UserError(f"version {version} already exists at {base / str(version)}; omit --version to "
                        f"write version {next_version(base)}, or remove the old one")
    return base


def clean_stale_exports(base: str | os.PathLike[str]) -> list[Path]:
    """Remove the temp folders killed exports left in ``base`` (only ours, by name).

    Call it only while holding ``atomic.output_lock(base)``: then no live export owns them.
    """
    b = Path(base).absolute()
    removed = atomic.clean_stale(b / _STAGE_NAME)
    if b.is_dir():
        for p in b.iterdir():
            if _LEGACY_TMP_RE.match(p.name) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


@dataclasses.dataclass(frozen=True)
class StagedVersion:
    """A complete SavedModel waiting in a hidden folder of the base for its checks."""

    version: int
    path: str  # the hidden temp folder: run the checks here
    final: str  # BASE/<version>: where it is renamed when the checks pass


@contextlib.contextmanager
def staged_saved_model(model, export_base: str | os.PathLike[str], version: int | None = None,
                       inputs: Sequence[str | os.PathLike[str] | None] = ()) -> Iterator[StagedVersion]:
    """Write the SavedModel into a hidden temp folder of the base and yield it.

    Run the checks on ``staged.path`` inside the ``with`` block: when the block ends
    cleanly the folder is renamed to ``staged.final``; when it raises (a check failed,
    Ctrl-C) the temp folder is removed and no version appears. The base is checked
    (``check_export_base``) before anything is written and locked throughout, so a
    concurrent export of the same base gets a clear error instead of racing for the
    version number.
    """
    loaded = _loaded(model)
    inputs = [getattr(loaded, "model_dir", None), *inputs]
    base = check_export_base(export_base, version, inputs)
    with atomic.output_lock(base, EXPORT_BASE_WHAT):
        base = check_export_base(export_base, version, inputs)  # again: it may have changed meanwhile
        created = not base.exists()
        clean_stale_exports(base)
        if version is None:
            version = next_version(base)
        final = base / str(version)
        tmp = atomic.make_temp_dir(base / _STAGE_NAME)
        try:
            build_archive(loaded).write_out(str(tmp), verbose=False)
            _write_metadata(str(tmp), export_metadata(loaded))
            atomic.open_up(tmp)  # a model server often runs as another user
            yield StagedVersion(version, str(tmp), str(final))
            try:
                if os.path.lexists(final):
                    raise FileExistsError(17, "exists", str(final))
                # We hold the lock; rename still fails rather than overwrite a writer that
                # does not take it.
                os.rename(tmp, final)
            except OSError as e:
                raise UserError(f"could not move the export into {final} ({e.strerror}); another export "
                                "may have written that version: rerun without --version") from None
            atomic.fsync_dir(base)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if created:
                with contextlib.suppress(OSError):
                    base.rmdir()  # only if still empty: the base this failed export made
            raise


def export_saved_model(model, export_base: str | os.PathLike[str], version: int | None = None,
                       check: Callable[[str], None] | None = None,
                       inputs: Sequence[str | os.PathLike[str] | None] = ()) -> str:
    """Write ``<export_base>/<version>/`` atomically; return its path.

    ``model``: a model folder or a LoadedEncoder. ``version`` defaults to one
    more than the largest existing integer version (1 for a new base).
    ``check(path)``: run on the staged SavedModel before it becomes a version;
    an exception from it leaves no version.
    """
    with staged_saved_model(model, export_base, version, inputs) as staged:
        if check is not None:
            check(staged.path)
    return staged.final


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
    try:
        proc = subprocess.run([saved_model_cli_path(), "show", "--dir", version_dir, "--all"],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise UserError(f"saved_model_cli show did not finish within {timeout:.0f} s on {version_dir}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"saved_model_cli show failed ({proc.returncode}) on {version_dir}: {last}")
    missing = [s for s in SIGNATURES if f"signature_def['{s}']" not in proc.stdout]
    if missing:
        raise UserError(f"saved_model_cli does not list signatures {missing} in {version_dir}")
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
    exception from it leaves the folder as it was. ``representative``: uint8 images
    [n,S,S,3] for full int8 calibration.
    """
    loaded = _loaded(model)
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
                sm_dirs[fold] = tflite_saved_model(loaded, os.path.join(work, f"sm_{int(fold)}"), fold)
            data = tflite_converter(sm_dirs[fold], variant, representative).convert()
            name = f"encoder_{variant}.tflite"
            atomic.write_bytes(staged / name, data)
            digest = hashlib.sha256(data).hexdigest()
            files[variant] = {"file": name, "bytes": len(data), "sha256": digest,
                              "model_id": f"tflite:{digest[:16]}"}  # what TFLiteEncoder.model_id reports
        atomic.write_json(staged / TFLITE_METADATA_NAME, tflite_metadata(loaded, files))
        if check is not None:
            check({v: str(staged / f["file"]) for v, f in files.items()})
    return {v: str(out / f["file"]) for v, f in files.items()}


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
            inputs = self.runner.get_input_details()
            outputs = self.runner.get_output_details()
        except (ValueError, KeyError) as e:  # not a TFLite file, or no serving_default signature
            raise UserError(f"{path} is not an encoder exported by python -m export.tflite "
                            f"({str(e).splitlines()[0] if str(e) else e.__class__.__name__}); export it again") from None
        missing = sorted({"images"} - set(inputs)) + sorted({"codes", "packed"} - set(outputs))
        if missing:
            raise UserError(f"{path} is not an encoder exported by python -m export.tflite (its signature "
                            f"has no {', '.join(missing)} tensor); export it again")
        detail = inputs["images"]
        codes_shape = outputs["codes"]["shape"]
        shape = list(detail["shape"])
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2] or shape[1] < 1 or len(codes_shape) != 2:
            raise UserError(f"{path} is not an encoder exported by python -m export.tflite (input shape "
                            f"{shape}, codes shape {list(codes_shape)}); export it again")
        self.input_size = int(shape[1])
        self.input_dtype = detail["dtype"]
        self.num_bits = int(codes_shape[-1])
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:16]
        # The index seam (bgan_tf.search.indexer.Encoder) keys an index by model_id:
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
