"""Label precision of the neighbourhood graph under cheap changes of features and construction.

    nice -n 10 .venv/bin/python benchmarks/graph_quality.py
    nice -n 10 .venv/bin/python benchmarks/graph_quality.py --variants 128,128_flip   # a subset

Issue 14 item 5: the graph bounds what the neighbourhood loss can learn, so this measures
how often its positive pairs share a CIFAR-10 class. Data: the 10,000 training images of
the P-BGAN split (`bgan_tf.evaluation.protocols.cifar10_pbgan`, --seed), loaded as
benchmarks/cifar10_pbgan.py does. Features: frozen ImageNet MobileNetV2
(`compute_features`, XNNPACK) at 128 px (today's) or 160 px, each plain or flip-averaged
(the mean of the features of the image and of its horizontal mirror).

Constructions, on every feature variant:
- ``knn_only``: the K1 nearest-neighbour lists (Euclidean, as build_graph), symmetrised.
- ``k1k2``: today's graph, `build_graph(features, K1, K2)` (K1 lists expanded by overlap).
- ``knn_matched``: the top-P Euclidean neighbours, symmetrised, P chosen so the graph has
  as many positive pairs as k1k2 (`matched_keys`): does the K2 expansion beat plain
  deeper kNN at the same density?
- ``diffusion_a<alpha>``: manifold ranking (Zhou et al. 2004; Iscen et al. CVPR 2017),
  `bgan_tf.training.diffusion`, which ``--graph_construction diffusion`` trains on: W =
  max(0, cos)^3 on the symmetrised K1 kNN graph of the L2-normalised features, S = D^-1/2
  W D^-1/2, scores F = (1 - alpha) sum_{t=0..T} alpha^t S^t (truncated series, on blocks
  of --block columns, so memory is n x block per alpha); each item's positives are its
  top-P by F (itself excluded), P matched to k1k2's density as above, symmetrised. Every
  alpha comes from one series.

Each row: the label precision of the positive pairs i != j (`NeighbourGraph.label_agreement`),
positive pairs per item (i != j), the recall of same-class pairs (the fraction of all
ordered same-class pairs i != j that are positive) and the seconds of the construction
(its kNN search included; the alphas share one series and report its time). Precision
only compares at a known density: the md calls a row clearly better than k1k2 on the
same features when its precision is at least CLEAR_MARGIN higher with its density within
DENSITY_TOLERANCE of k1k2's.

Writes benchmarks/results/graph_quality.{json,md} (after every feature variant, so a
stopped run keeps what it finished). Needs ../shared/data/cifar10 and ../shared/weights
(or --data/--weights); prints SKIP and exits 0 when they are absent.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, ROOT)
sys.path.insert(0, BENCH)

from bgan_tf.training.diffusion import (affinity, diffusion_ranked, matched_keys, normalised,  # noqa: E402
                                        normalised_affinity, off_diagonal, pattern)
from bgan_tf.training.graph import NeighbourGraph, build_graph  # noqa: E402
from bgan_tf.training.knn import knn, symmetric_keys  # noqa: E402

SHARED = os.path.join(os.path.dirname(ROOT), "shared")
VARIANTS = ("128", "128_flip", "160", "160_flip")
CLEAR_MARGIN = 0.02  # absolute label precision
DENSITY_TOLERANCE = 0.05  # relative difference of positive pairs per item
MAX_BLOCK = 4096  # columns of the diffusion per block: n x block float32 per alpha


def pair_stats(keys: np.ndarray, n: int, labels: np.ndarray) -> dict:
    """Label precision, positive pairs per item and same-class recall of a symmetric graph
    (pairs i != j; ordered, so each unordered pair counts twice on both sides)."""
    off = off_diagonal(keys, n)
    precision = NeighbourGraph(n, keys).label_agreement(labels)
    sizes = np.bincount(np.asarray(labels, np.int64))
    same_class = int(np.sum(sizes * (sizes - 1)))
    hits = 0 if off == 0 else round(precision * off)
    return {"precision": round(precision, 4), "pairs_per_item": round(off / n, 2),
            "recall": round(hits / same_class, 4) if same_class else float("nan")}


def constructions(features: np.ndarray, labels: np.ndarray, k1: int, k2: int, alphas: tuple[float, ...],
                  steps: int, block: int) -> list[dict]:
    """Every construction's row on one feature matrix (see the module docstring)."""
    n = features.shape[0]
    rows = []

    def row(name: str, keys: np.ndarray, seconds: float, **extra) -> None:
        rows.append({"construction": name, **pair_stats(keys, n, labels), "seconds": round(seconds, 2), **extra})

    t = time.perf_counter()
    row("knn_only", symmetric_keys(pattern(knn(features, k1), k1)), time.perf_counter() - t)
    t = time.perf_counter()
    g = build_graph(features, k1, k2)
    row("k1k2", g.keys, time.perf_counter() - t)
    target = off_diagonal(g.keys, n)
    # Symmetrising at least keeps each item's own P: P <= target / n (+1 for the search).
    depth = min(n - 1, math.ceil(target / n) + 1)
    t = time.perf_counter()
    keys, p = matched_keys(knn(features, depth), target)
    row("knn_matched", keys, time.perf_counter() - t, p=p)
    t = time.perf_counter()
    ranked = diffusion_ranked(normalised_affinity(affinity(normalised(features), k1)), alphas, steps, depth, block)
    series = time.perf_counter() - t
    for a in alphas:
        t = time.perf_counter()
        keys, p = matched_keys(ranked[a], target)
        row(f"diffusion_a{a:g}", keys, series + time.perf_counter() - t, p=p)
    return rows


