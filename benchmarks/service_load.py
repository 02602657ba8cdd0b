"""Bounded load test of the search service on loopback.

    .venv/bin/python benchmarks/service_load.py [--clients 50] [--requests 2000] [--client raw|httpx]

Starts `python -m bgan_tf.serve` in a subprocess on 127.0.0.1 over a small index
(200 generated 32x32 images, pixel-lsh:64 baseline encoder or --model, flat backend), then
fires --requests POST /search multipart uploads from --clients concurrent
keep-alive connections. Writes benchmarks/results/service_load.json with the
server's and the client's CPU seconds and the load average, because client and
server share the machine's cores.

--client raw (default) sends pre-built HTTP/1.1 requests over asyncio streams:
about 1 ms of client CPU per request. --client httpx uses httpx.AsyncClient,
which costs ~9 ms of client CPU per request (multipart encoding and its
connection pool), more than the server itself, so on 2 shared cores it
measures mostly the client (the 40 req/s, p99 6.2 s of the first run).
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

from bgan_tf.inference.encoders import load_model  # noqa: E402
from bgan_tf.search import indexer as indexing  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _process_cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")


def _multipart_request(port: int, k: int, png: bytes) -> bytes:
    boundary = "bganbenchboundary7f3a"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /search?k={k} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _load_raw(port: int, payloads: list[bytes], clients: int, total: int, k: int) -> dict:
    """Keep-alive connections sending pre-built requests: the client costs little CPU."""
    requests = [_multipart_request(port, k, p) for p in payloads]
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))

    async def worker() -> None:
        nonlocal errors
        reader = writer = None
        for i in counter:
            t0 = time.perf_counter()
            ok = False
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(requests[i % len(requests)])
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length)
                ok = head.startswith(b"HTTP/1.1 200") and len(json.loads(body)["results"]) == k
            except (OSError, asyncio.IncompleteReadError, ValueError, KeyError):
                if writer is not None:
                    writer.close()
                reader = writer = None
            latencies.append(time.perf_counter() - t0)
            errors += 0 if ok else 1
        if writer is not None:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return _summary(latencies, errors, time.perf_counter() - t0, clients, k)


def _summary(latencies: list[float], errors: int, wall: float, clients: int, k: int) -> dict:
    lat = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": errors, "rps": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "clients": clients, "k": k, "wall_s": round(wall, 2)}


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
    return _summary(latencies, errors, wall, clients, k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--client", choices=["raw", "httpx"], default="raw")
    ap.add_argument("--model", default="pixel-lsh:64", help="model folder or pixel-lsh:BITS (default)")
    ap.add_argument("--serve_args", default="", help="extra flags for bgan_tf.serve, space-separated")
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
        indexing.build_index(load_model(args.model), os.path.join(tmp, "imgs"), os.path.join(tmp, "idx"),
                             progress=False, model_ref=args.model)
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "bgan_tf.serve", f"--index={tmp}/idx", "--host=127.0.0.1",
                                 f"--port={port}", *args.serve_args.split()], cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 120  # a trained model loads TensorFlow
            while True:
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit("service did not start")
                time.sleep(0.2)
            # Warm-up (first-call imports, thread start), not timed.
            for p in payloads[:3]:
                httpx.post(url + f"/search?k={args.k}", files={"image": ("q.png", p, "image/png")}, timeout=30)
            load_before = os.getloadavg()
            server0, client0 = _process_cpu_s(proc.pid), time.process_time()
            if args.client == "raw":
                result = asyncio.run(_load_raw(port, payloads, args.clients, args.requests, args.k))
            else:
                result = asyncio.run(_load(url, payloads, args.clients, args.requests, args.k))
            result["server_cpu_s"] = round(_process_cpu_s(proc.pid) - server0, 2)
            result["client_cpu_s"] = round(time.process_time() - client0, 2)
            result["loadavg_before"] = [round(x, 2) for x in load_before]
            result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            try:
                result["stats"] = {key: v for key, v in httpx.get(url + "/stats", timeout=5).json().items()
                                   if key in ("searches", "encode_batches", "mean_batch", "largest_batch")}
            except (httpx.HTTPError, ValueError):
                pass
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    result["client"] = args.client
    model = args.model if args.model.startswith("pixel-lsh") else f"trained model {os.path.basename(os.path.normpath(args.model))}"
    result["setup"] = (f"{args.images} indexed 32x32 PNGs, {model} encoder, flat backend, "
                       f"uvicorn single process, loopback, client and server on the same {os.cpu_count()} cores"
                       + (f", serve flags: {args.serve_args}" if args.serve_args else ""))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
