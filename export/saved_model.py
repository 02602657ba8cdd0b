"""Export a trained encoder as a TF Serving SavedModel version and check it.

    python -m export.saved_model --model runs/digits/model --export_base exports/bgan [--version N]

Prints the version folder, then (unless --nocheck) reloads it with
tf.saved_model.load, compares its codes with the Keras encoder and lists the
signatures with saved_model_cli. See docs/serving.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import logging  # noqa: E402

from bgan_tf.errors import cli_run  # noqa: E402
from export import common  # noqa: E402
from flags import export_flags  # noqa: E402
from flags.export_flags import define_export_flags  # noqa: E402

define_export_flags()


def main(argv: list[str]) -> None:
    common.no_positional(argv)
    logging.set_verbosity(logging.WARNING)
    common.require("export_base")
    common.run_saved_model(common.load_model())


def run() -> None:
    cli_run(main, export_flags)


if __name__ == "__main__":
    run()
