"""Time, peak memory and kNN recall of building BGAN's neighbourhood graph at 10k-1M items.

    nice -n 10 .venv/bin/python benchmarks/graph_scale.py [--sizes 10000,100000,1000000]

Features are synthetic and seeded, at the width of the MobileNetV2 backbone (1280-d
float32): a Gaussian mixture of ``--clusters`` centres (standard normal; Dirichlet
weights, so cluster sizes vary) plus isotropic noise of a per-cluster scale in
[0.4, 0.8]. Each size runs in its own subprocess, which generates the features, times
``build_graph(features, k1, k2, knn)`` (kNN, recall sample, expansion, symmetrising)
and reports its peak RSS (``ru_maxrss``: it includes the features themselves, as a
trainer holds them, and the TensorFlow import). ``knn_recall`` is recall@K1 against
exact search on ``--recall_sample`` seeded queries: what build_graph logs for the
approximate path, computed separately (and untimed) for the exact one.

Writes benchmarks/results/graph_scale.{json,md}. Targets (checked here, not by tests):
1,000,000 items in under 30 minutes and 16 GB, with kNN recall >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TARGET_ITEMS, TARGET_SECONDS, TARGET_GB, TARGET_RECALL = 1_000_000, 30 * 60, 16.0, 0.9


def clustered_features(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """[n, dim] float32 Gaussian-mixture features, written in row blocks (no float64 copy)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    scale = rng.uniform(0.4, 0.8, clusters).astype(np.float32)
    labels = rng.choice(clusters, n, p=rng.dirichlet(np.ones(clusters)))
    x = np.empty((n, dim), np.float32)
    for s in range(0, n, 65536):
        block = x[s:s + 65536]
        rng.standard_normal(block.shape, dtype=np.float32, out=block)
        block *= scale[labels[s:s + 65536], None]
        block += centres[labels[s:s + 65536]]
    return x


def child(args: argparse.Namespace) -> None:
    """One size: print one JSON line of measurements."""
    from bgan_tf.training import graph
    from bgan_tf.training import knn as knn_lib

    t = time.perf_counter()
    x = clustered_features(args.child, args.dim, args.clusters, args.seed)
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    g = graph.build_graph(x, args.k1, args.k2, args.knn, args.seed, args.recall_sample)
    seconds = time.perf_counter() - t
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux
    recall = g.knn_recall
    if recall is None:  # exact: measured the same way, outside the timing
        recall = knn_lib.knn_recall(x, knn_lib.knn(x, args.k1, "exact"), args.recall_sample, args.seed)
    print(json.dumps({"seconds": round(seconds, 1), "peak_rss_gb": round(peak_gb, 2), "knn_recall": round(recall, 4),
                      "knn_method": g.knn_method,
                      "stage_seconds": {k: round(v, 1) for k, v in g.seconds.items()}, "positive_pairs": g.num_positive_pairs,
                      "pairs_per_item": round(g.num_positive_pairs / args.child, 1),
                      "key_bytes_gb": round(g.keys.nbytes / 1e9, 3), "feature_seconds": round(gen_s, 1),
                      "feature_gb": round(x.nbytes / 1e9, 2)}), flush=True)


