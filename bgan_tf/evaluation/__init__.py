"""bgan_tf.evaluation.evaluator."""
