"""Convert a trained encoder to TFLite (float, dynamic-range int8, full int8).

    python -m export.tflite --model runs/digits/model --out exports/tflite \
        [--variants float,dynamic_int8,int8] [--representative_images DIR_or_npz]

Writes OUT/encoder_<variant>.tflite and OUT/bgan_tflite.json (model id, variants,
sha256 of each file) as one set: it replaces a previous export in OUT only after
the checks passed, and a killed run leaves the old set or the new one, never a
mix. OUT must be new, empty or an earlier TFLite export. Prints each variant's
size and bit agreement with the Keras encoder. TFLite models take the backbone
input size only; bgan_tf.inference.tflite.TFLiteEncoder resizes on the client side.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import logging  # noqa: E402

from bgan_tf.errors import cli_run  # noqa: E402
from export import common  # noqa: E402
from flags import common as common_flags  # noqa: E402
from flags import export_flags  # noqa: E402
from flags.export_flags import define_export_flags  # noqa: E402


def main(argv: list[str]) -> None:
    common.no_positional(argv)
    logging.set_verbosity(logging.WARNING)
    out = common.require("out")
    # Everything that can be refused is checked before anything is written.
    common.check_outputs(tflite_out=out)
    loaded = common.load_model()
    common.run_tflite(loaded, out, common.check_images(loaded), common.representative_images(loaded))


def run() -> None:
    define_export_flags()
    cli_run(main, export_flags, common_flags)


if __name__ == "__main__":
    run()
