"""Steps/s of one BGAN config: one device, mirrored over 2 logical CPUs, and
2 local MultiWorkerMirrored workers (127.0.0.1, TF_CONFIG).

    .venv/bin/python benchmarks/distributed_steps.py [--steps 20]

Writes benchmarks/results/distributed_steps.{json,md}. All three setups share
the same 2 CPU cores, so this checks that distribution works end to end and
what it costs in overhead; it is not a speed-up measurement (that needs GPUs
or machines, see docs/distributed.md).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = dict(dataset="digits", max_images=600, graph_features="pixels", k1=5, k2=5, num_bits=32,
              gen_channels=(32, 16, 8), disc_channels=(8, 16, 32, 32), disc_feature_dim=64, batch_size=32,
              epochs=2, fake_source="codes", sample_every=1000, seed=0)


def worker(args) -> None:
    """One training process: epoch 1 warms up (tracing), epoch 2 is timed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, ROOT)
    import keras

    from bgan_tf.training import bgan as bgan_module
    from bgan_tf.config import BGANConfig
    from bgan_tf.training.trainer import train

    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            if epoch == 1:
                times.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1:
                times.append(time.perf_counter())

    original = bgan_module.BGAN.fit

    def fit(self, *a, **kw):
        kw["callbacks"] = list(kw.get("callbacks") or []) + [Timer()]
        return original(self, *a, **kw)

    bgan_module.BGAN.fit = fit
    config = BGANConfig(**CONFIG, steps_per_epoch=args.steps, strategy=args.strategy,
                        num_cpu_devices=args.devices, output_dir=args.output_dir)
    train(config, verbose=0)
    steps = len(times) - 1
    with open(args.result, "w") as f:
        json.dump({"steps": steps, "seconds": times[-1] - times[0]}, f)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(strategy, devices, out_dir, result, steps, env=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--strategy", strategy, "--devices", str(devices),
           "--output_dir", out_dir, "--result", result, "--steps", str(steps)]
    e = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.Popen(cmd, env=e, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def _wait(procs, timeout=900):
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                if q.poll() is None:
                    os.killpg(q.pid, 9)
            raise
        if p.returncode:
            raise SystemExit(f"benchmark worker failed:\n{err.decode(errors='replace')[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--strategy", default="one_device")
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--output_dir")
    ap.add_argument("--result")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, strategy, devices in (("one device (CPU)", "one_device", 1),
                                        ("mirrored, 2 logical CPUs", "mirrored", 2)):
            res = os.path.join(tmp, strategy + ".json")
            _wait([_launch(strategy, devices, os.path.join(tmp, strategy), res, args.steps)])
            rows.append((name, json.load(open(res))))
        ports = [_port(), _port()]
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        procs = [_launch("multi_worker_mirrored", 1, os.path.join(tmp, "mwms"), os.path.join(tmp, f"w{i}.json"),
                         args.steps, {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
                 for i in range(2)]
        _wait(procs)
        rows.append(("2 local workers (MWMS)", json.load(open(os.path.join(tmp, "w0.json")))))
    result = {"config": {**CONFIG, "steps_per_epoch": args.steps}, "global_batch": CONFIG["batch_size"],
              "hardware": f"{os.cpu_count()} CPU cores shared by all replicas/workers, no GPU",
              "note": "correctness/overhead check, not speed: every setup shares the same 2 cores",
              "results": [{"setup": n, "timed_steps": r["steps"], "seconds": round(r["seconds"], 3),
                           "steps_per_s": round(r["steps"] / r["seconds"], 3)} for n, r in rows]}
    out = os.path.join(ROOT, "benchmarks", "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "distributed_steps.json"), "w") as f:
        json.dump(result, f, indent=2)
    lines = ["# BGAN training steps/s by tf.distribute setup", "",
             f"Global batch {CONFIG['batch_size']}, 32x32 digits, small CNN encoder, G {CONFIG['gen_channels']}, "
             f"D {CONFIG['disc_channels']}; second epoch of {args.steps} steps timed (first epoch traces).", "",
             "**All setups share the same 2 CPU cores: this is a correctness/overhead check, not a speed-up "
             "measurement.** No GPU was available.", "",
             "| setup | steps/s | s/step |", "|---|---:|---:|"]
    for r in result["results"]:
        lines.append(f"| {r['setup']} | {r['steps_per_s']:.2f} | {r['seconds'] / r['timed_steps']:.3f} |")
    with open(os.path.join(out, "distributed_steps.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
