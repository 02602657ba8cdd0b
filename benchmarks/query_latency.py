"""Cold `python -m bgan_tf.index query` latency, with and without the fast path (issue 29 item 4).

    .venv/bin/python benchmarks/query_latency.py [--model MODEL_DIR] [--images 10000] [--runs 5]

Builds an index of --images generated 32x32 PNGs with --model (default: the tests' tiny
model, trained once into the work folder, about 10 s) through the CLI, then times whole
query processes (interpreter start to exit: what a user waits for) with the default
encoder (the float TFLite copy `index build` verified and kept in the index; no
TensorFlow import) and with --model MODEL_DIR (the Keras model: TensorFlow import and
model build). Prints the medians and adds them to benchmarks/results/query_latency.json (one entry per
backbone, input size, code length and index size).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _index_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bgan_tf.index", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, check=True)


def _cold_seconds(args: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        _index_cli("query", *args)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model folder (default: train the tests' tiny model)")
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--work", help="work folder (default: a temp folder, removed at the end)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bgan_query_latency_") as tmp:
        work = args.work or tmp
        model = args.model
        if not model:
            sys.path.insert(0, os.path.join(ROOT, "tests"))
            from testlib import build_tiny_model

            model = build_tiny_model(work)
        imgs, idx = os.path.join(work, "imgs"), os.path.join(work, "idx")
        os.makedirs(imgs, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(args.images):
            p = os.path.join(imgs, f"{i:06d}.png")
            if not os.path.exists(p):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
        t0 = time.perf_counter()
        build = _index_cli("build", f"--model={model}", f"--images={imgs}", f"--index={idx}", "--noprogress")
        build_s = time.perf_counter() - t0
        query = [f"--index={idx}", f"--image={os.path.join(imgs, '000007.png')}", "--k=10"]
        fast = _cold_seconds(query, args.runs)
        keras = _cold_seconds([*query, f"--model={model}"], args.runs)
    with open(os.path.join(model, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    result = {"backbone": config.get("backbone"), "input_size": config.get("backbone_input_size"),
              "num_bits": config.get("num_bits"), "images": args.images, "runs": args.runs, "cpus": os.cpu_count(), "build_seconds": round(build_s, 2),
              "build_says": build.stdout.strip().splitlines()[-1],
              "fast_query_median_s": round(statistics.median(fast), 3), "fast_query_s": [round(t, 3) for t in fast],
              "keras_query_median_s": round(statistics.median(keras), 3),
              "keras_query_s": [round(t, 3) for t in keras]}
    print(f"cold index query over {args.images} images, median of {args.runs}: "
          f"{result['fast_query_median_s']} s with the TFLite copy (no TensorFlow), "
          f"{result['keras_query_median_s']} s with the Keras model")
    # One entry per backbone and size: a run replaces only its own.
    out = os.path.join(ROOT, "benchmarks", "results", "query_latency.json")
    try:
        with open(out, encoding="utf-8") as f:
            runs = json.load(f)["runs"]
    except (OSError, ValueError, KeyError, TypeError):
        runs = []
    key = ("backbone", "input_size", "num_bits", "images")
    runs = [r for r in runs if [r.get(k) for k in key] != [result[k] for k in key]] + [result]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"runs": runs}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
