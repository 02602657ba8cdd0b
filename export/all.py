"""SavedModel and TFLite export in one command, with all checks.

    python -m export.all --model runs/digits/model --export_base exports/bgan \
        [--out exports/bgan_tflite] [--variants float,dynamic_int8,int8]

--out defaults to EXPORT_BASE_tflite (beside the base, not inside it, so
TF Serving's folder holds only versions).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags, logging  # noqa: E402

from bgan_tf.errors import cli_run  # noqa: E402
from export import common  # noqa: E402
from flags import common as common_flags  # noqa: E402
from flags import export_flags  # noqa: E402
from flags.export_flags import define_export_flags  # noqa: E402

FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    common.no_positional(argv)
    logging.set_verbosity(logging.WARNING)
    base = common.require("export_base")
    out = FLAGS.out or common.default_tflite_out(base)
    # Everything that can be refused is checked before anything is written.
    common.check_outputs(export_base=base, tflite_out=out)
    loaded = common.load_model()
    images = common.check_images(loaded)
    reps = common.representative_images(loaded)
    # The version is renamed into place only after the TFLite set passed its checks too.
    common.run_saved_model(loaded, images, then=lambda: common.run_tflite(loaded, out, images, reps))


def run() -> None:
    define_export_flags()
    cli_run(main, export_flags, common_flags)


if __name__ == "__main__":
    run()
