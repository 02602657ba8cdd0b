"""Callbacks that drive a BGAN run: beta continuation, checkpoints with
resume, and reconstruction samples (PNG files and TensorBoard images)."""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging


def beta_for_epoch(values: tuple[float, ...], every: int, epoch: int) -> float:
    """Continuation schedule: values[i] from epoch i * every on, last value after."""
    return float(values[min(epoch // max(every, 1), len(values) - 1)])


class BetaSchedule(keras.callbacks.Callback):
    """Sets the sign layer's slope at the start of every epoch."""

    def __init__(self, beta_variable, values: tuple[float, ...], every: int):
        super().__init__()
        self.beta_variable = beta_variable
        self.values = tuple(values)
        self.every = every

    def on_epoch_begin(self, epoch, logs=None):
        self.beta_variable.assign(beta_for_epoch(self.values, self.every, epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["beta"] = float(np.asarray(self.beta_variable))


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves networks, all three optimizers and the epoch after every epoch.

    tf.train.CheckpointManager writes the new checkpoint's files first and
    only then rewrites its small state file (atomically), so a kill during a
    save leaves the previous checkpoint listed and loadable. ``restore()``
    returns the epoch to resume from (0 for a fresh run).
    """

    def __init__(self, directory: str, max_to_keep: int = 2, write: bool = True, **trackables):
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(epoch=self.epoch, **trackables)
        self.write = write
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=max_to_keep)

    def restore(self) -> int:
        latest = self.manager.latest_checkpoint
        if latest is None:
            return 0
        self.checkpoint.restore(latest).expect_partial()
        logging.info("resumed from %s (epoch %d)", latest, int(self.epoch.numpy()))
        return int(self.epoch.numpy())

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.assign(epoch + 1)
        if self.write:
            self.manager.save(checkpoint_number=epoch + 1)


def image_grid(rows: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """Stack rows of images [n, H, W, 3] (floats in [0,1]) into one uint8 grid."""
    n = max(r.shape[0] for r in rows)
    h, w = rows[0].shape[1:3]
    grid = np.ones((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), np.float32)
    for ri, row in enumerate(rows):
        for ci, img in enumerate(row):
            y, x = pad + ri * (h + pad), pad + ci * (w + pad)
            grid[y:y + h, x:x + w] = img
    return (np.clip(grid, 0, 1) * 255).round().astype(np.uint8)


class ReconstructionSamples(keras.callbacks.Callback):
    """Every ``every`` epochs: originals (top row) vs G(E(x)) (bottom row), saved
    as samples/epoch_NNN.png and as a TensorBoard image."""

    def __init__(self, encode_fn, generator, images: np.ndarray, encoder_inputs: np.ndarray, out_dir: str,
                 log_dir: str | None, every: int = 1):
        super().__init__()
        self.encode_fn = encode_fn
        self.generator = generator
        self.images = images
        self.encoder_inputs = encoder_inputs
        self.out_dir = out_dir
        self.every = max(1, every)
        self.writer = tf.summary.create_file_writer(log_dir) if log_dir else None

    def reconstruct(self) -> np.ndarray:
        z = self.encode_fn(tf.constant(self.encoder_inputs))  # exact +-1 codes
        return np.asarray(self.generator(z, training=False))

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        grid = image_grid([self.images, self.reconstruct()])
        os.makedirs(self.out_dir, exist_ok=True)
        from PIL import Image

        path = os.path.join(self.out_dir, f"epoch_{epoch + 1:03d}.png")
        tmp = path + ".tmp"
        Image.fromarray(grid).save(tmp, format="PNG")
        os.replace(tmp, path)
        if self.writer is not None:
            with self.writer.as_default():
                tf.summary.image("reconstructions", grid[None], step=epoch + 1)
            self.writer.flush()
