"""CIFAR-10 "P-BGAN" protocol end to end, BGAN next to classical baselines.

    .venv/bin/python benchmarks/cifar10_pbgan.py                # everything
    .venv/bin/python benchmarks/cifar10_pbgan.py --bits 32      # one code length
    .venv/bin/python benchmarks/cifar10_pbgan.py --bits 32 --methods nbr_only,bgan_paper \
        --trainable_from block_13_expand                         # the fine-tuned rows

Protocol (bgan_tf.evaluation.protocols.cifar10_pbgan, seed fixed): the 60,000 images
pooled; 1,000 queries (100 per class); the other 59,000 are the database;
10,000 training images (1,000 per class) drawn from the database. Relevant =
same class; Hamming ranking, ties scored by their expectation.

Stages: load images -> frozen ImageNet MobileNetV2 features (torchvision
weights with torch padding, ../shared/weights) for all 60,000, cached ->
(with --trainable_from) the float16 activations below that layer for all
60,000, cached and memory-mapped -> neighbourhood graph on the 10,000 training
features -> for each code length, LSH / PCAH / ITQ fitted on the training
features, and BGAN trained with each preset on the training images -> mAP@all
and mAP@1000 of every method; float cosine ranking as reference.

Learned rows: by default the encoder is a hash head over the frozen pooled
features, and the codes come from those cached features. With --trainable_from
LAYER (and --top_bn frozen|train) the backbone from LAYER on trains too (on
cached bottom activations); those rows are named <method>_ft (before --variant
and --suffix: nbr_only_ft, bgan_paper_ft_seed1), record trainable_from/top_bn,
and their codes come from the cached bottom activations through the tuned top
(encode_bottom), after a check that the first 16 queries get the same codes
from their images (at most one bit position may differ: float16 rounding of a
pre-sign value right at zero).

Every learned row with a GAN (use_gan) also records how healthy the GAN ended:
psnr_db / ssim = mean PSNR (dB) and SSIM of G(code) against the 1,000 query
images at the GAN's resolution (bgan_tf.evaluation.reconstruction), next to two
references: psnr_other_code_db, G fed another query's code (each query gets the
next one's), and psnr_mean_image_db, the training images' mean image for every
query. A G whose PSNR is not above both has learned nothing from the code. The same
three in the backbone's feature space: feature_cos = mean cosine between the frozen
ImageNet backbone's features of G(code) and of the query,
feature_cos_other_code and feature_cos_mean_image its references. And
d_acc_last = D's accuracy in the last training epoch on real images
(d_acc_real) and the fraction of reconstructions G(code) (d_acc_recon) and of
prior fakes G(noise) (d_acc_prior) it judged fake (bgan_tf.training.bgan);
d_acc_last is absent when the run was already finished and not retrained.

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


# The loss preset each learned row's method name trains with (render_results reads it too).
PRESET_OF_METHOD = {"bgan_released_code": "released_code", "bgan_paper": "paper", "nbr_only": "nbr_only"}


def bgan_config(method: str, bits: int, args, out_dir: str):
    from bgan_tf.config import REMOVED_FIELDS, apply_preset
    from bgan_tf.configs import get_config

    preset = PRESET_OF_METHOD[method]
    cfg = apply_preset(get_config("cifar10"), preset)
    cfg = cfg.replace(num_bits=bits, backbone_weights=args.weights, backbone_input_size=args.input_size,
                      epochs=args.epochs or cfg.epochs, seed=args.seed, output_dir=out_dir, dataset="cifar10 (P-BGAN train)",
                      feature_cache_dir=args.cache)
    if args.trainable_from:
        cfg = cfg.replace(trainable_from=args.trainable_from, top_bn=args.top_bn)
    changes = parse_override(args.override)
    removed = sorted(set(changes) & REMOVED_FIELDS.keys())
    if removed:  # (a traceback from dataclasses.replace would not say why)
        raise SystemExit(f"--override {', '.join(removed)}: removed from BGANConfig in issue 28 (no measured gain); "
                         "the rows that used it record measured_with_commit: rerun them at that commit")
    return cfg.replace(**changes)


def parse_override(text: str) -> dict:
    """'w_pixel=0.1,gen_channels=(64,64,32)' -> {'w_pixel': 0.1, 'gen_channels': (64, 64, 32)}
    (Python literals; commas inside brackets belong to the value)."""
    import ast

    items, depth, start = [], 0, 0
    for i, ch in enumerate(text + ","):
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    out = {}
    for item in filter(None, items):
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
    p.add_argument("--input_size", type=int, default=INPUT_SIZE)
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the baselines and training")
    p.add_argument("--suffix", default="", help="appended to method names, e.g. _seed1 for a second-seed run")
    p.add_argument("--override", default="", help="config fields for the learned rows, e.g. "
                   "'w_pixel=0.1,w_feature=0.1'; needs --variant")
    p.add_argument("--variant", default="", help="name appended to the learned rows only (e.g. _content0.1); "
                   "the baselines of this seed are not rewritten")
    p.add_argument("--trainable_from", default="", help="fine-tune the backbone from this layer on (e.g. "
                   "block_13_expand) in the learned rows, named <method>_ft; evaluated through the cached "
                   "bottom activations of all 60,000 images")
    p.add_argument("--top_bn", default="frozen", choices=("frozen", "train"),
                   help="with --trainable_from: the top's BatchNorms frozen or trained")
    p.add_argument("--cache", default=os.path.join(ROOT, "benchmarks", "work", "features"))
    p.add_argument("--work", default=os.path.join(ROOT, "benchmarks", "work"))
    p.add_argument("--out", default=os.path.join(RESULTS, "cifar10_pbgan"))
    p.add_argument("--whole_run", action="store_true",
                   help="time one whole 32-bit run in this one process: uncached features (a fresh cache), "
                        "graph, ITQ, bgan_paper training with the cifar10 config as shipped, evaluation; "
                        "recorded as whole_run_32 (benchmarks/stage_costs.py reads it). With --trainable_from "
                        "(and --override/--variant) the fine-tuned run, bottom activations uncached too, "
                        "recorded as whole_run_32_ft<variant>")
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

        if args.epochs or ((args.override or args.variant) and not args.trainable_from):
            print("--whole_run times the cifar10 config as shipped, or a fine-tuned run (--trainable_from, "
                  "with --override/--variant): drop --epochs, or add --trainable_from")
            return 2
        bits_list, methods, baselines = [32], ["bgan_paper"], ("ITQ",)
        os.makedirs(args.work, exist_ok=True)
        # A fresh folder for the features and the run: nothing cached, nothing to resume.
        fresh_cache = tempfile.mkdtemp(prefix="whole_run_", dir=args.work)
        args.work = fresh_cache
        args.cache = os.path.join(fresh_cache, "features")
        load_at_start = os.getloadavg()

    from bgan_tf.modeling.backbones import BackboneSpec, build_feature_extractor
    from bgan_tf.evaluation.baselines import make_baseline
    from bgan_tf.data.features import bottom_cache_path, cache_path, cached_bottom, cached_features
    from bgan_tf.training.graph import build_graph
    from bgan_tf.inference.keras_model import load_encoder
    from bgan_tf.evaluation.protocols import cifar10_pbgan
    from bgan_tf.evaluation.retrieval_metrics import evaluate_codes, evaluate_float
    from bgan_tf.training.trainer import train
    from cpuinfo import cpu_model

    # The code this process imported: a commit made while it trains is not what trained it.
    commit = git_commit()
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
    bottom = None
    if args.trainable_from and methods:
        # The _ft rows' top was tuned: their codes come from the frozen bottom's activations
        # of all 60,000 images (cached once as float16, memory-mapped), not the pooled features.
        t = time.time()
        hit = os.path.isfile(bottom_cache_path(spec, args.trainable_from, data.fingerprint(), args.cache))
        bottom = cached_bottom(data.images, spec, args.trainable_from, data.fingerprint(), args.cache)
        bottom_stage = "bottom_60k_from_cache" if hit else "bottom_60k"
        seconds[bottom_stage] = time.time() - t
        print(f"bottom activations below {args.trainable_from} {bottom.shape} {bottom.dtype} "
              f"({seconds[bottom_stage]:.0f}s{', cached' if hit else ''})", flush=True)
    ft = FT_TAG if args.trainable_from else ""
    q, db, tr = split.query, split.database, split.train
    lq, ldb = data.labels[q], data.labels[db]

    def score(qc, dbc):
        m = evaluate_codes(qc, dbc, lq, ldb, topk=(1000,), pr_curve=False)
        # input_size: a cell is only comparable with cells at its size (baselines fit its features).
        return {"map_all": round(m["map_all"], 4), "map_1000": round(m["map_at"][1000], 4),
                "input_size": args.input_size}

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
    extractor = None  # built once, for the first GAN row's feature cosines
    for bits in bits_list:
        # A --variant run has the same seed, so the same baselines: keep the rows already recorded.
        for name in () if args.variant and not args.whole_run else baselines:
            t = time.time()
            b = make_baseline(name, bits, args.seed).fit(feats[tr])
            methods_out.setdefault(name + args.suffix, {})[str(bits)] = score(b.encode(feats[q]), b.encode(feats[db]))
            seconds[f"{name}_{bits}"] = time.time() - t
        for method in methods:
            name = method + ft + args.variant
            stage = f"{name}_{bits}"
            out_dir = os.path.join(args.work, f"{stage}_s{args.seed}")
            cfg = bgan_config(method, bits, args, out_dir)
            t = time.time()
            res = train(cfg, train_data, verbose=2)
            seconds[f"{stage}_train"] = time.time() - t
            t = time.time()
            enc = load_encoder(res.model_dir)
            if bottom is None:
                # Frozen backbone: codes from the cached features equal codes from
                # the images (same backbone weights), without rerunning it.
                qc, dbc = enc.encode_features(feats[q]), enc.encode_features(feats[db])
                row = score(qc, dbc)
            else:
                codes = bottom_codes(enc, bottom)
                flips = check_bottom_codes(enc, data.images[q[:BOTTOM_CHECK]], codes[q[:BOTTOM_CHECK]])
                qc, dbc = codes[q], codes[db]
                row = score(qc, dbc)
                row.update(trainable_from=cfg.trainable_from, top_bn=cfg.top_bn, bottom_check_bit_flips=flips)
            seconds[f"{stage}_eval"] = time.time() - t
            # A run folder that had finished is reloaded, not trained: no training time to report.
            row["train_seconds"] = round(seconds[f"{stage}_train"], 1) if res.epochs_run else None
            if not res.epochs_run:
                seconds.pop(f"{stage}_train")
            row["epochs"] = cfg.epochs
            if res.graph_label_agreement is not None:  # of the graph it trained on (--graph_construction)
                row["graph_label_agreement"] = round(res.graph_label_agreement, 4)
                row["graph_pairs_per_item"] = round(res.graph_pairs_per_item, 1)
                row["graph_seconds"] = round(res.seconds.get("graph", float("nan")), 1)
            # Which code trained it (rows of earlier code stay in the table): a reloaded run's
            # model folder says.
            row["commit"] = commit if res.epochs_run else trained_by(res.model_dir)
            row["cpu"] = cpu_model()  # seconds, and oneDNN's float rounding, depend on it
            if args.override:
                row["override"] = args.override
            if cfg.use_gan:
                t = time.time()
                if extractor is None:  # the frozen pretrained backbone whose features feats holds
                    extractor = build_feature_extractor(spec)
                row.update(gan_health(res, qc, data.images[q], cfg.image_size, data.images[tr], feats[q], extractor))
                seconds[f"{stage}_gan_health"] = time.time() - t
            methods_out.setdefault(name + args.suffix, {})[str(bits)] = row
            # A --variant run into a fresh --out has no baseline rows of its own.
            itq = methods_out.get("ITQ" + args.suffix, {}).get(str(bits), "not in this results file")
            print(f"{bits} bits {name}{args.suffix}: {row}  ITQ: {itq}", flush=True)
            _write(results, secs_out, seconds, args, graph_agree=agree, out=args.out)
        _write(results, secs_out, seconds, args, graph_agree=agree, out=args.out)
    seconds["total"] = time.time() - t0
    if args.whole_run:
        import shutil

        shutil.rmtree(fresh_cache, ignore_errors=True)
        name = "bgan_paper" + ft + args.variant
        stages = {k: round(seconds[k], 1) for k in whole_run_stages(name, bool(ft))}
        argv = " ".join(a for a in sys.argv[1:] if not a.startswith("--out"))
        results[WHOLE_RUN_KEY + ft + args.variant] = {
            "stages": stages, "seconds": round(sum(stages.values()), 1),
            "map": {m: methods_out[m]["32"] for m in ("ITQ", name)},
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "loadavg_at_start": [round(v, 2) for v in load_at_start],
            "loadavg_at_end": [round(v, 2) for v in os.getloadavg()],
            "command": f"benchmarks/cifar10_pbgan.py {argv}",
            "commit": commit,
        }
    _write(results, secs_out, seconds, args, graph_agree=agree, out=args.out)
    print(open(args.out + ".md").read())
    return 0


FT_TAG = "_ft"  # in the names of rows trained with --trainable_from, before --variant and --suffix
BOTTOM_CHECK = 16  # queries encoded from their images too, before the cached-bottom codes are trusted
# Bit positions (summed over the BOTTOM_CHECK codes) the two paths may disagree on: a
# pre-sign value right at zero can change sign when float16 rounds the bottom activations.
MAX_BOTTOM_FLIPS = 1


def bottom_codes(enc, bottom: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Codes (signs, float32 [N, L], as ``LoadedEncoder.encode_features``) of every item from
    its cached bottom activations, through the loaded encoder's tuned top, head and sign."""
    import tensorflow as tf

    net = enc.model  # the Keras Encoder inside the LoadedEncoder
    # A graph function, as LoadedEncoder's own paths (eager calls are several times slower).
    fn = tf.function(lambda v: net.encode_bottom(v, training=False), reduce_retracing=True)
    out = [np.asarray(fn(tf.constant(np.asarray(bottom[s:s + batch_size]))))
           for s in range(0, len(bottom), batch_size)]
    return np.concatenate(out).astype(np.float32)


