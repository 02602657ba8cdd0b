"""The routes of the HTTP search service (`bgan_tf.search.service.create_app` builds the app
and its shared state, `Service`, then adds these): errors as JSON, POST /search, the read-only
routes (/health, /stats, /images/{id}, /samples, /) and POST /reload.

One function per group keeps each short; they share nothing but the `Service` they are given.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bgan_tf.data.images import ImageTooLarge, decode_image_bytes
from bgan_tf.errors import UserError
from bgan_tf.inference.encoders import Encoder
from bgan_tf.search import guards
from bgan_tf.search.binary_index import BinaryIndex
from bgan_tf.search.files import NotServed, file_chunks, hide_paths, image_root, media_type, open_indexed_file

BUDGET_WAIT_S = 30.0  # an upload waiting this long for the byte or pixel budget gets a 503
_log = logging.getLogger("bgan_tf.search.service")  # the service's log, as before the split


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclasses.dataclass
class Service:
    """What the routes share: the live index, the encoder's batcher, the decode lanes, the
    budgets, the limits and the counters /stats reports."""
    live: dict[str, Any]  # "index", "root": POST /reload replaces both as one unit
    encoder: Encoder
    batcher: Any  # service._Batcher
    pool: ThreadPoolExecutor
    small_lane: ThreadPoolExecutor
    budget: guards.Budget
    bytes_budget: guards.Budget
    allowed: set[str]
    max_upload_bytes: int
    max_k: int
    max_pixels: int
    pixel_budget: int
    serve_images: bool
    reload: Callable[[], BinaryIndex] | None
    counters: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"searches": 0, "errors": 0, "reloads": 0, "started": time.time()})
    counters_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    reload_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def count(self, key: str) -> None:
        with self.counters_lock:
            self.counters[key] += 1


def check_pair(index: BinaryIndex, encoder: Encoder) -> None:
    if encoder.num_bits != index.num_bits or encoder.model_id != index.model_id:
        raise UserError(
            f"index was built by model {index.model_id!r} ({index.num_bits} bits), "
            f"not {encoder.model_id!r} ({encoder.num_bits} bits); rebuild it or pass its model"
        )


def add_error_handlers(app: FastAPI, svc: Service) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        svc.count("errors")
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        svc.count("errors")
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        svc.count("errors")
        msgs = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"error": msgs or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's default is a text/plain 500, which the page cannot parse. The
        # details stay in the server log (Starlette re-raises to uvicorn after this).
        svc.count("errors")
        _log.error("unexpected error on %s %s: %s: %s", request.method, request.url.path,
                   exc.__class__.__name__, exc)
        return JSONResponse({"error": f"internal server error ({exc.__class__.__name__}); "
                                      "the server log has the details"}, status_code=500)


def _decode(svc: Service, data: bytes, filename: str, taken: int) -> np.ndarray:
    # Runs in the decode pool, off the event loop. The pixel budget is checked from
    # the header first, so an over-budget upload is refused in well under a millisecond.
    # The full-resolution image lives only here: it leaves shrunk to the encoder's input.
    try:
        return guards.shrink(decode_image_bytes(data, what=filename or "upload", max_pixels=svc.max_pixels),
                             svc.encoder)
    except ImageTooLarge as e:
        raise ApiError(413, str(e)) from None
    except UserError as e:
        raise ApiError(400, str(e)) from None
    finally:
        svc.budget.give_back(taken)


async def _take(which: guards.Budget, n: int) -> None:
    if not await which.take(n, BUDGET_WAIT_S):
        raise ApiError(503, "server busy with other uploads; retry shortly")


async def _read_and_decode(svc: Service, image: UploadFile, ctype: str) -> np.ndarray:
    """The upload's pixels, shrunk to the encoder's input, within the byte and pixel budgets."""
    limit = svc.max_upload_bytes
    held = min(image.size if image.size is not None else limit + 1, limit + 1)
    await _take(svc.bytes_budget, held)
    try:
        data = await image.read(limit + 1)
        if len(data) > limit:
            raise ApiError(413, f"image larger than {limit} bytes")
        # The decoder follows the bytes, not the label: a TIFF labelled image/png would
        # reach the TIFF parser (and its attack surface) though only PNG was allowed.
        found, declared = guards.sniff_format(data), guards.declared_format(ctype)
        if found and declared and found != declared:
            raise ApiError(415, f"upload declared {ctype} but holds a {found} image; send it as what it is")
        pixels = guards.header_pixels(data, found)
        taken = min(pixels, svc.max_pixels) if pixels else 0  # over max_pixels: refused from the header
        await _take(svc.budget, taken)
        # Images within the budget's reserve get a lane of their own: behind a queue of
        # 16-megapixel decodes a thumbnail query waited 170 ms (2 threads) instead of 20.
        lane = svc.small_lane if taken <= svc.budget.reserve else svc.pool
        return await asyncio.get_running_loop().run_in_executor(lane, _decode, svc, data,
                                                                image.filename or "upload", taken)
    finally:
        svc.bytes_budget.give_back(held)


def add_search_route(app: FastAPI, svc: Service) -> None:
    @app.post("/search")
    async def search_route(
        request: Request,
        image: UploadFile = File(..., description="the query image"),
        k: int = Query(10, ge=1, description="number of neighbours"),
    ) -> JSONResponse:
        t0 = time.perf_counter()
        if k > svc.max_k:
            raise ApiError(400, f"k={k} is above the limit {svc.max_k}")
        ctype = (image.content_type or "").split(";")[0].strip().lower()
        if ctype not in svc.allowed:
            raise ApiError(415, f"content type {ctype or 'unknown'!r} not accepted; send one of "
                                f"{sorted(svc.allowed)}")
        decoded = await _read_and_decode(svc, image, ctype)
        try:
            results = await asyncio.wrap_future(svc.batcher.submit(decoded, k))
        except UserError as e:  # e.g. an image the model cannot take
            raise ApiError(400, str(e)) from None
        svc.count("searches")
        root = svc.live["root"]
        return JSONResponse({"k": k, "count": len(results), "took_ms": round(1000 * (time.perf_counter() - t0), 2),
                             "results": [{**r, "metadata": hide_paths(r.get("metadata") or {}, root)}
                                         for r in results]})


def _stats(svc: Service) -> dict[str, Any]:
    with svc.counters_lock:
        c = dict(svc.counters)
    b = svc.batcher
    return {**hide_paths(svc.live["index"].stats(), svc.live["root"]), "searches": c["searches"],
            "errors": c["errors"], "reloads": c["reloads"], "encode_batches": b.batches,
            "mean_batch": round(b.queries / b.batches, 2) if b.batches else 0.0, "largest_batch": b.largest,
            "uptime_s": round(time.time() - c["started"], 1), "max_upload_bytes": svc.max_upload_bytes,
            "allowed_types": sorted(svc.allowed), "max_k": svc.max_k, "max_pixels": svc.max_pixels,
            "pixel_budget": svc.pixel_budget, "pixels_in_flight_peak": svc.budget.peak,
            "upload_bytes_in_flight_peak": svc.bytes_budget.peak}


def add_read_routes(app: FastAPI, svc: Service, page_html: str) -> None:
    @app.get("/health")
    async def health() -> dict[str, Any]:
        ix = svc.live["index"]
        return {"status": "ok", "count": len(ix), "model_id": ix.model_id, "num_bits": ix.num_bits}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return _stats(svc)

    # HEAD stays out of the schema: one function on two methods gives two equal operation ids.
    @app.head("/images/{item_id}", include_in_schema=False)
    @app.get("/images/{item_id}")
    async def image_file(request: Request, item_id: int) -> Response:
        # The id is looked up, never a path; the file is opened safely (files.py) and
        # served from the descriptor that was checked. No Range support (always 200 with
        # the whole file, which HTTP allows), so no Range error can be a non-JSON 416.
        if not svc.serve_images:
            raise ApiError(404, "this server does not serve image files (--no_images)")
        ix = svc.live["index"]
        try:
            fd, size = await asyncio.get_running_loop().run_in_executor(None, open_indexed_file, ix, item_id)
        except NotServed as e:
            raise ApiError(404, str(e)) from None
        headers = {"content-length": str(size), "accept-ranges": "none", "x-content-type-options": "nosniff"}
        media = media_type(ix.store.metadata(item_id).get("path"))
        if request.method == "HEAD":
            os.close(fd)
            return Response(status_code=200, headers=headers, media_type=media)
        return StreamingResponse(file_chunks(fd, size), headers=headers, media_type=media)

    @app.get("/samples")
    async def samples(n: int = Query(12, ge=1, le=100)) -> dict[str, Any]:
        """A few indexed ids with their image URLs, for the page's 'pick an image'."""
        ix, root = svc.live["index"], svc.live["root"]
        ids = ix.store.ids
        step = max(1, len(ids) // n) if len(ids) else 1
        pick = [int(i) for i in ids[::step][:n]]
        return {"items": [{"id": i, "image_url": f"/images/{i}", "metadata": hide_paths(ix.store.metadata(i), root)}
                          for i in pick if i in ix]}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html)


def add_reload_route(app: FastAPI, svc: Service) -> None:
    def do_reload() -> BinaryIndex:
        new = svc.reload()  # type: ignore[misc]
        check_pair(new, svc.encoder)
        return new

    @app.post("/reload")
    async def reload_route() -> dict[str, Any]:
        """Re-read the index from disk and switch to it as one unit; on any error the old
        index keeps serving. One reload at a time (a second gets 409)."""
        if svc.reload is None:
            raise ApiError(404, "this server was started without an index folder to reload")
        if not svc.reload_lock.acquire(blocking=False):
            raise ApiError(409, "a reload is already running")
        try:
            try:
                new = await asyncio.get_running_loop().run_in_executor(None, do_reload)
            except UserError as e:
                raise ApiError(400, f"reload refused, still serving the old index: {e}") from None
            svc.batcher.index = new
            svc.live.update(index=new, root=image_root(new))
            svc.count("reloads")
        finally:
            svc.reload_lock.release()
        return {"status": "reloaded", "count": len(new), "model_id": new.model_id, "num_bits": new.num_bits}
