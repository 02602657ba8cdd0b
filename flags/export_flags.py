"""Flags of the export binaries: ``python -m export.saved_model``, ``export.tflite``, ``export.all``.

Import ``define_export_flags`` from here directly. Flags another flag module
may also define (``--model``) are defined once per process.
"""

from __future__ import annotations

from absl import flags

FLAGS = flags.FLAGS

VARIANTS = ("float", "dynamic_int8", "int8")


def _once(define, name: str, *args, **kwargs) -> None:
    if name not in FLAGS:
        define(name, *args, **kwargs)


def define_export_flags() -> None:
    """Define every export flag (safe to call more than once)."""
    _once(flags.DEFINE_string, "model", None, "Trained model folder (the 'model' folder training wrote).")
    _once(flags.DEFINE_string, "export_base", None,
          "TF Serving base folder: the SavedModel goes to BASE/VERSION/ (what --model_base_path points at).")
    _once(flags.DEFINE_integer, "version", None,
          "Version number to write (default: one more than the largest existing version, 1 for a new base).")
    _once(flags.DEFINE_string, "out", None, "Folder for the .tflite files (encoder_<variant>.tflite).")
    _once(flags.DEFINE_list, "variants", list(VARIANTS), "TFLite variants to write: float, dynamic_int8, int8.")
    _once(flags.DEFINE_string, "representative_images", None,
          "int8 calibration images: a folder of images or a .npz (default: the model's training data).")
    _once(flags.DEFINE_integer, "representative_count", 200, "How many images calibrate the int8 variant.")
    _once(flags.DEFINE_string, "check_images", None,
          "Images to compare exports with the Keras encoder on: folder or .npz (default: the model's training data).")
    _once(flags.DEFINE_integer, "check_count", 256, "How many images the checks compare on.")
    _once(flags.DEFINE_bool, "check", True, "Run the checks after exporting (reload, saved_model_cli, bit agreement).")
