"""Resume: an interrupted run continues to exactly the uninterrupted result.

- stop after epoch 1, rerun the same config with epochs=2 in a fresh process;
- SIGKILL mid-epoch after a step checkpoint (save_every_steps), restart;
- a newer checkpoint whose save was cut short is never read;
- the same seed gives the same codes in two fresh processes.

Each run is a subprocess (tests/training/dist_driver.py) with tiny networks, 3 steps
per epoch, killed if it overruns. Runs use op determinism and stateless
per-epoch data order, so weights are compared to ATOL = 1e-6 (in practice
they are bit-identical).
"""

from __future__ import annotations

import os
import re
import subprocess  # noqa: F401  (the driver runs in subprocesses)
import time

import numpy as np
import pytest

from dist_driver import kill, launch, log_tail, run_driver, wait_all

ATOL = 1e-6
STEPS, EPOCHS = 3, 2
NETS = ("encoder", "generator", "discriminator")


def _assert_same(a, b):
    keys = [k for k in a.files if k.startswith(NETS)]
    assert len(keys) > 20 and set(keys) == {k for k in b.files if k.startswith(NETS)}
    for k in keys:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=ATOL, err_msg=k)
    np.testing.assert_array_equal(a["codes"], b["codes"])


def _spec(out, run_dir, **config):
    return {"out": str(out), "config": {"output_dir": str(run_dir), "steps_per_epoch": STEPS, **config}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """In parallel (2 cores): the uninterrupted 2-epoch run and a 1-epoch run;
    then in parallel: the 1-epoch run continued to 2 epochs (fresh process) and
    a second fresh 1-epoch run with the same config."""
    d = tmp_path_factory.mktemp("resume")
    wait_all([launch(_spec(d / "full.npz", d / "full", epochs=EPOCHS), str(d / "full.log")),
              launch(_spec(d / "first.npz", d / "split", epochs=1), str(d / "first.log"))], timeout=200)
    wait_all([launch(_spec(d / "resumed.npz", d / "split", epochs=EPOCHS), str(d / "resumed.log")),
              launch(_spec(d / "again.npz", d / "again", epochs=1), str(d / "again.log"))], timeout=200)
    return d


def test_resume_after_an_epoch_equals_uninterrupted(runs):
    full, resumed = np.load(runs / "full.npz"), np.load(runs / "resumed.npz")
    assert int(resumed["iterations/e_optimizer"]) == STEPS * EPOCHS == int(full["iterations/e_optimizer"])
    _assert_same(resumed, full)
    assert "resumed from" in open(runs / "resumed.log").read()


def test_same_seed_same_codes_in_fresh_processes(runs):
    a, b = np.load(runs / "first.npz"), np.load(runs / "again.npz")
    np.testing.assert_array_equal(a["codes"], b["codes"])
    _assert_same(a, b)


def _latest(ckpt_dir):
    try:
        with open(os.path.join(ckpt_dir, "checkpoint")) as f:
            m = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', f.read(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def test_kill_mid_epoch_and_resume(runs, tmp_path):
    """save_every_steps=1; SIGKILL once a checkpoint inside epoch 0 is listed,
    restart: the run finishes with exactly EPOCHS*STEPS optimizer steps, the
    uninterrupted weights, and a saved model that loads."""
    run_dir = tmp_path / "run"
    ckpt_dir = str(run_dir / "checkpoints")
    slow = _spec(tmp_path / "killed.npz", run_dir, epochs=EPOCHS, save_every_steps=1)
    slow["sleep_per_step"] = 1.5  # a window to kill in
    proc = launch(slow, str(tmp_path / "killed.log"))
    killed_at = None
    try:
        deadline = time.time() + 150
        while time.time() < deadline and proc.poll() is None:
            n = _latest(ckpt_dir)
            if n is not None and 0 < n < STEPS:  # global step n: inside epoch 0
                killed_at = n
                break
            time.sleep(0.05)
    finally:
        kill(proc)
    assert killed_at is not None, "no mid-epoch checkpoint appeared:\n" + log_tail(proc)
    assert not (run_dir / "model").exists()
    restart = _spec(tmp_path / "restarted.npz", run_dir, epochs=EPOCHS, save_every_steps=1)
    restart["load_model"] = True
    run_driver(restart, str(tmp_path / "restarted.log"), timeout=150)
    log = open(tmp_path / "restarted.log").read()
    m = re.search(r"resumed from \S+ \(epoch (\d+), step (\d+) of it\)", log)
    assert m and int(m.group(1)) == 0 and int(m.group(2)) >= killed_at, log[-2000:]
    out = np.load(tmp_path / "restarted.npz")
    for opt in ("e_optimizer", "g_optimizer", "d_optimizer"):
        assert int(out[f"iterations/{opt}"]) == EPOCHS * STEPS, opt
    _assert_same(out, np.load(runs / "full.npz"))
    np.testing.assert_array_equal(out["loaded_codes"], out["codes"])  # the saved model loads and agrees
    assert _latest(ckpt_dir) == EPOCHS * STEPS


def test_cut_short_save_is_never_read(runs, tmp_path):
    """CheckpointManager writes ckpt-N.* first and the 'checkpoint' state file
    last (atomic rename), so a save killed half way leaves files that no state
    file names. Simulate that (a truncated newer checkpoint) and check restore
    still finds and reads the previous one."""
    import shutil

    import tensorflow as tf

    ckpt = tmp_path / "checkpoints"
    shutil.copytree(runs / "split" / "checkpoints", ckpt)
    before = _latest(str(ckpt))
    assert before == EPOCHS * STEPS
    newer = before + 1
    good_index = ckpt / f"ckpt-{before}.index"
    (ckpt / f"ckpt-{newer}.index").write_bytes(good_index.read_bytes()[:40])  # cut short
    (ckpt / f"ckpt-{newer}.data-00000-of-00001").write_bytes(b"\0" * 100)
    latest = tf.train.latest_checkpoint(str(ckpt))
    assert latest.endswith(f"ckpt-{before}")
    reader = tf.train.load_checkpoint(latest)
    assert int(reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE")) == EPOCHS
    assert int(reader.get_tensor("step_in_epoch/.ATTRIBUTES/VARIABLE_VALUE")) == 0
    with pytest.raises(Exception):
        tf.train.load_checkpoint(str(ckpt / f"ckpt-{newer}")).get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE")
