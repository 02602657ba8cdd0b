"""Run an exported TFLite encoder (ai-edge-litert), with no TensorFlow.

``TFLiteEncoder`` loads a ``.tflite`` file written by ``python -m export.tflite``
(``bgan_tf.serving.tflite``) and encodes uint8 images of any size: TFLite models
take a fixed input size, so ``resize_bilinear`` resizes on the client side with
the same arithmetic as the graph's ``tf.image.resize``. Search, evaluation and
benchmarks use it to encode with the very file a device runs.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from bgan_tf.errors import UserError


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
        # The index seam (bgan_tf.inference.encoders.Encoder) keys an index by model_id:
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