def check_bottom_codes(enc, images: np.ndarray, codes: np.ndarray) -> int:
    """Bit positions where ``codes`` (from cached bottoms) differ from the image->code graph
    on ``images``; more than MAX_BOTTOM_FLIPS means the cache does not match this encoder."""
    from bgan_tf.errors import UserError

    direct = enc.encode(images)
    flips = int(np.sum(direct != codes))
    if flips > MAX_BOTTOM_FLIPS:
        raise UserError(f"codes from the cached bottom activations differ from the codes of the images on "
                        f"{flips} of {direct.size} bit positions ({len(images)} queries; at most "
                        f"{MAX_BOTTOM_FLIPS} allowed): the bottom cache does not match the trained encoder's "
                        "frozen bottom; delete the .bottom.npy files in --cache and rerun")
    return flips


def gan_health(res, q_codes: np.ndarray, q_images: np.ndarray, image_size: int,
               train_images: np.ndarray | None = None, q_features: np.ndarray | None = None,
               extractor=None) -> dict:
    """PSNR/SSIM of G(code) on the queries, the PSNR of G(another query's code) and of the
    training images' mean image as references, the same three as feature cosines when
    ``q_features`` (the queries' features from ``extractor``) are given, and D's accuracies in
    the last epoch (``res.history``; empty when the run was already finished and not retrained)."""
    from bgan_tf.data.pipeline import images_for_gan
    from bgan_tf.evaluation.reconstruction import feature_cosine, reconstruction_quality
    from bgan_tf.inference.keras_model import load_generator
    from bgan_tf.training.bgan import ACCURACY_NAMES

    out: dict = {}
    gen = load_generator(res.model_dir)
    if gen is not None:
        target = images_for_gan(q_images, image_size)
        quality = reconstruction_quality(gen, q_codes, target)
        out.update(psnr_db=round(quality["psnr_db"], 2), ssim=round(quality["ssim"], 4))
        other = reconstruction_quality(gen, np.roll(q_codes, -1, axis=0), target)
        out["psnr_other_code_db"] = round(other["psnr_db"], 2)
        if train_images is not None:
            out["psnr_mean_image_db"] = round(mean_image_psnr(images_for_gan(train_images, image_size), target), 2)
        if q_features is not None:
            out["feature_cos"] = round(feature_cosine(gen, q_codes, q_features, extractor), 4)
            out["feature_cos_other_code"] = round(
                feature_cosine(gen, np.roll(q_codes, -1, axis=0), q_features, extractor), 4)
            if train_images is not None:
                mean = images_for_gan(train_images, image_size).mean(axis=0, keepdims=True) * 255.0
                f = np.asarray(extractor(mean, training=False), np.float32)[0]
                qn = q_features / np.linalg.norm(q_features, axis=1, keepdims=True)
                out["feature_cos_mean_image"] = round(float(np.mean(qn @ (f / np.linalg.norm(f)))), 4)
    last = {k: round(res.history[k][-1], 4) for k in ACCURACY_NAMES if res.history.get(k)}
    if last:
        out["d_acc_last"] = last
    return out


