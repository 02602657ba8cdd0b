"""Divergence is an error: a non-finite loss stops training, a collapsed code is loud.

Issue 27 case 6: a run from NaN weights logged ``loss_e: nan`` every step, rotated its good
checkpoints out with NaN ones, saved a NaN model and exited 0. `DivergenceGuard` (first in
the callback list, so nothing after it sees the bad step) checks every step's logged losses
and stops with one line; `bgan_tf.training.checkpoints.save_checkpoint` refuses non-finite
weights as a second line of defence. `warn_if_one_code` flags the quieter failure: training
that ends with every image on one code.
"""

from __future__ import annotations

import math
from typing import Callable

import keras
import numpy as np
from absl import logging

from bgan_tf.errors import UserError

# Training images whose codes `warn_if_one_code` looks at: one encoder pass over a sample.
COLLAPSE_SAMPLE = 2048


class DivergenceGuard(keras.callbacks.Callback):
    """Raises UserError at the first step whose logged losses hold NaN or inf.

    ``checkpoint`` is the run's `EpochCheckpoint`: its ``last_saved`` (the newest finite
    checkpoint, which a rerun resumes from) and in-epoch offset go into the message."""

    def __init__(self, checkpoint):
        super().__init__()
        self.checkpoint = checkpoint
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, self.checkpoint.offset + batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, None)

    def _check(self, logs, step: int | None) -> None:
        # The loss terms first: they name what diverged better than the metrics they feed.
        items = sorted((logs or {}).items(), key=lambda kv: not kv[0].startswith("loss"))
        bad = next(((k, v) for k, v in items
                    if isinstance(v, (float, np.floating)) and not math.isfinite(float(v))), None)
        if bad is None:
            return
        where = f"epoch {self._epoch + 1}" + (f" step {step}" if step is not None else "")
        last = self.checkpoint.last_saved or "(none was written yet)"
        raise UserError(f"training diverged at {where} ({bad[0]} is {bad[1]}); the last finite checkpoint is "
                        f"kept at {last}; lower the learning rates (--lr_e, --lr_g, --lr_d) and rerun; "
                        "no model was written")


def warn_if_one_code(encode: Callable, inputs: np.ndarray, batch: int = 256) -> int:
    """Log a loud warning when the codes of (a sample of) the training inputs are all one
    code: such a model retrieves nothing. Returns the number of distinct codes seen."""
    import tensorflow as tf

    sample = inputs[:COLLAPSE_SAMPLE]
    codes = np.concatenate([np.asarray(encode(tf.constant(np.asarray(sample[s:s + batch], np.float32)))) >= 0
                            for s in range(0, len(sample), batch)])
    distinct = len(np.unique(codes, axis=0))
    if distinct == 1 and len(sample) > 1:
        logging.warning("THE TRAINED MODEL MAPS ALL %d SAMPLED TRAINING IMAGES TO ONE CODE: it cannot rank "
                        "anything. Lower the learning rates or --w_quant, or check the data",
                        len(sample))
    return distinct
