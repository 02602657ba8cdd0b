"""Bounded load test of the search service on loopback.

    .venv/bin/python benchmarks/service_load.py [--clients 50] [--requests 2000]

Starts `python -m bgan_tf.serve` in a subprocess on 127.0.0.1 over a small index
(200 generated 32x32 images, pixel-lsh:64 baseline encoder, flat backend), then
fires --requests POST /search uploads from --clients concurrent httpx async
clients. Writes benchmarks/results/service_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bgan_tf import indexing  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _load(url: str, payloads: list[bytes], clients: int, total: int, k: int) -> dict:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        async def worker() -> None:
            nonlocal errors
            for i in counter:
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"/search?k={k}", files={"image": ("q.png", payloads[i % len(payloads)], "image/png")})
                    ok = r.status_code == 200 and len(r.json()["results"]) == k
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += 0 if ok else 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": errors, "rps": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "clients": clients, "k": k, "wall_s": round(wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "service_load.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "imgs"))
        payloads = []
        for i in range(args.images):
            a = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(a).save(os.path.join(tmp, "imgs", f"{i}.png"))
            if i < 50:
                buf = io.BytesIO()
                Image.fromarray(a).save(buf, format="PNG")
                payloads.append(buf.getvalue())
        indexing.build_index(indexing.PixelLSHEncoder(64), os.path.join(tmp, "imgs"), os.path.join(tmp, "idx"),
                             progress=False, model_ref="pixel-lsh:64")
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "bgan_tf.serve", f"--index={tmp}/idx", "--host=127.0.0.1",
                                 f"--port={port}"], cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 30
            while True:
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit("service did not start")
                time.sleep(0.2)
            result = asyncio.run(_load(url, payloads, args.clients, args.requests, args.k))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    result["setup"] = (f"{args.images} indexed 32x32 PNGs, pixel-lsh:64 encoder, flat backend, "
                       "uvicorn single process, loopback, client and server on the same 2 cores")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
