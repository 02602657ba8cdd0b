"""HTTP search service: upload an image, get its nearest indexed images.

    app = create_app(index, encoder, max_upload_bytes=..., allowed_types=..., max_pixels=...)

Routes: POST /search (multipart field `image`, query `k`), GET /health, GET /stats,
GET/HEAD /images/{id} (the indexed file, only for ids in the index and only from inside
the recorded image root: bgan_tf/search/files.py), GET /samples, POST /reload (when
create_app got a loader: re-read the index from disk and switch to it as one unit),
GET / (the web page, bgan_tf/search/static/index.html, read when the app is built).
Errors are JSON `{"error": "..."}` (400 bad input, 404, 409 reload running, 413 body or
image too large, 415 type, 421 Host, 422 missing field, 503 budget busy; docs/search.md
lists them), and 500 for anything unexpected (still JSON, so the page can show it;
details go to the server log only).

What one client can make the process allocate is bounded (bgan_tf/search/guards.py):
body bytes (`max_upload_bytes`; upload bytes held in memory across all requests at most
`_BYTES_IN_FLIGHT` uploads' worth), decoded pixels in flight across all requests
(`pixel_budget`, taken from the header before decoding and given back once the image is
shrunk to the encoder's input size), k (`max_k`) and the batch (`max_batch`).

Where the work runs: the event loop only parses HTTP; decoding runs in a small
thread pool (images within the pixel budget's reserve in a lane of their own);
encoding and searching run in ONE batching thread (`_Batcher`) that takes every
query waiting when it becomes free, encodes them with one encoder call per image
shape and searches them with one index call per k: under load N model calls become
one, and only that thread touches the encoder (no lock). When idle, a query is
served at once. The index's own read/write lock makes searches safe against mutation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bgan_tf.data.images import ImageTooLarge, decode_image_bytes
from bgan_tf.errors import UserError
from bgan_tf.inference.encoders import Encoder
from bgan_tf.search.backend_base import apply_num_threads
from bgan_tf.search import guards
from bgan_tf.search.binary_index import BinaryIndex
from bgan_tf.search.files import (NotServed, file_chunks, hide_paths, image_root, media_type, open_indexed_file,
                                  shown_path)
from bgan_tf.search.limits import DEFAULT_MAX_PIXELS, DEFAULT_TYPES, DEFAULTS, check_settings

__all__ = ["create_app", "hide_paths", "image_root", "shown_path"]

_MULTIPART_SLACK = 64 * 1024  # boundary + headers around the file in a multipart body
_PAGE_FILE = Path(__file__).with_name("static") / "index.html"  # the web page served at GET /
_BUDGET_WAIT_S = 30.0  # an upload waiting this long for the byte or pixel budget gets a 503
_BYTES_IN_FLIGHT = 8  # upload bodies held in memory at once, in max_upload_bytes
_log = logging.getLogger(__name__)


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


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
        apply_num_threads()  # OpenMP thread count is per OS thread
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
    pixel_budget: int | None = None,
    allowed_hosts: Sequence[str] | None = None,
    serve_images: bool = True,
    api_docs: bool = False,
    reload: Callable[[], BinaryIndex] | None = None,
) -> FastAPI:
    """Build the ASGI app around a loaded index and the encoder that built it.

    search_threads: threads that decode uploads; max_batch: most queries encoded and
    searched in one go; max_pixels: largest image (by its header) an upload may be;
    pixel_budget: decoded pixels in flight across all requests (default: the larger of
    limits.DEFAULTS and max_pixels). allowed_hosts: Host values accepted (None: any,
    behind a proxy; `serve` always passes a list). serve_images False turns /images off;
    api_docs True serves /docs and /openapi.json. reload: a loader that re-reads the
    index, enabling POST /reload. Every knob is bounded (bgan_tf/search/limits.py); a
    bad one raises UserError.
    """
    if pixel_budget is None:
        pixel_budget = max(DEFAULTS["pixel_budget"], max_pixels)
    allowed = set(check_settings(max_upload_bytes=max_upload_bytes, allowed_types=allowed_types, max_k=max_k,
                                 search_threads=search_threads, max_batch=max_batch, max_pixels=max_pixels,
                                 pixel_budget=pixel_budget))
    _check_pair(index, encoder)
    # The index in use: POST /reload replaces it as one unit (the batcher reads it once per batch).
    live = {"index": index, "root": image_root(index)}
    page_html = _PAGE_FILE.read_text(encoding="utf-8").replace("__MAXK__", str(max_k))
    # /docs and /openapi.json describe every route to anyone who asks: off unless wanted.
    app = FastAPI(title="bgan_tf search", docs_url="/docs" if api_docs else None, redoc_url=None,
                  openapi_url="/openapi.json" if api_docs else None)
    # A plain executor rather than an anyio CapacityLimiter: it is not tied to one
    # event loop, so the app also works when driven from several loops (TestClient).
    pool = ThreadPoolExecutor(max(1, search_threads), thread_name_prefix="bgan-decode", initializer=apply_num_threads)
    small_lane = ThreadPoolExecutor(1, thread_name_prefix="bgan-decode-small", initializer=apply_num_threads)
    # Encoders wrap Keras models: only the batcher thread calls them, so the
    # model is never used from two threads at once, and concurrent queries share
    # one model call instead of queueing on a lock.
    batcher = _Batcher(index, encoder, max_batch)
    # An eighth of the budget (when max_pixels leaves room) is kept for small images.
    budget = guards.Budget(pixel_budget, reserve=min(pixel_budget // 8, pixel_budget - max_pixels))
    # Upload bytes read into memory (the parser spools bodies over 1 MB to disk first);
    # bodies of up to 1 MB may use all of it, so big uploads do not stall small queries.
    bytes_budget = guards.Budget(_BYTES_IN_FLIGHT * (max_upload_bytes + 1), reserve=1 << 20)
    counters = {"searches": 0, "errors": 0, "reloads": 0, "started": time.time()}
    counters_lock = threading.Lock()
    reload_lock = threading.Lock()

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

    def decode(data: bytes, filename: str, taken: int) -> np.ndarray:
        # Runs in the decode pool, off the event loop. The pixel budget is checked from
        # the header first, so an over-budget upload is refused in well under a millisecond.
        # The full-resolution image lives only here: it leaves shrunk to the encoder's input.
        try:
            return guards.shrink(decode_image_bytes(data, what=filename or "upload", max_pixels=max_pixels), encoder)
        except ImageTooLarge as e:
            raise _ApiError(413, str(e)) from None
        except UserError as e:
            raise _ApiError(400, str(e)) from None
        finally:
            budget.give_back(taken)

    async def take(which: guards.Budget, n: int) -> None:
        if not await which.take(n, _BUDGET_WAIT_S):
            raise _ApiError(503, "server busy with other uploads; retry shortly")

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
        held = min(image.size if image.size is not None else max_upload_bytes + 1, max_upload_bytes + 1)
        await take(bytes_budget, held)
        try:
            data = await image.read(max_upload_bytes + 1)
            if len(data) > max_upload_bytes:
                raise _ApiError(413, f"image larger than {max_upload_bytes} bytes")
            # The decoder follows the bytes, not the label: a TIFF labelled image/png would
            # reach the TIFF parser (and its attack surface) though only PNG was allowed.
            found, declared = guards.sniff_format(data), guards.declared_format(ctype)
            if found and declared and found != declared:
                raise _ApiError(415, f"upload declared {ctype} but holds a {found} image; send it as what it is")
            pixels = guards.header_pixels(data, found)
            taken = min(pixels, max_pixels) if pixels else 0  # over max_pixels: refused from the header
            await take(budget, taken)
            # Images within the budget's reserve get a lane of their own: behind a queue of
            # 16-megapixel decodes a thumbnail query waited 170 ms (2 threads) instead of 20.
            lane = small_lane if taken <= budget.reserve else pool
            decoded = await asyncio.get_running_loop().run_in_executor(lane, decode, data,
                                                                       image.filename or "upload", taken)
        finally:
            bytes_budget.give_back(held)
        del data
        try:
            results = await asyncio.wrap_future(batcher.submit(decoded, k))
        except UserError as e:  # e.g. an image the model cannot take
            raise _ApiError(400, str(e)) from None
        count("searches")
        root = live["root"]
        return JSONResponse({"k": k, "count": len(results), "took_ms": round(1000 * (time.perf_counter() - t0), 2),
                             "results": [{**r, "metadata": hide_paths(r.get("metadata") or {}, root)}
                                         for r in results]})

    app.add_middleware(guards.BodyLimit, limit=max_upload_bytes + _MULTIPART_SLACK,
                       message=f"request larger than {max_upload_bytes} bytes", on_reject=lambda: count("errors"))
    if allowed_hosts is not None:
        app.add_middleware(guards.HostCheck, hosts=allowed_hosts)  # added last: runs first

    @app.get("/health")
    async def health() -> dict[str, Any]:
        ix = live["index"]
        return {"status": "ok", "count": len(ix), "model_id": ix.model_id, "num_bits": ix.num_bits}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        with counters_lock:
            c = dict(counters)
        return {**hide_paths(live["index"].stats(), live["root"]), "searches": c["searches"],
                "errors": c["errors"], "reloads": c["reloads"], "encode_batches": batcher.batches,
                "mean_batch": round(batcher.queries / batcher.batches, 2) if batcher.batches else 0.0,
                "largest_batch": batcher.largest,
                "uptime_s": round(time.time() - c["started"], 1), "max_upload_bytes": max_upload_bytes,
                "allowed_types": sorted(allowed), "max_k": max_k, "max_pixels": max_pixels,
                "pixel_budget": pixel_budget, "pixels_in_flight_peak": budget.peak,
                "upload_bytes_in_flight_peak": bytes_budget.peak}

    # HEAD stays out of the schema: one function on two methods gives two equal operation ids.
    @app.head("/images/{item_id}", include_in_schema=False)
    @app.get("/images/{item_id}")
    async def image_file(request: Request, item_id: int) -> Response:
        # The id is looked up, never a path; the file is opened safely (files.py) and
        # served from the descriptor that was checked. No Range support (always 200 with
        # the whole file, which HTTP allows), so no Range error can be a non-JSON 416.
        if not serve_images:
            raise _ApiError(404, "this server does not serve image files (--no_images)")
        ix = live["index"]
        try:
            fd, size = await asyncio.get_running_loop().run_in_executor(None, open_indexed_file, ix, item_id)
        except NotServed as e:
            raise _ApiError(404, str(e)) from None
        headers = {"content-length": str(size), "accept-ranges": "none", "x-content-type-options": "nosniff"}
        media = media_type(ix.store.metadata(item_id).get("path"))
        if request.method == "HEAD":
            os.close(fd)
            return Response(status_code=200, headers=headers, media_type=media)
        return StreamingResponse(file_chunks(fd, size), headers=headers, media_type=media)

    @app.get("/samples")
    async def samples(n: int = Query(12, ge=1, le=100)) -> dict[str, Any]:
        """A few indexed ids with their image URLs, for the page's 'pick an image'."""
        ix, root = live["index"], live["root"]
        ids = ix.store.ids
        step = max(1, len(ids) // n) if len(ids) else 1
        pick = [int(i) for i in ids[::step][:n]]
        return {"items": [{"id": i, "image_url": f"/images/{i}", "metadata": hide_paths(ix.store.metadata(i), root)}
                          for i in pick if i in ix]}

    def do_reload() -> BinaryIndex:
        new = reload()  # type: ignore[misc]
        _check_pair(new, encoder)
        return new

    @app.post("/reload")
    async def reload_route() -> dict[str, Any]:
        """Re-read the index from disk and switch to it as one unit; on any error the old
        index keeps serving. One reload at a time (a second gets 409)."""
        if reload is None:
            raise _ApiError(404, "this server was started without an index folder to reload")
        if not reload_lock.acquire(blocking=False):
            raise _ApiError(409, "a reload is already running")
        try:
            try:
                new = await asyncio.get_running_loop().run_in_executor(None, do_reload)
            except UserError as e:
                raise _ApiError(400, f"reload refused, still serving the old index: {e}") from None
            batcher.index = new
            live.update(index=new, root=image_root(new))
            count("reloads")
        finally:
            reload_lock.release()
        return {"status": "reloaded", "count": len(new), "model_id": new.model_id, "num_bits": new.num_bits}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html)

    app.state.search_pool, app.state.small_lane = pool, small_lane  # idle threads cost nothing
    app.state.batcher = batcher  # daemon thread, started on the first search
    app.state.pixel_budget = budget
    return app


def _check_pair(index: BinaryIndex, encoder: Encoder) -> None:
    if encoder.num_bits != index.num_bits or encoder.model_id != index.model_id:
        raise UserError(
            f"index was built by model {index.model_id!r} ({index.num_bits} bits), "
            f"not {encoder.model_id!r} ({encoder.num_bits} bits); rebuild it or pass its model"
        )
