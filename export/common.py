"""What the export binaries share: argv check, image sets for checks, the two steps."""

from __future__ import annotations

import os

from absl import flags

from bgan_tf.errors import UserError

FLAGS = flags.FLAGS


def no_positional(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}; every option is a --flag (see --helpshort)")


def require(name: str) -> str:
    value = FLAGS[name].value
    if not value:
        raise UserError(f"--{name} is required")
    return value


def load_model():
    from bgan_tf.inference import load_encoder

    return load_encoder(require("model"))


def check_images(loaded):
    from bgan_tf import serving

    size = loaded.config.backbone_input_size
    if FLAGS.check_images:
        return serving.representative_images(FLAGS.check_images, size, FLAGS.check_count, seed=1)
    return serving.check_images(loaded, FLAGS.check_count)


def run_saved_model(loaded, images=None) -> str:
    """Export to --export_base, print the version path, run the checks."""
    from bgan_tf import serving

    path = serving.export_saved_model(loaded, require("export_base"), FLAGS.version)
    print(f"SavedModel version written: {os.path.abspath(path)}")
    if FLAGS.check:
        images = check_images(loaded) if images is None else images
        result = serving.check_saved_model(path, loaded, images)
        print(result.summary())
        out = serving.saved_model_cli_show(path)
        print(f"saved_model_cli show --all lists: {', '.join(s for s in serving.SIGNATURES if s in out)}")
        if not result.ok:
            raise UserError(f"the export at {path} does not match the Keras encoder: {result.summary()}")
    return path


def run_tflite(loaded, out_dir: str, images=None) -> dict[str, str]:
    """Convert to each --variants, print paths, sizes and bit agreement."""
    from bgan_tf import serving

    variants = [v.strip() for v in FLAGS.variants if v.strip()]
    reps = None
    if "int8" in variants:
        source = FLAGS.representative_images or loaded.config
        reps = serving.representative_images(source, loaded.config.backbone_input_size, FLAGS.representative_count)
    paths = serving.convert_tflite(loaded, out_dir, variants, reps)
    for variant, path in paths.items():
        print(f"TFLite {variant}: {os.path.abspath(path)}")
    if FLAGS.check:
        images = check_images(loaded) if images is None else images
        checks = serving.check_tflite(paths, loaded, images)
        print(f"bit agreement with the Keras encoder on {len(images)} images:")
        for c in checks.values():
            print("  " + c.summary())
        if "float" in checks and checks["float"].bit_agreement != 1.0:
            raise UserError(f"float TFLite model disagrees with Keras (bit agreement "
                            f"{checks['float'].bit_agreement:.4f}); do not deploy it")
        low = [c for v, c in checks.items() if v != "float" and c.bit_agreement < serving.INT8_TARGET_AGREEMENT]
        if low:
            # Not an error: the files are valid models, but their codes will not
            # match an index built with the Keras encoder or the SavedModel.
            stability = serving.noise_stability(loaded, images)
            names = ", ".join(f"{c.variant} {c.bit_agreement:.4f}" for c in low)
            print(f"WARNING: below {serving.INT8_TARGET_AGREEMENT:.0%} bit agreement: {names}. Codes from "
                  f"these files will not match an index built with the Keras encoder or the SavedModel; "
                  f"build the index with the same .tflite file, or ship the float variant. A file that flips "
                  f"many bits also retrieves worse with its own index (benchmarks/results/int8_retrieval.md "
                  f"gives the mAP of full and dynamic int8 on CIFAR-10). This model's own codes keep "
                  f"{stability:.4f} of their bits under N(0, 0.5) grey-level pixel noise, a guide to what "
                  f"int8 activations can keep.")
    return paths
