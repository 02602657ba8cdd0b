"""bgan_tf.data.images."""
