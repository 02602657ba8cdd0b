"""HTTP service through FastAPI's TestClient: search, limits, errors, concurrency."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bgan_tf.inference.pixel_lsh import PixelLSHEncoder
from bgan_tf.search import indexer as indexing
from bgan_tf.errors import UserError
from bgan_tf.search.service import create_app


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("svc")
    rng = np.random.default_rng(0)
    arrays = []
    for i in range(20):
        a = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        (root / "imgs").mkdir(exist_ok=True)
        Image.fromarray(a).save(root / "imgs" / f"{i:02d}.png")
        arrays.append(a)
    enc = PixelLSHEncoder(32)
    indexing.build_index(enc, root / "imgs", root / "idx", progress=False)
    index = indexing.open_index(root / "idx", enc)
    app = create_app(index, enc, max_upload_bytes=20_000, allowed_types=["image/png", "image/jpeg"], max_k=15)
    return TestClient(app), arrays, index, root


def test_search_returns_neighbours_with_metadata(setup):
    client, arrays, _, root = setup
    r = client.post("/search?k=5", files={"image": ("q.png", _png(arrays[7]), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["k"] == 5 and body["count"] == 5 and len(body["results"]) == 5
    top = body["results"][0]
    assert top["distance"] == 0 and top["metadata"]["path"].endswith("07.png")
    assert [x["distance"] for x in body["results"]] == sorted(x["distance"] for x in body["results"])
    img = client.get(top["image_url"])
    assert img.status_code == 200 and img.content == (root / "imgs" / "07.png").read_bytes()


def test_health_stats_page_samples(setup):
    client, _, index, _ = setup
    h = client.get("/health").json()
    assert h == {"status": "ok", "count": 20, "model_id": index.model_id, "num_bits": 32}
    s = client.get("/stats").json()
    assert s["count"] == 20 and s["backend"] == "flat" and s["max_k"] == 15
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="results"' in page.text and "/search?k=" in page.text
    assert len(client.get("/samples?n=4").json()["items"]) == 4


def test_limits_and_errors_are_json(setup):
    client, arrays, _, _ = setup
    big = np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    r = client.post("/search", files={"image": ("big.png", _png(big), "image/png")})
    assert r.status_code == 413 and "larger than" in r.json()["error"]
    r = client.post("/search", files={"image": ("q.gif", b"GIF89a...", "image/gif")})
    assert r.status_code == 415 and "not accepted" in r.json()["error"]
    r = client.post("/search", files={"image": ("q.png", b"\x89PNG garbage", "image/png")})
    assert r.status_code == 400 and "cannot decode" in r.json()["error"]
    r = client.post("/search", files={"image": ("q.png", b"", "image/png")})
    assert r.status_code == 400
    r = client.post("/search?k=99", files={"image": ("q.png", _png(arrays[0]), "image/png")})
    assert r.status_code == 400 and "limit" in r.json()["error"]
    r = client.post("/search?k=0", files={"image": ("q.png", _png(arrays[0]), "image/png")})
    assert r.status_code == 422 and "error" in r.json()
    r = client.post("/search")
    assert r.status_code == 422 and "image" in r.json()["error"]
    assert client.get("/images/12345").status_code == 404
    assert client.get("/images/abc").status_code == 422
    assert client.get("/images/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)


def test_concurrent_searches_and_mutation(setup):
    client, arrays, index, _ = setup
    def one(i: int) -> int:
        r = client.post("/search?k=3", files={"image": ("q.png", _png(arrays[i % 20]), "image/png")})
        assert r.status_code == 200
        return r.json()["results"][0]["distance"]

    with ThreadPoolExecutor(8) as ex:
        futures = [ex.submit(one, i) for i in range(40)]
        # Mutate the index while searches run: the index lock keeps them consistent.
        extra = index.add(np.ones((3, 32), np.float32), metadata=[{"path": "/nonexistent.png"}] * 3)
        index.remove(extra)
        assert all(f.result() == 0 for f in futures)
    assert client.get("/stats").json()["searches"] >= 40


def test_refuses_mismatched_encoder(setup):
    _, _, index, _ = setup
    with pytest.raises(UserError, match="built by model"):
        create_app(index, PixelLSHEncoder(32, seed=5))


def test_batcher_groups_waiting_queries_and_isolates_failures(setup):
    import threading

    from bgan_tf.search.service import _Batcher

    _, arrays, index, _ = setup
    enc = PixelLSHEncoder(32)
    gate, calls = threading.Event(), []

    class Slow:
        num_bits, model_id, metadata = enc.num_bits, enc.model_id, {}

        def encode(self, images):
            gate.wait(10)  # hold the first call so the others queue up
            calls.append(len(images))
            if images.shape[1] == 7:
                raise UserError("cannot take 7x7 images")
            return enc.encode(images)

    b = _Batcher(index, Slow(), max_batch=64)
    futs = [b.submit(arrays[i], 3) for i in range(6)]
    bad = b.submit(np.zeros((7, 7, 3), np.uint8), 3)
    gate.set()
    for i, f in enumerate(futs):
        assert f.result(10)[0]["distance"] == 0 and f.result()[0]["metadata"]["path"].endswith(f"{i:02d}.png")
    with pytest.raises(UserError, match="7x7"):
        bad.result(10)
    assert sum(c for c in calls) == 7 and len(calls) <= 3  # first alone, the rest batched by shape
    assert b.batches <= 2 and b.largest >= 5
    b.close()
