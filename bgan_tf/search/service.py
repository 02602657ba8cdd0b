"""HTTP search service: upload an image, get its nearest indexed images.

    app = create_app(index, encoder, max_upload_bytes=..., allowed_types=..., max_pixels=...)

Routes: POST /search (multipart field `image`, query `k`), GET /health, GET /stats,
GET /images/{id} (the indexed file, only for ids in the index), GET / (the web page,
bgan_tf/search/static/index.html, read when the app is built).
Errors are JSON `{"error": "..."}` with 400 (bad/undecodable input), 404, 413
(upload too large, or an image whose header claims more than `max_pixels` pixels:
refused before any pixel is decoded), 415 (content type), 422 (missing field), and
500 for anything unexpected (still JSON, so the page can show it; details go to the
server log only).

Paths never leave the server as they are: an indexed file's path is shown relative
to the image root (``extra["image_root"]`` in the index manifest when recorded, else
the common folder of the indexed paths), and any other absolute path (the model
folder in /stats, say) by its last component.

Where the work runs: the event loop only parses HTTP; decoding runs in a small
thread pool; encoding and searching run in ONE batching thread (`_Batcher`)
that takes every query waiting when it becomes free, encodes them with one
encoder call per image shape and searches them with one index call per k.
Under load that turns N model calls into one (a Keras model call costs about
the same for 1 or 32 images), and it is also what keeps the encoder
single-threaded (no lock needed). When idle, a query is served at once: the
batcher never waits to fill a batch. The index's own read/write lock makes
searches safe against mutation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bgan_tf.data.images import ImageTooLarge, decode_image_bytes
from bgan_tf.errors import UserError
from bgan_tf.inference.encoders import Encoder
from bgan_tf.search import backends as search_lib
from bgan_tf.search.binary_index import BinaryIndex
from bgan_tf.search.limits import DEFAULT_MAX_PIXELS, DEFAULT_TYPES, DEFAULTS, check_settings

_MULTIPART_SLACK = 64 * 1024  # boundary + headers around the file in a multipart body
_PAGE_FILE = Path(__file__).with_name("static") / "index.html"  # the web page served at GET /
_log = logging.getLogger(__name__)


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


_SPEC_PATH = re.compile(r"^([A-Za-z][A-Za-z0-9_+.-]*:)(/(?!/).*)$")  # e.g. folder:/data/imgs


def image_root(index: BinaryIndex) -> str | None:
    """The folder indexed paths are shown relative to, or None when there is none.

    ``extra["image_root"]`` when the index records it; else the common folder of the
    indexed paths, one level up when every item carries the same label and that
    folder is named after it (a folder with a single class subfolder).
    """
    recorded = index.store.extra.get("image_root")
    if isinstance(recorded, str) and recorded:
        return os.path.normpath(recorded)
    rows = [m for m in index.store.metadata_rows() if isinstance(m.get("path"), str) and m["path"]]
    if not rows:
        return None
    try:
        common = os.path.commonpath([os.path.dirname(os.path.normpath(m["path"])) for m in rows])
    except ValueError:  # absolute and relative paths mixed
        return None
    labels = {m.get("label") for m in rows}
    if len(labels) == 1 and None not in labels and os.path.basename(common) == str(next(iter(labels))):
        common = os.path.dirname(common)
    return common


def shown_path(path: str, root: str | None) -> str:
    """``path`` relative to ``root`` when inside it, else its last component."""
    p = os.path.normpath(path)
    if root:
        try:
            inside = os.path.commonpath([root, p]) == root
        except ValueError:
            inside = False
        if inside and p != root:
            return os.path.relpath(p, root).replace(os.sep, "/")
    return os.path.basename(p)


def hide_paths(value: Any, root: str | None) -> Any:
    """A JSON-able value with every absolute path string replaced by `shown_path`."""
    if isinstance(value, dict):
        return {k: hide_paths(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [hide_paths(v, root) for v in value]
    if isinstance(value, str) and len(value) > 1:
        if os.path.isabs(value) and not value.startswith("//"):
            return shown_path(value, root)
        m = _SPEC_PATH.match(value)
        if m:
            return m.group(1) + shown_path(m.group(2), root)
    return value


class _Batcher:
    """One worker thread that encodes and searches every waiting query together.

    submit(image, k) -> concurrent Future of the result rows. The worker blocks
    for the first query, then drains whatever else is queued (up to max_batch)
    without waiting, so batching costs no latency when the service is idle.
    """

    def __init__(self, index: BinaryIndex, encoder: Encoder, max_batch: int = 64) -> None:
        self.index, self.encoder, self.max_batch = index, encoder, max(1, int(max_batch))
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0
        self.queries = 0
        self.largest = 0

    def submit(self, image: np.ndarray, k: int) -> Future:
        fut: Future = Future()
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="bgan-batcher", daemon=True)
                    self._thread.start()
        self._queue.put((image, int(k), fut))
        return fut

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        search_lib.apply_num_threads()  # OpenMP thread count is per OS thread
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(nxt)
            batch = [b for b in batch if b[2].set_running_or_notify_cancel()]
            if batch:
                self._process(batch)

    def _process(self, batch: list[tuple[np.ndarray, int, Future]]) -> None:
        self.batches += 1
        self.queries += len(batch)
        self.largest = max(self.largest, len(batch))
        signs: list[np.ndarray | None] = [None] * len(batch)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, (img, _, _) in enumerate(batch):
            by_shape.setdefault(img.shape, []).append(i)
        for idx in by_shape.values():
            try:
                out = np.asarray(self.encoder.encode(np.stack([batch[i][0] for i in idx])))
            except Exception as e:  # noqa: BLE001 - handed to the waiting requests
                for i in idx:
                    batch[i][2].set_exception(e)
                continue
            for j, i in enumerate(idx):
                signs[i] = out[j]
        by_k: dict[int, list[int]] = {}
        for i, (_, k, _) in enumerate(batch):
            if signs[i] is not None:
                by_k.setdefault(k, []).append(i)
        for k, idx in by_k.items():
            try:
                rows = self.index.search(np.stack([signs[i] for i in idx]), k)
            except Exception as e:  # noqa: BLE001
                for i in idx:
                    batch[i][2].set_exception(e)
                continue
            for i, row in zip(idx, rows):
                batch[i][2].set_result([{**r.to_dict(), "image_url": f"/images/{r.id}"} for r in row])


class _BodyLimit:
    """Pure ASGI middleware: refuse a POST whose Content-Length is too large,
    before the multipart parser spools it (no per-request task, unlike
    BaseHTTPMiddleware, which cost ~20% of the event loop's time under load)."""

    def __init__(self, app: Any, limit: int, on_reject: Any) -> None:
        self.app, self.limit, self.on_reject = app, limit, on_reject

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            for name, value in scope.get("headers", ()):
                if name == b"content-length":
                    if value.isdigit() and int(value) > self.limit:
                        self.on_reject()
                        resp = JSONResponse({"error": f"request larger than {self.limit - _MULTIPART_SLACK} bytes"},
                                            status_code=413)
                        await resp(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)


def create_app(
    index: BinaryIndex,
    encoder: Encoder,
    *,
    max_upload_bytes: int = DEFAULTS["max_upload_bytes"],
    allowed_types: Sequence[str] = DEFAULT_TYPES,
    max_k: int = DEFAULTS["max_k"],
    search_threads: int = DEFAULTS["search_threads"],
    max_batch: int = DEFAULTS["max_batch"],
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FastAPI:
    """Build the ASGI app around a loaded index and the encoder that built it.

    search_threads: threads that decode uploads; max_batch: most queries the
    batching thread encodes and searches in one go; max_pixels: largest image (by
    its header) an upload may be, checked before decoding. Every knob is bounded
    (bgan_tf/search/limits.py); a bad one raises UserError.
    """
    allowed = set(check_settings(max_upload_bytes=max_upload_bytes, allowed_types=allowed_types, max_k=max_k,
                                 search_threads=search_threads, max_batch=max_batch, max_pixels=max_pixels))
    if encoder.num_bits != index.num_bits or encoder.model_id != index.model_id:
        raise UserError(
            f"index was built by model {index.model_id!r} ({index.num_bits} bits), "
            f"not {encoder.model_id!r} ({encoder.num_bits} bits); rebuild it or pass its model"
        )
    root = image_root(index)
    page_html = _PAGE_FILE.read_text(encoding="utf-8").replace("__MAXK__", str(max_k))
    app = FastAPI(title="bgan_tf search", docs_url="/docs", redoc_url=None)
    # A plain executor rather than an anyio CapacityLimiter: it is not tied to one
    # event loop, so the app also works when driven from several loops (TestClient).
    pool = ThreadPoolExecutor(max(1, search_threads), thread_name_prefix="bgan-decode",
                              initializer=search_lib.apply_num_threads)
    # Encoders wrap Keras models: only the batcher thread calls them, so the
    # model is never used from two threads at once, and concurrent queries share
    # one model call instead of queueing on a lock.
    batcher = _Batcher(index, encoder, max_batch)
    counters = {"searches": 0, "errors": 0, "started": time.time()}
    counters_lock = threading.Lock()

    def count(key: str) -> None:
        with counters_lock:
            counters[key] += 1

    @app.exception_handler(_ApiError)
    async def _api_error(request: Request, exc: _ApiError) -> JSONResponse:
        count("errors")
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        count("errors")
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        count("errors")
        msgs = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"error": msgs or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's default is a text/plain 500, which the page cannot parse. The
        # details stay in the server log (Starlette re-raises to uvicorn after this).
        count("errors")
        _log.error("unexpected error on %s %s: %s: %s", request.method, request.url.path,
                   exc.__class__.__name__, exc)
        return JSONResponse({"error": f"internal server error ({exc.__class__.__name__}); "
                                      "the server log has the details"}, status_code=500)

    def decode(data: bytes, filename: str) -> np.ndarray:
        # Runs in the decode pool, off the event loop. The pixel budget is checked from
        # the header first, so an over-budget upload is refused in well under a millisecond.
        try:
            return decode_image_bytes(data, what=filename or "upload", max_pixels=max_pixels)
        except ImageTooLarge as e:
            raise _ApiError(413, str(e)) from None
        except UserError as e:
            raise _ApiError(400, str(e)) from None

    @app.post("/search")
    async def search_route(
        request: Request,
        image: UploadFile = File(..., description="the query image"),
        k: int = Query(10, ge=1, description="number of neighbours"),
    ) -> JSONResponse:
        t0 = time.perf_counter()
        if k > max_k:
            raise _ApiError(400, f"k={k} is above the limit {max_k}")
        ctype = (image.content_type or "").split(";")[0].strip().lower()
        if ctype not in allowed:
            raise _ApiError(415, f"content type {ctype or 'unknown'!r} not accepted; send one of {sorted(allowed)}")
        data = await image.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise _ApiError(413, f"image larger than {max_upload_bytes} bytes")
        decoded = await asyncio.get_running_loop().run_in_executor(pool, decode, data, image.filename or "upload")
        try:
            results = await asyncio.wrap_future(batcher.submit(decoded, k))
        except UserError as e:  # e.g. an image the model cannot take
            raise _ApiError(400, str(e)) from None
        count("searches")
        return JSONResponse({"k": k, "count": len(results), "took_ms": round(1000 * (time.perf_counter() - t0), 2),
                             "results": [{**r, "metadata": hide_paths(r.get("metadata") or {}, root)}
                                         for r in results]})

    app.add_middleware(_BodyLimit, limit=max_upload_bytes + _MULTIPART_SLACK, on_reject=lambda: count("errors"))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "count": len(index), "model_id": index.model_id, "num_bits": index.num_bits}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        with counters_lock:
            c = dict(counters)
        return {**hide_paths(index.stats(), root), "searches": c["searches"], "errors": c["errors"],
                "encode_batches": batcher.batches,
                "mean_batch": round(batcher.queries / batcher.batches, 2) if batcher.batches else 0.0,
                "largest_batch": batcher.largest,
                "uptime_s": round(time.time() - c["started"], 1), "max_upload_bytes": max_upload_bytes,
                "allowed_types": sorted(allowed), "max_k": max_k, "max_pixels": max_pixels}

    @app.get("/images/{item_id}")
    async def image_file(item_id: int) -> FileResponse:
        # Only files recorded in the index are served: the id is looked up, never a path.
        if item_id not in index:
            raise _ApiError(404, f"no item {item_id} in the index")
        path = index.store.metadata(item_id).get("path")
        if not path or not Path(path).is_file():
            raise _ApiError(404, f"image of item {item_id} is not available")
        return FileResponse(path)

    @app.get("/samples")
    async def samples(n: int = Query(12, ge=1, le=100)) -> dict[str, Any]:
        """A few indexed ids with their image URLs, for the page's 'pick an image'."""
        ids = index.store.ids
        step = max(1, len(ids) // n) if len(ids) else 1
        pick = [int(i) for i in ids[::step][:n]]
        return {"items": [{"id": i, "image_url": f"/images/{i}", "metadata": hide_paths(index.store.metadata(i), root)}
                          for i in pick if i in index]}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html)

    app.state.search_pool = pool  # owners may shut it down; idle threads cost nothing
    app.state.batcher = batcher  # daemon thread, started on the first search
    return app