def verdicts(rows: list[dict]) -> list[str]:
    """Sentences rendered from the rows: per feature variant, the best matched-density row
    against k1k2; then each variant's k1k2 and best row against the first variant's k1k2."""
    by_variant: dict[str, list[dict]] = {}
    for r in rows:
        by_variant.setdefault(r["variant"], []).append(r)

    def comparable(r: dict, base: dict) -> bool:
        return abs(r["pairs_per_item"] - base["pairs_per_item"]) <= DENSITY_TOLERANCE * base["pairs_per_item"]

    def versus(r: dict, base: dict, where: str) -> str:
        diff = r["precision"] - base["precision"]
        if not comparable(r, base):
            verdict = "densities differ by more than the tolerance, not a like-for-like comparison"
        elif diff >= CLEAR_MARGIN:
            verdict = "clearly better"
        elif diff <= -CLEAR_MARGIN:
            verdict = "clearly worse"
        else:
            verdict = "no clear difference"
        return (f"{r['variant']} {r['construction']}: precision {r['precision']:.4f} at {r['pairs_per_item']} pairs/item "
                f"against {where} {base['precision']:.4f} at {base['pairs_per_item']} ({diff:+.4f}): {verdict}.")

    lines, best_of = [], {}
    for variant, vrows in by_variant.items():
        base = next((r for r in vrows if r["construction"] == "k1k2"), None)
        if base is None:
            continue
        matched = [r for r in vrows if r["construction"] != "k1k2" and comparable(r, base)]
        best = max(matched, key=lambda r: r["precision"], default=None)
        best_of[variant] = (base, best)
        if best is not None:
            lines.append("- " + versus(best, base, f"k1k2 on {variant}"))
    first = next(iter(best_of), None)
    if first is not None:
        base0 = best_of[first][0]
        for variant, (base, best) in list(best_of.items())[1:]:
            lines.append("- " + versus(base, base0, f"k1k2 on {first}"))
        overall = max((b for _, b in best_of.values() if b is not None), key=lambda r: r["precision"], default=None)
        if overall is not None and overall is not base0:
            lines.append("- Best matched-density row overall: " + versus(overall, base0, f"k1k2 on {first}"))
    return lines


def render(results: dict) -> str:
    st = results["settings"]
    lines = ["# Neighbourhood graph quality on the CIFAR-10 P-BGAN training images", "",
             f"Command: `{results['command']}`  ", f"Date: {results['date']}  ", f"Machine: {results['machine']}  ",
             f"Load average at start: {results['loadavg_at_start']} (other jobs share the cores), "
             f"at end: {results['loadavg_at_end']}  ",
             f"Settings: K1={st['k1']}, K2={st['k2']}, diffusion alphas {st['alphas']}, T={st['steps']}, "
             f"split seed {st['seed']}; {results['items']:,} training images, "
             f"{results['same_class_pairs']:,} ordered same-class pairs. Weight of the diffusion series beyond "
             f"T (alpha^(T+1), what truncation drops): "
             + ", ".join(f"{a:g}: {a ** (st['steps'] + 1):.2f}" for a in st["alphas"]) + ".", "",
             "Precision = fraction of positive pairs (i != j) that share a class; recall = fraction of same-class "
             "pairs that are positive. knn_matched and diffusion pick P (top-P per item, then symmetrised) so their "
             "pairs per item match k1k2's on the same features. Feature seconds: "
             + ", ".join(f"{v} {s:.0f} s" for v, s in results["feature_seconds"].items()) + ".", "",
             "| features | construction | precision | pairs / item | same-class recall | P | seconds |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append(f"| {r['variant']} | {r['construction']} | {r['precision']:.4f} | {r['pairs_per_item']} | "
                     f"{r['recall']:.4f} | {r.get('p', '')} | {r['seconds']:.1f} |")
    lines += ["", f"Against k1k2 (clearly = precision at least {CLEAR_MARGIN} higher with pairs per item within "
              f"{DENSITY_TOLERANCE:.0%}):", ""] + (verdicts(results["rows"]) or ["- no k1k2 row yet"])
    return "\n".join(lines) + "\n"


