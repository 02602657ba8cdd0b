"""Regression tests for issue 11's image items: pixel budget, bombs, 16-bit images,
skip counts, the service's error answers and paths, and `serve`'s start-up checks.

Service tests run in-process through FastAPI's TestClient over a small index built
with the training-free pixel-lsh encoder; the `serve` checks are short subprocess
runs (the binary imports no TensorFlow: about half a second each).
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bgan_tf.data import images as data
from bgan_tf.inference.encoders import load_model
from bgan_tf.search import indexer as indexing
from bgan_tf.data.images import ImageTooLarge, decode_image_bytes
from bgan_tf.data.sources import load_folder
from bgan_tf.errors import UserError
from bgan_tf.search.limits import LIMITS
from bgan_tf.search.service import create_app, hide_paths
from testlib import png_chunk as _chunk
from testlib import png_header_only as _png_header_only

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------- image makers
def _png16(arr: np.ndarray) -> bytes:
    """uint16 HxW, HxWx2 (grey+alpha), HxWx3 or HxWx4 -> a 16-bit PNG (Pillow cannot write
    16-bit colour PNGs itself)."""
    a = arr if arr.ndim == 3 else arr[..., None]
    h, w, c = a.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\0" + a[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) \
        + _chunk(b"IEND", b"")


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _big_1bit_png(side: int = 6000) -> bytes:
    """A real side x side image (36 megapixels at 6000) that compresses to a few KB."""
    return _encode(Image.new("1", (side, side)))


# 0, 257, ..., 65535 and the in-between values 128 and 65407 that rounding must get right.
_RAMP16 = np.concatenate([np.arange(256) * 257, [128, 65407]]).astype(np.uint16)


def _expected8(x: np.ndarray) -> np.ndarray:
    return np.round(x.astype(np.float64) * 255 / 65535)


# ----------------------------------------------------------------- item 9: bit depth
def test_16bit_grey_png_is_scaled_not_clipped_to_white():
    ramp = np.tile(_RAMP16, (3, 1))
    encoded = _encode(Image.fromarray(ramp))  # Pillow writes a 16-bit grey PNG (mode I;16)
    assert Image.open(io.BytesIO(encoded)).mode.startswith("I;16")
    out = decode_image_bytes(encoded, "ramp16.png")
    assert out.shape == (3, len(_RAMP16), 3) and out.dtype == np.uint8
    assert np.abs(out[..., 0].astype(int) - _expected8(ramp)).max() <= 1
    assert (out[..., 0] == out[..., 2]).all()
    # Before the fix 99.5% of the pixels of such an image were 255.
    assert (out == 255).mean() < 0.01


def test_16bit_colour_and_grey_alpha_pngs_keep_their_levels():
    ramp = np.tile(_RAMP16, (2, 1))
    rgb = np.stack([ramp, ramp[:, ::-1], np.full_like(ramp, 1000)], -1)
    out = decode_image_bytes(_png16(rgb), "rgb16.png")
    assert np.abs(out.astype(int) - _expected8(rgb)).max() <= 1
    opaque = np.concatenate([rgb, np.full_like(ramp, 65535)[..., None]], -1)
    assert np.abs(decode_image_bytes(_png16(opaque)).astype(int) - _expected8(rgb)).max() <= 1
    grey_alpha = np.stack([ramp, np.full_like(ramp, 65535)], -1)
    out = decode_image_bytes(_png16(grey_alpha), "la16.png")
    assert np.abs(out[..., 1].astype(int) - _expected8(ramp)).max() <= 1


def test_32bit_int_and_float_tiffs_are_scaled_by_their_range():
    ramp = np.tile(_RAMP16, (2, 1))
    as_int = _encode(Image.fromarray(ramp.astype(np.int32)), "TIFF")  # mode I, 16-bit values
    assert np.abs(decode_image_bytes(as_int)[..., 0].astype(int) - _expected8(ramp)).max() <= 1
    wide = (np.arange(256, dtype=np.int64) * 1_000_000 - 5_000_000).astype(np.int32)[None].repeat(2, 0)
    out = decode_image_bytes(_encode(Image.fromarray(wide), "TIFF"))[..., 0]  # own range: stretched
    assert out[0, 0] == 0 and out[0, -1] == 255 and (np.diff(out[0].astype(int)) >= 0).all()
    unit = np.linspace(0, 1, 256, dtype=np.float32)[None].repeat(2, 0)
    out = decode_image_bytes(_encode(Image.fromarray(unit), "TIFF"))[..., 0]  # mode F in [0, 1]
    assert np.abs(out.astype(int) - np.round(unit * 255)).max() <= 1


# ----------------------------------------------------------------- item 7: bombs
def test_bomb_and_over_budget_headers_raise_one_line_image_too_large():
    with pytest.raises(ImageTooLarge) as e:
        decode_image_bytes(_png_header_only(20000, 20000), "bomb.png")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("bomb.png: 400,000,000 pixels is over")
    with pytest.raises(ImageTooLarge, match=r"^big\.png: 5000x5000 pixels is over the limit of 16,000,000"):
        decode_image_bytes(_png_header_only(5000, 5000), "big.png", max_pixels=16_000_000)
    assert isinstance(e.value, UserError)  # binaries print it as one line, exit 2


def test_only_supported_formats_are_decoded():
    # Pillow reads PPM (and EPS via Ghostscript, PSD, ...); an upload must not reach those decoders.
    ppm = _encode(Image.new("RGB", (4, 4)), "PPM")
    with pytest.raises(UserError, match="cannot decode image"):
        decode_image_bytes(ppm, "x.png")


def test_load_folder_skips_bomb_and_counts_every_skip(tmp_path, caplog):
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "bomb.png").write_bytes(_png_header_only(20000, 20000))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "scan.heic").write_bytes(b"x")
    with caplog.at_level(logging.WARNING):
        d = load_folder(str(tmp_path))
    assert d.names == [str(tmp_path / "good.png")] and (d.images == 90).all()
    assert d.skipped == {"unsupported": 2, "unreadable": 1, "too_large": 1}
    text = caplog.text
    assert "bomb.png: 400,000,000 pixels is over" in text
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped under")]
    assert len(summary) == 1
    assert "2 file(s) with unsupported extensions (.heic, .txt)" in summary[0]
    assert "1 unreadable file(s)" in summary[0] and "1 image(s) over the pixel limit" in summary[0]
    # A folder of nothing but bombs says so instead of crashing.
    (tmp_path / "good.png").unlink()
    (tmp_path / "broken.jpg").unlink()
    with pytest.raises(UserError, match="1 over the pixel limit"):
        load_folder(str(tmp_path))


# ----------------------------------------------------------------- the service
@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    root = tmp_path_factory.mktemp("badimg")
    rng = np.random.default_rng(0)
    arrays = {}
    for cls in ("cat", "dog"):
        (root / "imgs" / cls).mkdir(parents=True)
        for i in range(4):
            a = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / "imgs" / cls / f"{i}.png")
            arrays[f"{cls}/{i}.png"] = a
    enc = load_model("pixel-lsh:32")
    indexing.build_index(enc, root / "imgs", root / "idx", progress=False, model_ref="pixel-lsh:32")
    index = indexing.open_index(root / "idx", enc)
    app = create_app(index, enc, max_upload_bytes=1 << 20, max_pixels=16_000_000)
    return TestClient(app), arrays, index, enc, root


def _post(client: TestClient, body: bytes, name: str = "q.png", k: int = 3):
    return client.post(f"/search?k={k}", files={"image": (name, body, "image/png")})


def test_over_budget_upload_is_a_fast_json_413_and_service_keeps_working(svc):
    client, arrays, *_ = svc
    for body in (_big_1bit_png(), _png_header_only(20000, 20000)):
        t0 = time.perf_counter()
        r = _post(client, body, "huge.png")
        took = time.perf_counter() - t0
        assert r.status_code == 413, r.text
        assert "over the limit" in r.json()["error"] and r.json()["error"].startswith("huge.png: ")
        # Refused from the header: decoding the 36-megapixel one took about a second.
        assert took < 0.5, took
    r = _post(client, _encode(Image.fromarray(arrays["dog/2.png"])))
    assert r.status_code == 200 and r.json()["results"][0]["distance"] == 0
    assert client.get("/stats").json()["max_pixels"] == 16_000_000


def test_unexpected_errors_are_json_500(svc):
    _, arrays, index, enc, _ = svc

    class Broken:
        num_bits, model_id, metadata = enc.num_bits, enc.model_id, {}

        def encode(self, images):
            raise RuntimeError("model exploded at /secret/path")

    client = TestClient(create_app(index, Broken()), raise_server_exceptions=False)
    r = _post(client, _encode(Image.fromarray(arrays["cat/0.png"])))
    assert r.status_code == 500 and r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert "internal server error (RuntimeError)" in err and "/secret" not in err
    assert client.get("/stats").json()["errors"] == 1


def test_create_app_refuses_settings_that_refuse_every_request(svc):
    _, _, index, enc, _ = svc
    bad = [dict(max_k=0), dict(max_k=LIMITS["max_k"][1] + 1), dict(max_upload_bytes=0),
           dict(allowed_types=[]), dict(allowed_types=[""]), dict(allowed_types=["text/html"]),
           dict(search_threads=0), dict(max_batch=0), dict(max_pixels=0), dict(max_k=2.5)]
    for kwargs in bad:
        with pytest.raises(UserError, match=next(iter(kwargs))):
            create_app(index, enc, **kwargs)


def test_paths_are_relative_to_the_image_root(svc):
    client, arrays, index, enc, root = svc
    r = _post(client, _encode(Image.fromarray(arrays["dog/1.png"])))
    top = r.json()["results"][0]
    assert top["metadata"] == {"path": "dog/1.png", "label": "dog"} and top["image_url"].startswith("/images/")
    assert client.get(top["image_url"]).content == (root / "imgs" / "dog" / "1.png").read_bytes()
    items = client.get("/samples?n=8").json()["items"]
    assert sorted(it["metadata"]["path"] for it in items) == sorted(arrays)
    for route in ("/stats", "/samples?n=8", "/health"):
        assert str(root) not in client.get(route).text, route
    # Other absolute paths (a model folder, a folder: spec) keep only their last part.
    assert hide_paths({"model": "/srv/models/run7", "dataset": "folder:/data/x", "url": "http://h/a",
                       "n": 3}, str(root)) == {"model": "run7", "dataset": "folder:x", "url": "http://h/a", "n": 3}


def test_root_recorded_in_the_manifest_wins_and_one_class_folder_is_not_the_root(tmp_path):
    enc = load_model("pixel-lsh:32")
    (tmp_path / "imgs" / "only").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / "only" / f"{i}.png")
    indexing.build_index(enc, tmp_path / "imgs", tmp_path / "idx", progress=False)
    index = indexing.open_index(tmp_path / "idx", enc)
    paths = lambda app: sorted(it["metadata"]["path"] for it in TestClient(app).get("/samples").json()["items"])  # noqa: E731
    assert paths(create_app(index, enc)) == ["only/0.png", "only/1.png"]
    index.store.extra["image_root"] = str(tmp_path / "imgs" / "only")
    assert paths(create_app(index, enc)) == ["0.png", "1.png"]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_page_clears_old_neighbours_and_shows_the_error_when_a_query_fails(svc, tmp_path):
    """The served page's own script, run by node against a stub DOM and fetch: a good
    query fills the results; a failed one (JSON 400, then a non-JSON 502 from a proxy)
    empties them and shows the error instead of keeping the old neighbours."""
    client, arrays, *_ = svc
    html = client.get("/").text
    script = html.split("<script>", 1)[1].split("</script>", 1)[0]
    good = _post(client, _encode(Image.fromarray(arrays["cat/3.png"])), k=2).text
    bad = _post(client, b"\x89PNG garbage").text
    harness = r"""
