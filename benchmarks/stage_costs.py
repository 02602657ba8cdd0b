"""What each stage of the CIFAR-10 job costs, as a fraction of this CPU's measured limit.

    nice -n 5 .venv/bin/python benchmarks/stage_costs.py [--seconds 3]

One process measures, on the same cores and threads:
- the limit: a large float32 matmul and a convolution of the shapes of the backbone's
  heaviest conv (found by the FLOP count below); peak_flops_per_s is the higher. A numpy
  copy gives the memory bandwidth for the stages without float work;
- every stage through the library, on a sample big enough for a stable rate:
  ``decode`` (bgan_tf.data.images on the CIFAR-10 JPEGs, or synthetic PNGs),
  ``features`` (bgan_tf.data.features.compute_features, the cifar10 config's frozen
  MobileNetV2 at 128 px; the shared ImageNet weights when present, else random init:
  same FLOPs), ``graph`` (bgan_tf.training.graph.build_graph on 10,000 1280-d features),
  one training step of each loss preset with the cifar10 config as shipped and of
  ``paper`` at the released code's widths (build_bgan + training_dataset + model.fit),
  ``encode_features`` / ``encode_images`` (the evaluation's and the indexer's paths),
  ``index_build`` / ``index_search`` (bgan_tf.search.BinaryIndex, exact).
FLOPs are counted from each stage's TensorFlow graph by TensorFlow's profiler
(benchmarks/flops.py), only the ops that run: a training step is the whole traced
``train_step``, forward and backward of every network plus the optimizer updates.

Other jobs share the cores, so each stage also records its CPU seconds (every thread of
this process): ``fraction_of_peak`` is wall-clock FLOP/s over the best peak sample, and
``fraction_of_peak_per_cpu_s`` is FLOPs per CPU-second over the peak's, which contention
barely moves; ``cpu_use`` says how much of the cores a stage kept busy.

The whole 32-bit run's seconds come from benchmarks/results/cifar10_pbgan.json
(``whole_run_32``, written by ``benchmarks/cifar10_pbgan.py --whole_run``); this script
never runs it. Writes benchmarks/results/stage_costs.{json,md}. ~5-8 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bgan_tf.runtime import tune_allocator  # noqa: E402

tune_allocator()  # the malloc settings every binary runs with (bgan_tf/runtime.py)

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
RESULTS = os.path.join(HERE, "results")

from cpuinfo import cpu_model  # noqa: E402
from encode_throughput import cpu_simd  # noqa: E402  (one home for the SIMD flags line)
from flops import FlopCount, function_flops, graph_flops  # noqa: E402

# The released code's G and D (the cifar10 config ships an eighth / a quarter of them).
RELEASED_WIDTHS = dict(gen_channels=(256, 256, 128, 32), disc_channels=(32, 128, 256, 256), disc_feature_dim=1024)
GRAPH_ITEMS = 10_000  # the P-BGAN training set
FEATURE_DIM = 1280  # MobileNetV2's pooled features
DB_ITEMS, QUERIES, TOP_K = 59_000, 1_000, 100  # the P-BGAN database and queries
DECODE_FILES = 3_000
FEATURE_IMAGES = 500
FEATURE_BATCH = 100  # compute_features' default batch
ENCODE_IMAGES = 256
MATMUL_N = 2048
BANDWIDTH_METHOD = "numpy copyto of 256 MiB, 1 thread, read + write bytes"


CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def now() -> np.ndarray:
    """(wall seconds, CPU seconds of every thread of this process)."""
    return np.array([time.perf_counter(), time.process_time()])


def repeat(fn, min_seconds: float, min_iters: int = 3) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, calls) of fn() after one warm-up call, repeated until both
    minimums are met."""
    fn()
    n, t0 = 0, now()
    while True:
        fn()
        n += 1
        wall, cpu = now() - t0
        if n >= min_iters and wall >= min_seconds:
            return float(wall), float(cpu), n