def mean_image_psnr(train: np.ndarray, target: np.ndarray) -> float:
    """Mean PSNR (dB, images in [0, 1]) of the training images' mean image against each target."""
    mean = train.astype(np.float64).mean(axis=0)
    mse = ((target.astype(np.float64) - mean) ** 2).reshape(len(target), -1).mean(axis=1)
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-12))))


def git_commit() -> str | None:
    """The checkout's short commit hash (None outside git)."""
    from bgan_tf.inference.model_folder import git_commit as full_commit

    full = full_commit()
    return full[:7] if full else None


def trained_by(model_dir: str) -> str | None:
    """The short commit recorded in a model folder's metadata.json (None if absent)."""
    try:
        with open(os.path.join(model_dir, "metadata.json")) as f:
            full = json.load(f).get("git_commit")
    except (OSError, ValueError):
        return None
    return full[:7] if full else None


def merge(out: str, others: list[str]) -> int:
    """Fold other runs' methods and stage times into ``out`` (.json/.md)."""
    from bgan_tf.atomic import write_json

    results = json.load(open(out + ".json"))
    for path in others:
        other = json.load(open(path))
        for method, rows in other.get("methods", {}).items():
            results["methods"].setdefault(method, {}).update(rows)
        results["seconds"].update(other.get("seconds", {}))
        results.update({k: v for k, v in other.items() if k.startswith(WHOLE_RUN_KEY)})
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
        "backbone": f"mobilenet_v2_torch @ {args.input_size}px (ImageNet torchvision weights; frozen, "
                    f"except from trainable_from on in the {FT_TAG} rows)",
        "graph_label_agreement": round(graph_agree, 4),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "data_note": "CIFAR-10 JPEG re-encoded copy (quality 75; ~8 grey levels RMS from the original)",
    }
    write_json(out + ".json", results)
    write_markdown(results, out + ".md")


