"""What a burst of large uploads costs the search service: peak RSS and small-query latency.

    .venv/bin/python benchmarks/upload_memory.py [--uploads 20] [--threads 8] [--side 4000]

Builds a pixel-lsh index of a few generated images (no TensorFlow), starts the service
in-process (FastAPI TestClient) with --threads decode threads, and sends --uploads
concurrent side x side PNGs (each under the default per-upload pixel limit, a few tens
of KB on the wire) while one client keeps sending 16x16 queries. Each configuration runs
in a fresh subprocess, so the peak RSS (getrusage) is its own. Prints the figures and
writes them to benchmarks/results/upload_memory.json (one entry per configuration and
commit). Uses only create_app, build_index and open_index, so the same script also runs
on commits from before the pixel budget (check one out beside this one to compare).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "upload_memory.json")


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def measure(uploads: int, threads: int, side: int) -> dict:
    """One configuration, in this process: meant to run in a fresh subprocess."""
    import resource

    import numpy as np
    from fastapi.testclient import TestClient
    from PIL import Image

    from bgan_tf.inference.encoders import load_model
    from bgan_tf.search import indexer
    from bgan_tf.search.service import create_app

    work = tempfile.mkdtemp(prefix="upload_memory_")
    os.makedirs(os.path.join(work, "imgs"))
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
            os.path.join(work, "imgs", f"{i}.png"))
    enc = load_model("pixel-lsh:32")
    indexer.build_index(enc, os.path.join(work, "imgs"), os.path.join(work, "idx"), progress=False)
    client = TestClient(create_app(indexer.open_index(os.path.join(work, "idx"), enc), enc, search_threads=threads))
    y, x = np.mgrid[0:side, 0:side]
    big = _png(Image.fromarray(((x // 500 + y // 500) % 2 * 255).astype(np.uint8)).convert("RGB"))
    small = _png(Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)))

    def post(body: bytes) -> int:
        return client.post("/search?k=3", files={"image": ("q.png", body, "image/png")}).status_code

    assert post(small) == 200  # warm: the first request builds the app's state
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    latencies, done = [], threading.Event()

    def small_queries() -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            post(small)
            latencies.append(1000 * (time.perf_counter() - t0))
            time.sleep(0.02)

    prober = threading.Thread(target=small_queries)
    t0 = time.perf_counter()
    prober.start()
    with ThreadPoolExecutor(uploads) as ex:
        codes = list(ex.map(lambda _: post(big), range(uploads)))
    done.set()
    prober.join()
    return {"uploads": uploads, "decode_threads": threads, "side": side, "upload_bytes": len(big),
            "statuses": {str(c): codes.count(c) for c in sorted(set(codes))},
            "seconds": round(time.perf_counter() - t0, 2),
            "peak_rss_mb_before_burst": rss_before,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "small_query_ms_median": round(statistics.median(latencies), 1) if latencies else None,
            "small_query_ms_worst": round(max(latencies), 1) if latencies else None,
            "small_queries": len(latencies)}


def _commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uploads", type=int, default=20)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--side", type=int, default=4000)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(measure(a.uploads, a.threads, a.side)))
        return
    r = subprocess.run([sys.executable, __file__, "--child", "--uploads", str(a.uploads), "--threads",
                        str(a.threads), "--side", str(a.side)], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ROOT})
    if r.returncode != 0:
        sys.exit(f"measurement failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    row = {**json.loads(r.stdout.strip().splitlines()[-1]), "commit": _commit()}
    print(json.dumps(row, indent=1))
    rows = json.load(open(RESULTS))["runs"] if os.path.isfile(RESULTS) else []
    key = ("uploads", "decode_threads", "side", "commit")
    rows = [x for x in rows if tuple(x.get(k) for k in key) != tuple(row[k] for k in key)] + [row]
    with open(RESULTS + ".tmp", "w") as f:
        json.dump({"runs": rows}, f, indent=1)
        f.write("\n")
    os.replace(RESULTS + ".tmp", RESULTS)


if __name__ == "__main__":
    main()
