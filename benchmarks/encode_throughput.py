"""Encoding throughput of every export of one model, measured in one run.

    .venv/bin/python benchmarks/encode_throughput.py [--model DIR] [--no-mobilenet]

Variants: keras (the Keras encoder, called through tf.function), saved_model
(the exported serving_default signature, reloaded with tf.saved_model.load),
tflite_float, tflite_dynamic_int8, tflite_int8 (ai-edge-litert, XNNPACK,
threads = CPU count). For each: images/s at batch 1 and 64 on images already
at the backbone input size, file size in bytes, and bit agreement with the
Keras encoder on 256 training images.

--model defaults to runs/digits/model if it exists, else a small digits model
is trained into benchmarks/work/digits (5 epochs, ~1 min). Results:
benchmarks/results/encode_throughput.json ({VARIANT: {batch_1, batch_64, bytes,
bit_agreement}}) and .md, with each model's code stability under sub-grey-level
pixel noise (what bounds int8 agreement). Unless --no-mobilenet, the same is measured for a
frozen MobileNetV2 (torchvision weights from /work/shared/weights, 96 px)
trained briefly on digits, written to encode_throughput_mobilenet_v2.json;
skipped with a message when the shared weights are absent. --extra_model adds
one more model on natural images, e.g. the CIFAR-10 32-bit model of
benchmarks/cifar10_pbgan.py with --extra_images ../shared/data/cifar10/test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bgan_tf.runtime import tune_allocator  # noqa: E402

tune_allocator()  # the malloc settings every binary runs with (bgan_tf/runtime.py)

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "benchmarks", "results")
WORK = os.path.join(ROOT, "benchmarks", "work")
VARIANTS = ("keras", "saved_model", "tflite_float", "tflite_dynamic_int8", "tflite_int8")
MOBILENET_WEIGHTS = "weights/mobilenet_v2_imagenet_torchvision_notop.weights.h5"


def throughput(fn, batch: np.ndarray, min_seconds: float, min_iters: int) -> float:
    """images/s of fn(batch): one warm-up call, then repeat until both minimums are met."""
    fn(batch)
    n, t0 = 0, time.perf_counter()
    while True:
        fn(batch)
        n += 1
        elapsed = time.perf_counter() - t0
        if n >= min_iters and elapsed >= min_seconds:
            return n * len(batch) / elapsed


def cpu_simd() -> str:
    """The vector extensions int8 speed depends on (XNNPACK's int8 kernels gain most with
    AVX-512 VNNI / AVX-VNNI on x86, dot-product instructions on ARM)."""
    from cpuinfo import cpu_flags

    flags = cpu_flags()
    if not flags:
        return "CPU flags unknown"
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
    have = [f for f in wanted if f in flags]
    return "SIMD: " + (", ".join(have) if have else "none of " + ", ".join(wanted))


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def train_model(out_dir: str, **overrides) -> str:
    from bgan_tf.configs import get_config
    from bgan_tf.training.trainer import train

    config = get_config("digits").replace(output_dir=out_dir, **overrides)
    print(f"training {config.backbone} model into {out_dir} ...", flush=True)
    return train(config, verbose=0).model_dir


def measure(model_dir: str, work: str, seconds: float, image_source: str | None = None) -> dict:
    """``image_source``: folder/.npz for calibration and checks (default: the model's training data)."""
    import tensorflow as tf

    from bgan_tf.inference.tflite import TFLiteEncoder
    from bgan_tf.serving import checks as checks_lib
    from bgan_tf.serving import saved_model as sm_lib
    from bgan_tf.serving import tflite as tflite_lib
    from bgan_tf.inference.keras_model import load_encoder

    loaded = load_encoder(model_dir)
    size = loaded.config.backbone_input_size
    source = image_source or loaded.config
    images = tflite_lib.representative_images(source, size, 256, seed=1)
    reps = tflite_lib.representative_images(source, size, 200, seed=0)
    shutil.rmtree(work, ignore_errors=True)
    sm_path = sm_lib.export_saved_model(loaded, os.path.join(work, "saved_model"))
    check = checks_lib.check_saved_model(sm_path, loaded, images)
    print(check.summary(), flush=True)
    paths = tflite_lib.convert_tflite(loaded, os.path.join(work, "tflite"), representative=reps)
    ref = loaded.encode(images)

    keras_fn = tf.function(lambda x: loaded.model(x, training=False))
    sm = tf.saved_model.load(sm_path)
    sig = sm.signatures["serving_default"]
    threads = os.cpu_count()
    runners = {v: TFLiteEncoder(p, num_threads=threads) for v, p in paths.items()}
    calls = {
        "keras": (lambda b: keras_fn(tf.constant(b, tf.float32)).numpy(), np.float32),
        "saved_model": (lambda b: sig(images=tf.constant(b))["codes"].numpy(), np.uint8),
    }
    for v, r in runners.items():
        calls[f"tflite_{v}"] = ((lambda r: lambda b: r.runner(images=b)["codes"])(r), np.float32)
    sizes = {"keras": os.path.getsize(os.path.join(model_dir, "encoder.weights.h5")),
             "saved_model": dir_bytes(sm_path)}
    sizes.update({f"tflite_{v}": os.path.getsize(p) for v, p in paths.items()})
    sm_codes = checks_lib.call_signature(sig, images=tf.constant(images))["codes"]
    agreement = {"keras": 1.0, "saved_model": checks_lib.bit_agreement(ref, sm_codes)}
    agreement.update({f"tflite_{v}": checks_lib.bit_agreement(ref, r.encode(images)) for v, r in runners.items()})

    results = {}
    for name in VARIANTS:
        fn, dtype = calls[name]
        row = {}
        for bs in (1, 64):
            batch = np.ascontiguousarray(np.resize(images, (bs,) + images.shape[1:])).astype(dtype)
            row[f"batch_{bs}"] = round(throughput(fn, batch, seconds, 5 if bs > 1 else 20), 1)
        row["bytes"] = int(sizes[name])
        row["bit_agreement"] = round(float(agreement[name]), 5)
        results[name] = row
        print(f"  {name:20s} {row}", flush=True)
    # Eager Keras (what LoadedEncoder.encode does) for reference, not in the JSON rows.
    eager = {bs: round(throughput(lambda b: loaded.model(tf.constant(b, tf.float32), training=False).numpy(),
                                  np.resize(images, (bs,) + images.shape[1:]), seconds, 5), 1) for bs in (1, 64)}
    stability = {sigma: round(checks_lib.noise_stability(loaded, images, sigma), 4) for sigma in (0.25, 0.5, 1.0)}
    print(f"  Keras codes under N(0, sigma) pixel noise: {stability}", flush=True)
    info = {"backbone": loaded.config.backbone, "input_size": size, "num_bits": loaded.num_bits,
            "model_dir": os.path.abspath(model_dir), "keras_eager": eager, "tflite_threads": threads,
            "saved_model_identical": check.ok, "noise_stability": stability,
            "images": image_source or f"training data ({loaded.config.dataset})"}
    return {"results": results, "info": info}


def table(res: dict) -> str:
    lines = ["| variant | batch 1 (img/s) | batch 64 (img/s) | size (bytes) | bit agreement |",
             "|---|---:|---:|---:|---:|"]
    for name, r in res["results"].items():
        lines.append(f"| {name} | {r['batch_1']:,.1f} | {r['batch_64']:,.1f} | {r['bytes']:,d} | {r['bit_agreement']:.4f} |")
    return "\n".join(lines)


def stability_line(res: dict) -> str:
    st = res["info"]["noise_stability"]
    return ("Code stability (bit agreement of the Keras encoder with itself when N(0, sigma) grey-level noise is "
            "added to the pixels; int8 activations add noise of this order at every layer): "
            + ", ".join(f"sigma {k}: {v:.4f}" for k, v in st.items()) + f". Images: {res['info']['images']}.")


def model_section(res: dict, heading: str, json_name: str) -> list[str]:
    """Write one more model's rows to RESULTS/json_name; return its Markdown section."""
    from bgan_tf.atomic import write_json

    write_json(os.path.join(RESULTS, json_name), res["results"])
    return [f"## {heading}", "", f"Model: `{res['info']['model_dir']}`; JSON: `{json_name}`", "",
            table(res), "", targets(res), "", stability_line(res), "",
            f"Keras eager: batch 1 {res['info']['keras_eager'][1]} img/s, batch 64 "
            f"{res['info']['keras_eager'][64]} img/s.", ""]


def targets(res: dict) -> str:
    r = res["results"]
    out = []
    for bs in ("batch_1", "batch_64"):
        ratio_sm = r["saved_model"][bs] / r["keras"][bs]
        ratio_q = r["tflite_int8"][bs] / r["tflite_float"][bs]
        out.append(f"- {bs}: SavedModel / Keras = {ratio_sm:.2f}x (target >= 0.9x: "
                   f"{'met' if ratio_sm >= 0.9 else 'NOT met'}); TFLite int8 / float = {ratio_q:.2f}x "
                   f"(target >= 1.5x: {'met' if ratio_q >= 1.5 else 'NOT met'})")
    agree = r["tflite_int8"]["bit_agreement"]
    out.append(f"- TFLite int8 bit agreement {agree:.4f} (target >= 0.99: {'met' if agree >= 0.99 else 'NOT met'}); "
               f"dynamic int8 {r['tflite_dynamic_int8']['bit_agreement']:.4f}; float "
               f"{r['tflite_float']['bit_agreement']:.4f} (must be 1.0)")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="trained model folder (default: runs/digits/model or a fresh small one)")
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum timing per measurement")
    parser.add_argument("--shared_dir", default="/work/shared", help="where weights/ lives (MobileNetV2 part)")
    parser.add_argument("--no-mobilenet", dest="mobilenet", action="store_false")
    parser.add_argument("--mobilenet_model", help="an already trained MobileNetV2 model folder to reuse")
    parser.add_argument("--extra_model", help="one more model to measure, e.g. a CIFAR-10 model that "
                        "benchmarks/cifar10_pbgan.py trained (benchmarks/work/bgan_paper_32_s0/model)")
    parser.add_argument("--extra_images", help="calibration/check images for --extra_model (folder or .npz)")
    parser.add_argument("--extra_label", default="extra model", help="heading for --extra_model")
    args = parser.parse_args()

    import tensorflow as tf

    model = args.model
    if not model:
        default = os.path.join(ROOT, "runs", "digits", "model")
        model = default if os.path.isdir(default) else os.path.join(WORK, "digits", "model")
        if not os.path.isdir(model):
            model = train_model(os.path.join(WORK, "digits"), epochs=5)
    command = "python benchmarks/encode_throughput.py " + " ".join(sys.argv[1:])
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores ({cpu_simd()}), Python {platform.python_version()}, "
               f"TensorFlow {tf.__version__}, {platform.platform()}, load average at start "
               f"{os.getloadavg()[0]:.1f} (other jobs share the cores: absolute numbers are noisy)")
    print(f"model {model}", flush=True)
    res = measure(model, os.path.join(WORK, "export_small"), args.seconds)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "encode_throughput.json"), "w") as f:
        json.dump(res["results"], f, indent=2)

    md = ["# Encoding throughput of the exports", "",
          f"Command: `{command.strip()}`  ", f"Machine: {machine}  ",
          f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
          f"## {res['info']['backbone']} ({res['info']['input_size']} px, {res['info']['num_bits']} bits)", "",
          f"Model: `{res['info']['model_dir']}`", "", table(res), "", targets(res), "", stability_line(res), "",
          f"Keras eager (`LoadedEncoder.encode` path): batch 1 {res['info']['keras_eager'][1]} img/s, "
          f"batch 64 {res['info']['keras_eager'][64]} img/s. The `keras` row calls the encoder through "
          "tf.function, the fair comparison with a SavedModel signature.", ""]

    weights = os.path.join(args.shared_dir, MOBILENET_WEIGHTS)
    if not args.mobilenet:
        md += ["## MobileNetV2", "", "Skipped (--no-mobilenet).", ""]
    elif not os.path.isfile(weights):
        msg = f"MobileNetV2 part skipped: {weights} not found (the shared weights are not on this machine)."
        print(msg)
        md += ["## MobileNetV2", "", msg, ""]
    else:
        mb = args.mobilenet_model or os.path.join(WORK, "mobilenet", "model")
        if not os.path.isdir(mb):
            mb = train_model(os.path.join(WORK, "mobilenet"), backbone="mobilenet_v2_torch", backbone_weights=weights,
                             backbone_input_size=96, freeze_backbone=True, graph_features="backbone",
                             hash_hidden=(256,), epochs=3, feature_cache_dir=os.path.join(WORK, "features"))
        res_mb = measure(mb, os.path.join(WORK, "export_mobilenet"), args.seconds)
        md += model_section(res_mb, "mobilenet_v2_torch (frozen, torchvision ImageNet weights, "
                            f"{res_mb['info']['input_size']} px, {res_mb['info']['num_bits']} bits, 3 epochs on digits)",
                            "encode_throughput_mobilenet_v2.json")
    if args.extra_model:
        res_x = measure(args.extra_model, os.path.join(WORK, "export_extra"), args.seconds, args.extra_images)
        md += model_section(res_x, f"{args.extra_label} ({res_x['info']['backbone']}, "
                            f"{res_x['info']['input_size']} px, {res_x['info']['num_bits']} bits)",
                            "encode_throughput_extra.json")
    with open(os.path.join(RESULTS, "encode_throughput.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
