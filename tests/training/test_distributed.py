"""Distribution: mirrored over 2 logical CPUs and 2 local MultiWorkerMirrored
workers give the weights of a one-device run on the same global batches.

Every run is a fresh subprocess (tests/training/dist_driver.py): logical CPU devices
and MultiWorkerMirroredStrategy must be set up before TensorFlow starts.
Tiny networks, 2 steps; each process is killed if it overruns.

Tolerance: replicas see the same global batch, so only float summation order
differs (all-reduced gradients, all-gathered codes, synchronized BN
statistics). One step, tanh sign: measured relative update differences are
~4e-5 (encoder; synchronized BN computes var as E[x^2]-mean^2) and <1e-6 (G, D).
Over more steps the discrete parts (sign(z) targets of the quantization loss,
the app sign's clip) let float noise grow (3% on the encoder after 2 steps
with the app sign), which says nothing about correctness. Adam with epsilon=1.0 keeps the update proportional to the
gradient (with a tiny epsilon it is ~lr*sign(g) and flips on near-zero
gradients), so we compare each network's total update:
||delta_dist - delta_one|| <= REL_TOL * ||delta_one||, and every weight to
ABS_TOL. A wrong loss scaling (x replicas) or a per-replica neighbourhood
block would miss these by orders of magnitude.
"""

from __future__ import annotations

import json
import os
import subprocess  # noqa: F401  (the driver runs in subprocesses)

import numpy as np
import pytest

from dist_driver import free_port, launch, run_driver, wait_all

REL_TOL = 1e-3
ABS_TOL = 5e-5
NETS = ("encoder", "generator", "discriminator")
SMOOTH = {"sign_mode": "tanh"}  # smooth relaxation: no clip boundary for float noise to cross
STEPS = 1  # after 2+ steps the app-sign clip and sign(z) targets amplify float noise


def _weights(npz):
    return {k: npz[k] for k in npz.files if k.startswith(NETS)}


def _assert_same_training(dist, one, what):
    w_d, w_o = _weights(dist), _weights(one)
    assert set(w_d) == set(w_o) and len(w_o) > 20
    for k in w_o:  # same start (seeded init, broadcast from the first replica / chief)
        np.testing.assert_array_equal(dist["initial/" + k], one["initial/" + k], err_msg=k)
    for net in NETS:
        keys = [k for k in w_o if k.startswith(net + "/")]
        d_one = np.concatenate([(w_o[k] - one["initial/" + k]).ravel() for k in keys])
        d_dist = np.concatenate([(w_d[k] - dist["initial/" + k]).ravel() for k in keys])
        rel = np.linalg.norm(d_dist - d_one) / np.linalg.norm(d_one)
        print(f"{what} vs one device, {net}: relative update difference {rel:.2e}, "
              f"max |w diff| {max(np.max(np.abs(w_d[k] - w_o[k])) for k in keys):.2e}")
        assert np.linalg.norm(d_one) > 0
        assert rel < REL_TOL, (net, rel)
        for k in keys:
            np.testing.assert_allclose(w_d[k], w_o[k], rtol=0, atol=ABS_TOL, err_msg=k)
    for opt in ("e_optimizer", "g_optimizer", "d_optimizer"):
        assert int(dist[f"iterations/{opt}"]) == STEPS == int(one[f"iterations/{opt}"])


@pytest.fixture(scope="module")
def local_pair(tmp_path_factory):
    """One fresh process: 2 logical CPUs; one-device run, then mirrored run."""
    d = tmp_path_factory.mktemp("pair")
    spec = {"mode": "local_pair", "out": str(d / "w.npz"),
            "config": {"num_cpu_devices": 2, "output_dir": str(d / "run"), "steps_per_epoch": STEPS, **SMOOTH}}
    run_driver(spec, str(d / "driver.log"), timeout=180)
    return np.load(d / "w_one_device.npz"), np.load(d / "w_mirrored.npz")


def test_chief_detection():
    from bgan_tf.training.distribute import chief_from_tf_config

    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    assert chief_from_tf_config(None) and chief_from_tf_config("")
    assert chief_from_tf_config({"cluster": workers, "task": {"type": "worker", "index": 0}})
    assert not chief_from_tf_config(json.dumps({"cluster": workers, "task": {"type": "worker", "index": 1}}))
    with_chief = {"chief": ["127.0.0.1:0"], **workers}
    assert chief_from_tf_config({"cluster": with_chief, "task": {"type": "chief", "index": 0}})
    assert not chief_from_tf_config({"cluster": with_chief, "task": {"type": "worker", "index": 0}})
    assert not chief_from_tf_config({"cluster": with_chief, "task": {"type": "evaluator", "index": 0}})