class Results:
    """The stage rows. Fractions are filled in by `finish`, once every sample of the peak is in."""

    def __init__(self, bandwidth: float) -> None:
        self.stages: dict[str, dict] = {}
        self.bandwidth = bandwidth

    def add(self, name: str, seconds: float, cpu_seconds: float, items: int, unit: str,
            flops: FlopCount | None = None, flops_per_item: float | None = None, note: str = "",
            bytes_per_item: float | None = None, **extra) -> dict:
        row = {"seconds": round(seconds, 4), "cpu_seconds": round(cpu_seconds, 4),
               "cpu_use": round(cpu_seconds / seconds / CORES, 3), "items": int(items), "unit": unit,
               "items_per_s": round(items / seconds, 2), "flops_per_s": None, "fraction_of_peak": None}
        if flops_per_item is not None:
            row.update(flops_per_item=int(flops_per_item), flops_per_s=round(flops_per_item * items / seconds),
                       flops_per_cpu_s=round(flops_per_item * items / cpu_seconds), fraction_of_peak_per_cpu_s=None)
        if flops is not None and flops.graph_total != flops.total and flops.total:
            # The traced graph's sum, duplicates and dead ops included (benchmarks/flops.py).
            row["traced_graph_flops_per_item"] = int(flops_per_item * flops.graph_total / flops.total)
        if flops is not None and flops.uncounted:
            row["uncounted_ops"] = flops.uncounted
            if flops.calls():
                note += f"; FLOPs skip the body of {flops.calls()}"
        if bytes_per_item is not None:
            bps = bytes_per_item * items / seconds
            row.update(bytes_per_s=round(bps), fraction_of_memory_bandwidth=round(bps / self.bandwidth, 4))
        row.update(extra)
        row["note"] = note
        self.stages[name] = row
        rate = f"{row['flops_per_s'] / 1e9:7.2f} GFLOP/s" if row["flops_per_s"] is not None else "no float work"
        print(f"{name:34s} {items:>8,d} {unit:8s} {seconds:7.2f} s {row['items_per_s']:>11,.1f}/s  {rate}, "
              f"CPU use {row['cpu_use']:.0%}", flush=True)
        return row

    def finish(self, peak: float, peak_per_cpu_s: float) -> None:
        for row in self.stages.values():
            if row["flops_per_s"] is not None:
                row["fraction_of_peak"] = round(row["flops_per_s"] / peak, 4)
                row["fraction_of_peak_per_cpu_s"] = round(row["flops_per_cpu_s"] / peak_per_cpu_s, 4)


# ------------------------------------------------------------------ the limit
class PeakMeter:
    """GFLOP/s of a large float32 matmul and of a conv of the backbone's heaviest conv's shapes,
    on the threads the stages use. Sampled several times in a run (other jobs share the
    cores): the peak is the best sample, the samples are recorded."""

    def __init__(self, heaviest_conv) -> None:
        import tensorflow as tf

        a = tf.random.normal((MATMUL_N, MATMUL_N), seed=1)
        b = tf.random.normal((MATMUL_N, MATMUL_N), seed=2)
        matmul = tf.function(lambda x, y: tf.matmul(x, y))
        op = heaviest_conv
        x = tf.random.normal(op.inputs[0].shape, seed=3)
        w = tf.Variable(tf.random.normal(op.inputs[1].shape, seed=4) * 0.1)
        strides, padding = list(op.get_attr("strides")), op.get_attr("padding").decode()
        dilations = list(op.get_attr("dilations"))
        if op.type == "DepthwiseConv2dNative":
            def conv(v):
                return tf.nn.depthwise_conv2d(v, w, strides, padding, dilations=dilations[1:3])
        else:
            def conv(v):
                return tf.nn.conv2d(v, w, strides, padding, dilations=dilations)
        conv_fn = tf.function(conv)
        layer = op.name.split("/")[-2] if "/" in op.name else op.name
        self.kernels = {
            "matmul": (lambda: matmul(a, b).numpy(),
                       function_flops(lambda u, v: tf.matmul(u, v), tf.TensorSpec(a.shape), tf.TensorSpec(b.shape)).total,
                       {"shape": f"[{MATMUL_N},{MATMUL_N}] x [{MATMUL_N},{MATMUL_N}] float32"}),
            "conv": (lambda: conv_fn(x).numpy(), function_flops(conv, tf.TensorSpec(x.shape)).total,
                     {"op": f"{op.type} of layer {layer}", "input": list(x.shape), "filter": list(w.shape),
                      "strides": strides, "padding": padding}),
        }
        self.samples: list[dict] = []

    def sample(self, when: str, min_seconds: float) -> None:
        row = {"when": when}
        for name, (fn, flops, _) in self.kernels.items():
            sec, cpu, n = repeat(fn, min_seconds)
            row[name] = round(flops * n / sec)
            row[name + "_per_cpu_s"] = round(flops * n / cpu)
        self.samples.append(row)
        print(f"peak sample ({when}): matmul {row['matmul'] / 1e9:.1f} GFLOP/s, conv {row['conv'] / 1e9:.1f} GFLOP/s; "
              f"per CPU-second {row['matmul_per_cpu_s'] / 1e9:.1f}, {row['conv_per_cpu_s'] / 1e9:.1f}", flush=True)

    def summary(self) -> dict:
        out = {name: {**info, "flops": flops, "flops_per_s": max(s[name] for s in self.samples),
                      "flops_per_cpu_s": max(s[name + "_per_cpu_s"] for s in self.samples)}
               for name, (_, flops, info) in self.kernels.items()}
        out["samples"] = self.samples
        out["peak_flops_per_s"] = max(out["matmul"]["flops_per_s"], out["conv"]["flops_per_s"])
        out["peak_flops_per_cpu_s"] = max(out["matmul"]["flops_per_cpu_s"], out["conv"]["flops_per_cpu_s"])
        return out


