"""Run an exported TFLite encoder (ai-edge-litert), with no TensorFlow.

``TFLiteEncoder`` loads a ``.tflite`` file written by ``python -m export.tflite``
(``bgan_tf.serving.tflite``) and encodes uint8 images of any size: TFLite models
take a fixed input size, so ``resize_bilinear`` resizes on the client side with
the same arithmetic as the graph's ``tf.image.resize``. Search, evaluation and
benchmarks use it to encode with the very file a device runs.

A damaged file is a one-line ``UserError`` naming it, never a crash in the TFLite C++
runtime: a fuzzed flatbuffer can index tensors out of range ("Invalid tensor index"), fail
to prepare, or (in principle) read out of bounds before any check of the runtime's. So the
bytes are checked before the interpreter sees them: the flatbuffer identifier ``TFL3``,
and, when the export's ``bgan_tflite.json`` lies beside the file (as ``export.tflite``
writes it), the sha256 it recorded, which also catches flipped weight bytes that would
otherwise run and give silently wrong codes. The verified bytes are what the interpreter
runs (``model_content``), so the file cannot change between the check and the load. Any
error of the runtime while loading, allocating or running becomes a UserError too.

The runtime's C++ side announces "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
on stderr whatever TF_CPP_MIN_LOG_LEVEL says, and the converter's int8 calibrator prints
"fully_quantize: ..." and warns that tf.lite.Interpreter (which it runs itself) is
deprecated; ``quiet_tflite_notices`` drops these when TF_CPP_MIN_LOG_LEVEL hides INFO
lines (1 or more, which every binary sets), so a binary's stderr holds only what it means
to say.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Iterator

import numpy as np

from bgan_tf.errors import UserError
from bgan_tf.runtime import stderr_without

# The marker and checksum file of a TFLite export folder (written by bgan_tf.serving.tflite).
TFLITE_METADATA_NAME = "bgan_tflite.json"
# Bytes 4..8 of every TFLite flatbuffer (the schema's file_identifier).
TFLITE_IDENTIFIER = b"TFL3"
_REEXPORT = "export it again (python -m export.tflite)"
# A flatbuffer addresses its tables with 32-bit offsets: a larger file is not a model this
# project wrote, and is refused before it is read into memory.
MAX_TFLITE_BYTES = 2**31 - 1
# Lines TFLite writes to stderr whatever TF_CPP_MIN_LOG_LEVEL says: the runtime when it
# builds an interpreter, the converter's calibrator when it quantises (full int8).
TFLITE_NOTICES = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
                  "fully_quantize: 0, inference_type: ")
# The converter's calibrator runs tf.lite.Interpreter itself and so warns that it is
# deprecated: nothing the user can act on.
_DEPRECATION_WARNING = r"(?s)\s*Warning: tf\.lite\.Interpreter is deprecated"


@contextlib.contextmanager
def quiet_tflite_notices() -> Iterator[None]:
    """Drop ``TFLITE_NOTICES`` from stderr and the tf.lite.Interpreter deprecation warning
    while TFLite builds, runs or converts, when TF_CPP_MIN_LOG_LEVEL hides INFO lines
    (TensorFlow's levels: 0 or unset shows INFO, 1 hides it, 2 warnings, 3 errors; every
    binary sets 3). With INFO shown, everything is passed on."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip() in ("", "0"):
        yield
        return
    with warnings.catch_warnings(), stderr_without(TFLITE_NOTICES):
        warnings.filterwarnings("ignore", message=_DEPRECATION_WARNING, category=UserWarning)
        yield


def recorded_sha256(path: str) -> str | None:
    """The sha256 the export recorded for ``path`` in the ``bgan_tflite.json`` beside it, or
    None when there is none (a file copied out of its export folder). A marker that is not
    JSON or names other files tells nothing about this file, so it is ignored."""
    marker = os.path.join(os.path.dirname(os.path.abspath(path)), TFLITE_METADATA_NAME)
    try:
        with open(marker, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    variants = meta.get("variants") if isinstance(meta, dict) else None
    if not isinstance(variants, dict):
        return None
    for entry in variants.values():
        if isinstance(entry, dict) and entry.get("file") == os.path.basename(path):
            digest = entry.get("sha256")
            return digest if isinstance(digest, str) else None
    return None


def read_verified_tflite(path: str) -> tuple[bytes, str]:
    """The bytes of a .tflite file and their sha256, checked before any runtime parses them.

    UserError (naming the file, saying to re-export) when it is missing, unreadable, larger
    than a flatbuffer can be (checked before reading), not a TFLite flatbuffer, or differs
    from the sha256 its export recorded beside it.
    """
    if not os.path.isfile(path):
        raise UserError(f"TFLite model not found: {path}")
    try:
        size = os.path.getsize(path)
        if size > MAX_TFLITE_BYTES:
            raise UserError(f"{path} is not an encoder exported by python -m export.tflite ({size:,} bytes, "
                            f"more than a TFLite flatbuffer can address); {_REEXPORT}")
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"cannot read the TFLite model {path}: {e.strerror}") from None
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise UserError(f"{path} is not an encoder exported by python -m export.tflite (no TFLite "
                        f"{TFLITE_IDENTIFIER.decode()} identifier: truncated or another kind of file); {_REEXPORT}")
    digest = hashlib.sha256(data).hexdigest()
    want = recorded_sha256(path)
    if want is not None and digest != want:
        raise UserError(f"{path} is damaged: its sha256 differs from the one recorded in "
                        f"{TFLITE_METADATA_NAME} when it was exported; {_REEXPORT}")
    return data, digest


