"""bgan_tf.search.binary_index."""