def variant_features(images: np.ndarray, weights: str, variants: list[str]) -> dict[str, tuple[np.ndarray, float]]:
    """variant -> (features, seconds): each size's plain and mirrored features computed once."""
    from bgan_tf.data.features import compute_features
    from bgan_tf.modeling.backbones import BackboneSpec

    out = {}
    for size in sorted({int(v.split("_")[0]) for v in variants}):
        spec = BackboneSpec("mobilenet_v2_torch", weights, size)
        t = time.perf_counter()
        plain = compute_features(images, spec)
        plain_s = time.perf_counter() - t
        out[str(size)] = (plain, plain_s)
        if f"{size}_flip" in variants:
            t = time.perf_counter()
            mirror = compute_features(np.ascontiguousarray(images[:, :, ::-1]), spec)
            out[f"{size}_flip"] = ((plain + mirror) / 2.0, plain_s + time.perf_counter() - t)
        print(f"features at {size} px: {plain.shape}, {plain_s:.0f} s a pass", flush=True)
    return {v: out[v] for v in variants}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.path.join(SHARED, "data", "cifar10"))
    p.add_argument("--weights", default=os.path.join(SHARED, "weights",
                                                     "mobilenet_v2_imagenet_torchvision_notop.weights.h5"))
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--k1", type=int, default=20)
    p.add_argument("--k2", type=int, default=30)
    p.add_argument("--alphas", default="0.9,0.99")
    p.add_argument("--steps", type=int, default=20, help="T, terms of the truncated diffusion series")
    p.add_argument("--block", type=int, default=1000, help="columns of the diffusion series per block")
    p.add_argument("--seed", type=int, default=0, help="seed of the P-BGAN split")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "graph_quality"))
    args = p.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    alphas = tuple(float(a) for a in args.alphas.split(",") if a)
    if not variants or set(variants) - set(VARIANTS):
        p.error(f"--variants: a subset of {', '.join(VARIANTS)}")
    if not alphas or not all(0.0 < a < 1.0 for a in alphas):
        p.error("--alphas: values in (0, 1)")
    for name, lo, hi in (("k1", 1, 200), ("k2", 1, 200), ("steps", 1, 200), ("block", 1, MAX_BLOCK), ("seed", 0, 2**31 - 1)):
        if not lo <= getattr(args, name) <= hi:
            p.error(f"--{name} must be in [{lo}, {hi}]")
    if not os.path.isdir(args.data) or not os.path.isfile(args.weights):
        print(f"SKIP: CIFAR-10 folder ({args.data}) or MobileNetV2 weights ({args.weights}) not found; "
              "see ../shared/data/README.md and ../shared/weights/README.md")
        return 0

    from bgan_tf import atomic
    from bgan_tf.evaluation.protocols import cifar10_pbgan
    from bgan_tf.runtime import tune_allocator
    from cifar10_pbgan import load_cifar
    from graph_scale import machine

    tune_allocator()
    load = [round(v, 2) for v in os.getloadavg()]
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    data = load_cifar(args.data)
    train = cifar10_pbgan(data.labels, args.seed).train
    images, labels = data.images[train], np.asarray(data.labels[train], np.int64)
    sizes = np.bincount(labels)
    results = {"command": "nice -n 10 .venv/bin/python benchmarks/graph_quality.py " + " ".join(sys.argv[1:]),
               "date": started, "machine": machine(), "loadavg_at_start": load, "items": int(len(train)),
               "same_class_pairs": int(np.sum(sizes * (sizes - 1))),
               "settings": {"k1": args.k1, "k2": args.k2, "alphas": list(alphas), "steps": args.steps,
                            "block": args.block, "seed": args.seed, "variants": variants},
               "feature_seconds": {}, "rows": []}
    for variant, (feats, feat_s) in variant_features(images, args.weights, variants).items():
        results["feature_seconds"][variant] = round(feat_s, 1)
        for r in constructions(feats, labels, args.k1, args.k2, alphas, args.steps, args.block):
            results["rows"].append({"variant": variant, **r})
            print(results["rows"][-1], flush=True)
        results["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        atomic.write_json(args.out + ".json", results)
        atomic.write_text(args.out + ".md", render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