def measure_bandwidth(min_seconds: float) -> dict:
    """Bytes/s of a numpy copy of 256 MiB (read + write), one thread: the memory-bound stages' limit."""
    src = np.ones(64 << 20, np.float32)
    dst = np.empty_like(src)
    sec, _, n = repeat(lambda: np.copyto(dst, src), min_seconds)
    return {"method": BANDWIDTH_METHOD, "bytes_per_s": round(2 * src.nbytes * n / sec)}


# ------------------------------------------------------------------ stages
def decode_stage(res: Results, data_dir: str, min_seconds: float) -> np.ndarray:
    """Decode through bgan_tf.data.images; returns the decoded 32x32 images for the later stages."""
    from bgan_tf.data.images import list_image_files, load_image_file

    tmp = None
    if os.path.isdir(data_dir):
        entries = list_image_files(data_dir).entries
        pick = np.sort(np.random.default_rng(0).choice(len(entries), min(DECODE_FILES, len(entries)), replace=False))
        paths = [entries[i][0] for i in pick]
        source = f"{len(paths):,} CIFAR-10 JPEGs (32x32, seeded sample of {data_dir})"
    else:
        from PIL import Image

        tmp = tempfile.TemporaryDirectory(prefix="stage_costs_")
        rng = np.random.default_rng(0)
        paths = []
        for i in range(DECODE_FILES):
            # Smooth random images: PNG sizes like a photo's, not like incompressible noise.
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((32, 32), Image.BILINEAR)
            paths.append(os.path.join(tmp.name, f"{i:05d}.png"))
            img.save(paths[-1])
        source = f"{len(paths):,} synthetic 32x32 PNGs in a temp folder ({data_dir} not found)"
    file_bytes = sum(os.path.getsize(p) for p in paths)
    images = np.stack([load_image_file(p) for p in paths])  # also warms the page cache
    sec, cpu, n = repeat(lambda: [load_image_file(p) for p in paths], min_seconds, 1)
    per_item = (file_bytes + images[0].nbytes * len(paths)) / len(paths)
    res.add("decode", sec, cpu, n * len(paths), "images", bytes_per_item=per_item,
            note=f"{source}; page cache warm; integer (entropy) decoding, no float work: fraction_of_peak null; "
                 "bytes_per_s = file bytes read + RGB bytes written; per-file Python/Pillow overhead dominates",
            file_bytes_per_item=round(file_bytes / len(paths)))
    if tmp is not None:
        tmp.cleanup()
    return images


