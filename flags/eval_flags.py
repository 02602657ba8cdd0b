"""Flags of ``python -m bgan_tf.evaluate`` (retrieval evaluation of a trained model).

``define_eval_flags()`` is called by the binary before parsing. The flags evaluate
shares with train (``--dataset``, ``--tfds_split``, ``--data_dir``, ``--max_images``,
``--seed``, ``--holdout_per_class``) and ``--model`` are defined in flags/common.py;
not given, the binary takes the model's own value. Protocol and baseline names come
from bgan_tf.evaluation.evaluator, which checks them. Numeric flags are bounded at
parse time.
"""

from __future__ import annotations

from absl import flags

from bgan_tf.evaluation.evaluator import MAX_EXAMPLES
from bgan_tf.evaluation.inputs import BASELINE_CHOICES, DEFAULT_MAP_AT, PROTOCOL_NAMES
from flags import common

FLAGS = flags.FLAGS


def define_eval_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Define every evaluation flag (a second call is a no-op)."""
    fv = flag_values
    if "protocol" in fv:
        return
    common.define_shared("model", "dataset", "tfds_split", "data_dir", "max_images", "holdout_per_class", "seed",
                         flag_values=fv)
    *others, last = (p for p in PROTOCOL_NAMES if p != "holdout")
    flags.DEFINE_string("protocol", "holdout",
                        "Query/database/training split: holdout (--holdout_per_class class-balanced queries, the "
                        "rest is the database and the training set; what python -m bgan_tf.train holds out, the "
                        f"default for digits), {', '.join(others)} or {last}.", flag_values=fv)
    per_protocol = ", ".join(f"{p} {','.join(map(str, k))}" for p, k in DEFAULT_MAP_AT.items())
    flags.DEFINE_list("map_at", None,
                      f"K values of mAP@K (default: the protocol's: {per_protocol}). mAP@all is always reported.",
                      flag_values=fv)
    flags.DEFINE_list("baselines", list(BASELINE_CHOICES),
                      "Baselines next to the model, fitted on the protocol's training items with the features the "
                      f"model's neighbourhood graph used: any of {', '.join(BASELINE_CHOICES)} (empty: none).",
                      flag_values=fv)
    flags.DEFINE_string("report_dir", None,
                        "Report folder (metrics.json, PNGs, index.md); a new or empty folder, or an earlier report, "
                        "which is replaced atomically (any other folder is refused). Default: "
                        "<model folder>/../eval_<protocol>.", flag_values=fv)
    flags.DEFINE_integer("num_examples", 8, "Queries shown in the retrieval example grid (0: no grid).",
                         lower_bound=0, upper_bound=MAX_EXAMPLES, flag_values=fv)