def test_mirrored_two_cpus_matches_one_device(local_pair):
    one, mirrored = local_pair
    _assert_same_training(mirrored, one, "mirrored (2 logical CPUs)")


def test_mirrored_logs_the_global_batch_accuracy(local_pair):
    """D's accuracy counts are summed over replicas: the mirrored run logs the global
    batch's fractions (those of the one-device run), not one replica's."""
    one, mirrored = local_pair
    for name in ("d_acc_real", "d_acc_recon", "d_acc_prior", "loss_g", "loss_d", "loss_e"):
        assert f"history/{name}" in mirrored.files, name
    for name in ("d_acc_real", "d_acc_recon", "d_acc_prior"):
        a, b = float(mirrored[f"history/{name}"][0]), float(one[f"history/{name}"][0])
        assert 0.0 <= a <= 1.0, (name, a)
        # One step of 16 images: a float-noise flip of a logit at 0 may move one image.
        assert abs(a - b) <= 1 / 16 + 1e-6, (name, a, b)
    for name in ("loss_g", "loss_d"):
        np.testing.assert_allclose(mirrored[f"history/{name}"], one[f"history/{name}"], rtol=1e-4, err_msg=name)


def test_two_workers_match_each_other_and_one_device(local_pair, tmp_path):
    one, _ = local_pair
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out_dir = tmp_path / "run"
    procs = []
    for i in range(2):
        tmpdir = tmp_path / f"tmp{i}"
        tmpdir.mkdir()
        spec = {"out": str(tmp_path / f"w{i}.npz"), "first_batch": True,
                "config": {"strategy": "multi_worker_mirrored", "output_dir": str(out_dir), "steps_per_epoch": STEPS,
                           **SMOOTH}}
        env = {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
               "TMPDIR": str(tmpdir)}
        procs.append(launch(spec, str(tmp_path / f"worker{i}.log"), env))
    wait_all(procs, timeout=200)
    w0, w1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    # Both workers end with bit-identical weights (one all-reduced update each step).
    for k, v in _weights(w0).items():
        np.testing.assert_array_equal(v, w1[k], err_msg=k)
    # DATA sharding splits each global batch: worker 0 gets its first half, worker 1 the second.
    g = w0["first_batch_global"]
    assert int(w0["num_replicas"]) == 2 and len(g) == 16
    np.testing.assert_array_equal(w0["first_batch_local"], g[:8])
    np.testing.assert_array_equal(w1["first_batch_local"], g[8:])
    _assert_same_training(w0, one, "2 workers")
    # Only the chief (worker 0) wrote the run folder; worker 1's temp output is gone.
    assert (out_dir / "model" / "encoder.weights.h5").is_file()
    assert (out_dir / "checkpoints" / "checkpoint").is_file()
    assert not [p for p in (tmp_path / "tmp1").iterdir() if p.name.startswith("bgan_worker_")]


def test_mixed_precision_and_sync_batch_norm_run_one_step(tmp_path):
    """Both flags are off by default; with them on (mirrored over 2 logical CPUs)
    the model builds and takes one finite step."""
    from bgan_tf.config import BGANConfig

    assert not BGANConfig().mixed_precision and not BGANConfig().sync_batch_norm
    spec = {"out": str(tmp_path / "w.npz"),
            "config": {"mixed_precision": True, "sync_batch_norm": True, "strategy": "mirrored",
                       "num_cpu_devices": 2, "steps_per_epoch": 1, "output_dir": str(tmp_path / "run")}}
    run_driver(spec, str(tmp_path / "driver.log"), timeout=180)
    w = np.load(tmp_path / "w.npz")
    assert str(w["policy"]) == "mixed_float16"
    assert int(w["iterations/e_optimizer"]) == 1
    for k, v in _weights(w).items():
        assert v.dtype == np.float32 and np.isfinite(v).all(), k
    assert set(np.unique(w["codes"])) <= {-1.0, 1.0}
