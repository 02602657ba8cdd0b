"""From decoded images to training input: `images_for_gan` and the tf.data pipeline `training_dataset`."""

from __future__ import annotations

import numpy as np

from bgan_tf.data.images import resize_uint8
from bgan_tf.errors import UserError


def images_for_gan(images: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 [N,H,W,3] -> float32 [N,S,S,3] in [0,1] at the GAN's resolution."""
    if images.shape[1] != image_size or images.shape[2] != image_size:
        images = np.stack([resize_uint8(im, image_size) for im in images])
    return images.astype(np.float32) / 255.0


def training_dataset(gan_images: np.ndarray, encoder_inputs: np.ndarray, batch_size: int, seed: int,
                     first_epoch: int, epochs: int):
    """tf.data pipeline yielding {"image", "x", "index"} batches.

    The order of epoch e is a stateless permutation seeded by (seed, e), so a
    run resumed at epoch e sees exactly the batches an uninterrupted run
    would. Batches drop the remainder: every step has the same shape, which
    keeps batch statistics and the neighbourhood block comparable.
    A memory-mapped ``encoder_inputs`` (cached bottom activations) is read batch by
    batch instead of being copied into one tensor.
    """
    import tensorflow as tf

    n = int(gan_images.shape[0])
    if n < batch_size:
        raise UserError(f"{n} training images is fewer than --batch_size {batch_size}; lower --batch_size")
    images_t = tf.constant(gan_images)
    if isinstance(encoder_inputs, np.memmap):
        def gather_x(idx):
            x = tf.numpy_function(lambda i: np.asarray(encoder_inputs[i]),
                                  [idx], tf.as_dtype(encoder_inputs.dtype), stateful=False)
            return tf.ensure_shape(x, (None,) + encoder_inputs.shape[1:])
    else:
        x_t = tf.constant(encoder_inputs)

        def gather_x(idx):
            return tf.gather(x_t, idx)

    def epoch_indices(e):
        perm = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64),
                                                        seed=tf.stack([tf.cast(seed, tf.int64), e]))
        return tf.data.Dataset.from_tensor_slices(perm).batch(batch_size, drop_remainder=True)

    ds = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_indices)
    ds = ds.map(lambda idx: {"image": tf.gather(images_t, idx), "x": gather_x(idx), "index": idx},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)

