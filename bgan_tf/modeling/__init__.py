"""bgan_tf.modeling."""