# The stages of one whole 32-bit run, summed into whole_run_32 (the speed issue's budget:
# 15 minutes on 2 cores; a fine-tuned run, whole_run_32_ft<variant>, has issue 14's 30). The
# float-cosine reference and the GAN-health figures are not part of a user's run.
WHOLE_RUN_KEY = "whole_run_32"
# The backbone's input size when --input_size is not given; cells from before the field
# was recorded were all trained at it.
INPUT_SIZE = 128
WHOLE_RUN_BUDGET_S = 900
WHOLE_FT_RUN_BUDGET_S = 1800


def whole_run_stages(name: str, fine_tuned: bool) -> tuple[str, ...]:
    bottom = ("bottom_60k",) if fine_tuned else ()
    return ("load_images", "features_60k") + bottom + ("graph_10k", "ITQ_32", f"{name}_32_train", f"{name}_32_eval")


def _whole_run_lines(results: dict) -> list[str]:
    runs = {k: v for k, v in results.items() if k.startswith(WHOLE_RUN_KEY)}
    if not runs:
        return ["", "One whole 32-bit run: not measured yet (`benchmarks/cifar10_pbgan.py --whole_run`)."]
    lines = []
    for key, run in sorted(runs.items()):
        total = run["seconds"]
        budget = WHOLE_RUN_BUDGET_S if key == WHOLE_RUN_KEY else WHOLE_FT_RUN_BUDGET_S
        what = ("uncached features, graph, ITQ, bgan_paper training with the cifar10 config as shipped, evaluation"
                if key == WHOLE_RUN_KEY else "uncached features and bottom activations, graph, ITQ, fine-tuned "
                f"bgan_paper training, evaluation: `{run.get('command', '?')}`")
        parts = " + ".join(f"{k} {v:.0f}" for k, v in run["stages"].items())
        maps = ", ".join(f"{m} {r['map_all']:.3f} / {r['map_1000']:.3f}" for m, r in run.get("map", {}).items())
        lines += ["", f"One whole 32-bit run in one process ({key}, {run['date']}; {what}): {parts} = "
                      f"{total:.0f} s ({total / 60:.1f} min; target {budget // 60} min on 2 cores: "
                      f"{'met' if total <= budget else 'NOT met'}; load average at start "
                      f"{run['loadavg_at_start'][0]:.1f}). mAP@all / mAP@1000 in that run: {maps}."]
    return lines


