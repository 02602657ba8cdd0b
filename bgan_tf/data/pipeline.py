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
                     first_epoch: int, epochs: int, flip: bool = False, mirrored_inputs: np.ndarray | None = None,
                     other_view: bool = False):
    """tf.data pipeline yielding {"image", "x", "index"} batches.

    ``flip``: each item is seen as itself or as its horizontal mirror, a seeded coin per
    (item, pass). The GAN image is mirrored in the graph; the encoder input comes from
    ``mirrored_inputs`` (the mirror's cached features or bottom activations, row for row)
    or, for images ([N, H, W, C], no mirrored_inputs), is mirrored in the graph too.
    ``other_view``: batches also hold "x_other", the encoder input of the view not shown
    (the mirror when the item is seen as itself, and the other way round).
    Batches carry each item's row number as ``index``, so the graph is looked up by it.

    The order of epoch e is a stateless permutation seeded by (seed, e), so a
    run resumed at epoch e sees exactly the batches an uninterrupted run
    would. Batches drop the remainder: every step has the same shape, which
    keeps batch statistics and the neighbourhood block comparable.
    A memory-mapped ``encoder_inputs`` (cached bottom activations) is read batch by
    batch instead of being copied into one tensor.
    """
    import tensorflow as tf

    rows = np.arange(gan_images.shape[0], dtype=np.int64)
    n = int(rows.size)
    if n < batch_size:
        raise UserError(f"{n} training images is fewer than --batch_size {batch_size}; lower --batch_size")
    if mirrored_inputs is not None and mirrored_inputs.shape != encoder_inputs.shape:
        raise ValueError(f"mirrored inputs {mirrored_inputs.shape} do not match the inputs {encoder_inputs.shape}")
    if (flip or other_view) and mirrored_inputs is None and encoder_inputs.ndim != 4:
        raise ValueError("mirroring cached features needs the mirror's features (mirrored_inputs)")
    images_t = tf.constant(gan_images)
    rows_t = tf.constant(rows)
    gather_x = _gatherer(encoder_inputs)
    gather_mirror = _gatherer(mirrored_inputs) if mirrored_inputs is not None and (flip or other_view) else None
    shape = [-1] + [1] * (len(encoder_inputs.shape) - 1)

    def views(idx, mirror):
        """(input shown, input of the other view) of the items idx, mirror[i]: shown mirrored."""
        x = gather_x(idx)
        m = gather_mirror(idx) if gather_mirror is not None else tf.image.flip_left_right(x)
        flag = tf.reshape(mirror, shape)
        return tf.where(flag, m, x), tf.where(flag, x, m)

    def epoch_indices(e):
        pass_seed = tf.stack([tf.cast(seed, tf.int64), e])
        perm = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=pass_seed)
        # The coin of each item in this pass, independent of the order.
        coin = tf.random.stateless_uniform([n], seed=pass_seed + [1, 0]) < 0.5 if flip else tf.zeros([n], tf.bool)
        return tf.data.Dataset.from_tensor_slices((tf.gather(rows_t, perm), tf.gather(coin, perm))).batch(
            batch_size, drop_remainder=True)

    def batch(idx, mirror):
        image = tf.gather(images_t, idx)
        if not (flip or other_view):
            return {"image": image, "x": gather_x(idx), "index": idx}
        image = tf.where(mirror[:, None, None, None], tf.image.flip_left_right(image), image)
        x, x_other = views(idx, mirror)
        out = {"image": image, "x": x, "index": idx}
        if other_view:
            out["x_other"] = x_other
        return out

    ds = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_indices)
    ds = ds.map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _gatherer(inputs: np.ndarray):
    """idx [B] -> inputs[idx] in the graph. A memory-mapped array (cached bottom
    activations) is read batch by batch instead of being copied into one tensor."""
    import tensorflow as tf

    if isinstance(inputs, np.memmap):
        def gather(idx):
            x = tf.numpy_function(lambda i: np.asarray(inputs[i]), [idx], tf.as_dtype(inputs.dtype), stateful=False)
            return tf.ensure_shape(x, (None,) + inputs.shape[1:])
        return gather
    t = tf.constant(inputs)
    return lambda idx: tf.gather(t, idx)

