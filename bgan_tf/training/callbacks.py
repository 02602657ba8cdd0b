"""Callbacks that drive a BGAN run: beta continuation, checkpoints with
resume, and reconstruction samples (PNG files and TensorBoard images)."""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from bgan_tf import atomic
from bgan_tf.training.checkpoints import restore_newest_intact, save_checkpoint


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
    """Saves networks, all three optimizers and the training position.

    The position is (``epoch``: completed epochs, ``step_in_epoch``: steps of
    the next epoch already done). A checkpoint is written after every epoch
    and, with ``save_every_steps`` N > 0, after every N-th step inside an epoch
    too; checkpoints are numbered by global step. ``restore()`` returns the
    epoch to resume from and sets ``restored_step``; ``fit_resumable`` then
    skips exactly the steps already done, so an interrupted run takes the
    same optimizer steps on the same batches as an uninterrupted one.

    Atomicity: tf.train.CheckpointManager writes the new checkpoint's files
    (``ckpt-N.index``, ``ckpt-N.data-*``) first and only then rewrites its
    small ``checkpoint`` state file (write to a temp file + rename). Restore
    reads the newest checkpoint that reads whole and finite, falling back to
    older ones (`bgan_tf.training.checkpoints`); a save is refused while a
    network holds non-finite weights, so the last finite checkpoint stays.
    """

    def __init__(self, directory: str, max_to_keep: int = 2, write: bool = True, save_every_steps: int = 0,
                 **trackables):
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        self.networks = {name: obj for name, obj in trackables.items() if isinstance(obj, keras.Model)}
        # Every network's variables also by list: layers a subclassed model keeps in
        # a Python list (the BN layers of G and D) are not reached through the model
        # object, and without this their moving statistics would not be saved.
        weights = {f"{name}_weights": list(obj.weights) for name, obj in self.networks.items()}
        self.checkpoint = tf.train.Checkpoint(epoch=self.epoch, step_in_epoch=self.step_in_epoch, **trackables,
                                              **weights)
        self.write = write
        self.directory = directory
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=max_to_keep)
        self.save_every_steps = int(save_every_steps or 0)
        self.steps_per_epoch: int | None = None
        self.restored_step = 0
        self.last_saved: str | None = None  # the newest checkpoint restored or written (all finite)
        self._epoch = 0
        self._offset = 0  # steps of the current epoch done before this fit() call

    @property
    def offset(self) -> int:
        """Steps of the current epoch done before this fit() call (a resume mid-epoch)."""
        return self._offset

    def restore(self, directory: str | None = None) -> int:
        """Restore the newest intact checkpoint of ``directory`` (default: this one's).

        A non-chief worker writes to a temp folder but resumes from the
        chief's checkpoints, so every worker restarts at the same step."""
        latest = restore_newest_intact(self.checkpoint, directory or self.directory)
        if latest is None:
            return 0
        self.last_saved = latest
        self.restored_step = int(self.step_in_epoch.numpy())
        logging.info("resumed from %s (epoch %d, step %d of it)", latest, int(self.epoch.numpy()),
                     self.restored_step)
        return int(self.epoch.numpy())

    def _save(self, epoch: int, step: int) -> None:
        self.epoch.assign(epoch)
        self.step_in_epoch.assign(step)
        if self.write:
            number = epoch * self.steps_per_epoch + step if self.steps_per_epoch else epoch
            self.last_saved = save_checkpoint(self.manager, number, self.networks, self.last_saved)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not self.save_every_steps or not self.steps_per_epoch:
            return
        done = self._offset + batch + 1
        if done % self.save_every_steps == 0 and done < self.steps_per_epoch:
            self._save(self._epoch, done)

    def on_epoch_end(self, epoch, logs=None):
        self._offset = 0
        self._save(epoch + 1, 0)


def fit_resumable(model, make_dataset, checkpoint: EpochCheckpoint, first_epoch: int, epochs: int,
                  steps_per_epoch: int, callbacks, verbose: int = 1) -> dict[str, list[float]]:
    """``model.fit`` from (first_epoch, checkpoint.restored_step) to ``epochs``.

    ``make_dataset(a, b)`` gives the batches of epochs a..b-1 (a stateless
    per-epoch order, so any start point is reproducible). A resume inside an
    epoch runs that epoch's remaining steps in a first fit() call on the
    dataset with the done steps skipped, then the remaining epochs.
    Returns the merged history (one value per epoch).
    """
    checkpoint.steps_per_epoch = steps_per_epoch
    step = checkpoint.restored_step
    if step >= steps_per_epoch:  # steps_per_epoch was lowered since the save
        first_epoch, step = first_epoch + 1, 0
    history: dict[str, list[float]] = {}

    def run(ds, start, stop, steps):
        hist = model.fit(ds, epochs=stop, initial_epoch=start, steps_per_epoch=steps, callbacks=callbacks,
                         verbose=verbose, shuffle=False)  # the pipeline orders batches itself
        for k, vals in hist.history.items():
            history.setdefault(k, []).extend(float(np.ravel(v)[0]) for v in vals)

    if step and first_epoch < epochs:
        checkpoint._offset = step
        run(make_dataset(first_epoch, first_epoch + 1).skip(step), first_epoch, first_epoch + 1,
            steps_per_epoch - step)
        first_epoch += 1
    if first_epoch < epochs:
        checkpoint._offset = 0
        run(make_dataset(first_epoch, epochs), first_epoch, epochs, steps_per_epoch)
    return history


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
        from PIL import Image

        path = os.path.join(self.out_dir, f"epoch_{epoch + 1:03d}.png")
        with atomic.writing(path) as f:  # a viewer never sees half a PNG
            Image.fromarray(grid).save(f, format="PNG")
        if self.writer is not None:
            with self.writer.as_default():
                tf.summary.image("reconstructions", grid[None], step=epoch + 1)
            self.writer.flush()