def backbone_graph(weights: str | None):
    """The cifar10 config's feature extractor, its FLOP count per batch and its heaviest conv op."""
    import tensorflow as tf

    from bgan_tf.configs import cifar10
    from bgan_tf.modeling.backbones import build_feature_extractor
    from bgan_tf.modeling.factory import backbone_spec

    spec = backbone_spec(cifar10.get_config(), weights)
    extractor = build_feature_extractor(spec)
    # 32x32 uint8 inputs, as CIFAR-10 arrives: the resize to 128 px is in the graph.
    concrete = tf.function(lambda v: extractor(v, training=False)).get_concrete_function(
        tf.TensorSpec((FEATURE_BATCH, 32, 32, 3)))
    count = graph_flops(concrete.graph)
    heaviest = concrete.graph.get_operation_by_name(count.heaviest(("Conv2D", "DepthwiseConv2dNative")))
    return spec, extractor, count, heaviest


def features_stage(res: Results, images: np.ndarray, spec, extractor, count: FlopCount, min_seconds: float) -> None:
    """compute_features as a whole run calls it (60,000 images: the XNNPACK engine), and
    the Keras graph it replaced (``features_keras_graph``), in the same run.

    Each rate is the marginal one, what 60,000 images cost: the median call on a large set
    minus the median call on FEATURE_BATCH images; the fixed cost of a call (XNNPACK: the
    TFLite conversion and the parity check; Keras: tracing) is reported beside it."""
    from bgan_tf.data.features import XNNPACK_MIN_IMAGES, compute_features

    batch = np.resize(images, (FEATURE_BATCH,) + images.shape[1:])
    for name, engine, extra, kw in (
            ("features", "xnnpack", XNNPACK_MIN_IMAGES, {}),
            ("features_keras_graph", "tf", FEATURE_IMAGES, {"model": extractor})):
        big = np.resize(images, (FEATURE_BATCH + extra,) + images.shape[1:])
        compute_features(batch, spec, engine=engine, **kw)  # warm-up: oneDNN primitives, allocator
        small_s, big_s = [], []  # (wall, cpu) of each call
        t_end = time.perf_counter() + min_seconds
        while not small_s or time.perf_counter() < t_end:
            t = now()
            compute_features(batch, spec, engine=engine, **kw)
            small_s.append(now() - t)
            t = now()
            compute_features(big, spec, engine=engine, **kw)
            big_s.append(now() - t)
        sec, cpu = (np.median(big_s, axis=0) - np.median(small_s, axis=0)) * len(big_s)
        items = extra * len(big_s)
        fixed = float(np.median(small_s, axis=0)[0]) - sec / items * FEATURE_BATCH
        what = ("a float32 TFLite copy of the backbone on XNNPACK (the engine for 2,048+ images)" if engine == "xnnpack"
                else "the Keras graph (tf.function; the engine below 2,048 images, and every run's before this one)")
        res.add(name, float(sec), float(cpu), items, "images", count, count.total / FEATURE_BATCH,
                note=f"compute_features(engine={engine!r}): {what}; MobileNetV2 (torch padding) at "
                     f"{spec.input_size} px from 32x32 uint8, batch {FEATURE_BATCH}, "
                     f"{'ImageNet weights' if spec.weights else 'random init (same FLOPs)'}; marginal rate: median "
                     f"call on {FEATURE_BATCH + extra} minus median call on {FEATURE_BATCH} images, {len(big_s)} "
                     f"pair(s); each call also costs {fixed:.2f} s fixed",
                fixed_seconds_per_call=round(fixed, 3))


