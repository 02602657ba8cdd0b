"""Flags of ``python -m bgan_tf.evaluate`` (retrieval evaluation of a trained model).

Import ``define_eval_flags`` from here directly. Flags another flag module may
also define (``--model``, ``--dataset``, ``--seed``, ``--holdout_per_class``,
``--max_images``) are defined once per process, so binaries can share a process
in tests. Numeric flags are bounded at parse time (when the train flags defined
``--seed``/``--max_images``/``--holdout_per_class`` first, theirs apply).
"""

from __future__ import annotations

from absl import flags

from bgan_tf.evaluation.evaluator import MAX_EXAMPLES

FLAGS = flags.FLAGS

PROTOCOLS = ("holdout", "cifar10_pbgan", "cifar10_10k_50k", "nuswide_21", "mirflickr25k")
BASELINES = ("LSH", "PCAH", "ITQ", "float_cosine")


def _once(define, name: str, *args, **kwargs) -> None:
    if name not in FLAGS:
        define(name, *args, **kwargs)


def define_eval_flags() -> None:
    """Define every evaluation flag (safe to call more than once)."""
    _once(flags.DEFINE_string, "model", None, "Trained model folder (the 'model' folder training wrote).")
    _once(flags.DEFINE_string, "dataset", None,
          "Labelled images to evaluate on: digits, tfds:NAME, folder:PATH or npz:PATH; a comma-separated list "
          "is pooled in order (e.g. folder:cifar10/train,folder:cifar10/test). Default: the model's training "
          "dataset (with its --max_images).")
    _once(flags.DEFINE_string, "tfds_split", None, "TFDS split for tfds: datasets (default: the model's).")
    _once(flags.DEFINE_string, "data_dir", None, "TFDS data_dir (default: the model's).")
    _once(flags.DEFINE_integer, "max_images", None,
          "Use the first N images of the pooled data (default: the model's value when --dataset is its "
          "training dataset, else all). Must match training to reproduce a holdout split.",
          lower_bound=1, upper_bound=100_000_000)
    _once(flags.DEFINE_string, "protocol", "holdout",
          "Query/database/training split: holdout (--holdout_per_class class-balanced queries, the rest is the "
          "database and the training set; what python -m bgan_tf.train holds out, the default for digits), "
          "cifar10_pbgan, cifar10_10k_50k, nuswide_21 or mirflickr25k.")
    _once(flags.DEFINE_integer, "holdout_per_class", 20,
          "holdout protocol: queries per class (train's --holdout_per_class, default 20).",
          lower_bound=1, upper_bound=1_000_000)
    _once(flags.DEFINE_integer, "seed", None,
          "Split seed; must equal the training seed to reproduce the training split (default: the model's seed).",
          lower_bound=0, upper_bound=2**31 - 1)
    _once(flags.DEFINE_list, "map_at", None,
          "K values of mAP@K (default: the protocol's: holdout 100, cifar10_pbgan 1000, cifar10_10k_50k 1000, "
          "nuswide_21 5000, mirflickr25k 5000). mAP@all is always reported.")
    _once(flags.DEFINE_list, "baselines", list(BASELINES),
          "Baselines next to the model, fitted on the protocol's training items with the features the model's "
          "neighbourhood graph used: any of LSH, PCAH, ITQ, float_cosine (empty: none).")
    _once(flags.DEFINE_string, "report_dir", None,
          "Report folder (metrics.json, PNGs, index.md); a new or empty folder, or an earlier report, which "
          "is replaced atomically (any other folder is refused). Default: <model folder>/../eval_<protocol>.")
    _once(flags.DEFINE_integer, "num_examples", 8, "Queries shown in the retrieval example grid (0: no grid).",
          lower_bound=0, upper_bound=MAX_EXAMPLES)
