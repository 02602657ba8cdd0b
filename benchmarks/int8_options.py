"""What else full-int8 TFLite can do for bit agreement: more calibration, float islands.

    .venv/bin/python benchmarks/int8_options.py --model DIR [--images DIR_or_npz] [--label TEXT]

For one trained model, converts full-int8 TFLite variants and reports each one's bit
agreement with the Keras encoder on 512 images, size and batch-64 images/s (XNNPACK,
2 threads), next to float and dynamic-range int8:
- the Keras graph's normalisation (elementwise ops, each requantised) vs the one 1x1
  convolution that export uses for full int8;
- calibration on 200 vs 1,000 representative images;
- selective quantisation with tf.lite.experimental.QuantizationDebugger: the hash head
  (every op from the first FULLY_CONNECTED on) kept in float, then also the first N ops
  (preprocessing and stem), the layers where the debugger's per-layer statistics and
  the model's noise sensitivity point;
- the debugger's per-op error of the full-int8 model (each op quantised alone), to show
  whether a few layers or rounding everywhere cause the disagreement.
Appends a section per model to benchmarks/results/int8_options.md (and .json, keyed by
label). The MobileNetV2 models of benchmarks/encode_throughput.py are the intended input.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bgan_tf.runtime import tune_allocator  # noqa: E402

tune_allocator()  # the malloc settings every binary runs with (bgan_tf/runtime.py)

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from encode_throughput import throughput  # noqa: E402  (one timing loop for both benchmarks)
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--images", help="calibration/check images (default: the model's training data)")
    p.add_argument("--label", default=None)
    args = p.parse_args()

    import tensorflow as tf

    from bgan_tf.inference.tflite import TFLiteEncoder
    from bgan_tf.serving import checks as checks_lib
    from bgan_tf.serving import tflite as tflite_lib
    from bgan_tf.atomic import write_json, write_text
    from bgan_tf.inference.keras_model import load_encoder

    loaded = load_encoder(args.model)
    size = loaded.config.backbone_input_size
    source = args.images or loaded.config
    images = tflite_lib.representative_images(source, size, 512, seed=1)
    ref = loaded.encode(images)
    reps = {n: tflite_lib.representative_images(source, size, n, seed=0).astype(np.float32) for n in (200, 1000)}
    tmp = tempfile.mkdtemp(prefix="int8_options_")
    # What export writes: float variants from the Keras graph, full int8 from the
    # graph whose normalisation is one 1x1 convolution (serving.tflite.tflite_saved_model).
    sms = {fold: tflite_lib.tflite_saved_model(loaded, f"{tmp}/sm_{int(fold)}", fold) for fold in (False, True)}

    def converter(variant: str = "int8", n_reps: int = 200, float_islands: bool = False, fold: bool = True):
        fold = fold and tflite_lib.folds_normalisation(variant)
        conv = tflite_lib.tflite_converter(sms[fold], variant, reps[n_reps])
        if float_islands:
            # For the debugger: denylisted ops must be allowed to stay float.
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return conv

    rows = {}

    def measure(name: str, data: bytes) -> None:
        path = tempfile.mktemp(suffix=".tflite")
        with open(path, "wb") as f:
            f.write(data)
        enc = TFLiteEncoder(path, num_threads=2)
        agree = checks_lib.bit_agreement(ref, enc.encode(images))
        batch = np.ascontiguousarray(images[:64]).astype(np.float32)
        rate = throughput(lambda b: enc.runner(images=b), batch, min_seconds=3.0, min_iters=1)
        rows[name] = {"bit_agreement": round(agree, 4), "bytes": len(data), "batch_64": round(rate, 1)}
        print(f"  {name:44s} {rows[name]}", flush=True)

    measure("float", converter("float").convert())
    measure("dynamic_int8", converter("dynamic_int8").convert())
    measure("int8, normalisation as elementwise ops (the Keras graph)", converter(fold=False).convert())
    for n in (200, 1000):
        measure(f"int8, {n} calibration images", converter(n_reps=n).convert())

    # Op order and output tensor names of the fully quantised model, from the debugger.
    debug_set = lambda: ([reps[200][i:i + 1]] for i in range(8))  # noqa: E731
    dbg = tf.lite.experimental.QuantizationDebugger(converter=converter(float_islands=True), debug_dataset=debug_set)
    dbg.run()
    buf = io.StringIO()
    dbg.layer_statistics_dump(buf)
    stats = list(csv.DictReader(io.StringIO(buf.getvalue())))
    tensors = [r["tensor_name"] for r in stats]
    layer_error = per_layer_error(stats)
    print(f"  per-layer quantisation error: {layer_error}", flush=True)
    first_fc = next(i for i, r in enumerate(stats) if r["op_name"] == "FULLY_CONNECTED")
    head = tensors[first_fc:]
    for n in (0, 5, 20):
        if n and n + len(head) >= len(tensors) - 2:
            break  # a small net: nothing would be left to quantise
        opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=head + tensors[:n])
        label = "int8, hash head float" + (f" + first {n} ops float" if n else "")
        try:
            d = tf.lite.experimental.QuantizationDebugger(converter=converter(float_islands=True), debug_dataset=debug_set,
                                                          debug_options=opts)
        except ValueError as e:  # the debugger refuses when too few ops stay quantised
            print(f"  {label}: skipped ({e})")
            continue
        measure(label, d.get_nondebug_quantized_model())

    label = args.label or f"{loaded.config.backbone} {size} px, {loaded.num_bits} bits"
    out_json = os.path.join(RESULTS, "int8_options.json")
    all_rows = json.load(open(out_json)) if os.path.isfile(out_json) else {}
    all_rows[label] = {"variants": rows, "per_layer_error": layer_error}
    write_json(out_json, all_rows)
    lines = ["# Full-int8 options and their bit agreement", "",
             "Generated by `benchmarks/int8_options.py` (see its docstring); 512 check images, batch-64 "
             "images/s with XNNPACK on 2 threads (shared cores: speeds are rough).", ""]
    for name, entry in all_rows.items():
        if "variants" not in entry:  # written before per-layer errors were recorded
            entry = {"variants": entry, "per_layer_error": None}
        lines += [f"## {name}", "", "| variant | bit agreement | bytes | batch 64 (img/s) |", "|---|---:|---:|---:|"]
        lines += [f"| {v} | {r['bit_agreement']:.4f} | {r['bytes']:,d} | {r['batch_64']:,.0f} |"
                  for v, r in entry["variants"].items()]
        e = entry["per_layer_error"]
        if e is not None:
            lines += ["", f"Per-layer error of the full-int8 model, each op quantised alone (the debugger's RMSE "
                          f"in quantisation steps; plain rounding gives 0.29): median {e['median']:.2f} over "
                          f"{e['ops']} ops, {e['above_0.35']} above 0.35, largest {e['max']:.2f} ({e['max_op']})."]
        lines.append("")
    write_text(os.path.join(RESULTS, "int8_options.md"), "\n".join(lines))
    print("\n".join(lines))


def per_layer_error(stats: list[dict]) -> dict:
    """The debugger's per-op RMSE in units of the op's quantisation step.

    Each op is run on the float model's inputs, so these errors do not
    compound: an op near 0.29 (uniform rounding, 1/sqrt(12)) loses nothing
    beyond storing its output in 8 bits. Ops that only move values (PAD,
    BROADCAST_TO, SELECT_V2) are left out.
    """
    errs = []
    for i, r in enumerate(stats):
        if r["op_name"] in ("PAD", "BROADCAST_TO", "SELECT_V2") or not r["scale"] or float(r["scale"]) == 0:
            continue
        errs.append((float(r["mean_squared_error"]) ** 0.5 / float(r["scale"]), f"op {i} {r['op_name']}"))
    vals = np.array([e for e, _ in errs])
    worst = max(errs)
    return {"ops": len(errs), "median": round(float(np.median(vals)), 3), "above_0.35": int((vals > 0.35).sum()),
            "max": round(worst[0], 3), "max_op": worst[1]}


if __name__ == "__main__":
    main()
