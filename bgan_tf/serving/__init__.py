"""bgan_tf.serving.saved_model."""
