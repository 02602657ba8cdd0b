"""Evaluate a trained model: ``python -m bgan_tf.evaluate --model runs/digits/model``.

Thin absl binary: flags (flags/eval_flags.py) -> data + seeded protocol split ->
bgan_tf.evaluation.evaluator.evaluate_model -> a table on stdout and a report folder
(metrics.json, PR and P@K plots, retrieval examples, reconstructions, index.md).
With no --dataset/--seed it uses the model's training dataset and seed, so the
default holdout protocol scores exactly the queries the train binary held out.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags, logging  # noqa: E402

from bgan_tf.errors import UserError, cli_run  # noqa: E402
from flags import common, eval_flags  # noqa: E402
from flags.eval_flags import define_eval_flags  # noqa: E402

FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}; every option is a --flag (see --helpshort)")
    if FLAGS.holdout_per_class < 1:  # 0 is train's "hold none out"
        raise UserError(f"--holdout_per_class must be >= 1, got {FLAGS.holdout_per_class}")
    from bgan_tf.evaluation import evaluator as ev_lib
    from bgan_tf.evaluation import inputs as eval_inputs
    from bgan_tf.inference.keras_model import load_encoder
    from bgan_tf.inference.model_folder import read_model_files
    from bgan_tf.evaluation.report import check_report_dir
    from bgan_tf.data.sources import dataset_paths

    if not FLAGS.model:
        raise UserError("pass --model, the 'model' folder training wrote (e.g. runs/digits/model)")
    if not os.path.isdir(FLAGS.model):
        raise UserError(f"model folder not found: {FLAGS.model}")
    config, _ = read_model_files(FLAGS.model)
    # Check every option before any heavy work.
    protocol = FLAGS.protocol
    if protocol not in eval_inputs.PROTOCOL_NAMES:
        raise UserError(f"unknown --protocol {protocol!r}; choose one of {', '.join(eval_inputs.PROTOCOL_NAMES)}")
    map_at = eval_inputs.parse_map_at(FLAGS.map_at, protocol)
    baselines = eval_inputs.parse_baselines(FLAGS.baselines)
    if FLAGS.num_examples < 0:
        raise UserError(f"--num_examples must be >= 0, got {FLAGS.num_examples}")
    seed = config.seed if FLAGS.seed is None else FLAGS.seed
    dataset = FLAGS.dataset or config.dataset
    same_data = dataset == config.dataset
    max_images = FLAGS.max_images if FLAGS["max_images"].present or not same_data else config.max_images
    report_dir = FLAGS.report_dir or os.path.join(os.path.dirname(os.path.abspath(FLAGS.model)), f"eval_{protocol}")
    # Before the slow part: a report folder that would overwrite someone's files or the inputs.
    check_report_dir(report_dir, FLAGS.model, *dataset_paths(dataset))
    # A broken weights file fails here, in one line, before minutes of data loading.
    encoder = load_encoder(FLAGS.model)

    logging.set_verbosity(logging.WARNING)
    data = eval_inputs.load_eval_data(dataset, tfds_split=FLAGS.tfds_split or config.tfds_split,
                                      data_dir=FLAGS.data_dir or config.data_dir, max_images=max_images)
    split = eval_inputs.build_split(protocol, data.labels, seed, holdout_per_class=FLAGS.holdout_per_class)
    result = ev_lib.evaluate_model(FLAGS.model, data, split, baselines=baselines, map_at=map_at,
                                   num_examples=FLAGS.num_examples, encoder=encoder)
    info = result["info"]
    sizes = info["sizes"]
    print(f"{info['protocol']} (seed {info['seed']}): {sizes['query']} queries, {sizes['database']} database, "
          f"{sizes['train']} training items; model {info['model_id']} ({info['num_bits']} bits)")
    if info["training_data_matches"] is False:
        print("warning: the split's training set is not the model's training data; queries may have been seen "
              "in training (use the training --seed/--dataset/--max_images)")
    print(ev_lib.format_table(result["results"]))
    quality = result["reconstruction_quality"]
    print(f"reconstructions not measured: {quality['skipped']}" if "skipped" in quality else
          f"G(code) vs {quality['num_images']} query images: PSNR {quality['psnr_db']:.2f} dB, "
          f"SSIM {quality['ssim']:.4f}")
    out = ev_lib.write_evaluation_report(report_dir, result)
    print(f"report written to {out} (index.md, metrics.json)")


def run() -> None:
    define_eval_flags()
    cli_run(main, eval_flags, common)


if __name__ == "__main__":
    run()
