"""bgan_tf.training.trainer."""
