"""Regression tests for issue 11's image items: pixel budget, bombs, 16-bit images,
skip counts, the service's error answers and paths, and `serve`'s start-up checks; and
for issue 27's service cases (1-4, 12, 21, at the end): what the service may read,
what a client can make it allocate, reloading, Host/HEAD/Range/docs/format checks.

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
from concurrent.futures import ThreadPoolExecutor
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
               "max_batch": "max_batch", "max_pixels": "max_pixels", "pixel_budget": "pixel_budget"}
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


def test_exif_orientation_is_applied_so_a_phone_photo_decodes_upright():
    """Issue 27 case 20: EXIF orientation was ignored, so a phone photo was encoded sideways
    and its upright copy found other neighbours. A JPEG stored rotated with orientation 6
    ("rotate 90 clockwise to view") decodes to the upright pixels (JPEG tolerance)."""
    y, x = np.mgrid[0:48, 0:64]
    upright = np.stack([x * 4, y * 5, np.full_like(x, 128)], -1).astype(np.uint8)  # 48x64, not square
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    got = decode_image_bytes(buf.getvalue())
    assert got.shape == upright.shape
    assert np.abs(got.astype(int) - upright.astype(int)).mean() < 3


# ------------------------------------------- issue 27: the second hostile probe
def _small_index(tmp_path: Path, n: int = 3):
    """A pixel-lsh index of n 16x16 PNGs under tmp_path/imgs (root recorded by the build)."""
    enc = load_model("pixel-lsh:32")
    (tmp_path / "imgs").mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    indexing.build_index(enc, tmp_path / "imgs", tmp_path / "idx", progress=False)
    return indexing.open_index(tmp_path / "idx", enc), enc


def _id_of(index, name: str) -> int:
    return next(int(i) for i in index.store.ids if index.store.metadata(int(i))["path"].endswith(name))


def test_symlinks_leaving_the_root_devices_and_folders_are_json_404(tmp_path):
    """Issue 27 case 1: an indexed file replaced by a symlink to a file outside the image
    root (the probe got /etc/shadow) is not served; a symlink staying inside the root is."""
    index, enc = _small_index(tmp_path)
    client = TestClient(create_app(index, enc))
    secret = tmp_path / "secret.txt"
    secret.write_text("root:hash")
    imgs = tmp_path / "imgs"
    (imgs / "0.png").unlink()
    (imgs / "0.png").symlink_to(secret)
    (imgs / "1.png").unlink()
    (imgs / "1.png").symlink_to(imgs / "2.png")  # inside the root: served
    for name, status in [("0.png", 404), ("1.png", 200), ("2.png", 200)]:
        r = client.get(f"/images/{_id_of(index, name)}")
        assert r.status_code == status, (name, r.text)
        assert "root:hash" not in r.text
    assert client.get(f"/images/{_id_of(index, '1.png')}").content == (imgs / "2.png").read_bytes()
    r = client.get(f"/images/{_id_of(index, '0.png')}")
    assert r.headers["content-type"] == "application/json" and "not available" in r.json()["error"]
    # A folder or a FIFO in place of the file: 404 at once (a FIFO must not hang the open).
    (imgs / "2.png").unlink()
    (imgs / "2.png").mkdir()
    assert client.get(f"/images/{_id_of(index, '2.png')}").status_code == 404
    (imgs / "2.png").rmdir()
    os.mkfifo(imgs / "2.png")
    assert client.get(f"/images/{_id_of(index, '2.png')}").status_code == 404
    # The image root itself a symlink (an operator's choice) still serves what lies inside it.
    (imgs / "2.png").unlink()
    Image.new("RGB", (4, 4)).save(imgs / "2.png")
    (tmp_path / "imgs2").symlink_to(imgs)
    index.store.extra["image_root"] = str(tmp_path / "imgs2")
    assert client.get(f"/images/{_id_of(index, '1.png')}").status_code == 200


def test_a_folder_swapped_for_a_symlink_after_the_check_is_not_followed(tmp_path, monkeypatch):
    """Issue 27 case 1, the race: a folder inside the root replaced by a symlink to an
    outside folder between the path check and the open. Simulated by a realpath that
    reports the path as it was; the open walks the components with O_NOFOLLOW, so it
    fails instead of serving the outside file."""
    from bgan_tf.search import files

    index, enc = _small_index(tmp_path)
    sub, outside = tmp_path / "imgs" / "sub", tmp_path / "outside"
    outside.mkdir()
    (outside / "x.png").write_bytes(b"secret")
    sub.symlink_to(outside)  # the swap has already happened
    code = enc.encode(np.zeros((1, 16, 16, 3), np.uint8))
    item = int(index.add(code, metadata=[{"path": str(sub / "x.png")}])[0])
    real = os.path.realpath
    monkeypatch.setattr(files.os.path, "realpath", lambda p: str(p) if "sub" in str(p) else real(p))
    r = TestClient(create_app(index, enc)).get(f"/images/{item}")
    assert r.status_code == 404 and b"secret" not in r.content


def test_absolute_and_dotdot_paths_in_metadata_are_not_served_or_shown(tmp_path, monkeypatch):
    """Issue 27 case 2: metadata rows naming /etc/passwd or ../../../../etc/hostname
    (the relative one used to resolve against the server's working folder) are a JSON
    404, /samples and /search show only their last component, and an index with no
    recorded image root serves no file at all."""
    index, enc = _small_index(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    climb = os.path.relpath(outside, tmp_path / "imgs")  # ../outside.txt
    monkeypatch.chdir(tmp_path / "imgs")  # so the relative path would land on the file
    code = enc.encode(np.zeros((1, 16, 16, 3), np.uint8))
    ids = index.add(np.repeat(code, 3, axis=0),
                    metadata=[{"path": str(outside)}, {"path": "../../../../etc/hostname"}, {"path": climb}])
    client = TestClient(create_app(index, enc))
    for i in ids:
        r = client.get(f"/images/{int(i)}")
        assert r.status_code == 404 and r.json()["error"].endswith("is not available"), r.text
    shown = json.dumps(client.get("/samples?n=100").json())
    r = _post(client, _encode(Image.new("RGB", (16, 16))), k=10)
    shown += json.dumps(r.json())
    assert "outside.txt" in shown and "hostname" in shown
    assert str(tmp_path) not in shown and "../" not in shown and "/etc" not in shown
    assert hide_paths({"path": "../../../../etc/hostname"}, str(tmp_path / "imgs")) == {"path": "hostname"}
    assert hide_paths({"path": "/etc/passwd"}, str(tmp_path / "imgs")) == {"path": "passwd"}
    # No recorded root: nothing is served, and the message says how to fix it.
    del index.store.extra["image_root"], index.store.extra["image_roots"]
    r = TestClient(create_app(index, enc)).get(f"/images/{_id_of(index, '1.png')}")
    assert r.status_code == 404 and "rebuild it" in r.json()["error"]


def test_no_images_mode_serves_no_file(svc):
    """Issue 27 case 1 (optional part): --no_images turns GET /images off entirely."""
    _, _, index, enc, _ = svc
    r = TestClient(create_app(index, enc, serve_images=False)).get(f"/images/{int(index.store.ids[0])}")
    assert r.status_code == 404 and "--no_images" in r.json()["error"]


def test_chunked_body_over_the_limit_is_refused_while_it_streams(svc):
    """Issue 27 case 3: a chunked upload (no Content-Length) past the byte limit gets a
    JSON 413 as soon as the limit is passed; the app stops reading instead of spooling
    the whole body (the probe's 1 GB was spooled to disk before the 413)."""
    import asyncio

    _, _, index, enc, _ = svc
    app = create_app(index, enc, max_upload_bytes=100_000)
    chunk, total_chunks, pulled, sent = b"\0" * 65536, 800, [0], []  # a 50 MB body on offer
    boundary = b"xyz"
    head = (b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n")

    async def receive() -> dict:
        pulled[0] += 1
        body = head if pulled[0] == 1 else chunk
        return {"type": "http.request", "body": body, "more_body": pulled[0] < total_chunks}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/search", "raw_path": b"/search", "query_string": b"k=3",
             "headers": [(b"host", b"testserver"), (b"transfer-encoding", b"chunked"),
                         (b"content-type", b"multipart/form-data; boundary=" + boundary)],
             "http_version": "1.1", "scheme": "http", "server": ("testserver", 80), "client": ("c", 1),
             "root_path": "", "app": app}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 413 and "larger than 100000 bytes" in json.loads(body)["error"]
    # 100 KB + the multipart slack is 3 chunks of 64 KB: nothing much past the limit was read.
    assert pulled[0] <= 4, pulled[0]


_CONCURRENT_BIG_UPLOADS = r"""
import io, os, resource, sys, tempfile
cap = int(sys.argv[1]) << 20
resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
from concurrent.futures import ThreadPoolExecutor
from PIL import Image
from fastapi.testclient import TestClient
from bgan_tf.inference.encoders import load_model
from bgan_tf.search import indexer as indexing
from bgan_tf.search.service import create_app
root = tempfile.mkdtemp(); os.makedirs(f"{root}/imgs")
Image.new("RGB", (16, 16), (10, 200, 30)).save(f"{root}/imgs/0.png")
enc = load_model("pixel-lsh:32")
indexing.build_index(enc, f"{root}/imgs", f"{root}/idx", progress=False)
client = TestClient(create_app(indexing.open_index(f"{root}/idx", enc), enc, search_threads=8),
                    raise_server_exceptions=False)
buf = io.BytesIO(); Image.new("RGB", (4000, 4000), (10, 200, 30)).save(buf, "PNG")
post = lambda _: client.post("/search?k=1", files={"image": ("q.png", buf.getvalue(), "image/png")}).status_code
with ThreadPoolExecutor(12) as ex:
    print(sorted(set(ex.map(post, range(12)))), client.get("/stats").json().get("pixels_in_flight_peak", 0))
"""


def test_concurrent_big_uploads_stay_within_the_pixel_budget_under_a_memory_cap():
    """Issue 27 case 4: 12 concurrent 4000x4000 PNGs (16 megapixels each, 56 KB, under the
    per-upload budget) with 8 decode threads. Before, each decoded image waited in the
    batcher at full resolution (48 MB) and was stacked with the others (the probe: 3.76 GiB
    arrays, 5.6 GB RSS); now at most `pixel_budget` pixels are decoded at once and each is
    shrunk to the encoder's 16x16 input before it is queued.

    The cap is RLIMIT_DATA (private writable memory), not RLIMIT_AS: each thread's glibc
    arena reserves 64 MB of address space, so an address-space cap small enough to catch
    the regression stops the threads from starting. Measured peak RSS: 1,071 MB before
    (it needs a 2 GB cap to answer all 12), 360-420 MB after; under the 1,100 MB cap all
    12 answered 500 MemoryError before. No TensorFlow: the pixel-lsh encoder."""
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run([sys.executable, "-c", _CONCURRENT_BIG_UPLOADS, "1100"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    codes, peak = r.stdout.strip().rsplit("]", 1)
    assert codes == "[200", r.stdout
    assert int(peak) <= 48_000_000, r.stdout  # the default pixel budget


def test_uploads_are_shrunk_with_the_encoders_own_resize(svc):
    """Issue 27 case 4: the shrunk image gives the codes the full one gives (pixel-lsh's
    row sampling exactly; bilinear equal to tflite.resize_bilinear, the graph's arithmetic),
    so resizing before batching changes memory, not results."""
    from bgan_tf.inference.tflite import resize_bilinear
    from bgan_tf.search.guards import shrink

    _, _, _, enc, _ = svc
    img = np.random.default_rng(3).integers(0, 255, (301, 517, 3), dtype=np.uint8)
    small = shrink(img, enc)
    assert small.shape == (16, 16, 3) and small.dtype == np.uint8
    assert np.array_equal(enc.encode(small[None]), enc.encode(img[None]))

    class Bilinear:
        input_size, input_resize = 24, "bilinear"

    got = shrink(img, Bilinear())
    assert got.dtype == np.float32 and np.array_equal(got, resize_bilinear(img[None], 24)[0])


def test_reload_switches_to_the_updated_index_and_refuses_another_models(tmp_path):
    """Issue 27 case 12 (service): a running server never saw an updated index. POST
    /reload re-reads it from disk and switches as one unit; an index of another model is
    refused with a JSON 400 and the old one keeps serving."""
    index, enc = _small_index(tmp_path, n=2)
    target = {"path": tmp_path / "idx", "enc": enc}
    client = TestClient(create_app(index, enc, reload=lambda: indexing.open_index(target["path"], target["enc"])))
    assert client.get("/health").json()["count"] == 2
    Image.new("RGB", (16, 16), (1, 2, 3)).save(tmp_path / "imgs" / "new.png")
    indexing.build_index(enc, tmp_path / "imgs", tmp_path / "idx", progress=False)
    r = client.post("/reload")
    assert r.status_code == 200 and r.json()["count"] == 3, r.text
    assert client.get("/health").json()["count"] == 3
    top = _post(client, _encode(Image.new("RGB", (16, 16), (1, 2, 3)))).json()["results"][0]
    assert top["distance"] == 0 and top["metadata"]["path"] == "new.png"
    other = load_model("pixel-lsh:32:7")
    indexing.build_index(other, tmp_path / "imgs", tmp_path / "idx7", progress=False)
    target.update(path=tmp_path / "idx7", enc=other)
    r = client.post("/reload")
    assert r.status_code == 400 and "still serving the old index" in r.json()["error"]
    assert client.get("/health").json() == {"status": "ok", "count": 3, "model_id": enc.model_id, "num_bits": 32}
    assert TestClient(create_app(index, enc)).post("/reload").status_code == 404  # no loader given


def test_head_range_host_docs_and_mislabelled_formats(svc, tmp_path):
    """Issue 27 case 21 (service items): HEAD /images has GET's headers and no body; a
    Range the server cannot honour is ignored (200, whole file), never a text/plain 416;
    a Host not allowed (DNS rebinding) gets JSON 421; /docs and /openapi.json are off
    unless asked for; a TIFF sent as image/png is a JSON 415, not decoded as TIFF."""
    client, arrays, index, enc, root = svc
    item = int(index.store.ids[0])
    get, head = client.get(f"/images/{item}"), client.head(f"/images/{item}")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"] == str(len(get.content))
    assert head.headers["content-type"] == get.headers["content-type"] == "image/png"
    r = client.get(f"/images/{item}", headers={"Range": "bytes=999999-"})
    assert r.status_code == 200 and r.content == get.content
    assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 404
    assert TestClient(create_app(index, enc, api_docs=True)).get("/openapi.json").status_code == 200
    guarded = create_app(index, enc, allowed_hosts=["localhost", "127.0.0.1"])
    r = TestClient(guarded, base_url="http://evil.example").get("/health")
    assert r.status_code == 421 and "host not allowed" in r.json()["error"]
    assert TestClient(guarded, base_url="http://localhost:8000").get("/health").status_code == 200
    tiff = _encode(Image.fromarray(arrays["cat/0.png"]), "TIFF")
    r = TestClient(create_app(index, enc, allowed_types=["image/png", "image/tiff"])).post(
        "/search", files={"image": ("q.png", tiff, "image/png")})
    assert r.status_code == 415 and "holds a TIFF image" in r.json()["error"]


def test_serve_accepts_only_local_host_names_by_default():
    """Issue 27 case 21: serve's Host list is the loopback names and --host unless
    --allowed_hosts is given; a wildcard --host adds no name."""
    from flags import search_flags

    assert search_flags.service_hosts(_parsed_serve_flags()) == ["localhost", "127.0.0.1", "::1", "127.0.0.1"]
    assert search_flags.service_hosts(_parsed_serve_flags("--host=0.0.0.0")) == ["localhost", "127.0.0.1", "::1"]
    assert search_flags.service_hosts(_parsed_serve_flags("--allowed_hosts=search.example,*")) == [
        "search.example", "*"]
    fv = _parsed_serve_flags("--pixel_budget=1000")
    with pytest.raises(UserError, match="at least --max_pixels"):
        search_flags.service_pixel_budget(16_000_000, fv)


def test_budgets_keep_room_for_small_uploads_and_time_out(svc):
    """Issue 27 case 4: the process-wide budgets (decoded pixels, upload bytes in memory)
    refuse what would pass the total, keep their reserve for small takers (big uploads
    filling the pixel budget made a 16x16 query wait 7 s), and a wait ends with a 503,
    not forever. After concurrent uploads the byte peak stays under 8 uploads' worth."""
    import asyncio

    from bgan_tf.search.guards import Budget

    b = Budget(100, reserve=10)
    assert b.try_take(90) and not b.try_take(11) and b.try_take(10) and not b.try_take(1)
    assert asyncio.run(b.take(5, timeout_s=0.05)) is False
    b.give_back(10)
    assert asyncio.run(b.take(5, timeout_s=0.05)) is True and b.peak == 100
    _, arrays, index, enc, _ = svc
    client = TestClient(create_app(index, enc, max_upload_bytes=2_000))
    body = _encode(Image.fromarray(arrays["cat/1.png"]))
    with ThreadPoolExecutor(8) as ex:
        assert set(ex.map(lambda _: _post(client, body).status_code, range(16))) == {200}
    assert 0 < client.get("/stats").json()["upload_bytes_in_flight_peak"] <= 8 * 2_001


def test_images_added_from_a_second_folder_are_served_and_only_from_the_recorded_roots(tmp_path):
    """Issue 27 case 1: a second build into the same index from another folder records
    that folder as a root too (only the first was recorded, so its images were 404),
    while a file outside every recorded root is still not served."""
    index, enc = _small_index(tmp_path, n=2)
    (tmp_path / "more").mkdir()
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(tmp_path / "more" / "extra.png")
    indexing.build_index(enc, tmp_path / "more", tmp_path / "idx", progress=False)
    index = indexing.open_index(tmp_path / "idx", enc)
    assert index.store.extra["image_roots"] == [str(tmp_path / "imgs"), str(tmp_path / "more")]
    client = TestClient(create_app(index, enc))
    got = client.get(f"/images/{_id_of(index, 'extra.png')}")
    assert got.status_code == 200 and got.content == (tmp_path / "more" / "extra.png").read_bytes()
    (tmp_path / "outside.png").write_bytes((tmp_path / "more" / "extra.png").read_bytes())
    index.store._meta[index.store._pos[_id_of(index, "extra.png")]]["path"] = str(tmp_path / "outside.png")
    assert client.get(f"/images/{_id_of(index, 'outside.png')}").status_code == 404
