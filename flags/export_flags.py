"""Flags of the export binaries: ``python -m export.saved_model``, ``export.tflite``, ``export.all``.

``define_export_flags()`` is called by the binary before parsing; ``--model`` is
shared (flags/common.py). Every value is checked at parse time (bounds, variant
names from bgan_tf.serving.saved_model), so a bad one is one ``error:`` line
before the model is loaded.
"""

from __future__ import annotations

from absl import flags

from bgan_tf.errors import UserError
from bgan_tf.serving.saved_model import MAX_VERSION
from bgan_tf.serving.tflite import TFLITE_VARIANTS, check_variants
from flags import common

FLAGS = flags.FLAGS

# Images the checks and the int8 calibration hold in memory at once (the SavedModel
# check runs them as one batch): 1024 at 224 px is about 0.6 GB of float32.
MAX_IMAGES = 1024


def _known_variants(values: list[str] | None) -> bool:
    try:
        check_variants(values or [])
    except UserError as e:
        raise flags.ValidationError(str(e)) from None
    return True


def define_export_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Define every export flag (a second call is a no-op)."""
    fv = flag_values
    if "export_base" in fv:
        return
    common.define_shared("model", flag_values=fv)
    flags.DEFINE_string("export_base", None,
                        "TF Serving base folder: the SavedModel goes to BASE/VERSION/ (what --model_base_path "
                        "points at).", flag_values=fv)
    flags.DEFINE_integer("version", None,
                         "Version number to write (default: one more than the largest existing version, 1 for a "
                         "new base).", lower_bound=0, upper_bound=MAX_VERSION, flag_values=fv)
    flags.DEFINE_string("out", None, "Folder for the .tflite files (encoder_<variant>.tflite).", flag_values=fv)
    flags.DEFINE_list("variants", list(TFLITE_VARIANTS), f"TFLite variants to write: {', '.join(TFLITE_VARIANTS)}.",
                      flag_values=fv)
    flags.register_validator("variants", _known_variants, flag_values=fv)
    flags.DEFINE_string("representative_images", None,
                        "int8 calibration images: a folder of images or a .npz (default: the model's training "
                        "data).", flag_values=fv)
    flags.DEFINE_integer("representative_count", 200, "How many images calibrate the int8 variant.",
                         lower_bound=1, upper_bound=MAX_IMAGES, flag_values=fv)
    flags.DEFINE_string("check_images", None,
                        "Images to compare exports with the Keras encoder on: folder or .npz (default: the model's "
                        "training data).", flag_values=fv)
    flags.DEFINE_integer("check_count", 256, "How many images the checks compare on.",
                         lower_bound=1, upper_bound=MAX_IMAGES, flag_values=fv)
    flags.DEFINE_bool("check", True, "Run the checks after exporting (reload, saved_model_cli, bit agreement).",
                      flag_values=fv)
