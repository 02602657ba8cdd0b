"""Export a trained encoder as a TF Serving SavedModel version and check it.

    python -m export.saved_model --model runs/digits/model --export_base exports/bgan [--version N]

The version is written into a hidden folder of the base; unless --nocheck it is
reloaded with tf.saved_model.load, its codes compared with the Keras encoder and
its signatures listed with saved_model_cli, and only when all of that passes is
it renamed to BASE/VERSION (a failed check leaves no version). The base must be
new, empty or hold only integer version folders. See docs/serving.md.
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
    # Everything that can be refused is checked before anything is written.
    common.check_outputs(export_base=common.require("export_base"))
    loaded = common.load_model()
    common.run_saved_model(loaded, common.check_images(loaded))


def run() -> None:
    define_export_flags()
    cli_run(main, export_flags, common_flags)


if __name__ == "__main__":
    run()
