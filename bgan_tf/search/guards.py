"""What bounds the memory one client can make the search service allocate.

- `BodyLimit`: ASGI middleware that counts the bytes of every request body AS THEY
  ARRIVE (chunked uploads without Content-Length too) and answers a JSON 413 the moment
  the count passes the limit, so nothing past the limit is read or spooled to disk.
- `HostCheck`: ASGI middleware refusing a Host header not on the allowed list (a DNS
  rebinding page in a browser would otherwise reach a loopback service).
- `Budget`: a process-wide count of something in flight. The service keeps two: decoded
  pixels (a request takes its image's pixel count from the header before decoding and
  gives it back once the image is shrunk to the encoder's input) and upload bytes held
  in memory, so N concurrent uploads cost at most the budgets, not N full images.
- `shrink`: a decoded image -> the encoder's input size, with the encoder's own
  arithmetic, before it is queued and stacked by the batcher.
- `sniff_format` / `declared_format`: the format the bytes really are vs. the one the
  client declared (a TIFF sent as image/png is refused, not decoded as TIFF).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Callable, Iterable

import numpy as np
from starlette.exceptions import HTTPException

from bgan_tf.inference.tflite import resize_bilinear

# Content type -> the format Pillow reports for it.
_TYPE_FORMATS = {
    "image/jpeg": "JPEG", "image/jpg": "JPEG", "image/pjpeg": "JPEG", "image/png": "PNG",
    "image/gif": "GIF", "image/bmp": "BMP", "image/x-ms-bmp": "BMP", "image/x-bmp": "BMP",
    "image/webp": "WEBP", "image/tiff": "TIFF", "image/tif": "TIFF",
}


async def _send_json(send: Any, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})


class BodyTooLarge(HTTPException):
    """Raised from the wrapped ``receive`` once a body passes the limit: an HTTPException,
    so FastAPI's body parser passes it on (it turns any other error into a 400) and the
    app's handler answers the JSON 413."""


class BodyLimit:
    """Pure ASGI middleware (no per-request task, unlike BaseHTTPMiddleware, which
    cost ~20% of the event loop's time under load): a body over ``limit`` bytes gets
    a JSON 413, from Content-Length before anything is read, else while streaming."""

    def __init__(self, app: Any, limit: int, message: str, on_reject: Callable[[], None]) -> None:
        self.app, self.limit, self.message, self.on_reject = app, limit, message, on_reject

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                self.on_reject()
                await _send_json(send, 413, {"error": self.message})
                return
        seen, started = 0, False

        async def counted_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(413, self.message)
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            self.on_reject()
            if not started:
                await _send_json(send, 413, {"error": self.message})


def _host_name(value: str) -> str:
    """'Example.COM:8000' -> 'example.com'; '[::1]:80' -> '::1'."""
    v = value.strip().lower()
    if v.startswith("["):
        return v[1:v.find("]")] if "]" in v else v
    return v.rsplit(":", 1)[0] if v.count(":") == 1 else v


class HostCheck:
    """Pure ASGI middleware: a request whose Host is not in ``hosts`` gets a JSON 421.
    ``*`` in hosts allows any (the service then sits behind a proxy that checks)."""

    def __init__(self, app: Any, hosts: Iterable[str]) -> None:
        self.app = app
        self.hosts = {_host_name(h) for h in hosts if h.strip()}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and "*" not in self.hosts:
            host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
            if _host_name(host) not in self.hosts:
                await _send_json(send, 421, {"error": "host not allowed; use an address the server was "
                                                      "started for (serve --allowed_hosts)"})
                return
        await self.app(scope, receive, send)


class Budget:
    """A count of units (pixels, bytes) in flight, at most ``total``; thread-safe and not
    tied to an event loop (the app may be driven from several, e.g. by TestClient).

    ``reserve`` units are kept for small takers (at most ``reserve`` units each): big
    uploads filling the budget would otherwise make every small query wait for them.
    """

    def __init__(self, total: int, reserve: int = 0) -> None:
        self.total, self.reserve = int(total), max(0, int(reserve))
        self.used = 0
        self.peak = 0
        self._lock = threading.Lock()

    def try_take(self, n: int) -> bool:
        with self._lock:
            cap = self.total if n <= self.reserve else self.total - self.reserve
            if self.used + n > cap:
                return False
            self.used += n
            self.peak = max(self.peak, self.used)
            return True

    async def take(self, n: int, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for ``n`` units; False when they never came free.
        Polls rather than using an asyncio primitive: the budget is shared by every event
        loop and thread that drives the app; it waits only under full load, and backs off
        from 2 to 50 ms so a thousand waiting uploads do not busy the event loop."""
        deadline, pause = time.monotonic() + timeout_s, 0.002
        while not self.try_take(n):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(0.05, pause * 1.5)
        return True

    def give_back(self, n: int) -> None:
        with self._lock:
            self.used -= n


def declared_format(content_type: str) -> str | None:
    """The Pillow format name of a content type, or None when it names none we know."""
    return _TYPE_FORMATS.get(content_type)


def sniff_format(data: bytes) -> str | None:
    """The image format the bytes start with (magic numbers), or None when unknown."""
    if data.startswith(b"\x89PNG"):
        return "PNG"
    if data.startswith(b"\xff\xd8"):
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data.startswith(b"BM"):
        return "BMP"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return "TIFF"
    return None


def header_pixels(data: bytes, fmt: str | None) -> int | None:
    """width * height from the header of an image of format ``fmt`` (nothing decoded), or
    None when unreadable (decoding then fails with the decoder's own one-line message)."""
    import io

    from PIL import Image

    if fmt is None:
        return None
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:
            w, h = im.size
        return int(w) * int(h)
    except Exception:  # noqa: BLE001 - any bytes arrive; the decoder names the problem
        return None


def shrink(img: np.ndarray, encoder: Any) -> np.ndarray:
    """uint8 HxWx3 -> what ``encoder.encode`` would compute from it after its own resize.

    ``encoder.input_size`` / ``encoder.input_resize``: "nearest" (pixel LSH samples rows
    ``arange(S) * H // S``) keeps uint8 SxSx3; "bilinear" (Keras and TFLite encoders)
    gives float32 SxSx3 through tflite.resize_bilinear, which casts only the 2S rows and
    columns it needs. Encoders without ``input_size`` get the image unchanged.
    """
    size = getattr(encoder, "input_size", None)
    kind = getattr(encoder, "input_resize", "bilinear")
    if not size:
        return img
    h, w = img.shape[:2]
    if kind == "nearest":
        ys = np.arange(size, dtype=np.int64) * h // size
        xs = np.arange(size, dtype=np.int64) * w // size
        return np.ascontiguousarray(img[ys][:, xs])
    if (h, w) == (size, size):
        return img
    return resize_bilinear(img[None], size)[0]
