"""Issue 27, training: divergence stops the run, damaged checkpoints fall back, a full disk is one line.

- case 6: a non-finite loss stops training with one line, writes no model and keeps the
  last finite checkpoint (a NaN save is refused, so the rotation cannot drop it); a model
  whose training images all get one code is warned about;
- case 10: a truncated, 4 KB-damaged or index-less newest checkpoint, or a garbled
  ``checkpoint`` state file, resumes from the newest intact checkpoint with a log line;
  when none is intact training refuses with one line (never a silent restart). The kinds
  of damage that need no training run are tried on a small Dense net's checkpoints;
- case 11: a full disk while saving a checkpoint is one line and leaves no ``ckpt-N_temp``.

The training-level tests share one tiny run with two checkpoints (ckpt-2 mid-epoch, ckpt-4
at the epoch's end; ~10 s once) and rerun it in a private copy (2 steps at most).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from testlib import TINY_TRAIN

from bgan_tf.config import BGANConfig
from bgan_tf.errors import UserError


def config(run: Path, **overrides) -> BGANConfig:
    return BGANConfig(**{**TINY_TRAIN, "save_every_steps": 2, **overrides, "output_dir": str(run)})


@pytest.fixture(scope="module")
def two_checkpoint_run(tmp_path_factory) -> Path:
    from bgan_tf.training.trainer import train

    run = tmp_path_factory.mktemp("ckpt") / "run"
    train(config(run), verbose=0)
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == ["ckpt-2.index", "ckpt-4.index"]
    return run


@pytest.fixture
def run_copy(two_checkpoint_run, tmp_path) -> Path:
    return Path(shutil.copytree(two_checkpoint_run, tmp_path / "run"))


def files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[:len(data) // 3])
    elif how == "4kb":  # 4 KB of garbage in the middle of the tensors
        mid = len(data) // 2
        path.write_bytes(data[:mid] + os.urandom(4096) + data[mid + 4096:])
    else:
        path.unlink()


# ------------------------------------------------------------------ case 10
def test_truncated_newest_checkpoint_resumes_from_the_older_one(run_copy, caplog):
    """Issue 27 case 10: a truncated newest checkpoint was an IndexError traceback."""
    from bgan_tf.training.trainer import train

    damage(run_copy / "checkpoints" / "ckpt-4.data-00000-of-00001", "truncate")
    with caplog.at_level(logging.INFO, logger="absl"):  # absl may have been set to WARNING by a flag parse
        result = train(config(run_copy), verbose=0)
    assert "checkpoint" in caplog.text and "ckpt-4 is damaged" in caplog.text
    assert "resumed from" in caplog.text and "ckpt-2 (epoch 0, step 2" in caplog.text
    assert result.epochs_run == 1 and result.epochs_trained == 1  # the 2 remaining steps, not 4
    from bgan_tf.training.checkpoints import checkpoint_damage

    assert checkpoint_damage(str(run_copy / "checkpoints" / "ckpt-4")) is None  # rewritten whole


@pytest.fixture
def dense_checkpoints(tmp_path):
    """(net, its EpochCheckpoint's folder): a 256x256 Dense net saved after epochs 1 and 2
    (ckpt-1, ckpt-2; 256 KB of tensors each), for damage cheaper than a training run."""
    import keras

    from bgan_tf.training.callbacks import EpochCheckpoint

    net = keras.Sequential([keras.Input((256,)), keras.layers.Dense(256)])
    ckpt = EpochCheckpoint(str(tmp_path / "checkpoints"), net=net)
    for epoch in (0, 1):
        net.layers[0].kernel.assign(np.full((256, 256), epoch + 1, np.float32))
        ckpt.on_epoch_end(epoch)
    return net, tmp_path / "checkpoints"


@pytest.mark.parametrize("name,how", [("ckpt-2.data-00000-of-00001", "4kb"), ("ckpt-2.index", "delete")])
def test_damaged_newest_checkpoint_restores_the_older_one(dense_checkpoints, caplog, name, how):
    """Issue 27 case 10: 4 KB of damage was "this configuration cannot resume" (blaming the
    config), a deleted ckpt-N.index a silent restart at epoch 0 over the good checkpoint."""
    from bgan_tf.training.callbacks import EpochCheckpoint

    net, folder = dense_checkpoints
    damage(folder / name, how)
    ckpt = EpochCheckpoint(str(folder), net=net)
    with caplog.at_level(logging.WARNING):
        assert ckpt.restore() == 1  # ckpt-1: one epoch done
    assert "ckpt-2 is damaged" in caplog.text and "resuming from" in caplog.text
    assert float(np.asarray(net.layers[0].kernel)[0, 0]) == 1.0 and ckpt.last_saved.endswith("ckpt-1")


def test_garbled_state_file_resumes_from_the_checkpoints_on_disk(run_copy, caplog):
    """Issue 27 case 10: a garbled checkpoints/checkpoint made training restart at epoch 0
    and overwrite the good checkpoint; now the newest one on disk is used (run finished)."""
    from bgan_tf.training.trainer import train

    (run_copy / "checkpoints" / "checkpoint").write_text("model_checkpoint_path: \x00\x01 garbage {{{")
    before = (run_copy / "checkpoints" / "ckpt-4.data-00000-of-00001").read_bytes()
    with caplog.at_level(logging.INFO, logger="absl"):  # absl may have been set to WARNING by a flag parse
        result = train(config(run_copy), verbose=0)
    assert "resumed from" in caplog.text and "ckpt-4 (epoch 1" in caplog.text
    assert result.epochs_run == 0
    assert (run_copy / "checkpoints" / "ckpt-4.data-00000-of-00001").read_bytes() == before


def test_every_checkpoint_damaged_is_one_line_and_nothing_changes(run_copy):
    """Issue 27 case 10: with no intact checkpoint, refuse (never start over silently)."""
    from bgan_tf.training.trainer import train

    for n in (2, 4):
        damage(run_copy / "checkpoints" / f"ckpt-{n}.data-00000-of-00001", "truncate")
    before = files(run_copy)
    with pytest.raises(UserError, match=r"every checkpoint under .*checkpoints is damaged \(ckpt-4: .*ckpt-2: "
                                        r".*delete .*checkpoints"):
        train(config(run_copy), verbose=0)
    assert files(run_copy) == before


# ------------------------------------------------------------------ case 11
def test_disk_full_while_saving_a_checkpoint_is_one_line_and_cleans_its_temp(dense_checkpoints, monkeypatch):
    """Issue 27 case 11: was a 50-line ResourceExhaustedError [Op:SaveV2] traceback that left
    ckpt-N_temp/. The save is made to fail as a full disk does, after writing its temp."""
    import tensorflow as tf

    from bgan_tf.training.callbacks import EpochCheckpoint

    net, folder = dense_checkpoints
    ckpt = EpochCheckpoint(str(folder), net=net)
    ckpt.restore()

    def full_disk(self, checkpoint_number=None, **kwargs):
        temp = Path(self.directory) / f"ckpt-{checkpoint_number}_temp"
        temp.mkdir()
        (temp / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"half")
        raise tf.errors.ResourceExhaustedError(None, None, "ckpt; No space left on device [Op:SaveV2]")

    monkeypatch.setattr(tf.train.CheckpointManager, "save", full_disk)
    with pytest.raises(UserError, match=r"no space left on device while writing the checkpoint .*ckpt-3; free "
                                        r"space there and rerun the same command: it resumes from .*ckpt-2"):
        ckpt.on_epoch_end(2)
    assert not list(folder.glob("*_temp*"))
    assert sorted(p.name for p in folder.glob("*.index")) == ["ckpt-1.index", "ckpt-2.index"]


def test_disk_full_on_a_python_write_is_one_line_too(dense_checkpoints, monkeypatch):
    """Issue 27 case 11, OSError(ENOSPC) form: one line, the last checkpoint named."""
    import errno

    import tensorflow as tf

    from bgan_tf.training.callbacks import EpochCheckpoint

    net, folder = dense_checkpoints
    ckpt = EpochCheckpoint(str(folder), net=net)
    ckpt.restore()

    def full_disk(self, checkpoint_number=None, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tf.train.CheckpointManager, "save", full_disk)
    with pytest.raises(UserError, match=r"no space left on device while writing the checkpoint .*ckpt-3; .*"
                                        r"resumes from .*ckpt-2"):
        ckpt.on_epoch_end(2)


# ------------------------------------------------------------------ case 6
def test_training_from_nan_weights_stops_with_one_line_and_writes_no_model(tmp_path, monkeypatch):
    """Issue 27 case 6: from NaN weights every step logged loss_e: nan, a NaN model was saved
    and the run ended rc 0. (Issue 28 removed --init_from, which started the encoder from a
    NaN model folder; the encoder's weights are now poisoned right after it is built.)"""
    from bgan_tf.training import trainer

    real = trainer.build_bgan

    def nan_encoder(*args, **kwargs):
        model = real(*args, **kwargs)
        for v in model.encoder.trainable_variables:
            v.assign(np.full(v.shape, np.nan, np.float32))
        return model

    monkeypatch.setattr(trainer, "build_bgan", nan_encoder)
    run = tmp_path / "run"
    with pytest.raises(UserError, match=r"training diverged at epoch 1 step 1 \(loss_\w+ is nan\); the last finite "
                                        r"checkpoint is kept at \(none was written yet\); lower the learning rates"):
        trainer.train(config(run), verbose=0)
    assert not (run / "model").exists()
    assert not list((run / "checkpoints").glob("ckpt-*"))  # (an absent folder globs to nothing)


def test_a_non_finite_save_is_refused_and_the_finite_checkpoints_stay(tmp_path):
    """Issue 27 case 6: NaN checkpoints rotated the good ones out (max_to_keep 2); a save of
    non-finite weights is now refused, so a rerun resumes from the last finite one."""
    import keras

    from bgan_tf.training.callbacks import EpochCheckpoint

    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    ckpt = EpochCheckpoint(str(tmp_path / "checkpoints"), net=net)
    ckpt.on_epoch_end(0)
    ckpt.on_epoch_end(1)
    net.layers[0].kernel.assign(np.full((3, 2), np.nan, np.float32))
    with pytest.raises(UserError, match=r"training diverged: net/.*kernel is not finite; the last finite "
                                        r"checkpoint is kept at .*ckpt-2"):
        ckpt.on_epoch_end(2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.index")) == ["ckpt-1.index", "ckpt-2.index"]
    assert EpochCheckpoint(str(tmp_path / "checkpoints"), net=net).restore() == 2
    assert np.isfinite(np.asarray(net.layers[0].kernel)).all()


def test_one_code_for_every_training_image_is_warned_about(caplog):
    """Issue 27 case 6: an index built from a collapsed model mapped 200 images to 1 code
    without a word; training now says so loudly at its end."""
    from bgan_tf.training.divergence import warn_if_one_code

    inputs = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        assert warn_if_one_code(lambda v: np.ones((len(v), 8), np.float32), inputs) == 1
    assert "ALL 300 SAMPLED TRAINING IMAGES TO ONE CODE" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert warn_if_one_code(lambda v: np.sign(np.asarray(v)[:, :4]), inputs) > 1
    assert "ONE CODE" not in caplog.text


def test_end_of_training_code_check_encodes_at_the_training_batch_size():
    """MobileNetV2 at 224 px, batch 8, was OOM-killed at ~22 GB after its 2 steps: the code
    check encoded 256 images a call, eagerly (~84 MB an image, every layer's activations kept
    alive). It now encodes at the training batch size, through a graph function."""
    import keras
    import tensorflow as tf

    from bgan_tf.training.trainer import _check_trained, _encode_fn

    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])
    seen = []

    def encode(v):
        seen.append(int(v.shape[0]))
        return net(v)

    _check_trained(net, encode, np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32), 8)
    assert max(seen) == 8 and sum(seen) == 300

    class Model:
        encoder = net

    fn = _encode_fn(Model(), features_input=False)
    assert isinstance(fn, tf.types.experimental.PolymorphicFunction)  # not an eager call
    x = np.ones((3, 4), np.float32)
    np.testing.assert_allclose(np.asarray(fn(tf.constant(x))), np.asarray(net(x)), rtol=1e-6)