def row_order(methods: dict) -> list[str]:
    """The table's rows: baselines, then the learned presets, then any other row in the
    order first recorded; a ``_ft`` row right after its frozen counterpart."""
    fixed = ("LSH", "PCAH", "ITQ", "nbr_only", "bgan_released_code", "bgan_paper")
    names = [m for m in methods if not m.startswith("float_cosine")]
    frozen = [m.replace(FT_TAG, "", 1) for m in names]

    def key(i: int) -> tuple[int, int]:
        f = frozen[i]
        pos = fixed.index(f) if f in fixed else len(fixed) + frozen.index(f)
        return pos, int(names[i] != f)

    return [names[i] for i in sorted(range(len(names)), key=key)]


def _gan_health_lines(methods: dict, order: list[str], bits: list[str]) -> list[str]:
    def cell(r: dict | None) -> str:
        parts = []
        if r and "d_acc_last" in r:
            acc = r["d_acc_last"]
            parts.append(" / ".join(f"{acc[k]:.2f}" if k in acc else "?"
                                    for k in ("d_acc_real", "d_acc_recon", "d_acc_prior")))
        if r and "psnr_db" in r:
            refs = [f"{r[k]:.1f}" for k in ("psnr_other_code_db", "psnr_mean_image_db") if k in r]
            parts.append(f"{r['psnr_db']:.1f} dB" + (f" ({' / '.join(refs)})" if refs else ""))
        if r and "feature_cos" in r:
            refs = [f"{r[k]:.2f}" for k in ("feature_cos_other_code", "feature_cos_mean_image") if k in r]
            parts.append(f"cos {r['feature_cos']:.2f}" + (f" ({' / '.join(refs)})" if refs else ""))
        return ", ".join(parts) or "-"

    gan = [m for m in order if any("d_acc_last" in r or "psnr_db" in r for r in methods[m].values())]
    if not gan:
        return []
    lines = ["", "GAN health of each GAN row: D accuracy on real / reconstructed / prior fakes in the last "
                 "epoch, PSNR dB (G(code) against the 1,000 queries; in brackets, where recorded, G fed another "
                 "query's code / the training images' mean image: a G not above both ignores the code), and, where "
                 "recorded, the same three as the cosine of the ImageNet backbone's features of G(code) and of "
                 "the query.", "",
             "| method | " + " | ".join(f"{b} bits" for b in bits) + " |", "|---|" + "---|" * len(bits)]
    lines += [f"| {m} | " + " | ".join(cell(methods[m].get(b)) for b in bits) + " |" for m in gan]
    return lines


