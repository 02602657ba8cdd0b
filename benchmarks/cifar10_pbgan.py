"""CIFAR-10 "P-BGAN" protocol end to end, BGAN next to classical baselines.

    .venv/bin/python benchmarks/cifar10_pbgan.py                # everything
    .venv/bin/python benchmarks/cifar10_pbgan.py --bits 32      # one code length

Protocol (bgan_tf.evaluation.protocols.cifar10_pbgan, seed fixed): the 60,000 images
pooled; 1,000 queries (100 per class); the other 59,000 are the database;
10,000 training images (1,000 per class) drawn from the database. Relevant =
same class; Hamming ranking, ties scored by their expectation.

Stages: load images -> frozen ImageNet MobileNetV2 features (torchvision
weights with torch padding, ../shared/weights) for all 60,000, cached ->
neighbourhood graph on the 10,000 training features -> for each code length,
LSH / PCAH / ITQ fitted on the training features, and BGAN trained with each
preset on the training images (encoder = hash head over the frozen features)
-> mAP@all and mAP@1000 of every method; float cosine ranking as reference.

Writes benchmarks/results/cifar10_pbgan.{json,md} (merging with earlier runs
of other code lengths/methods, so the table can be filled in pieces). Needs
../shared/data/cifar10 and ../shared/weights (or --data/--weights); skips
with a message when they are absent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bgan_tf.runtime import tune_allocator  # noqa: E402

tune_allocator()  # the malloc settings every binary runs with (bgan_tf/runtime.py)

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
RESULTS = os.path.join(ROOT, "benchmarks", "results")
ALL_BITS = (12, 24, 32, 48, 64)
ALL_METHODS = ("bgan_released_code", "bgan_paper", "nbr_only")


def load_cifar(root: str):
    """train/ and test/ class folders pooled into one labelled set of 60,000."""
    from bgan_tf.data.sources import ImageData, load_folder

    parts = [load_folder(os.path.join(root, s), size=32) for s in ("train", "test")]
    assert parts[0].class_names == parts[1].class_names
    return ImageData(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                     parts[0].names + parts[1].names, parts[0].class_names)


def bgan_config(method: str, bits: int, args, out_dir: str):
    from bgan_tf.config import apply_preset
    from bgan_tf.configs import get_config

    preset = {"bgan_released_code": "released_code", "bgan_paper": "paper", "nbr_only": "nbr_only"}[method]
    cfg = apply_preset(get_config("cifar10"), preset)
    cfg = cfg.replace(num_bits=bits, backbone_weights=args.weights, backbone_input_size=args.input_size,
                      epochs=args.epochs or cfg.epochs, seed=args.seed, output_dir=out_dir, dataset="cifar10 (P-BGAN train)",
                      feature_cache_dir=args.cache)
    return cfg.replace(**parse_override(args.override))


def parse_override(text: str) -> dict:
    """'w_pixel=0.1,w_feature=0.1' -> {'w_pixel': 0.1, 'w_feature': 0.1} (Python literals)."""
    import ast

    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, _, value = item.partition("=")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.path.join(SHARED, "data", "cifar10"))
    p.add_argument("--weights", default=os.path.join(SHARED, "weights",
                                                     "mobilenet_v2_imagenet_torchvision_notop.weights.h5"))
    p.add_argument("--bits", default=",".join(map(str, ALL_BITS)))
    p.add_argument("--methods", default=",".join(ALL_METHODS))
    p.add_argument("--epochs", type=int, default=None, help="default: the cifar10 config's")
    p.add_argument("--input_size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the baselines and training")
    p.add_argument("--suffix", default="", help="appended to method names, e.g. _seed1 for a second-seed run")
    p.add_argument("--override", default="", help="config fields for the learned rows, e.g. "
                   "'w_pixel=0.1,w_feature=0.1'; needs --variant")
    p.add_argument("--variant", default="", help="name appended to the learned rows only (e.g. _content0.1); "
                   "the baselines of this seed are not rewritten")
    p.add_argument("--cache", default=os.path.join(ROOT, "benchmarks", "work", "features"))
    p.add_argument("--work", default=os.path.join(ROOT, "benchmarks", "work"))
    p.add_argument("--out", default=os.path.join(RESULTS, "cifar10_pbgan"))
    p.add_argument("--whole_run", action="store_true",
                   help="time one whole 32-bit run in this one process: uncached features (a fresh cache), "
                        "graph, ITQ, bgan_paper training with the cifar10 config as shipped, evaluation; "
                        "recorded as whole_run_32 (benchmarks/stage_costs.py reads it)")
    p.add_argument("--merge_from", default="", help="comma-separated results .json files of other runs (e.g. run "
                   "in parallel with another --out) to merge into --out; nothing is trained")
    args = p.parse_args()
    if args.merge_from:
        return merge(args.out, args.merge_from.split(","))
    if not os.path.isdir(args.data) or not os.path.isfile(args.weights):
        print(f"SKIP: CIFAR-10 folder ({args.data}) or MobileNetV2 weights ({args.weights}) not found; "
              "see ../shared/data/README.md and ../shared/weights/README.md")
        return 0
    if args.override and not args.variant:
        print("--override changes the learned rows: name them with --variant (e.g. --variant _content0.1)")
        return 2
    bits_list = [int(b) for b in args.bits.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    baselines = ("LSH", "PCAH", "ITQ")
    fresh_cache = None
    if args.whole_run:
        import tempfile

        if args.override or args.variant or args.epochs:
            print("--whole_run times the cifar10 config as shipped: drop --override/--variant/--epochs")
            return 2
        bits_list, methods, baselines = [32], ["bgan_paper"], ("ITQ",)
        os.makedirs(args.work, exist_ok=True)
        # A fresh folder for the features and the run: nothing cached, nothing to resume.
        fresh_cache = tempfile.mkdtemp(prefix="whole_run_", dir=args.work)
        args.work = fresh_cache
        args.cache = os.path.join(fresh_cache, "features")
        load_at_start = os.getloadavg()

    from bgan_tf.modeling.backbones import BackboneSpec
    from bgan_tf.evaluation.baselines import make_baseline
    from bgan_tf.data.features import cache_path, cached_features
    from bgan_tf.training.graph import build_graph
    from bgan_tf.inference.keras_model import load_encoder
    from bgan_tf.evaluation.protocols import cifar10_pbgan
    from bgan_tf.evaluation.retrieval_metrics import evaluate_codes, evaluate_float
    from bgan_tf.training.trainer import train

    seconds: dict[str, float] = {}
    t0 = time.time()
    data = load_cifar(args.data)
    seconds["load_images"] = time.time() - t0
    split = cifar10_pbgan(data.labels, args.seed)
    print(f"P-BGAN split: {split.sizes()}  ({time.time() - t0:.0f}s)", flush=True)

    t = time.time()
    spec = BackboneSpec("mobilenet_v2_torch", args.weights, args.input_size)
    cached = os.path.isfile(cache_path(spec, data.fingerprint(), args.cache))
    feats = cached_features(data.images, spec, data.fingerprint(), args.cache)
    # A cache hit must not overwrite the time of the run that computed them.
    feat_stage = "features_60k_from_cache" if cached else "features_60k"
    seconds[feat_stage] = time.time() - t
    print(f"features {feats.shape} ({seconds[feat_stage]:.0f}s{', cached' if cached else ''})", flush=True)
    q, db, tr = split.query, split.database, split.train
    lq, ldb = data.labels[q], data.labels[db]

    def score(qc, dbc):
        m = evaluate_codes(qc, dbc, lq, ldb, topk=(1000,), pr_curve=False)
        return {"map_all": round(m["map_all"], 4), "map_1000": round(m["map_at"][1000], 4)}

    out_json = args.out + ".json"
    results = {"methods": {}, "seconds": {}}
    if os.path.isfile(out_json):
        results = json.load(open(out_json))
    methods_out = results.setdefault("methods", {})
    secs_out = results.setdefault("seconds", {})

    t = time.time()
    m = evaluate_float(feats[q], feats[db], lq, ldb, topk=(1000,))
    methods_out["float_cosine" + args.suffix] = {"float": {"map_all": round(m["map_all"], 4), "map_1000": round(m["map_at"][1000], 4)}}
    seconds["float_cosine_eval"] = time.time() - t

    t = time.time()
    graph = build_graph(feats[tr], 20, 30)
    seconds["graph_10k"] = time.time() - t
    agree = graph.label_agreement(data.labels[tr])
    print(f"graph: {graph.num_positive_pairs} positive pairs, {100 * agree:.1f}% share a label "
          f"({seconds['graph_10k']:.0f}s)", flush=True)

    train_data = data.subset(tr)
    for bits in bits_list:
        # A --variant run has the same seed, so the same baselines: keep the rows already recorded.
        for name in () if args.variant else baselines:
            t = time.time()
            b = make_baseline(name, bits, args.seed).fit(feats[tr])
            methods_out.setdefault(name + args.suffix, {})[str(bits)] = score(b.encode(feats[q]), b.encode(feats[db]))
            seconds[f"{name}_{bits}"] = time.time() - t
        for method in methods:
            stage = f"{method}{args.variant}_{bits}"
            out_dir = os.path.join(args.work, f"{stage}_s{args.seed}")
            cfg = bgan_config(method, bits, args, out_dir)
            t = time.time()
            res = train(cfg, train_data, verbose=2)
            seconds[f"{stage}_train"] = time.time() - t
            t = time.time()
            enc = load_encoder(res.model_dir)
            # Frozen backbone: codes from the cached features equal codes from
            # the images (same backbone weights), without rerunning it.
            row = score(enc.encode_features(feats[q]), enc.encode_features(feats[db]))
            seconds[f"{stage}_eval"] = time.time() - t
            row["train_seconds"] = round(seconds[f"{stage}_train"], 1)
            row["epochs"] = cfg.epochs
            if args.override:
                row["override"] = args.override
            methods_out.setdefault(method + args.variant + args.suffix, {})[str(bits)] = row
            print(f"{bits} bits {method}{args.variant}{args.suffix}: {row}  ITQ: {methods_out['ITQ' + args.suffix][str(bits)]}",
                  flush=True)
            _write(results, secs_out, seconds, args, graph_agree=agree, out=args.out)
        _write(results, secs_out, seconds, args, graph_agree=agree, out=args.out)
    seconds["total"] = time.time() - t0
    if args.whole_run:
        import shutil

        shutil.rmtree(fresh_cache, ignore_errors=True)
        stages = {k: round(seconds[k], 1) for k in WHOLE_RUN_STAGES}
        results["whole_run_32"] = {
            "stages": stages, "seconds": round(sum(stages.values()), 1),
            "map": {m: methods_out[m]["32"] for m in ("ITQ", "bgan_paper")},
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "loadavg_at_start": [round(v, 2) for v in load_at_start],
            "loadavg_at_end": [round(v, 2) for v in os.getloadavg()],
            "command": "benchmarks/cifar10_pbgan.py --whole_run",
            "commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip() or None,
        }
    _write(results, secs_out, seconds, args, graph_agree=agree, out=args.out)
    print(open(args.out + ".md").read())
    return 0


def merge(out: str, others: list[str]) -> int:
    """Fold other runs' methods and stage times into ``out`` (.json/.md)."""
    from bgan_tf.atomic import write_json

    results = json.load(open(out + ".json"))
    for path in others:
        other = json.load(open(path))
        for method, rows in other.get("methods", {}).items():
            results["methods"].setdefault(method, {}).update(rows)
        results["seconds"].update(other.get("seconds", {}))
    results.setdefault("setup", {})["epochs"] = "per run: see the training cost table"
    write_json(out + ".json", results)
    write_markdown(results, out + ".md")
    print(open(out + ".md").read())
    return 0