const vm = require('vm');
const els = {};
const el = (id) => els[id] || (els[id] = {id, textContent: '', innerHTML: '', value: id === 'k' ? '2' : '',
  classList: {add() {}, remove() {}}, querySelectorAll() { return []; }});
const answers = JSON.parse(process.argv[3]);
const reply = (status, body) => ({ok: status < 400, status, statusText: status === 502 ? 'Bad Gateway' : '',
  text: async () => body, json: async () => JSON.parse(body), blob: async () => new Blob([body])});
const ctx = {document: {getElementById: el}, console, URL, FormData, File, Blob, setTimeout,
  fetch: async (url) => {
    if (url === '/health') return reply(200, JSON.stringify({count: 8, num_bits: 32, model_id: 'm'}));
    if (url.startsWith('/samples')) return reply(200, JSON.stringify({items: []}));
    const [status, body] = answers.shift();
    return reply(status, body);
  }};
vm.createContext(ctx);
vm.runInContext(require('fs').readFileSync(process.argv[2], 'utf8'), ctx);
(async () => {
  const out = [];
  for (let i = 0; i < 3; i++) {
    await ctx.search(new File([new Uint8Array([1])], 'q.png', {type: 'image/png'}));
    out.push({results: (els.results.innerHTML.match(/class="card result"/g) || []).length,
              error: els.error.textContent, status: els.status.textContent});
  }
  console.log(JSON.stringify(out));
})();
"""
    (tmp_path / "page.js").write_text(script)
    (tmp_path / "harness.js").write_text(harness)
    answers = [[200, good], [400, bad], [502, "<html>Bad Gateway</html>"]]
    proc = subprocess.run(["node", str(tmp_path / "harness.js"), str(tmp_path / "page.js"), json.dumps(answers)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    ok, failed, proxy = json.loads(proc.stdout)
    assert ok == {"results": 2, "error": "", "status": ok["status"]} and "results in" in ok["status"]
    assert failed["results"] == 0 and "cannot decode image" in failed["error"] and failed["status"] == ""
    assert proxy["results"] == 0 and proxy["error"] == "search failed: HTTP 502 Bad Gateway"


# ----------------------------------------------------------------- item 14: serve
def _serve(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "bgan_tf.serve", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _parsed_serve_flags(*args: str):
    """The serve binary's flags, defined in a fresh FlagValues and parsed from ``args``."""
    from absl import flags

    from flags.search_flags import define_service_flags

    fv = flags.FlagValues()
    define_service_flags(fv)
    fv(["serve", *args])
    return fv


