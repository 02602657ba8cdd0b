"""Checks that an export encodes like the Keras encoder it came from.

Bit agreement of codes (``bit_agreement``, with the int8 bar
``INT8_TARGET_AGREEMENT``), the model's own stability under pixel noise and
input rounding (guides to what an int8 file can reach), the SavedModel check
(``check_saved_model``: reload, compare both signatures, packed and hex,
``encode_bytes`` on JPEGs against the Python path's decoder, and
``saved_model_cli_show``), the TFLite check (``check_tflite``) and the images
they compare on (``check_images``). Library functions shared by the export
binaries, tests and benchmarks.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

import numpy as np

from bgan_tf.errors import UserError
from bgan_tf.inference.tflite import TFLiteEncoder, resize_bilinear
from bgan_tf.serving.saved_model import SIGNATURES, loaded_encoder
from bgan_tf.serving.tflite import representative_images


def bit_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of equal code bits between two [N, L] sign arrays (1.0 if empty)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"code shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 1.0
    return float(np.mean((a >= 0) == (b >= 0)))


# The bar an int8 export is held to (docs/serving.md): at most 1 bit in 100 differs from Keras.
INT8_TARGET_AGREEMENT = 0.99


def noise_stability(model, images: np.ndarray, sigma: float = 0.5, seed: int = 0) -> float:
    """Bit agreement of the Keras encoder with itself on ``images`` + N(0, sigma) grey levels.

    int8 activations add rounding noise of about this size at every layer, so
    this is a guide to how far an int8 export can agree with the model: one
    whose codes flip under half a grey level of pixel noise is not rescued by
    better calibration (measured for frozen MobileNetV2 in
    benchmarks/results/encode_throughput.md).
    """
    loaded = loaded_encoder(model)
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
    loaded = loaded_encoder(model)
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


def encode_jpeg(images: np.ndarray, quality: int = 90, orientations: list[int] | None = None) -> list[bytes]:
    """uint8 [N,H,W,3] -> JPEG bytes per image (4:2:0, as cameras write them). With
    ``orientations``, image i carries EXIF orientation tag ``orientations[i]`` (its pixels
    stored as given, so a decoder that applies the tag returns them turned)."""
    import io

    from PIL import Image

    out = []
    for i, img in enumerate(np.asarray(images, np.uint8)):
        extra = {}
        if orientations is not None:
            exif = Image.Exif()
            exif[0x0112] = int(orientations[i])
            extra["exif"] = exif.tobytes()
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=2, **extra)
        out.append(buf.getvalue())
    return out


def python_path_codes(sig, files: list[bytes]) -> np.ndarray:
    """Codes of ``files`` decoded by the Python path (``bgan_tf.data.images``: what index
    build, query and the search service read) and encoded by ``serving_default`` (``sig``),
    one call per decoded shape; [N, L] in the order of ``files``."""
    import tensorflow as tf

    from bgan_tf.data.images import decode_image_bytes

    decoded = [decode_image_bytes(f, what=f"check image {i}") for i, f in enumerate(files)]
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(decoded):
        by_shape.setdefault(img.shape, []).append(i)
    out: list[np.ndarray | None] = [None] * len(files)
    for idx in by_shape.values():
        codes = call_signature(sig, images=tf.constant(np.stack([decoded[i] for i in idx])))["codes"]
        for row, i in zip(codes, idx):
            out[i] = row
    return np.stack(out)


# EXIF orientations the check's JPEGs carry in turn (1, as stored, then every turn and
# mirror), so a decoder that ignores or misapplies the tag fails the check.
CHECK_ORIENTATIONS = (1, 2, 3, 4, 5, 6, 7, 8)


@dataclasses.dataclass
class SavedModelCheck:
    num_images: int
    identical_codes: bool  # serving_default codes == Keras codes, bit for bit
    bytes_identical_codes: bool  # encode_bytes on PNGs == serving_default on the same pixels
    packed_ok: bool  # packed == codes.pack(codes)
    hex_ok: bool  # hex == codes.to_hex(packed)
    signatures: list[str]
    # encode_bytes on JPEGs (quality 90, 4:2:0, EXIF orientations 1-8 in turn) vs the
    # Python path's decode of the same files: the bit agreement (1.0 = identical).
    jpeg_bit_agreement: float = 1.0

    @property
    def ok(self) -> bool:
        return self.identical_codes and self.bytes_identical_codes and self.packed_ok and self.hex_ok \
            and self.jpeg_bit_agreement == 1.0 and set(SIGNATURES) <= set(self.signatures)

    def summary(self) -> str:
        return (f"SavedModel check on {self.num_images} images: codes identical to Keras: {self.identical_codes}; "
                f"encode_bytes == serving_default: {self.bytes_identical_codes}; "
                f"encode_bytes on JPEG (EXIF-rotated too) vs the Python decoder: bit agreement "
                f"{self.jpeg_bit_agreement:.4f}; packed ok: {self.packed_ok}; "
                f"hex ok: {self.hex_ok}; signatures: {', '.join(self.signatures)}")


def call_signature(sig, **inputs) -> dict[str, np.ndarray]:
    """Run a loaded signature; outputs as numpy (hex as Python str)."""
    out = {k: v.numpy() for k, v in sig(**inputs).items()}
    if "hex" in out:
        out["hex"] = np.array([h.decode() for h in out["hex"]], dtype=object)
    return out


def check_saved_model(version_dir: str, model, images: np.ndarray) -> SavedModelCheck:
    """Reload with tf.saved_model.load and compare with the Keras encoder, and
    ``encode_bytes`` with ``serving_default`` on PNGs and with the Python path's decoder
    on JPEGs (``docs/serving.md``: one decoder contract)."""
    import tensorflow as tf

    from bgan_tf import codes as codes_lib

    loaded = loaded_encoder(model)
    images = np.asarray(images, np.uint8)
    sm = tf.saved_model.load(version_dir)
    ref = loaded.encode(images)
    got = call_signature(sm.signatures["serving_default"], images=tf.constant(images))
    by_bytes = call_signature(sm.signatures["encode_bytes"], image_bytes=tf.constant(encode_png(images)))
    turns = [CHECK_ORIENTATIONS[i % len(CHECK_ORIENTATIONS)] for i in range(len(images))]
    jpegs = encode_jpeg(images, orientations=turns)
    by_jpeg = call_signature(sm.signatures["encode_bytes"], image_bytes=tf.constant(jpegs, dtype=tf.string))
    packed_ref = codes_lib.pack(got["codes"])
    return SavedModelCheck(
        num_images=len(images),
        identical_codes=bool(np.array_equal(got["codes"], ref)),
        bytes_identical_codes=bool(np.array_equal(by_bytes["codes"], got["codes"])),
        packed_ok=bool(np.array_equal(got["packed"], packed_ref)),
        hex_ok=list(got["hex"]) == codes_lib.to_hex(packed_ref),
        signatures=sorted(sm.signatures.keys()),
        jpeg_bit_agreement=bit_agreement(by_jpeg["codes"], python_path_codes(
            sm.signatures["serving_default"], jpegs)) if len(jpegs) else 1.0,
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
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
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

    loaded = loaded_encoder(model)
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
    loaded = loaded_encoder(model)
    try:
        return representative_images(loaded.config, loaded.config.backbone_input_size, count, seed)
    except UserError:
        raise
    except Exception as e:  # data not reachable here (e.g. a folder on another machine)
        raise UserError(f"could not load the model's training data ({loaded.config.dataset}) to check the "
                        f"export: {e}; pass --check_images DIR_or_npz") from None