def _write(results, secs_out, seconds, args, graph_agree, out):
    from bgan_tf.atomic import write_json

    secs_out.update({k: round(v, 1) for k, v in seconds.items()})
    results["setup"] = {
        "protocol": "cifar10_pbgan", "seed": args.seed, "epochs": "per run: see the training cost table",
        "backbone": f"mobilenet_v2_torch @ {args.input_size}px (frozen, ImageNet torchvision weights)",
        "graph_label_agreement": round(graph_agree, 4),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "data_note": "CIFAR-10 JPEG re-encoded copy (quality 75; ~8 grey levels RMS from the original)",
    }
    write_json(out + ".json", results)
    write_markdown(results, out + ".md")


# The stages of one whole 32-bit run, summed into whole_run_32 (the speed issue's budget:
# 15 minutes on 2 cores). The float-cosine reference is not part of a user's run.
WHOLE_RUN_STAGES = ("load_images", "features_60k", "graph_10k", "ITQ_32", "bgan_paper_32_train",
                    "bgan_paper_32_eval")
WHOLE_RUN_BUDGET_S = 900


def _whole_run_lines(results: dict) -> list[str]:
    run = results.get("whole_run_32")
    if not run:
        return ["", "One whole 32-bit run: not measured yet (`benchmarks/cifar10_pbgan.py --whole_run`)."]
    total = run["seconds"]
    parts = " + ".join(f"{k} {v:.0f}" for k, v in run["stages"].items())
    maps = ", ".join(f"{m} {r['map_all']:.3f} / {r['map_1000']:.3f}" for m, r in run.get("map", {}).items())
    return ["", f"One whole 32-bit run in one process (`--whole_run`, {run['date']}; uncached features, graph, "
                f"ITQ, bgan_paper training with the cifar10 config as shipped, evaluation): {parts} = "
                f"{total:.0f} s ({total / 60:.1f} min; target {WHOLE_RUN_BUDGET_S // 60} min on 2 cores: "
                f"{'met' if total <= WHOLE_RUN_BUDGET_S else 'NOT met'}; load average at start "
                f"{run['loadavg_at_start'][0]:.1f}). mAP@all / mAP@1000 in that run: {maps}."]


