"""Top-100 search speed over 1M binary codes: queries/s and recall@100 per backend.

    .venv/bin/python benchmarks/search_speed.py [--n 1000000] [--bits 32,64] [--codes FILE.npy]
        [--expand_to N --flip_prob P] [--name search]

Random codes are the worst case for approximate indexes (no structure to exploit);
pass real codes with --codes (signs [N, L] float or packed uint8 [N, B]; queries are
held-out rows; benchmarks/real_codes.py writes a trained model's codes of the 1,797
digits). --expand_to N tiles the real database codes to N rows, each copy with
every bit flipped with probability --flip_prob (stated in the output): real codes
at 1M do not exist here, this keeps their cluster structure at that size.
Results go to results/<name>.json and .md. One thread (bgan_tf.search.backend_base.set_num_threads(1)): CI cores are shared.
Each backend's queries/s is timed twice: wall clock, and CPU time of this process
(other jobs on the shared cores stretch the first, not the second). For the exact
backends the run also measures two limits on the same core: the scalar-POPCNT
limit (one 64-bit popcount per cycle at the clock measured by a timed chain of
dependent adds) and the streaming-read limit (GB/s reading the database array,
as codes/s); G codes/s (CPU time) is reported next to both. "machine" records the
CPU model and its SIMD extensions (/proc/cpuinfo flags) and the ours_exact scan path.
Recall@100 is tie-aware: items at the exact 100th distance count up to the number
of slots left for them, so an approximate backend is not penalised for choosing a
different member of a tie group.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bgan_tf.atomic import write_json, write_text  # noqa: E402
from bgan_tf.search import backend_base  # noqa: E402
from bgan_tf.search import backends as search  # noqa: E402
from bgan_tf.search.hamming_c import load_kernel  # noqa: E402
from bgan_tf.codes import pack  # noqa: E402

K = 100
APPROX = {
    "ivf": {"nlist": 1024, "nprobe": 32},
    "hnsw": {"M": 16, "ef_search": 256, "ef_construction": 40},
    "multihash": {},  # per-code-length defaults: bgan_tf.search.approximate.multihash_defaults(bits)
}
SIMD_FLAGS = ("popcnt", "sse4_2", "avx", "avx2", "bmi2", "avx512f", "avx512bw", "avx512vl",
              "avx512_vpopcntdq", "avx512_bitalg")


def tie_aware_recall(dist: np.ndarray, exact_dist: np.ndarray, k: int) -> float:
    kth = exact_dist[:, k - 1:k]
    below = (dist < kth).sum(1)
    need = (exact_dist < kth).sum(1)
    at = np.minimum((dist == kth).sum(1), k - need)
    return float(np.mean((np.minimum(below, need) + at) / k))


def timed_search(b, q: np.ndarray, budget_s: float = 10.0) -> tuple[float, float, tuple[np.ndarray, np.ndarray]]:
    """(queries/s by wall clock, by CPU time, result) on as many queries as fit the time budget."""
    t0 = time.perf_counter()
    b.search(q[:2], K)  # warm-up (kernel build, page faults) and speed estimate
    per_query = (time.perf_counter() - t0) / 2
    n = int(min(len(q), max(5, budget_s / max(per_query, 1e-9))))
    t0, c0 = time.perf_counter(), time.process_time()
    out = b.search(q[:n], K)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    return n / dt, n / max(dc, 1e-9), out


def best_cpu_seconds(fn, repeats: int = 5) -> float:
    """Shortest CPU time of fn() over a few runs (a time slice lost to another job only adds)."""
    best = float("inf")
    for _ in range(repeats):
        c0 = time.process_time()
        fn()
        best = min(best, time.process_time() - c0)
    return max(best, 1e-9)


def core_limits(db: np.ndarray) -> dict:
    """This core's clock and the two ceilings of an exact scan over db, measured now."""
    kernel = load_kernel()
    if kernel is None:
        return {}
    rounds = 20_000_000
    clock = 8 * rounds / best_cpu_seconds(lambda: kernel.add_chain(rounds))  # 8 one-cycle adds per round
    words = max(1, -(-db.shape[1] // 8))  # 64-bit popcounts per code (a 32-bit code takes one)
    reps = max(1, (256 << 20) // max(db.nbytes, 1))  # >= 256 MB per timing: call overhead stays negligible

    def read() -> None:
        for _ in range(reps):
            kernel.read_bytes(db)

    gbs = reps * db.nbytes / best_cpu_seconds(read) / 1e9
    return {"clock_ghz": round(clock / 1e9, 3),
            "scalar_popcount_limit_g_codes_per_s": round(clock / words / 1e9, 3),
            "read_gb_per_s": round(gbs, 2), "read_limit_g_codes_per_s": round(gbs / db.shape[1], 3),
            "note": ("clock from 8 x 20M dependent adds; read = best streaming read of the database "
                     f"array ({db.nbytes / 1e6:.0f} MB, {db.shape[1]} B per code, in cache when it fits); CPU time")}


def _knobs(b, name: str) -> dict:
    if name == "multihash":  # the resolved defaults
        return {"nhash": b.nhash, "b": b.b, "nflip": b.nflip}
    return APPROX[name]


def machine() -> dict:
    """CPU model, logical CPUs and SIMD extensions (Linux /proc/cpuinfo), OS, Python, scan path."""
    from cpuinfo import cpu_flags, cpu_model

    cpu, flags = cpu_model(), cpu_flags()
    kernel = load_kernel()
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "simd": [f for f in SIMD_FLAGS if f in flags],
            "ours_exact_path": kernel.path if kernel else "unavailable (no C compiler)",
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


def machine_line(m: "dict | str") -> str:
    if isinstance(m, str):  # results written before "machine" became a dict
        return m
    return (f"{m['cpu']}, {m['logical_cpus']} logical CPUs, SIMD: {' '.join(m['simd']) or 'none found'}; "
            f"ours_exact scan path: {m['ours_exact_path']}; {m['os']}, Python {m['python']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--bits", default="32,64")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--numpy_queries", type=int, default=20)
    ap.add_argument("--codes", help="real codes .npy (signs [N,L] or packed uint8 [N,B])")
    ap.add_argument("--backends", default="numpy,faiss_flat,ours_exact,ivf,hnsw,multihash")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--name", default="search", help="results file name (without .json/.md)")
    ap.add_argument("--expand_to", type=int, default=0, help="with --codes: tile the database to this many rows")
    ap.add_argument("--flip_prob", type=float, default=0.03, help="with --expand_to: bit-flip probability per copy")
    args = ap.parse_args()
    backend_base.set_num_threads(1)
    rng = np.random.default_rng(0)
    results: dict = {"n": args.n, "k": K, "machine": machine(), "command": "python " + " ".join(sys.argv),
                     "date": datetime.date.today().isoformat(),
                     "loadavg_at_start": [round(x, 2) for x in os.getloadavg()], "bits": {}, "limits": {}}
    wanted = args.backends.split(",")
    if args.codes:
        arr = np.load(args.codes)
        bits_list = [arr.shape[1] * 8 if arr.dtype == np.uint8 else arr.shape[1]]
    else:
        bits_list = [int(b) for b in args.bits.split(",")]
    for bits in bits_list:
        if args.codes:
            packed = arr if arr.dtype == np.uint8 else pack(arr)
            perm = rng.permutation(len(packed))
            n_q = min(args.queries, len(packed) // 4)
            q_all, db = packed[perm[:n_q]], packed[perm[n_q:]][: args.n]
            results["source"] = f"{len(db):,} real codes from {os.path.basename(args.codes)}, {n_q} held-out queries"
            if args.expand_to > len(db):
                reps = -(-args.expand_to // len(db))
                tiled = np.tile(db, (reps, 1))[: args.expand_to]
                flips = rng.random((len(tiled), bits)) < args.flip_prob
                flips[: len(db)] = False  # the first copy is the real codes, unchanged
                db = np.ascontiguousarray(tiled ^ pack(flips.astype(np.uint8)))
                results["source"] += (f", tiled to {len(db):,} rows with each bit of each copy flipped "
                                      f"with probability {args.flip_prob}")
            results["n"] = len(db)
        else:
            db = pack(rng.integers(0, 2, (args.n, bits), dtype=np.uint8))
            q_all = pack(rng.integers(0, 2, (args.queries, bits), dtype=np.uint8))
        ids = np.arange(len(db), dtype=np.int64)
        row: dict = {}
        exact = None
        limits = results["limits"][str(bits)] = core_limits(db)
        order = ["ours_exact", "faiss_flat", "numpy"] + [b for b in wanted if b in APPROX]
        for name in [b for b in order if b in wanted]:
            backend_name = "flat" if name == "faiss_flat" else name
            t0 = time.perf_counter()
            try:
                b = search.make_backend(backend_name, bits, **APPROX.get(name, {}))
            except Exception as e:  # e.g. ours_exact without a compiler
                print(f"{bits} bits {name}: skipped ({e})", flush=True)
                continue
            b.add(db, ids)
            build = time.perf_counter() - t0
            q = q_all[: args.numpy_queries] if name == "numpy" else q_all
            qps, qps_cpu, (dist, _) = timed_search(b, q)
            if exact is None:
                exact = search.make_backend("ours_exact", bits, fallback=True)
                exact.add(db, ids)
                exact_dist = exact.search(q_all, K)[0]
            rec = tie_aware_recall(dist, exact_dist[: len(dist)], K)
            row[name] = {"qps": round(qps, 1), "qps_cpu": round(qps_cpu, 1), "recall_at_100": round(rec, 4),
                         "build_s": round(build, 2), "queries": len(dist),
                         **({"knobs": _knobs(b, name)} if name in APPROX else {})}
            if name not in APPROX and limits:
                # Exact scans touch every code: codes compared per CPU second, against the
                # two ceilings measured on this core in this run (core_limits).
                gcs = qps_cpu * len(db) / 1e9
                row[name]["g_codes_per_s_cpu"] = round(gcs, 3)
                row[name]["share_of_scalar_popcount_limit"] = round(gcs / limits["scalar_popcount_limit_g_codes_per_s"], 3)
                row[name]["share_of_read_limit"] = round(gcs / limits["read_limit_g_codes_per_s"], 3)
            print(f"{bits} bits {name}: {qps:,.0f} q/s (CPU time: {qps_cpu:,.0f}), recall@100 {rec:.3f}, build {build:.1f}s", flush=True)
            del b
        results["bits"][str(bits)] = row
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, f"{args.name}.json"), results)
    write_text(os.path.join(args.out, f"{args.name}.md"), report(results, bool(args.codes)))


def report(results: dict, given: bool) -> str:
    lines = [f"# Binary search speed: top-{K} over {results['n']:,} {'given' if given else 'random'} codes",
             "", f"Command: `{results['command']}` ({results['date']})  ",
             f"Machine: {machine_line(results['machine'])}  ",
             *([f"Codes: {results['source']}  "] if "source" in results else []),
             f"Load average (1/5/15 min) at the start {results['loadavg_at_start']}, "
             f"at the end {results['loadavg_at_end']}  ",
             "One thread. Recall@100 is tie-aware, against the exact answer. queries/s by wall clock and by "
             "this process's CPU time (other jobs on the shared cores stretch the wall clock); "
             "x flat = CPU-time queries/s over faiss_flat's.", ""]
    for bits, lim in results["limits"].items():
        if lim:
            lines.append(f"Limits at {bits} bits on this core: clock {lim['clock_ghz']:.2f} GHz -> scalar POPCNT "
                         f"{lim['scalar_popcount_limit_g_codes_per_s']:.2f} G codes/s; streaming read "
                         f"{lim['read_gb_per_s']:.1f} GB/s -> {lim['read_limit_g_codes_per_s']:.2f} G codes/s  ")
    lines += ["", "| bits | backend | queries/s (wall) | queries/s (CPU) | x flat | recall@100 | build (s) | "
              "G codes/s (CPU) | of POPCNT limit | of read limit | knobs |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for bits, row in results["bits"].items():
        flat = row.get("faiss_flat", {}).get("qps_cpu")
        for name, r in row.items():
            vs = f"{r['qps_cpu'] / flat:.2f}" if flat else ""
            gcs = (f"{r['g_codes_per_s_cpu']:.2f} | {100 * r['share_of_scalar_popcount_limit']:.0f}% | "
                   f"{100 * r['share_of_read_limit']:.0f}%") if "g_codes_per_s_cpu" in r else " | "
            lines.append(f"| {bits} | {name} | {r['qps']:,.0f} | {r['qps_cpu']:,.0f} | {vs} | {r['recall_at_100']:.3f} | "
                         f"{r['build_s']} | {gcs} | {r.get('knobs', '')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