def test_serve_flags_are_bounded_at_parse_time_and_match_the_service_limits():
    from bgan_tf.search.limits import DEFAULT_MAX_PIXELS

    # The flags of the real binary (its own process: another test may have defined
    # --max_pixels as the index binary's flag in this one), bounded by LIMITS.
    knob_of = {"max_upload_bytes": "max_upload_bytes", "max_k": "max_k", "workers_threads": "search_threads",
               "max_batch": "max_batch", "max_pixels": "max_pixels"}
    probe = ("import json; from flags.search_flags import define_service_flags; define_service_flags(); "
             "from absl import flags; F = flags.FLAGS; "
             f"print(json.dumps({{n: [F[n].parser.lower_bound, F[n].parser.upper_bound, F[n].default] "
             f"for n in {sorted(knob_of)!r}}}))")
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    # --max_pixels is shared with the index binary (flags/common.py: lower bound only,
    # default None); serve applies its own default and upper bound from LIMITS at start-up.
    assert got.pop("max_pixels") == [1, None, None]
    assert {knob_of[n]: tuple(v[:2]) for n, v in got.items()} == {k: v for k, v in LIMITS.items()
                                                                   if k != "max_pixels"}
    from flags import search_flags

    assert search_flags.service_max_pixels(_parsed_serve_flags()) == DEFAULT_MAX_PIXELS < data.DEFAULT_MAX_PIXELS
    too_many = LIMITS["max_pixels"][1] + 1
    with pytest.raises(UserError, match="--max_pixels must be from"):
        search_flags.service_max_pixels(_parsed_serve_flags(f"--max_pixels={too_many}"))
    for flag, value in [("port", "-1"), ("port", "65536"), ("max_k", "0"), ("max_k", "10001"),
                        ("max_upload_bytes", "0"), ("allowed_types", ""), ("allowed_types", "text/html"),
                        ("workers_threads", "0"), ("max_batch", "0"), ("max_pixels", "0")]:
        r = _serve("--index=/nonexistent", f"--{flag}={value}")
        assert r.returncode == 2 and r.stdout == "", (flag, value, r.stdout)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0], (flag, value, r.stderr)


def test_serve_on_a_busy_port_is_one_line_and_never_claims_to_be_serving(svc):
    *_, root = svc
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = _serve(f"--index={root / 'idx'}", "--host=127.0.0.1", f"--port={port}")
    assert r.returncode == 2 and "serving" not in r.stdout + r.stderr
    assert r.stderr.strip() == (f"error: port {port} is in use on 127.0.0.1; stop the process using it "
                                "or pass another --port")


def test_16bit_arrays_from_npz_are_scaled_not_clipped(tmp_path):
    """Item 9 for arrays: a uint16 npz image keeps its grey levels instead of turning white."""
    from bgan_tf.data.sources import load_npz

    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    np.savez(tmp_path / "x.npz", images=np.stack([ramp, ramp]))
    img = load_npz(str(tmp_path / "x.npz")).images[0]
    want = np.round(ramp.astype(np.float64) * 255 / 65535)
    assert np.abs(img[..., 0].astype(int) - want).max() <= 1
    assert (img == 255).mean() < 0.05
