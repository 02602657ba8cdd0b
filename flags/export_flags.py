"""Flags of the export binaries: ``python -m export.saved_model``, ``export.tflite``, ``export.all``.

``define_export_flags()`` is called by the binary before parsing; ``--model`` and
``--max_pixels`` are shared (flags/common.py); ``export_max_pixels()`` resolves the latter. Every value is checked at parse time (bounds, variant
names from bgan_tf.serving.saved_model), so a bad one is one ``error:`` line
before the model is loaded.
"""

from __future__ import annotations

from absl import flags

from bgan_tf.errors import UserError
from bgan_tf.search.limits import DEFAULT_MAX_PIXELS as SERVICE_MAX_PIXELS
from bgan_tf.serving.saved_model import MAX_PIXELS_LIMIT, MAX_VERSION
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


def _export_pixel_bound(value: int | None) -> bool:
    if value is not None and value > MAX_PIXELS_LIMIT[1]:
        raise flags.ValidationError(f"--max_pixels must be at most {MAX_PIXELS_LIMIT[1]:,}, got {value:,}")
    return True


def export_max_pixels(flag_values: flags.FlagValues = FLAGS) -> int:
    """The SavedModel's encode_bytes pixel limit: --max_pixels, by default the search
    service's budget (bgan_tf.search.limits.DEFAULT_MAX_PIXELS, 16 megapixels), because a
    TF Serving deployment is the same thing: a server many clients share, whose every
    decoded upload costs up to 3 bytes a pixel while it is resized."""
    value = flag_values["max_pixels"].value
    return SERVICE_MAX_PIXELS if value is None else value


def define_export_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Define every export flag (a second call is a no-op)."""
    fv = flag_values
    if "export_base" in fv:
        return
    common.define_shared("model", "max_pixels", flag_values=fv)
    flags.register_validator("max_pixels", _export_pixel_bound, flag_values=fv)
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
