"""The training run folder: what makes a folder ours, what a rerun may change, temps.

A folder is a run folder of ours when it holds the ``config.json`` training writes before
its first checkpoint (or, for runs of older versions, a TF checkpoint state file under
``checkpoints/``); any other non-empty folder is refused untouched (`check_run_dir`).
Resuming needs the same network shapes (`ARCHITECTURE_FIELDS`) and the same training data
(`DATA_FIELDS`); other settings, e.g. more ``--epochs``, may change.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from bgan_tf import atomic
from bgan_tf.config import REMOVED_FIELDS, BGANConfig
from bgan_tf.data.sources import dataset_paths
from bgan_tf.errors import UserError
from bgan_tf.inference import model_folder

MODEL_SUBDIR = "model"
RUN_WHAT = "training run folder"
# Knobs that shape the networks or the optimizer state: a checkpoint written with other
# values cannot be restored (or would restore into different networks).
ARCHITECTURE_FIELDS = ("num_bits", "image_size", "backbone", "backbone_input_size", "freeze_backbone",
                       "trainable_from", "top_bn",
                       "hash_hidden", "hash_norm", "use_gan", "gen_channels", "disc_channels",
                       "disc_feature_dim", "mixed_precision", "disc_spectral_norm")
# Knobs that choose the training images: checkpoints of one set resumed on another would
# silently continue into a different model (issue 27 case 14).
DATA_FIELDS = ("dataset", "tfds_split", "max_images")


def _stored_config(run_dir: Path) -> dict[str, Any] | None:
    """The run's config.json if it is one of ours (a BGANConfig dump), else None."""
    d = model_folder.read_json_or_none(run_dir / "config.json")
    return d if isinstance(d, dict) and {"num_bits", "backbone", "gen_channels", "output_dir"} <= d.keys() else None


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """A run folder of ours: its config.json, or (runs killed before this version wrote
    config.json first) the checkpoint state file tf.train.CheckpointManager keeps."""
    p = Path(path)
    return _stored_config(p) is not None or (p / "checkpoints" / "checkpoint").is_file() or \
        model_folder.is_model_dir(p / MODEL_SUBDIR)


def _same(a: Any, b: Any) -> bool:
    # config.json holds lists where BGANConfig holds tuples.
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def check_run_dir(config: BGANConfig) -> Path:
    """Refuse, before any slow work and with nothing touched, an output_dir training
    cannot use: a file, an unwritable path, a non-empty folder that is not a run folder
    of ours, one that overlaps the dataset, or a run trained with other network shapes or data."""
    out = atomic.claim_output(config.output_dir, RUN_WHAT, is_run_dir)
    atomic.check_disjoint(out, *dataset_paths(config.dataset), what="--output_dir")
    atomic.claim_output(out / MODEL_SUBDIR, model_folder.MODEL_WHAT, model_folder.is_model_dir)
    stored = _stored_config(out)
    if stored is not None:
        _check_same_data(config, stored)
        diffs = [name for name in ARCHITECTURE_FIELDS
                 if name in stored and not _same(stored[name], getattr(config, name))]
        _check_no_removed_knobs(config, stored)
        if diffs:
            def show(v: Any) -> str:
                return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

            was = ", ".join(f"--{n} {show(stored.get(n, 0))} (now {show(getattr(config, n))})" for n in diffs)
            raise UserError(f"{config.output_dir} holds a run trained with {was}; its checkpoints cannot "
                            "resume with other network or optimizer settings: choose a new --output_dir, or rerun "
                            "with the run's settings (nothing was changed)")
    return out


def _check_no_removed_knobs(config: BGANConfig, stored: dict[str, Any]) -> None:
    """Refuse a run folder trained with a knob issue 28 removed, set to a value that changed
    training: resuming it without that knob would silently continue into another model."""
    used = [f"--{name} {stored[name]}" for name, off in REMOVED_FIELDS.items()
            if name in stored and not _same(stored[name], off)]
    if used:
        raise UserError(f"{config.output_dir} holds a run trained with {', '.join(used)}, which this version no "
                        "longer has (issue 28): choose a new --output_dir, or resume it with the version that "
                        "trained it")


def _check_same_data(config: BGANConfig, stored: dict[str, Any]) -> None:
    diffs = [n for n in DATA_FIELDS if n in stored and not _same(stored[n], getattr(config, n))]
    if diffs:
        was = ", ".join(f"--{n} {stored[n]} (now {getattr(config, n)})" for n in diffs)
        raise UserError(f"{config.output_dir} holds a run trained on {was}; resuming it on other data would "
                        "continue into a different model: choose a new --output_dir, or rerun with the run's "
                        "data (nothing was changed)")


def clean_stale_temps(out_dir: str) -> None:
    """Remove the model-folder temps killed runs left, even when this run then finds itself
    finished and writes no model: staged_dir's ``.model.tmp-*`` (under the model's lock, so
    no live writer owns them) and older versions' ``.model_tmp_*`` and ``model.old``."""
    model_dir = os.path.join(out_dir, MODEL_SUBDIR)
    if not os.path.isdir(out_dir):
        return
    with atomic.output_lock(model_dir, model_folder.MODEL_WHAT):
        atomic.recover_dir(model_dir, model_folder.is_model_dir)
        atomic.clean_stale(model_dir)
    for p in Path(out_dir).glob(".model_tmp_*"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
    old = Path(out_dir) / (MODEL_SUBDIR + ".old")
    if old.is_dir() and not old.is_symlink() and model_folder.is_model_dir(old):
        shutil.rmtree(old, ignore_errors=True)


