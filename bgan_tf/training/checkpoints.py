"""Training checkpoints that resume only from what was written whole and finite.

Restore (`restore_newest_intact`) tries the checkpoints the ``checkpoint`` state file names,
newest first, then any other ``ckpt-N`` on disk (a garbled state file used to make training
restart at epoch 0 over the good checkpoints). Each is read whole first, every tensor, float
ones finite (`checkpoint_damage`): a damaged one is skipped with a log line naming it and the
next older one is tried; when every one is damaged, training refuses with one line rather
than start over silently. An intact checkpoint that does not fit the networks is the
configuration's fault and is reported as such by the caller.

Saving (`save_checkpoint`) refuses non-finite weights (issue 27 case 6: a diverged run's
NaN checkpoints used to rotate the good ones out) and turns a full disk into one line,
removing the ``ckpt-N_temp`` folder the failed save left.
"""

from __future__ import annotations

import glob
import os
import re
import shutil

import numpy as np
import tensorflow as tf
from absl import logging

from bgan_tf.errors import UserError, is_disk_full

_CKPT_FILE = re.compile(r"^ckpt-(\d+)\.(?:index|data-\d+-of-\d+)$")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def checkpoint_candidates(directory: str) -> list[str]:
    """Checkpoint prefixes under ``directory`` in the order to try them: the state file's,
    newest first, then the others on disk by number, highest first. The state file comes
    first because numbers are global steps: a rerun with fewer --steps_per_epoch numbers
    its later checkpoints lower."""
    if not os.path.isdir(directory):
        return []
    named: list[str] = []
    try:
        state = tf.train.get_checkpoint_state(directory)
    except Exception as e:  # noqa: BLE001 -- a garbled state file is read as naming nothing
        logging.warning("checkpoint state file %s is damaged (%s); using the checkpoints on disk",
                        os.path.join(directory, "checkpoint"), _first_line(e))
        state = None
    if state is not None:
        paths = [*state.all_model_checkpoint_paths, state.model_checkpoint_path]
        for p in reversed(paths):
            p = os.path.join(directory, os.path.basename(p))
            if p not in named:
                named.append(p)
    numbers = {int(m.group(1)) for m in map(_CKPT_FILE.match, os.listdir(directory)) if m}
    on_disk = [os.path.join(directory, f"ckpt-{n}") for n in sorted(numbers, reverse=True)]
    return named + [p for p in on_disk if p not in named]


def checkpoint_damage(prefix: str) -> str | None:
    """Why the checkpoint at ``prefix`` cannot be restored whole, or None: every tensor is
    read (a truncated or missing file fails here, not half way through a restore) and float
    tensors must be finite. Costs one read of the checkpoint."""
    if not os.path.isfile(prefix + ".index"):
        return "its .index file is missing"
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name, dtype in reader.get_variable_to_dtype_map().items():
            value = reader.get_tensor(name)
            if dtype.is_floating and not np.isfinite(value).all():
                return f"{name} holds non-finite values"
    except Exception as e:  # noqa: BLE001 -- any failure to read it whole is damage
        return _first_line(e)
    return None


def restore_newest_intact(checkpoint: tf.train.Checkpoint, directory: str) -> str | None:
    """Restore the newest intact checkpoint under ``directory`` and return its prefix; None
    when there is none at all. UserError when checkpoints exist but every one is damaged.
    Restoring an intact checkpoint into other networks raises (ValueError, AssertionError
    or tf.errors.OpError) for the caller to explain."""
    damaged = []
    for prefix in checkpoint_candidates(directory):
        why = checkpoint_damage(prefix)
        if why is not None:
            logging.warning("checkpoint %s is damaged (%s); trying an older one", prefix, why)
            damaged.append(f"{os.path.basename(prefix)}: {why}")
            continue
        checkpoint.restore(prefix).expect_partial()
        if damaged:
            logging.warning("resuming from %s, the newest intact checkpoint (skipped %s)", prefix,
                            "; ".join(damaged))
        return prefix
    if damaged:
        raise UserError(f"every checkpoint under {directory} is damaged ({'; '.join(damaged)}); to train from "
                        f"scratch delete {directory}, or choose a new --output_dir (nothing was changed)")
    return None


def non_finite_weight(networks: dict) -> str | None:
    """``network/variable`` of the first weight holding NaN or inf, or None."""
    for name, net in networks.items():
        for v in net.weights:
            a = np.asarray(v)
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                return f"{name}/{v.path}"
    return None


def save_checkpoint(manager: tf.train.CheckpointManager, number: int, networks: dict,
                    last: str | None) -> str:
    """``manager.save(number)``, refused while a network holds non-finite weights (the last
    finite checkpoint ``last`` stays); a full disk is one line and the save's temp is removed."""
    bad = non_finite_weight(networks)
    if bad is not None:
        raise UserError(f"training diverged: {bad} is not finite; the last finite checkpoint is kept at "
                        f"{last or '(none was written)'}; lower the learning rates (--lr_e, --lr_g, --lr_d) "
                        "and rerun, no model was written")
    try:
        return manager.save(checkpoint_number=number)
    except Exception as e:  # noqa: BLE001 - only a full disk becomes a line
        if not is_disk_full(e):
            raise
        prefix = os.path.join(manager.directory, f"ckpt-{number}")
        for temp in glob.glob(glob.escape(prefix) + "_temp*"):  # the failed save's own temp
            shutil.rmtree(temp, ignore_errors=True) if os.path.isdir(temp) else os.remove(temp)
        raise UserError(f"no space left on device while writing the checkpoint {prefix}; free space there and "
                        f"rerun the same command: it resumes from {last or 'the start'}") from None