def synthetic_features(n: int, seed: int) -> np.ndarray:
    """Non-negative 1280-d features in 10 clusters (pooled ReLU6 features, 10 classes)."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(1.0, 0.5, (10, FEATURE_DIM)).astype(np.float32)
    x = centres[rng.integers(0, 10, n)] + rng.normal(0, 0.35, (n, FEATURE_DIM)).astype(np.float32)
    return np.maximum(x, 0).astype(np.float32)


def graph_stage(res: Results, feats: np.ndarray):
    import faiss
    import tensorflow as tf

    from bgan_tf.configs import cifar10
    from bgan_tf.training.graph import build_graph, knn

    cfg = cifar10.get_config()
    threads = faiss.omp_get_max_threads()
    # Exact kNN is FAISS' brute-force L2 search: its float work is the [N,D] x [D,N]
    # product of the distance expansion, counted on that product's TF graph.
    count = function_flops(lambda a: tf.matmul(a, a, transpose_b=True), tf.TensorSpec(feats.shape))
    t = time.perf_counter()
    knn(feats, cfg.k1)
    knn_s = time.perf_counter() - t
    t = now()
    graph = build_graph(feats, cfg.k1, cfg.k2)
    sec, cpu = now() - t
    n = len(feats)
    res.add("graph", float(sec), float(cpu), n, "items", count, count.total / n,
            note=f"build_graph(k1={cfg.k1}, k2={cfg.k2}) on {n:,} synthetic {feats.shape[1]}-d features in 10 "
                 f"clusters, FAISS {threads} thread(s); FLOPs are the exact kNN's distance product only (the "
                 f"overlap and union steps are integer sparse work); kNN alone took {knn_s:.2f} s "
                 f"({count.total / knn_s / 1e9:.1f} GFLOP/s)",
            knn_seconds=round(knn_s, 3), faiss_threads=threads, positive_pairs=graph.num_positive_pairs)
    return graph


class _StepTimes:
    def __init__(self):
        import keras

        class Cb(keras.callbacks.Callback):
            def on_train_batch_end(cb, batch, logs=None):
                self.ends.append(now())

        self.ends: list[np.ndarray] = []
        self.callback = Cb()


def train_stage(res: Results, name: str, cfg, graph, feats: np.ndarray, images: np.ndarray,
                min_seconds: float, min_steps: int = 3) -> None:
    """Steps of model.fit on the library's BGAN and tf.data pipeline, after warm-up."""
    import keras

    from bgan_tf.data.pipeline import images_for_gan, training_dataset
    from bgan_tf.training.trainer import build_bgan

    keras.utils.set_random_seed(cfg.seed)
    t = time.perf_counter()
    model = build_bgan(cfg, graph, feats, True, images)
    build_s = time.perf_counter() - t
    gan = images_for_gan(images, cfg.image_size)
    per_pass = len(feats) // cfg.batch_size

    def dataset(steps):
        return training_dataset(gan, feats, cfg.batch_size, cfg.seed, 0, -(-steps // per_pass))

    count = function_flops(model.train_step, dataset(1).element_spec)
    timer = _StepTimes()
    warm = 2  # the first traces the step; the second times one warm step
    t = time.perf_counter()
    model.fit(dataset(warm), epochs=1, steps_per_epoch=warm, verbose=0, callbacks=[timer.callback])
    warm_s = time.perf_counter() - t
    per_step = float(timer.ends[-1][0] - timer.ends[-2][0])
    steps = max(min_steps, math.ceil(min_seconds / max(per_step, 1e-4))) + 1
    timer.ends.clear()
    model.fit(dataset(steps), epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer.callback])
    sec, cpu = timer.ends[-1] - timer.ends[0]  # steps 2..n: no fit start-up in the window
    timed = steps - 1
    nets = f"E, G {cfg.gen_channels} and D {cfg.disc_channels} (phi {cfg.disc_feature_dim})" if cfg.use_gan \
        else "E (hash head only, no G or D)"
    res.add(name, float(sec), float(cpu), timed * cfg.batch_size, "images", count, count.total / cfg.batch_size,
            note=f"{timed} steps of model.fit at batch {cfg.batch_size} on cached features; one step = forward + "
                 f"backward + Adam of {nets}; {timed / sec:.2f} steps/s; build "
                 f"{build_s:.1f} s, first {warm} steps (tracing) {warm_s:.1f} s",
            step_seconds=round(sec / timed, 4), flops_per_step=count.total)


def encode_stages(res: Results, cfg, feats: np.ndarray, images: np.ndarray, min_seconds: float) -> np.ndarray:
    """Evaluation's path (features -> codes) and the indexer's (images -> codes); returns codes."""
    import tensorflow as tf

    from bgan_tf.inference.keras_model import LoadedEncoder, build_encoder

    enc = LoadedEncoder(build_encoder(cfg), cfg, {}, "")  # what load_encoder returns, random weights
    feat_batch = 1024  # LoadedEncoder.encode_features' batch
    count = function_flops(lambda v: enc.model.encode_features(v, training=False),
                           tf.TensorSpec((feat_batch, feats.shape[1])))
    sec, cpu, n = repeat(lambda: enc.encode_features(feats), min_seconds, 1)
    res.add("encode_features", sec, cpu, n * len(feats), "items", count, count.total / feat_batch,
            note=f"LoadedEncoder.encode_features (hash head {cfg.hash_hidden} -> {cfg.num_bits} bits) on "
                 f"{len(feats):,} cached features, batch {feat_batch}")
    img_batch = 128  # LoadedEncoder.encode's batch
    batch = np.resize(images, (ENCODE_IMAGES,) + images.shape[1:])
    count = function_flops(lambda v: enc.model(v, training=False), tf.TensorSpec((img_batch,) + images.shape[1:]))
    sec, cpu, n = repeat(lambda: enc.encode(batch), min_seconds, 1)
    res.add("encode_images", sec, cpu, n * len(batch), "images", count, count.total / img_batch,
            note=f"LoadedEncoder.encode: 32x32 uint8 -> resize to {cfg.backbone_input_size} px -> MobileNetV2 -> "
                 f"head -> signs, batch {img_batch}, random init (same FLOPs)")
    return enc.encode_features(feats)


def index_stages(res: Results, codes: np.ndarray, min_seconds: float) -> None:
    from bgan_tf.search.backend_base import get_num_threads
    from bgan_tf.search.binary_index import BinaryIndex

    bits = codes.shape[1]
    db, queries = codes[:DB_ITEMS], codes[DB_ITEMS:DB_ITEMS + QUERIES]
    code_bytes = -(-bits // 8)

    def build():
        index = BinaryIndex.create(bits, "stage_costs", "flat")
        index.add(db)
        return index

    sec, cpu, n = repeat(build, min_seconds)
    res.add("index_build", sec, cpu, n * len(db), "codes", bytes_per_item=code_bytes,
            note=f"BinaryIndex.create(flat) + add of {len(db):,} {bits}-bit signs (packing included); no float "
                 "work", threads=get_num_threads())
    index = build()
    sec, cpu, n = repeat(lambda: index.search_arrays(queries, TOP_K), min_seconds)
    res.add("index_search", sec, cpu, n * len(queries), "queries", bytes_per_item=len(db) * code_bytes,
            note=f"exact top-{TOP_K} (FAISS binary flat) over {len(db):,} codes; Hamming distances are xor + "
                 f"popcount, no float work; bytes_per_s = database bytes scanned (the {len(db) * code_bytes:,}-byte "
                 "database fits in cache, so this can pass the memory bandwidth)",
            comparisons_per_s=round(n * len(queries) * len(db) / sec), threads=get_num_threads())


# ------------------------------------------------------------------ output
def whole_run(path: str) -> dict | None:
    import json

    try:
        with open(path) as f:
            block = json.load(f).get("whole_run_32")
    except (OSError, ValueError):
        return None
    return block if isinstance(block, dict) and isinstance(block.get("seconds"), (int, float)) else None


def write_markdown(out: dict, path: str) -> None:
    from bgan_tf.atomic import write_text

    peak = out["peak"]
    lines = ["# Stage costs: every stage as a fraction of this CPU's measured limit", "",
             "Generated by `benchmarks/stage_costs.py`; do not edit by hand.", "",
             f"Command: `{out['command']}`  ", f"Date: {out['date']}  ", f"Machine: {out['machine']}  ",
             f"Threads: {out['threads']}  ", f"Load average at start / end (1 min): {out['loadavg_at_start'][0]} / "
             f"{out['loadavg_at_end'][0]} (other jobs share the cores)", "",
             "## The limit", "",
             f"- float32 matmul {peak['matmul']['shape']}: {peak['matmul']['flops_per_s'] / 1e9:.1f} GFLOP/s (best sample; "
             f"{peak['matmul']['flops_per_cpu_s'] / 1e9:.1f} GFLOP per CPU-second)",
             f"- {peak['conv']['op']} (the backbone's heaviest conv) input {peak['conv']['input']}, filter "
             f"{peak['conv']['filter']}, strides {peak['conv']['strides']}, {peak['conv']['padding']}: "
             f"{peak['conv']['flops_per_s'] / 1e9:.1f} GFLOP/s (best sample; {peak['conv']['flops_per_cpu_s'] / 1e9:.1f} "
             "GFLOP per CPU-second)",
             f"- **peak_flops_per_s = {out['peak_flops_per_s'] / 1e9:.1f} GFLOP/s** (the higher of the two, each the "
             f"best of {len(peak['samples'])} samples taken through the run: "
             + "; ".join(f"{x['when']}: matmul {x['matmul'] / 1e9:.1f}, conv {x['conv'] / 1e9:.1f}" for x in peak["samples"])
             + " GFLOP/s); per CPU-second of this process: "
             f"**{out['peak_flops_per_cpu_s'] / 1e9:.1f} GFLOP**",
             f"- memory bandwidth ({out['memory_bandwidth']['method']}): "
             f"{out['memory_bandwidth']['bytes_per_s'] / 1e9:.1f} GB/s", "",
             "## Stages", "",
             "FLOPs counted from each stage's TensorFlow graph by TensorFlow's profiler (benchmarks/flops.py): "
             "a training step is the whole traced train_step (forward and backward of every network, Adam). "
             "Only ops that run count: identical stateless ops once and dead ops not at all, as grappler runs "
             "the graph (the traced sum is the JSON's traced_graph_flops_per_item). The count skips cheap "
             "elementwise ops TensorFlow has no formula for (activations, their gradients, sqrt: listed per "
             "stage in the JSON's `uncounted_ops`). Stages without float work give "
             "a fraction of the memory bandwidth instead.", "",
             "Other jobs share these cores, so a stage and the peak samples run under different contention: "
             "`fraction of peak` (wall clock, what the JSON's fraction_of_peak holds) moves with the load. "
             "`per CPU-second` divides the stage's FLOPs per CPU-second of this process by the peak's, which "
             "contention barely moves; `CPU use` is the stage's CPU seconds per wall second per core "
             f"({out['threads']['cores_available']} cores): below 100% the stage leaves cores idle (or was "
             "crowded out).", "",
             "| stage | items | seconds | items/s | GFLOP/s | fraction of peak | per CPU-second | CPU use | notes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in out["stages"].items():
        gf = f"{r['flops_per_s'] / 1e9:.2f}" if r["flops_per_s"] is not None else "-"
        if r["fraction_of_peak"] is not None:
            frac = f"{r['fraction_of_peak']:.1%}"
        else:
            frac = f"null ({r['fraction_of_memory_bandwidth']:.1%} of memory bandwidth)" \
                if "fraction_of_memory_bandwidth" in r else "null"
        per_cpu = f"{r['fraction_of_peak_per_cpu_s']:.1%}" if r["fraction_of_peak"] is not None else "-"
        lines.append(f"| {name} | {r['items']:,} {r['unit']} | {r['seconds']:.2f} | {r['items_per_s']:,.1f} | "
                     f"{gf} | {frac} | {per_cpu} | {r['cpu_use']:.0%} | {r['note']} |")
    lines += ["", "## One whole 32-bit CIFAR-10 run", ""]
    if out["whole_run_32_seconds"] is None:
        lines.append("whole_run_32_seconds: null: benchmarks/results/cifar10_pbgan.json has no `whole_run_32` "
                     "block yet (written by `benchmarks/cifar10_pbgan.py --whole_run`; this script does not run it).")
    else:
        wr = out["whole_run_32"]
        parts = ", ".join(f"{k} {v:.0f} s" for k, v in wr.get("stages", {}).items())
        lines.append(f"{out['whole_run_32_seconds']:.0f} s ({out['whole_run_32_seconds'] / 60:.1f} min), from "
                     f"benchmarks/results/cifar10_pbgan.json (date {wr.get('date', '?')}): {parts}.")
    write_text(path, "\n".join(lines) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=3.0, help="minimum timing of each measurement (0.2-60)")
    p.add_argument("--data", default=os.path.join(SHARED, "data", "cifar10", "test"),
                   help="image folder to decode (synthetic PNGs when absent)")
    p.add_argument("--weights", default=os.path.join(SHARED, "weights", "mobilenet_v2_imagenet_torchvision_notop.weights.h5"),
                   help="MobileNetV2 weights for the features stage (random init when absent: same FLOPs)")
    p.add_argument("--whole_run_json", default=os.path.join(RESULTS, "cifar10_pbgan.json"))
    p.add_argument("--out", default=os.path.join(RESULTS, "stage_costs"), help="writes OUT.json and OUT.md")
    args = p.parse_args()
    if not 0.2 <= args.seconds <= 60:
        p.error(f"--seconds must be within 0.2..60, got {args.seconds}")
    load_start = [round(x, 2) for x in os.getloadavg()]
    t_start = time.time()

    import tensorflow as tf

    from bgan_tf.atomic import write_json
    from bgan_tf.config import LOSS_PRESETS, apply_preset
    from bgan_tf.configs import cifar10

    weights = args.weights if os.path.isfile(args.weights) else None
    cores = CORES
    threads = {"cores_available": cores, "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads()
               or f"default ({cores})", "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads()
               or "default", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset")}
    res = Results(measure_bandwidth(args.seconds)["bytes_per_s"])
    spec, extractor, backbone_count, heaviest = backbone_graph(weights)
    peak = PeakMeter(heaviest)
    peak.sample("start", args.seconds)

    images = decode_stage(res, args.data, args.seconds)
    features_stage(res, images, spec, extractor, backbone_count, args.seconds)
    peak.sample("after features", args.seconds)
    feats = synthetic_features(GRAPH_ITEMS, seed=0)
    graph = graph_stage(res, feats)
    peak.sample("after graph", args.seconds)

    train_images = np.resize(images, (GRAPH_ITEMS,) + images.shape[1:])
    # As bgan_tf.training.trainer.train runs: deterministic ops, seeded.
    tf.config.experimental.enable_op_determinism()
    base = cifar10.get_config().replace(backbone_weights=None)  # the step never runs the frozen backbone
    for preset in LOSS_PRESETS:  # every preset, a new one included
        train_stage(res, f"train_step_{preset}", apply_preset(base, preset), graph, feats, train_images, args.seconds)
    wide = apply_preset(base, "paper").replace(**RELEASED_WIDTHS)
    train_stage(res, "train_step_paper_released_widths", wide, graph, feats, train_images, args.seconds)
    peak.sample("after training", args.seconds)

    eval_feats = synthetic_features(DB_ITEMS + QUERIES, seed=1)
    codes = encode_stages(res, base, eval_feats, images, args.seconds)
    index_stages(res, codes, args.seconds)
    peak.sample("end", args.seconds)
    peaks = peak.summary()
    res.finish(peaks["peak_flops_per_s"], peaks["peak_flops_per_cpu_s"])

    wr = whole_run(args.whole_run_json)
    out = {
        "peak_flops_per_s": peaks.pop("peak_flops_per_s"),
        "peak_flops_per_cpu_s": peaks.pop("peak_flops_per_cpu_s"),
        "stages": res.stages,
        "whole_run_32_seconds": wr["seconds"] if wr else None,
        "whole_run_32": wr,
        "peak": peaks,
        "memory_bandwidth": {"method": BANDWIDTH_METHOD, "bytes_per_s": round(res.bandwidth)},
        "threads": threads,
        "machine": f"{cpu_model()}, {os.cpu_count()} logical CPUs ({cpu_simd()}), {platform.platform()}, "
                   f"Python {platform.python_version()}, TensorFlow {tf.__version__}",
        "cpu_flags": cpu_simd(),
        "command": ("python benchmarks/stage_costs.py " + " ".join(sys.argv[1:])).strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg_at_start": load_start,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "benchmark_seconds": round(time.time() - t_start, 1),
    }
    if wr is None:
        out["whole_run_32_note"] = (f"{args.whole_run_json} has no whole_run_32 block (benchmarks/cifar10_pbgan.py "
                                    "--whole_run writes it)")
    write_json(args.out + ".json", out)
    write_markdown(out, args.out + ".md")
    print(f"wrote {args.out}.json and .md ({out['benchmark_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
