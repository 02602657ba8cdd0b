"""What the export binaries share: argv check, input checks, image sets, the two steps.

Every binary checks all of its inputs (flags, output paths, the model, the check and
calibration images) before it writes anything, then writes each output staged: the
SavedModel version and the TFLite set appear only after their checks pass.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np
from absl import flags

from bgan_tf.errors import UserError
from flags.export_flags import export_max_pixels

FLAGS = flags.FLAGS


def no_positional(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}; every option is a --flag (see --helpshort)")


def require(name: str) -> str:
    value = FLAGS[name].value
    if not value:
        raise UserError(f"--{name} is required")
    return value


def _image_inputs() -> list[str]:
    return [p for p in (FLAGS.check_images, FLAGS.representative_images) if p]


def check_outputs(export_base: str | None = None, tflite_out: str | None = None) -> None:
    """Refuse bad output paths before the model is loaded (cheap, and nothing is written).

    Each output must be new, empty or already ours, writable, and apart from the model
    folder, the image inputs and the other output.
    """
    from bgan_tf import atomic
    from bgan_tf.serving import saved_model, tflite

    model = require("model")
    if export_base is not None:
        saved_model.check_export_base(export_base, FLAGS.version, [model, *_image_inputs()])
    if tflite_out is not None:
        tflite.check_tflite_out(tflite_out, [model, *_image_inputs()])
    if export_base is not None and tflite_out is not None:
        atomic.check_disjoint(tflite_out, export_base, what="TFLite output folder")


def load_model():
    from bgan_tf.inference.keras_model import load_encoder

    return load_encoder(require("model"))


def check_images(loaded) -> np.ndarray | None:
    """The images the checks compare on (None with --nocheck)."""
    from bgan_tf.serving import checks, tflite

    if not FLAGS.check:
        return None
    size = loaded.config.backbone_input_size
    if FLAGS.check_images:
        return tflite.representative_images(FLAGS.check_images, size, FLAGS.check_count, seed=1,
                                            what="--check_images")
    return checks.check_images(loaded, FLAGS.check_count)


def representative_images(loaded) -> np.ndarray | None:
    """int8 calibration images when --variants asks for int8 (loaded before anything is written)."""
    from bgan_tf.serving import tflite

    if "int8" not in tflite.check_variants(FLAGS.variants):
        return None
    source = FLAGS.representative_images or loaded.config
    return tflite.representative_images(source, loaded.config.backbone_input_size, FLAGS.representative_count)


def run_saved_model(loaded, images: np.ndarray | None, then: Callable[[], object] | None = None) -> str:
    """Export to --export_base: stage the version, run the checks on it, then ``then()``
    (export.all's TFLite step), and only then rename it into place and print its path."""
    from bgan_tf.serving import checks, saved_model

    with saved_model.staged_saved_model(loaded, require("export_base"), FLAGS.version,
                                        inputs=_image_inputs(), max_pixels=export_max_pixels()) as staged:
        if images is not None:
            result = checks.check_saved_model(staged.path, loaded, images)
            print(result.summary())
            if not result.ok:
                raise UserError(f"the SavedModel does not match the Keras encoder ({result.summary()}); "
                                "no version was written")
            out = checks.saved_model_cli_show(staged.path)
            print(f"saved_model_cli show --all lists: {', '.join(s for s in saved_model.SIGNATURES if s in out)}")
        if then is not None:
            then()
    print(f"SavedModel version written: {staged.final}")
    return staged.final


def run_tflite(loaded, out_dir: str, images: np.ndarray | None, reps: np.ndarray | None) -> dict[str, str]:
    """Convert to each --variants as one set, check it before it replaces --out, print paths,
    sizes and bit agreement."""
    from bgan_tf.serving import checks as serving_checks
    from bgan_tf.serving import tflite

    checks: dict[str, serving_checks.TFLiteCheck] = {}

    def check(staged_paths: dict[str, str]) -> None:
        checks.update(serving_checks.check_tflite(staged_paths, loaded, images))
        if "float" in checks and checks["float"].bit_agreement != 1.0:
            raise UserError(f"float TFLite model disagrees with Keras (bit agreement "
                            f"{checks['float'].bit_agreement:.4f}); nothing was written to {out_dir}")

    paths = tflite.convert_tflite(loaded, out_dir, FLAGS.variants, reps,
                                  check=check if images is not None else None, inputs=_image_inputs())
    for variant, path in paths.items():
        print(f"TFLite {variant}: {path}")
    if not checks:
        return paths
    checks = {v: dataclasses.replace(c, path=paths[v]) for v, c in checks.items()}
    print(f"bit agreement with the Keras encoder on {len(images)} images:")
    for c in checks.values():
        print("  " + c.summary())
    low = [c for v, c in checks.items() if v != "float" and c.bit_agreement < serving_checks.INT8_TARGET_AGREEMENT]
    if low:
        # Not an error: the files are valid models, but their codes will not
        # match an index built with the Keras encoder or the SavedModel.
        stability = serving_checks.noise_stability(loaded, images)
        names = ", ".join(f"{c.variant} {c.bit_agreement:.4f}" for c in low)
        print(f"WARNING: below {serving_checks.INT8_TARGET_AGREEMENT:.0%} bit agreement: {names}. Codes from "
              f"these files will not match an index built with the Keras encoder or the SavedModel; "
              f"build the index with the same .tflite file, or ship the float variant. A file that flips "
              f"many bits also retrieves worse with its own index (benchmarks/results/int8_retrieval.md "
              f"gives the mAP of full and dynamic int8 on CIFAR-10). This model's own codes keep "
              f"{stability:.4f} of their bits under N(0, 0.5) grey-level pixel noise, a guide to what "
              f"int8 activations can keep.")
    return paths


def default_tflite_out(export_base: str) -> str:
    """export.all's --out default: beside the base, not inside it (TF Serving's folder holds only versions)."""
    return os.path.normpath(export_base) + "_tflite"
