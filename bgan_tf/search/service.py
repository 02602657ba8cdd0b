"""HTTP search service: upload an image, get its nearest indexed images.

    app = create_app(index, encoder, max_upload_bytes=..., allowed_types=..., max_pixels=...)

Routes (bgan_tf/search/routes.py): POST /search (multipart field `image`, query `k`), GET /health, GET /stats,
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

import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from fastapi import FastAPI

from bgan_tf.inference.encoders import Encoder
from bgan_tf.search.backend_base import apply_num_threads
from bgan_tf.search import guards, routes
from bgan_tf.search.binary_index import BinaryIndex
from bgan_tf.search.files import hide_paths, image_root, shown_path
from bgan_tf.search.limits import DEFAULT_MAX_PIXELS, DEFAULT_TYPES, DEFAULTS, check_settings

__all__ = ["create_app", "hide_paths", "image_root", "shown_path"]

_MULTIPART_SLACK = 64 * 1024  # boundary + headers around the file in a multipart body
_PAGE_FILE = Path(__file__).with_name("static") / "index.html"  # the web page served at GET /
_BYTES_IN_FLIGHT = 8  # upload bodies held in memory at once, in max_upload_bytes


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
    routes.check_pair(index, encoder)
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
    svc = routes.Service(live=live, encoder=encoder, batcher=batcher, pool=pool, small_lane=small_lane,
                         budget=budget, bytes_budget=bytes_budget, allowed=allowed,
                         max_upload_bytes=max_upload_bytes, max_k=max_k, max_pixels=max_pixels,
                         pixel_budget=pixel_budget, serve_images=serve_images, reload=reload)
    routes.add_error_handlers(app, svc)
    routes.add_search_route(app, svc)
    app.add_middleware(guards.BodyLimit, limit=max_upload_bytes + _MULTIPART_SLACK,
                       message=f"request larger than {max_upload_bytes} bytes", on_reject=lambda: svc.count("errors"))
    if allowed_hosts is not None:
        app.add_middleware(guards.HostCheck, hosts=allowed_hosts)  # added last: runs first
    routes.add_read_routes(app, svc, page_html)
    routes.add_reload_route(app, svc)

    app.state.search_pool, app.state.small_lane = pool, small_lane  # idle threads cost nothing
    app.state.batcher = batcher  # daemon thread, started on the first search
    app.state.pixel_budget = budget
    return app