def write_markdown(results: dict, path: str) -> None:
    methods = results["methods"]
    bits = sorted({b for rows in methods.values() for b in rows if b != "float"}, key=int)
    order = row_order(methods)
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
    tuned = sorted({(r["trainable_from"], r.get("top_bn", "frozen")) for m in order for r in methods[m].values()
                    if "trainable_from" in r})
    if tuned:
        lines += ["", f"`{FT_TAG}` rows: the backbone from " + ", ".join(f"`{layer}` on (top BatchNorms {bn})"
                                                                   for layer, bn in tuned)
                  + " trained on cached activations of the frozen layers below; codes from those "
                    "activations of every image."]
    graphs = [(m, b, r) for m in order for b, r in methods[m].items() if "graph_construction=" in r.get("override", "")]
    if graphs:
        base = results.get("setup", {}).get("graph_label_agreement")
        lines += ["", "Rows trained on another neighbourhood graph (`--graph_construction`): the fraction of "
                      "its positive pairs that share a class"
                  + (f" (the K1/K2 graph's: {base:.3f})" if base is not None else "") + ": "
                  + "; ".join(f"{m} {b} bits {r['graph_label_agreement']:.3f}"
                              + (f" ({r['graph_pairs_per_item']:.0f} pairs per image)" if "graph_pairs_per_item" in r
                                 else "") for m, b, r in graphs if "graph_label_agreement" in r) + "."]
    trained = [m for m in order if any("train_seconds" in r for r in methods[m].values())]
    if trained:
        lines += ["", "Training cost of each learned row: epochs, seconds (frozen features cached; "
                      "the two cores were shared with other jobs).", "",
                  "| method | " + " | ".join(f"{b} bits" for b in bits) + " |", "|---|" + "---|" * len(bits)]
        for m in trained:
            cells = [f"{methods[m][b].get('epochs', '?')} ep, {methods[m][b]['train_seconds']:.0f} s"
                     if b in methods[m] and methods[m][b].get("train_seconds") is not None
                     else ("reloaded" if b in methods[m] and "train_seconds" in methods[m][b] else "-") for b in bits]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += _gan_health_lines(methods, order, bits)
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
    from bgan_tf.errors import UserError

    try:
        sys.exit(main())
    except UserError as e:
        print(f"error: {e}")
        sys.exit(2)