def machine() -> str:
    from cpuinfo import cpu_flags, cpu_model

    cpu, flags = cpu_model(), cpu_flags()
    simd = [f for f in ("avx2", "fma", "avx512f") if f in flags]
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} logical CPUs, SIMD: {', '.join(simd) or 'none of avx2/fma/avx512f'}, "
            f"{mem:.0f} GiB RAM, {platform.system()} {platform.release()}, Python {platform.python_version()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--clusters", type=int, default=3000)
    ap.add_argument("--k1", type=int, default=20)
    ap.add_argument("--k2", type=int, default=30)
    ap.add_argument("--knn", default="auto", choices=("auto", "exact", "approximate"))
    ap.add_argument("--recall_sample", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    ap.add_argument("--name", default="graph_scale")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    import faiss

    from bgan_tf import atomic
    from bgan_tf.config import EXACT_KNN_MAX_ITEMS
    from bgan_tf.training import knn as knn_lib

    load = [round(v, 2) for v in os.getloadavg()]
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    results: dict = {"n": {}}
    for n in [int(s) for s in args.sizes.split(",")]:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", str(n)] + \
              [f"--{k}={getattr(args, k)}" for k in ("dim", "clusters", "k1", "k2", "knn", "recall_sample", "seed")]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT).stdout
        results["n"][str(n)] = json.loads(out.strip().splitlines()[-1])
        print(n, results["n"][str(n)], flush=True)
        write(args, results, load, started, faiss.__version__, faiss.omp_get_max_threads(), EXACT_KNN_MAX_ITEMS,
              atomic, graph)  # after every size, so a stopped run keeps the sizes it finished


def write(args, results: dict, load: list, started: str, faiss_version: str, threads: int, exact_max: int,
          atomic, graph) -> None:
    results.update(
        machine=machine(), faiss=faiss_version, faiss_threads=threads,
        command="nice -n 10 .venv/bin/python benchmarks/graph_scale.py " + " ".join(sys.argv[1:]),
        date=started, loadavg_at_start=load, loadavg_at_end=[round(v, 2) for v in os.getloadavg()],
        settings={k: getattr(args, k) for k in ("dim", "clusters", "k1", "k2", "knn", "recall_sample", "seed")},
        exact_knn_max_items=exact_max,
        hnsw={"links": knn_lib.HNSW_LINKS, "ef_construction": knn_lib.HNSW_EF_CONSTRUCTION,
              "ef_search": knn_lib.HNSW_EF_SEARCH},
    )
    big = results["n"].get(str(TARGET_ITEMS))
    results["target"] = {"items": TARGET_ITEMS, "seconds": TARGET_SECONDS, "peak_rss_gb": TARGET_GB,
                         "knn_recall": TARGET_RECALL,
                         "met": None if big is None else big["seconds"] < TARGET_SECONDS and
                         big["peak_rss_gb"] < TARGET_GB and big["knn_recall"] >= TARGET_RECALL}
    lines = [f"# Neighbourhood graph at scale ({args.dim}-d clustered synthetic features, K1={args.k1}, K2={args.k2})",
             "", f"Command: `{results['command']}`  ", f"Date: {started}  ", f"Machine: {results['machine']}, "
             f"FAISS {faiss_version} ({threads} threads)  ",
             f"Load average at start: {load} (other jobs share the cores), at end: {results['loadavg_at_end']}  ",
             f"--knn {args.knn}: exact up to {exact_max:,} items, approximate (FAISS HNSW, "
             f"{knn_lib.HNSW_LINKS} links, efConstruction {knn_lib.HNSW_EF_CONSTRUCTION}, efSearch "
             f"{knn_lib.HNSW_EF_SEARCH}) above; recall@K1 against exact search on "
             f"{args.recall_sample} sampled queries.", "",
             "| items | kNN | seconds | kNN / recall / expand / symmetrise s | peak RSS (GB) | features (GB) | "
             "kNN recall | positive pairs / item | keys (GB) |",
             "|---:|---|---:|---|---:|---:|---:|---:|---:|"]
    for n, r in results["n"].items():
        st = r["stage_seconds"]
        stages = " / ".join(str(st.get(k, "-")) for k in ("knn", "recall", "expand", "symmetrise"))
        lines.append(f"| {int(n):,} | {r['knn_method']} | {r['seconds']:.1f} | {stages} | {r['peak_rss_gb']:.2f} | "
                     f"{r['feature_gb']:.2f} | {r['knn_recall']:.4f} | {r['pairs_per_item']} | {r['key_bytes_gb']:.3f} |")
    verdict = "not measured in this run" if big is None else ("met" if results["target"]["met"] else "NOT met")
    lines += ["", f"Target at {TARGET_ITEMS:,} items (under {TARGET_SECONDS // 60} min, under {TARGET_GB:.0f} GB, "
              f"recall >= {TARGET_RECALL}): {verdict}."]
    os.makedirs(args.out, exist_ok=True)
    atomic.write_json(os.path.join(args.out, args.name + ".json"), results)
    atomic.write_text(os.path.join(args.out, args.name + ".md"), "\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
