"""Train BGAN: ``python -m bgan_tf.train [--config digits] [--flags ...]``.

Thin absl binary: flags (defined in flags/) -> BGANConfig -> bgan_tf.training.trainer.
With labels available it holds out class-balanced queries, trains on the
rest and closes with mAP of BGAN next to ITQ on the same features.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags, logging  # noqa: E402

from bgan_tf.errors import cli_run  # noqa: E402
from flags import common, train_flags  # noqa: E402
from flags.train_flags import config_from_flags, define_train_flags  # noqa: E402

FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        from bgan_tf.errors import UserError

        raise UserError(f"unexpected arguments {argv[1:]}; every option is a --flag (see --helpshort)")
    from bgan_tf.atomic import write_json
    from bgan_tf.data.sources import load_training_data
    from bgan_tf.evaluation.protocols import holdout_split
    from bgan_tf.evaluation.quick import quick_evaluate
    from bgan_tf.training.trainer import check_run_dir, train

    from bgan_tf.runtime import quiet_library_logs

    config = config_from_flags()
    logging.set_verbosity(logging.INFO)
    quiet_library_logs(verbose=FLAGS.verbose)
    # The strategy comes before any other TensorFlow op (loading a tfds dataset
    # runs some): MultiWorkerMirrored must configure collectives first.
    from bgan_tf.training.distribute import is_chief, make_strategy

    strategy = make_strategy(config.strategy, config.num_cpu_devices)
    if is_chief(strategy):
        check_run_dir(config)  # a bad --output_dir fails before the data is loaded
    data = load_training_data(config)
    query = None
    if FLAGS.holdout_per_class and data.labels is not None and data.labels.ndim == 1:
        split = holdout_split(data.labels, FLAGS.holdout_per_class, config.seed)
        query, data = data.subset(split.query), data.subset(split.database)
    result = train(config, data, verbose=2 if FLAGS.verbose else 1)  # see bgan_tf/training/progress.py
    print(f"model saved to {result.model_dir}")
    if FLAGS.evaluate and query is not None:
        ev = quick_evaluate(result.model_dir, config, query, data)
        print(f"retrieval on {ev.num_queries} held-out queries vs {ev.num_database} database images:")
        print(ev.table())
        write_json(os.path.join(config.output_dir, "eval.json"),
                   {"methods": ev.rows, "num_queries": ev.num_queries, "num_database": ev.num_database,
                    "train_seconds": result.seconds})


def run() -> None:
    define_train_flags()
    cli_run(main, train_flags, common)


if __name__ == "__main__":
    run()