def _runtime_error(path: str, e: Exception) -> UserError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
    return UserError(f"{path} is not an encoder exported by python -m export.tflite or is damaged "
                     f"(the TFLite runtime says: {first}); {_REEXPORT}")


def bilinear_axis(in_size: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low index, high index, weight of the high one) per output position along one axis,
    as ``tf.image.resize(..., "bilinear")`` computes them (half-pixel centres, float32)."""
    scale = np.float32(in_size / size)
    src = (np.arange(size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    lo_f = np.floor(src)
    frac = (src - lo_f).astype(np.float32)
    lo = np.clip(lo_f.astype(np.int64), 0, in_size - 1)
    hi = np.clip(np.ceil(src).astype(np.int64), 0, in_size - 1)
    return lo, hi, frac


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """uint8/float [N,H,W,3] -> float32 [N,size,size,3].

    The same arithmetic as ``tf.image.resize(..., "bilinear")`` (half-pixel
    centres, no antialiasing), in numpy so a TFLite client needs no
    TensorFlow. Images already ``size`` x ``size`` are returned as float32.
    Only the 2 x size rows and columns the result needs are cast to float32, so a
    large uint8 image never gets a float32 copy four times its bytes.
    """
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise UserError(f"expected images [N,H,W,3], got shape {x.shape}")
    n, h, w, _ = x.shape
    if (h, w) == (size, size):
        return x.astype(np.float32, copy=False)
    if h == 0 or w == 0:
        raise UserError(f"images must have height and width >= 1, got {h}x{w}")
    y0, y1, fy = bilinear_axis(h, size)
    x0, x1, fx = bilinear_axis(w, size)
    top_l, top_r = x[:, y0][:, :, x0].astype(np.float32), x[:, y0][:, :, x1].astype(np.float32)
    bot_l, bot_r = x[:, y1][:, :, x0].astype(np.float32), x[:, y1][:, :, x1].astype(np.float32)
    fx_ = fx[None, None, :, None]
    fy_ = fy[None, :, None, None]
    top = top_l + (top_r - top_l) * fx_
    bot = bot_l + (bot_r - bot_l) * fx_
    return (top + (bot - top) * fy_).astype(np.float32)


class TFLiteEncoder:
    """Run an exported .tflite encoder with ai-edge-litert.

    ``encode(uint8 [N,H,W,3])`` resizes to the model's fixed input size on the
    client side (numpy bilinear, as the graph does) and returns float32 +-1
    codes; ``encode_packed`` returns packed uint8 codes.
    """

    def __init__(self, path: str, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        data, digest = read_verified_tflite(path)
        try:
            # The verified bytes, not the path: the file may change after the check.
            with quiet_tflite_notices():
                self.interpreter = Interpreter(model_content=data, num_threads=num_threads)
                self.runner = self.interpreter.get_signature_runner("serving_default")
            inputs = self.runner.get_input_details()
            outputs = self.runner.get_output_details()
        except (ValueError, KeyError, RuntimeError, IndexError, TypeError) as e:
            # Not a TFLite model, no serving_default signature, or a flatbuffer whose
            # tables point at tensors that do not exist ("Invalid tensor index").
            raise _runtime_error(path, e) from None
        missing = sorted({"images"} - set(inputs)) + sorted({"codes", "packed"} - set(outputs))
        if missing:
            raise UserError(f"{path} is not an encoder exported by python -m export.tflite (its signature "
                            f"has no {', '.join(missing)} tensor); export it again")
        detail = inputs["images"]
        codes_shape = outputs["codes"]["shape"]
        shape = list(detail["shape"])
        if (len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2] or shape[1] < 1 or len(codes_shape) != 2
                or codes_shape[-1] < 1 or detail["dtype"] != np.float32
                or outputs["codes"]["dtype"] != np.float32 or outputs["packed"]["dtype"] != np.uint8):
            raise UserError(f"{path} is not an encoder exported by python -m export.tflite (input "
                            f"{shape} {np.dtype(detail['dtype']).name}, codes {list(codes_shape)}); export it again")
        self.input_size = int(shape[1])
        self.input_dtype = detail["dtype"]
        self.num_bits = int(codes_shape[-1])
        # The index seam (bgan_tf.inference.encoders.Encoder) keys an index by model_id:
        # an int8 file's codes differ from its Keras model's in some bits, so an
        # index built with one must refuse queries encoded by the other.
        self.model_id = f"tflite:{digest[:16]}"
        self.metadata = {"model_id": self.model_id, "tflite": os.path.abspath(path),
                         "input_size": self.input_size, "num_bits": self.num_bits}
        # One image through the model now: a damaged graph that fails only when its
        # tensors are allocated or its nodes prepared is refused at load, not at the
        # first query.
        with quiet_tflite_notices():  # the delegate may announce itself on the first run
            self.run(np.zeros((1, self.input_size, self.input_size, 3), np.uint8))

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[None]
        x = resize_bilinear(x, self.input_size).astype(self.input_dtype)
        if len(x) == 0:
            nbytes = (self.num_bits + 7) // 8
            return {"codes": np.zeros((0, self.num_bits), np.float32), "packed": np.zeros((0, nbytes), np.uint8)}
        try:
            out = self.runner(images=x)
        except (ValueError, RuntimeError, IndexError) as e:  # a damaged file failing to prepare or run
            raise _runtime_error(self.path, e) from None
        if out["codes"].shape != (len(x), self.num_bits):
            raise UserError(f"{self.path} returned codes of shape {list(out['codes'].shape)} for {len(x)} "
                            f"images of {self.num_bits} bits; {_REEXPORT}")
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
