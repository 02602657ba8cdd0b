"""Seconds per training step of the fine-tuned CIFAR-10 setting at three network sizes.

    nice -n 10 .venv/bin/python benchmarks/gan_widths.py [--steps 6]

Issue 14 item 3 asks for BGAN's content and adversarial terms with G and D at the released
code's widths (G 256-256-128-32 channels, D 32-128-256-256 plus a 1024-d phi) next to the
cifar10 config's shrunk ones (G 32-32-16, D 16-32-64-64, 256-d phi). This measures what
each costs per step before anything is trained, on the setting the _ft rows of
benchmarks/cifar10_pbgan.py train: `--config cifar10:finetune` with its top cut at
block_13_expand and no consistency term (on its cached bottom, 32 bits, batch 64) with the paper preset, plus the
same encoder without G and D (nbr_only).

Inputs are random (bottom activations [N, 8, 8, 96], 32x32 images, a random graph): a step
costs the same whatever the values. Each size trains --warmup steps (tracing, oneDNN
primitives) and then --steps timed ones; a 6-epoch run on 10,000 images is 936 steps,
which the md multiplies out. Writes benchmarks/results/gan_widths.{json,md}. Needs the
MobileNetV2 weights in ../shared/weights (or --weights); prints SKIP and exits 0 without.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, ROOT)
sys.path.insert(0, BENCH)

SHARED = os.path.join(os.path.dirname(ROOT), "shared")
RESULTS = os.path.join(BENCH, "results")
RUN_STEPS = 6 * (10_000 // 64)  # six epochs of the P-BGAN training set at batch 64
ITEMS = 640  # training items of the timed model: ten batches
SIZES = {
    "nbr_only (no G, D)": dict(use_gan=False, w_pixel=0.0, w_feature=0.0, w_adv=0.0),
    "config widths": {},
    "released widths": dict(gen_channels=(256, 256, 128, 32), disc_channels=(32, 128, 256, 256),
                            disc_feature_dim=1024),
}


def step_seconds(config, warmup: int, steps: int) -> float:
    """Median seconds of one training step of ``config`` (random inputs, random graph)."""
    import keras

    from bgan_tf.data.pipeline import training_dataset
    from bgan_tf.training.graph import build_graph
    from bgan_tf.training.trainer import build_bgan

    rng = np.random.default_rng(0)
    bottom = rng.standard_normal((ITEMS, 8, 8, 96)).astype(np.float16)
    images = rng.integers(0, 256, (ITEMS, 32, 32, 3), dtype=np.uint8)
    graph = build_graph(rng.standard_normal((ITEMS, 16)).astype(np.float32), 10, 10)
    model = build_bgan(config, graph, bottom, True, images)
    ds = training_dataset(images.astype(np.float32) / 255.0, bottom, config.batch_size, 0, 0, 100)
    marks: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            marks.append(time.perf_counter())

    model.fit(ds, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[Clock()])
    return float(np.median(np.diff(marks[warmup - 1:])))


def render(results: dict) -> str:
    lines = ["# Seconds per training step: fine-tuned CIFAR-10 setting, three network sizes", "",
             f"`{results['command']}` on {results['machine']}, {results['date']}; load average at start "
             f"{results['loadavg_at_start'][0]:.1f} (other jobs share the cores, so seconds are rough).", "",
             "`--config cifar10:finetune` with the paper preset (MobileNetV2 top from block_13_expand on cached "
             f"bottom activations, 32 bits, batch 64); random inputs; median of {results['steps']} steps after "
             f"{results['warmup']} warm-up steps. A 6-epoch run on the 10,000 P-BGAN training images is "
             f"{RUN_STEPS} steps.", "",
             "| networks | G channels | D channels, phi | s / step | 6 epochs (h) | vs config widths |",
             "|---|---|---|---:|---:|---:|"]
    base = results["rows"]["config widths"]["seconds_per_step"]
    for name, r in results["rows"].items():
        g = "-" if not r["use_gan"] else "-".join(map(str, r["gen_channels"]))
        d = "-" if not r["use_gan"] else "-".join(map(str, r["disc_channels"])) + f", {r['disc_feature_dim']}"
        s = r["seconds_per_step"]
        lines.append(f"| {name} | {g} | {d} | {s:.3f} | {s * RUN_STEPS / 3600:.2f} | {s / base:.1f}x |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=os.path.join(SHARED, "weights",
                                                     "mobilenet_v2_imagenet_torchvision_notop.weights.h5"))
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--out", default=os.path.join(RESULTS, "gan_widths"))
    args = p.parse_args()
    for name, lo, hi in (("warmup", 2, 50), ("steps", 2, 200)):
        if not lo <= getattr(args, name) <= hi:
            print(f"--{name} must be from {lo} to {hi}, got {getattr(args, name)}")
            return 2
    if not os.path.isfile(args.weights):
        print(f"SKIP: MobileNetV2 weights ({args.weights}) not found; see ../shared/weights/README.md")
        return 0
    import platform

    from bgan_tf.atomic import write_json, write_text
    from bgan_tf.configs import get_config
    from cpuinfo import cpu_model

    start = os.getloadavg()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, change in SIZES.items():
            # The cut and loss the recorded results measured (the config's later default cut,
            # block_10_expand with the consistency term, feeds the top another bottom shape).
            config = get_config("cifar10:finetune").replace(backbone_weights=args.weights, output_dir=tmp,
                                                            trainable_from="block_13_expand", w_consistency=0.0,
                                                            **change).validate()
            seconds = step_seconds(config, args.warmup, args.steps)
            rows[name] = {"seconds_per_step": round(seconds, 4), "use_gan": config.use_gan,
                          "gen_channels": list(config.gen_channels), "disc_channels": list(config.disc_channels),
                          "disc_feature_dim": config.disc_feature_dim}
            print(f"{name}: {seconds:.3f} s/step", flush=True)
    results = {"command": "benchmarks/gan_widths.py " + " ".join(sys.argv[1:]), "rows": rows,
               "machine": f"{cpu_model()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}",
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg_at_start": list(start),
               "warmup": args.warmup, "steps": args.steps}
    write_json(args.out + ".json", results)
    write_text(args.out + ".md", render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
