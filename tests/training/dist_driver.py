"""Subprocess driver for the distribution and resume tests (not a test file).

    python tests/training/dist_driver.py '<json spec>'

spec keys: ``config`` (BGANConfig overrides), ``out`` (npz path),
``mode`` ("train": one train() call; "local_pair": one-device then mirrored
over ``num_cpu_devices`` logical CPUs in this one fresh process, writing
``out`` with suffixes _one_device / _mirrored), ``sleep_per_step`` (seconds
to sleep after every step, so a test can kill the run mid-epoch),
``load_model`` (also encode with the saved model, checking it loads),
``first_batch`` (record which item indices this worker's replicas get in the
first distributed batch).

The npz holds every encoder/generator/discriminator weight (keys
"<network>/<variable path>"), the optimizers' iteration counts, the fit history
(keys "history/<log name>", one value per epoch) and the codes of the first 64
training images.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from bgan_tf.runtime import tune_allocator  # noqa: E402

tune_allocator()  # what every binary runs with (bgan_tf.errors.cli_run)

import numpy as np  # noqa: E402
if os.environ.get("DRIVER_FULL_TRACEBACK"):
    import keras

    import tensorflow as tf

    keras.config.disable_traceback_filtering()
    tf.debugging.disable_traceback_filtering()

# Tiny networks: what every distribution/resume test trains.
TINY = dict(dataset="digits", max_images=240, image_size=32, backbone="small_cnn", backbone_input_size=32,
            graph_features="pixels", k1=5, k2=5, num_bits=16, gen_channels=(16, 8, 8),
            disc_channels=(8, 8, 8, 8), disc_feature_dim=16, batch_size=16, steps_per_epoch=3, epochs=1,
            nbr_form="paper", w_pixel=1.0, fake_source="codes", sign_mode="app",
            adam_epsilon=1.0, lr_e=0.02, lr_g=0.02, lr_d=0.02, sync_batch_norm=True, sample_every=1000, seed=3)


def tiny_config(**overrides):
    from bgan_tf.config import BGANConfig

    kw = dict(TINY)
    kw.update(overrides)
    for k, v in kw.items():
        if isinstance(v, list):
            kw[k] = tuple(v)
    return BGANConfig(**kw)


def _dump(model, path, extra=None):
    from bgan_tf.data.sources import load_digits

    arrays = {}
    for net in (model.encoder, model.generator, model.discriminator):
        if net is None:
            continue
        for v in net.weights:
            arrays[f"{net.name}/{v.path}"] = np.asarray(v)
    for name in ("e_optimizer", "g_optimizer", "d_optimizer"):
        opt = getattr(model, name, None)
        if opt is not None:
            arrays[f"iterations/{name}"] = np.asarray(int(opt.iterations.numpy()))
    images = load_digits(32).images[:64].astype(np.float32)
    arrays["codes"] = np.asarray(model.encoder(images, training=False))
    arrays.update(extra or {})
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _first_batch(config):
    """Item indices this worker's replicas receive in the first global batch."""
    import tensorflow as tf

    from bgan_tf.data.pipeline import images_for_gan, training_dataset
    from bgan_tf.data.sources import load_images
    from bgan_tf.training.distribute import make_strategy, shard_by_data

    strategy = make_strategy(config.strategy, config.num_cpu_devices)
    data = load_images(config.dataset, max_images=config.max_images)
    ds = shard_by_data(training_dataset(images_for_gan(data.images, config.image_size),
                                        data.images.astype(np.float32), config.batch_size, config.seed, 0, 1))
    dist = iter(strategy.experimental_distribute_dataset(ds))
    element = next(dist)
    local = [np.asarray(t) for t in strategy.experimental_local_results(element["index"])]
    global_first = next(iter(ds))["index"].numpy()
    return {"first_batch_local": np.concatenate(local), "first_batch_global": global_first,
            "num_replicas": np.asarray(strategy.num_replicas_in_sync)}


