"""HTTP search service: upload an image, get its nearest indexed images.

    app = create_app(index, encoder, max_upload_bytes=..., allowed_types=...)

Routes: POST /search (multipart field `image`, query `k`), GET /health, GET /stats,
GET /images/{id} (the indexed file, only for ids in the index), GET / (web page).
Errors are JSON `{"error": "..."}` with 400 (bad/undecodable input), 404, 413
(too large), 415 (content type), 422 (missing field). Decoding, encoding and
searching run in a bounded thread pool so the event loop stays responsive;
the index's own read/write lock makes searches safe against mutation.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bgan_tf.errors import UserError
from bgan_tf.indexing import Encoder, decode_image
from bgan_tf.search import BinaryIndex

DEFAULT_TYPES = ("image/jpeg", "image/png", "image/gif", "image/bmp", "image/webp")
_MULTIPART_SLACK = 64 * 1024  # boundary + headers around the file in a multipart body


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def create_app(
    index: BinaryIndex,
    encoder: Encoder,
    *,
    max_upload_bytes: int = 10 * 1024 * 1024,
    allowed_types: Sequence[str] = DEFAULT_TYPES,
    max_k: int = 100,
    search_threads: int = 4,
) -> FastAPI:
    """Build the ASGI app around a loaded index and the encoder that built it."""
    if encoder.num_bits != index.num_bits or encoder.model_id != index.model_id:
        raise UserError(
            f"index was built by model {index.model_id!r} ({index.num_bits} bits), "
            f"not {encoder.model_id!r} ({encoder.num_bits} bits); rebuild it or pass its model"
        )
    allowed = {t.strip().lower() for t in allowed_types}
    app = FastAPI(title="bgan_tf search", docs_url="/docs", redoc_url=None)
    # A plain executor rather than an anyio CapacityLimiter: it is not tied to one
    # event loop, so the app also works when driven from several loops (TestClient).
    pool = ThreadPoolExecutor(max(1, search_threads), thread_name_prefix="bgan-search")
    # Encoders wrap Keras models; one call at a time keeps us clear of any
    # model-level thread-safety question, and searches still run in parallel.
    encoder_lock = threading.Lock()
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

    def run_search(data: bytes, filename: str, k: int) -> list[dict[str, Any]]:
        try:
            image = decode_image(data, what=filename or "upload")
        except UserError as e:
            raise _ApiError(400, str(e)) from None
        with encoder_lock:
            signs = encoder.encode(image[None])
        results = index.search_one(np.asarray(signs)[0], k)
        return [{**r.to_dict(), "image_url": f"/images/{r.id}"} for r in results]

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
        results = await asyncio.get_running_loop().run_in_executor(
            pool, run_search, data, image.filename or "upload", k)
        count("searches")
        return JSONResponse({"k": k, "count": len(results), "took_ms": round(1000 * (time.perf_counter() - t0), 2),
                             "results": results})

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Any) -> Any:
        # Refuse oversized bodies from the header, before the multipart parser
        # spools them to disk.
        length = request.headers.get("content-length")
        if request.method == "POST" and length and length.isdigit() and \
                int(length) > max_upload_bytes + _MULTIPART_SLACK:
            count("errors")
            return JSONResponse({"error": f"request larger than {max_upload_bytes} bytes"}, status_code=413)
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "count": len(index), "model_id": index.model_id, "num_bits": index.num_bits}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        with counters_lock:
            c = dict(counters)
        return {**index.stats(), "searches": c["searches"], "errors": c["errors"],
                "uptime_s": round(time.time() - c["started"], 1), "max_upload_bytes": max_upload_bytes,
                "allowed_types": sorted(allowed), "max_k": max_k}

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
        return {"items": [{"id": i, "image_url": f"/images/{i}", "metadata": index.store.metadata(i)}
                          for i in pick if i in index]}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(_PAGE.replace("__MAXK__", str(max_k)))

    app.state.search_pool = pool  # owners may shut it down; idle threads cost nothing
    return app


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bgan_tf image search</title>
<style>
 body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:1100px;color:#222}
 h1{font-size:1.4rem} .row{display:flex;gap:1rem;align-items:center;flex-wrap:wrap}
 #drop{border:2px dashed #999;border-radius:8px;padding:1rem;min-width:260px;text-align:center}
 #drop.over{background:#eef}
 .grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(120px,1fr));gap:.6rem;margin-top:1rem}
 .card{border:1px solid #ddd;border-radius:6px;padding:.3rem;text-align:center;font-size:.8rem;background:#fafafa}
 .card img{width:100%;height:110px;object-fit:contain;image-rendering:pixelated;background:#fff}
 .samples .card{cursor:pointer} #status{color:#555} #error{color:#b00}
 #query img{max-height:120px}
</style></head>
<body>
<h1>Binary-code image search</h1>
<p id="info">loading…</p>
<div class="row">
 <div id="drop">Drop an image here or
  <input type="file" id="file" accept="image/*" data-testid="file-input"></div>
 <label>k <input type="number" id="k" value="10" min="1" max="__MAXK__" style="width:4rem"></label>
 <div id="query"></div>
</div>
<p id="status"></p><p id="error" role="alert"></p>
<h2 style="font-size:1.1rem">Neighbours</h2>
<div id="results" class="grid" data-testid="results"></div>
<h2 style="font-size:1.1rem">…or pick an indexed image</h2>
<div id="samples" class="grid samples"></div>
<script>
const $ = (id) => document.getElementById(id);
function esc(s){return String(s).replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));}
function base(p){return String(p||'').split('/').pop();}
async function info(){
  const h = await (await fetch('/health')).json();
  $('info').textContent = `${h.count} images indexed, ${h.num_bits}-bit codes, model ${h.model_id}`;
  const s = await (await fetch('/samples?n=12')).json();
  $('samples').innerHTML = s.items.map(it =>
    `<div class="card" data-id="${it.id}"><img src="${it.image_url}" alt=""><div>#${it.id} ${esc(it.metadata.label ?? '')}</div></div>`).join('');
  for (const el of $('samples').querySelectorAll('.card')) {
    el.onclick = async () => {
      const r = await fetch(`/images/${el.dataset.id}`);
      const b = await r.blob();
      search(new File([b], `item-${el.dataset.id}`, {type: b.type || 'image/png'}));
    };
  }
}
async function search(file){
  $('error').textContent = ''; $('status').textContent = 'searching…';
  $('query').innerHTML = `<img alt="query" src="${URL.createObjectURL(file)}">`;
  const fd = new FormData(); fd.append('image', file);
  const k = Math.max(1, parseInt($('k').value || '10', 10));
  try {
    const r = await fetch(`/search?k=${k}`, {method: 'POST', body: fd});
    const j = await r.json();
    if (!r.ok) { $('error').textContent = j.error || r.statusText; $('status').textContent=''; return; }
    $('results').innerHTML = j.results.map((x, i) =>
      `<div class="card result" data-testid="result"><img src="${x.image_url}" alt="neighbour ${i+1}">
       <div>#${i+1} · d=<b class="dist">${x.distance}</b></div>
       <div title="${esc(x.metadata.path ?? '')}">${esc(x.metadata.label ?? base(x.metadata.path))}</div></div>`).join('');
    $('status').textContent = `${j.count} results in ${j.took_ms} ms`;
  } catch (e) { $('error').textContent = String(e); $('status').textContent=''; }
}
$('file').onchange = (e) => { if (e.target.files[0]) search(e.target.files[0]); };
const drop = $('drop');
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add('over'); };
drop.ondragleave = () => drop.classList.remove('over');
drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove('over'); if (e.dataTransfer.files[0]) search(e.dataTransfer.files[0]); };
info();
</script>
</body></html>
"""
