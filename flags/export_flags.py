"""Flags of the export binaries: ``python -m export.saved_model``, ``export.tflite``, ``export.all``.

Import ``define_export_flags`` from here directly. Flags another flag module
may also define (``--model``) are defined once per process. Every value is
checked at parse time (bounds, variant names), so a bad one is one ``error:``
line before the model is loaded.
"""

from __future__ import annotations

from absl import flags

from bgan_tf.errors import UserError
from bgan_tf.serving.saved_model import MAX_VERSION
from bgan_tf.serving.tflite import TFLITE_VARIANTS, check_variants

FLAGS = flags.FLAGS

VARIANTS = TFLITE_VARIANTS
# Images the checks and the int8 calibration hold in memory at once (the SavedModel
# check runs them as one batch): 1024 at 224 px is about 0.6 GB of float32.
MAX_IMAGES = 1024


def _once(define, name: str, *args, **kwargs) -> bool:
    if name in FLAGS:
        return False
    define(name, *args, **kwargs)
    return True


def _known_variants(values: list[str] | None) -> bool:
    try:
        check_variants(values or [])
    except UserError as e:
        raise flags.ValidationError(str(e)) from None
    return True


def define_export_flags() -> None:
    """Define every export flag (safe to call more than once)."""
    _once(flags.DEFINE_string, "model", None, "Trained model folder (the 'model' folder training wrote).")
    _once(flags.DEFINE_string, "export_base", None,
          "TF Serving base folder: the SavedModel goes to BASE/VERSION/ (what --model_base_path points at).")
    _once(flags.DEFINE_integer, "version", None,
          "Version number to write (default: one more than the largest existing version, 1 for a new base).",
          lower_bound=0, upper_bound=MAX_VERSION)
    _once(flags.DEFINE_string, "out", None, "Folder for the .tflite files (encoder_<variant>.tflite).")
    if _once(flags.DEFINE_list, "variants", list(VARIANTS), "TFLite variants to write: float, dynamic_int8, int8."):
        flags.register_validator("variants", _known_variants)
    _once(flags.DEFINE_string, "representative_images", None,
          "int8 calibration images: a folder of images or a .npz (default: the model's training data).")
    _once(flags.DEFINE_integer, "representative_count", 200, "How many images calibrate the int8 variant.",
          lower_bound=1, upper_bound=MAX_IMAGES)
    _once(flags.DEFINE_string, "check_images", None,
          "Images to compare exports with the Keras encoder on: folder or .npz (default: the model's training data).")
    _once(flags.DEFINE_integer, "check_count", 256, "How many images the checks compare on.",
          lower_bound=1, upper_bound=MAX_IMAGES)
    _once(flags.DEFINE_bool, "check", True, "Run the checks after exporting (reload, saved_model_cli, bit agreement).")
