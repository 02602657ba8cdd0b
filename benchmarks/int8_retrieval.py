"""What int8 TFLite bit flips cost in retrieval: mAP of int8 codes on CIFAR-10.

    .venv/bin/python benchmarks/int8_retrieval.py [--model DIR] [--variants dynamic_int8,int8]

Bit agreement with the Keras encoder (benchmarks/encode_throughput.py) says how
many bits an int8 file flips; a user deciding whether to ship it needs to know
what the flips cost in retrieval. For one trained CIFAR-10 model of
benchmarks/cifar10_pbgan.py (default: its 24-bit bgan_paper model), on the same
P-BGAN protocol (seed 0: 1,000 queries, 59,000 database images):
- Keras codes (from the cached backbone features, as the CIFAR-10 benchmark scores them);
- each TFLite variant encoding all 60,000 images with ``TFLiteEncoder`` (the
  client-side resize from 32 to the model's input size, then the file), scored
  with its own codes on both sides (an index built with the file: what
  ``bgan_tf.index build --model encoder_int8.tflite`` serves), and with int8
  queries against a Keras-encoded database (what mixing them would give; the
  index refuses it);
- the floor the model itself sets (``serving.checks.input_rounding_agreement``): the
  Keras encoder's agreement with itself when its resized input is rounded to
  whole grey levels, as an 8-bit input tensor must be.

The variants are calibrated on 200 of the model's training images. Costs about
10 minutes on 2 cores with cached features (benchmarks/cifar10_pbgan.py writes
them; without them they are computed first, ~17 min). Writes
benchmarks/results/int8_retrieval.{json,md}. Needs ../shared/data/cifar10 and
../shared/weights; skips with a message when they or the model are absent.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bgan_tf.runtime import tune_allocator  # noqa: E402

tune_allocator()  # the malloc settings every binary runs with (bgan_tf/runtime.py)

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cifar10_pbgan import RESULTS, SHARED, load_cifar  # noqa: E402  (the same 60,000 images and order)

WORK = os.path.join(ROOT, "benchmarks", "work")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=os.path.join(WORK, "bgan_paper_24_s0", "model"))
    p.add_argument("--variants", default="dynamic_int8,int8")
    p.add_argument("--data", default=os.path.join(SHARED, "data", "cifar10"))
    p.add_argument("--weights", default=os.path.join(SHARED, "weights",
                                                     "mobilenet_v2_imagenet_torchvision_notop.weights.h5"))
    p.add_argument("--seed", type=int, default=0, help="the P-BGAN split's seed (the model's training run's)")
    p.add_argument("--cache", default=os.path.join(WORK, "features"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", default=os.path.join(RESULTS, "int8_retrieval"))
    args = p.parse_args()
    from bgan_tf.serving.tflite import TFLITE_VARIANTS

    unknown = [v for v in args.variants.split(",") if v not in TFLITE_VARIANTS]
    if unknown:  # checked before a minute of loading, not after
        print(f"error: unknown --variants {unknown}; choose from {', '.join(TFLITE_VARIANTS)}", file=sys.stderr)
        return 2
    for what, path, how in (("CIFAR-10 folder", args.data, "see ../shared/data/README.md"),
                            ("MobileNetV2 weights", args.weights, "see ../shared/weights/README.md"),
                            ("model", args.model, "train one with benchmarks/cifar10_pbgan.py --bits 24 "
                                                  "--methods bgan_paper, or pass --model")):
        if not os.path.exists(path):
            print(f"SKIP: {what} not found ({path}); {how}")
            return 0

    from bgan_tf.inference.tflite import TFLiteEncoder
    from bgan_tf.serving import checks as checks_lib
    from bgan_tf.serving import tflite as tflite_lib
    from bgan_tf.modeling.backbones import BackboneSpec
    from bgan_tf.atomic import write_json, write_text
    from bgan_tf.data.features import cached_features
    from bgan_tf.inference.keras_model import load_encoder
    from bgan_tf.evaluation.protocols import cifar10_pbgan
    from bgan_tf.evaluation.retrieval_metrics import evaluate_codes

    t0 = time.time()
    loaded = load_encoder(args.model)
    cfg = loaded.config
    if not cfg.freeze_backbone:
        print("this benchmark scores Keras codes from cached features of the frozen backbone; "
              f"{args.model} was trained with a fine-tuned backbone")
        return 2
    data = load_cifar(args.data)
    split = cifar10_pbgan(data.labels, args.seed)
    q, db = split.query, split.database
    lq, ldb = data.labels[q], data.labels[db]
    spec = BackboneSpec(cfg.backbone, args.weights, cfg.backbone_input_size)
    feats = cached_features(data.images, spec, data.fingerprint(), args.cache)
    print(f"images and features ready ({time.time() - t0:.0f}s)", flush=True)

    def score(qc, dbc) -> dict:
        m = evaluate_codes(qc, dbc, lq, ldb, topk=(1000,), pr_curve=False)
        return {"map_all": round(m["map_all"], 4), "map_1000": round(m["map_at"][1000], 4)}

    keras_codes = loaded.encode_features(feats)
    # The reference is the cached-feature path; check it is the image path too.
    image_path_agreement = checks_lib.bit_agreement(keras_codes[q], loaded.encode(data.images[q]))
    floor = checks_lib.input_rounding_agreement(loaded, data.images[q])
    results = {"model": os.path.abspath(args.model), "num_bits": loaded.num_bits,
               "input_size": int(cfg.backbone_input_size), "backbone": cfg.backbone,
               "keras": score(keras_codes[q], keras_codes[db]),
               "keras_image_path_agreement": round(image_path_agreement, 5),
               "input_rounding_agreement": round(floor, 5), "variants": {}}
    print(f"keras {results['keras']}; image path vs cached features {image_path_agreement:.5f}; "
          f"input rounding floor {floor:.4f}", flush=True)

    reps = tflite_lib.representative_images(data.images[split.train], cfg.backbone_input_size, 200, seed=0)
    with tempfile.TemporaryDirectory(prefix="int8_retrieval_") as tmp:
        paths = tflite_lib.convert_tflite(loaded, tmp, args.variants.split(","), representative=reps)
        for variant, path in paths.items():
            enc = TFLiteEncoder(path, num_threads=args.threads)
            t = time.time()
            codes = enc.encode(data.images, batch_size=64)
            secs = time.time() - t
            row = {"bytes": os.path.getsize(path),
                   "bit_agreement_queries": round(checks_lib.bit_agreement(keras_codes[q], codes[q]), 4),
                   "bit_agreement_database": round(checks_lib.bit_agreement(keras_codes[db], codes[db]), 4),
                   "both_sides": score(codes[q], codes[db]),
                   "queries_only": score(codes[q], keras_codes[db]),
                   "encode_img_per_s": round(len(codes) / secs, 1)}
            results["variants"][variant] = row
            print(f"{variant}: {row}", flush=True)
    results["seconds"] = round(time.time() - t0, 1)
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}"
    results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    write_json(args.out + ".json", results)
    md = markdown(results)
    write_text(args.out + ".md", md)
    print(md)
    return 0


def markdown(r: dict) -> str:
    k = r["keras"]
    lines = [
        "# What int8 TFLite costs in retrieval (CIFAR-10, P-BGAN protocol)", "",
        f"Generated by `benchmarks/int8_retrieval.py` ({r['date']}, {r['machine']}; {r['seconds']:.0f} s).  ",
        f"Model: `{r['model']}` ({r['backbone']}, {r['input_size']} px, {r['num_bits']} bits). "
        "1,000 queries against 59,000 database images; relevant = same class; the images are 32 px, "
        "so every encoder resizes them to the input size first.", "",
        "| codes | bits equal to Keras (queries / database) | mAP@all | mAP@1000 |",
        "|---|---:|---:|---:|",
        f"| Keras encoder (reference) | 1.0000 / 1.0000 | {k['map_all']:.4f} | {k['map_1000']:.4f} |",
    ]
    for v, row in r["variants"].items():
        agree = f"{row['bit_agreement_queries']:.4f} / {row['bit_agreement_database']:.4f}"
        b, qo = row["both_sides"], row["queries_only"]
        lines.append(f"| TFLite {v}, both sides | {agree} | {b['map_all']:.4f} | {b['map_1000']:.4f} |")
        lines.append(f"| TFLite {v} queries, Keras database | {row['bit_agreement_queries']:.4f} / 1.0000 "
                     f"| {qo['map_all']:.4f} | {qo['map_1000']:.4f} |")
    lines += [
        "",
        f"- The floor the model sets: rounding its resized input to whole grey levels (what an 8-bit input "
        f"tensor does) alone leaves {r['input_rounding_agreement']:.4f} of the Keras encoder's bits unchanged "
        "on the queries (`serving.checks.input_rounding_agreement`). No full-int8 file of this model can agree "
        "better on images that arrive at another size.",
        f"- The reference scores Keras codes computed from cached backbone features; on the queries they equal "
        f"the codes computed from the images in {r['keras_image_path_agreement']:.5f} of the bits.",
        "- Encoding speed (TFLite, all 60,000 images, client-side resize included): "
        + ", ".join(f"{v} {row['encode_img_per_s']:,.0f} img/s" for v, row in r["variants"].items()) + ".",
        "- An index keeps the id of the model that encoded it, so int8 queries against a Keras-built "
        "database are refused; that row shows what the refusal protects against.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from bgan_tf.errors import UserError

    try:
        sys.exit(main())
    except UserError as e:  # e.g. an unknown --variants name: one line, not a stack trace
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
