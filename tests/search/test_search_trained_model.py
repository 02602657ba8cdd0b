"""Search end to end with a REAL trained model (the tiny fixture model), not pixel-lsh.

Digits PNGs in class subfolders -> `python -m bgan_tf.index build --model MODEL`
-> `query --json` (k sorted results, the query itself at distance 0) -> the
manifest records the model_id and a different model is refused with one line ->
the HTTP service with the same model answers an uploaded PNG.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bgan_tf.inference.encoders import load_model
from bgan_tf.search import indexer as indexing
from bgan_tf.search.service import create_app
from bgan_tf.search.store import read_manifest

ROOT = Path(__file__).resolve().parents[2]
PER_CLASS = 4  # 40 images: a few dozen, as a user's folder would be


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "bgan_tf.index", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> Path:
    """40 scikit-learn digits as 32x32 grayscale PNGs in class subfolders 0..9."""
    from sklearn.datasets import load_digits

    d = load_digits()
    root = tmp_path_factory.mktemp("digits_pngs")
    for c in range(10):
        (root / str(c)).mkdir()
        for j, i in enumerate(np.nonzero(d.target == c)[0][:PER_CLASS]):
            img = (d.images[i] / 16.0 * 255.0).round().astype(np.uint8)
            Image.fromarray(img, mode="L").resize((32, 32), Image.BILINEAR).save(root / str(c) / f"{j}.png")
    return root


@pytest.fixture(scope="module")
def built_index(tiny_model_dir, digit_folder, tmp_path_factory) -> Path:
    idx = tmp_path_factory.mktemp("trained_idx") / "idx"
    r = _run("build", f"--model={tiny_model_dir}", f"--images={digit_folder}", f"--index={idx}", "--noprogress")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"indexed {10 * PER_CLASS} new images (0 already indexed, 0 unreadable)" in r.stdout
    return idx


def test_cli_build_and_query_with_trained_model(tiny_model_dir, digit_folder, built_index):
    meta = json.loads((Path(tiny_model_dir) / "metadata.json").read_text())
    manifest = read_manifest(built_index)
    assert manifest["model_id"] == meta["model_id"] and manifest["num_bits"] == 16
    assert manifest["count"] == 10 * PER_CLASS
    assert manifest["extra"]["model"] == tiny_model_dir  # query finds the model without --model

    # The tiny model (4 training steps) gives many digits the same code, so ties at
    # distance 0 are broken by id: ask for every item to be sure the query is listed.
    query = digit_folder / "3" / "1.png"
    k = 10 * PER_CLASS
    r = _run("query", f"--index={built_index}", f"--image={query}", f"--k={k}", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)["results"]
    dists = [x["distance"] for x in res]
    assert len(res) == k and dists == sorted(dists) and all(0 <= x <= 16 for x in dists)
    assert res[0]["distance"] == 0
    assert len({x["id"] for x in res}) == k
    # the query image itself is in the index, at distance 0
    assert any(x["metadata"]["path"] == str(query) and x["distance"] == 0 for x in res)
    assert all("label" in x["metadata"] for x in res)

    # an index built by another model (same code length) is refused in one line
    r = _run("query", f"--index={built_index}", f"--image={query}", "--model=pixel-lsh:16")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: index") and f"built by model '{meta['model_id']}'" in last


def test_service_with_trained_model(tiny_model_dir, digit_folder, built_index):
    encoder = load_model(tiny_model_dir)
    index = indexing.open_index(built_index, encoder)
    client = TestClient(create_app(index, encoder, max_k=10 * PER_CLASS))
    query = digit_folder / "7" / "2.png"
    buf = io.BytesIO()
    Image.open(query).save(buf, format="PNG")
    k = 10 * PER_CLASS  # all items: ties at distance 0 (see above)
    r = client.post(f"/search?k={k}", files={"image": ("q.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert len(res) == k and [x["distance"] for x in res] == sorted(x["distance"] for x in res)
    # the service shows paths relative to the indexed folder, never the server's absolute ones
    assert any(x["metadata"]["path"] == "7/2.png" and x["distance"] == 0 for x in res)
    assert all(not x["metadata"]["path"].startswith("/") for x in res)
    assert client.get(res[0]["image_url"]).status_code == 200
    h = client.get("/health").json()
    assert h["model_id"] == encoder.model_id and h["count"] == 10 * PER_CLASS
    assert client.get("/stats").json()["encode_batches"] >= 1


def test_index_with_a_tflite_export(tiny_model_dir, digit_folder, tmp_path):
    """Devices that run an int8 file can index with that same file: codes then agree exactly."""
    from bgan_tf.serving import tflite as tflite_lib
    from bgan_tf.inference.keras_model import load_encoder

    loaded = load_encoder(tiny_model_dir)
    reps = tflite_lib.representative_images(str(digit_folder), loaded.config.backbone_input_size, 40)
    tfl = tflite_lib.convert_tflite(loaded, str(tmp_path / "tfl"), ["int8"], reps)["int8"]
    idx = tmp_path / "idx"
    r = _run("build", f"--model={tfl}", f"--images={digit_folder}", f"--index={idx}", "--noprogress")
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = read_manifest(idx)
    assert manifest["model_id"].startswith("tflite:") and manifest["num_bits"] == 16
    query = digit_folder / "5" / "0.png"
    r = _run("query", f"--index={idx}", f"--image={query}", f"--k={10 * PER_CLASS}", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)["results"]
    assert any(x["metadata"]["path"] == str(query) and x["distance"] == 0 for x in res)
    # the codes in the index are the file's codes, not the Keras model's
    enc = load_model(str(tfl))
    img = np.asarray(Image.open(query).convert("RGB"))[None]
    assert enc.model_id == manifest["model_id"] and enc.encode(img).shape == (1, 16)
    # and the Keras model that produced the file is refused: its codes differ in some bits
    r = _run("query", f"--index={idx}", f"--image={query}", f"--model={tiny_model_dir}")
    assert r.returncode == 2 and "built by model 'tflite:" in r.stderr.strip().splitlines()[-1]
    r = _run("query", f"--index={idx}", f"--image={query}", f"--model={tmp_path / 'missing.tflite'}")
    assert r.returncode == 2 and "TFLite model not found" in r.stderr
    (tmp_path / "garbage.tflite").write_bytes(b"not a flatbuffer")
    r = _run("query", f"--index={idx}", f"--image={query}", f"--model={tmp_path / 'garbage.tflite'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "is not an encoder exported by python -m export.tflite" in r.stderr.strip().splitlines()[-1]
