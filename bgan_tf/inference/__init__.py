"""bgan_tf.inference.keras_model."""