def main() -> None:
    spec = json.loads(sys.argv[1])
    from absl import logging

    logging.set_verbosity(logging.INFO)
    mode = spec.get("mode", "train")
    if mode == "local_pair":
        from bgan_tf.training.distribute import configure_cpu_devices

        configure_cpu_devices(int(spec["config"].get("num_cpu_devices", 2)))  # before TF starts
    from bgan_tf.training import bgan as bgan_module
    from bgan_tf.training import callbacks as cb_module
    from bgan_tf.training.trainer import train

    captured = []
    original_fit = bgan_module.BGAN.fit

    def fit(self, *args, **kwargs):
        captured.append(self)
        return original_fit(self, *args, **kwargs)

    bgan_module.BGAN.fit = fit
    initial = {}

    def snapshot_then_fit(self, *args, **kwargs):
        if not initial:  # weights before the first step of this process
            for net in (self.encoder, self.generator, self.discriminator):
                for v in (net.weights if net is not None else []):
                    initial[f"initial/{net.name}/{v.path}"] = np.asarray(v)
        return fit(self, *args, **kwargs)

    bgan_module.BGAN.fit = snapshot_then_fit
    sleep = float(spec.get("sleep_per_step", 0))
    if sleep:
        original_batch_end = cb_module.EpochCheckpoint.on_train_batch_end

        def on_train_batch_end(self, batch, logs=None):
            original_batch_end(self, batch, logs)
            time.sleep(sleep)

        cb_module.EpochCheckpoint.on_train_batch_end = on_train_batch_end

    base = tiny_config(**spec.get("config", {}))
    runs = [("", base)]
    if mode == "local_pair":
        runs = [(f"_{s}", base.replace(strategy=s, output_dir=os.path.join(base.output_dir, s)))
                for s in ("one_device", "mirrored")]
    for suffix, config in runs:
        captured.clear()
        initial.clear()
        t = time.time()
        result = train(config, verbose=0)
        seconds = time.time() - t
        import keras

        history = {f"history/{k}": np.asarray(v, np.float64) for k, v in result.history.items()}
        extra = {"train_seconds": np.asarray(result.seconds.get("train", seconds)), **initial, **history,
                 "policy": np.asarray(keras.mixed_precision.global_policy().name)}
        if spec.get("first_batch"):
            extra.update(_first_batch(config))
        if spec.get("load_model"):
            from bgan_tf.data.sources import load_digits
            from bgan_tf.inference.keras_model import load_encoder

            enc = load_encoder(result.model_dir)
            extra["loaded_codes"] = np.asarray(enc.encode(load_digits(32).images[:64]))
        if captured:
            root, ext = os.path.splitext(spec["out"])
            _dump(captured[-1], root + suffix + ext, extra)
        print(f"driver: {suffix or config.strategy} done in {seconds:.1f}s", flush=True)


# --- helpers the tests import (no TensorFlow here) ---------------------------------

DRIVER = os.path.abspath(__file__)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(DRIVER)))


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(spec: dict, log_path: str, env: dict | None = None):
    """Start the driver in its own process group (so a test can kill it and
    everything it started), output to ``log_path``."""
    import subprocess

    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    full_env.pop("TF_CONFIG", None)
    full_env.update(env or {})
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, DRIVER, json.dumps(spec)], cwd=REPO, env=full_env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = log_path
    log.close()
    return proc


def kill(proc) -> None:
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this driver leads, nothing else
        except ProcessLookupError:
            pass
        proc.wait(10)


def log_tail(proc, lines: int = 40) -> str:
    with open(proc.log_path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def wait_all(procs, timeout: float) -> None:
    """Wait for every process; on a failure or timeout kill all of them and
    raise with the failing log's tail."""
    deadline = time.time() + timeout
    try:
        for p in procs:
            left = deadline - time.time()
            try:
                rc = p.wait(max(left, 0.1))
            except Exception:
                raise AssertionError(f"driver timed out after {timeout:.0f}s:\n{log_tail(p)}") from None
            if rc != 0:
                raise AssertionError(f"driver exited with {rc}:\n{log_tail(p)}")
    finally:
        for p in procs:
            kill(p)


def run_driver(spec: dict, log_path: str, timeout: float = 150, env: dict | None = None) -> None:
    wait_all([launch(spec, log_path, env)], timeout)


if __name__ == "__main__":
    main()