def write_markdown(results: dict, path: str) -> None:
    methods = results["methods"]
    bits = sorted({b for rows in methods.values() for b in rows if b != "float"}, key=int)
    order = [m for m in ("LSH", "PCAH", "ITQ", "nbr_only", "bgan_released_code", "bgan_paper") if m in methods]
    order += [m for m in methods if m not in order and not m.startswith("float_cosine")]
    lines = ["# CIFAR-10 P-BGAN benchmark", "",
             "Generated by `benchmarks/cifar10_pbgan.py`; do not edit by hand.", "",
             "Command: `.venv/bin/python benchmarks/cifar10_pbgan.py` (see its docstring).", "",
             "mAP@all / mAP@1000, 1,000 queries vs 59,000 database images, Hamming ranking "
             "(ties scored by their expectation).", ""]
    lines.append("| method | " + " | ".join(f"{b} bits" for b in bits) + " |")
    lines.append("|---|" + "---|" * len(bits))
    for m in order:
        cells = []
        for b in bits:
            r = methods[m].get(b)
            cells.append(f"{r['map_all']:.3f} / {r['map_1000']:.3f}" if r else "-")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    trained = [m for m in order if any("train_seconds" in r for r in methods[m].values())]
    if trained:
        lines += ["", "Training cost of each learned row: epochs, seconds (frozen features cached; "
                      "the two cores were shared with other jobs).", "",
                  "| method | " + " | ".join(f"{b} bits" for b in bits) + " |", "|---|" + "---|" * len(bits)]
        for m in trained:
            cells = [f"{methods[m][b].get('epochs', '?')} ep, {methods[m][b]['train_seconds']:.0f} s"
                     if b in methods[m] and "train_seconds" in methods[m][b] else "-" for b in bits]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if "float_cosine" in methods:
        r = methods["float_cosine"]["float"]
        lines += ["", f"Float features, cosine ranking (the reference the codes compress): "
                      f"{r['map_all']:.3f} / {r['map_1000']:.3f}."]
    lines += _whole_run_lines(results)
    s = results.get("setup", {})
    lines += ["", "## Setup", ""] + [f"- {k}: {v}" for k, v in s.items()]
    lines += ["", "## Wall time of each stage (seconds)", ""]
    lines += [f"- {k}: {v}" for k, v in results.get("seconds", {}).items()]
    from bgan_tf.atomic import write_text

    write_text(path, "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
