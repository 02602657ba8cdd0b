"""`python -m bgan_tf.index`: build resumes by path, query refuses a different model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bgan_tf.inference.pixel_lsh import PixelLSHEncoder
from bgan_tf.search import indexer as indexing
from bgan_tf.search.store import CodeStore

ROOT = Path(__file__).resolve().parents[2]


def _images(folder: Path, n: int, seed: int, sub: str = "cats") -> list[Path]:
    rng = np.random.default_rng(seed)
    (folder / sub).mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / sub / f"{seed}_{i}.png"
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "bgan_tf.index", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_build_resume_and_query_via_cli(tmp_path):
    imgs, idx = tmp_path / "imgs", tmp_path / "idx"
    first = _images(imgs, 6, seed=0)
    (imgs / "broken.jpg").write_bytes(b"not an image")
    r = _run("build", "--model=pixel-lsh:32", f"--images={imgs}", f"--index={idx}", "--noprogress")
    assert r.returncode == 0, r.stderr
    assert "indexed 6 new images (0 already indexed, 1 unreadable)" in r.stdout
    r = _run("build", "--model=pixel-lsh:32", f"--images={imgs}", f"--index={idx}", "--noprogress")
    assert "indexed 0 new images (6 already indexed" in r.stdout
    _images(imgs, 3, seed=1, sub="dogs")
    r = _run("build", "--model=pixel-lsh:32", f"--images={imgs}", f"--index={idx}", "--noprogress")
    assert "indexed 3 new images (6 already indexed" in r.stdout and "index holds 9" in r.stdout
    store = CodeStore.load(idx)
    assert sorted(m["label"] for m in store.metadata_rows()).count("dogs") == 3

    # query: the model recorded at build time is used when --model is absent
    r = _run("query", f"--index={idx}", f"--image={first[2]}", "--k=3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["results"][0]["metadata"]["path"] == str(first[2]) and out["results"][0]["distance"] == 0
    assert len(out["results"]) == 3
    r = _run("query", f"--index={idx}", f"--image={first[2]}", "--k=2")
    assert str(first[2]) in r.stdout.splitlines()[1]

    # a different model is refused, a bad image is one line on stderr, exit 2
    r = _run("query", f"--index={idx}", f"--image={first[2]}", "--model=pixel-lsh:32:7")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: index")
    assert "built by model 'pixel-lsh:32:0'" in r.stderr
    r = _run("query", f"--index={idx}", f"--image={imgs / 'broken.jpg'}")
    assert r.returncode == 2 and "cannot decode image" in r.stderr and "Traceback" not in r.stderr
    r = _run("query", f"--index={tmp_path / 'none'}", f"--image={first[0]}", "--model=pixel-lsh:32")
    assert r.returncode == 2 and "no index" in r.stderr


def test_build_saves_periodically_and_resumes_after_crash(tmp_path):
    imgs, idx = tmp_path / "imgs", tmp_path / "idx"
    _images(imgs, 10, seed=2)
    enc = PixelLSHEncoder(16)

    class Crash(Exception):
        pass

    def crash_after(added: int) -> None:
        if added >= 6:
            raise Crash

    try:
        indexing.build_index(enc, imgs, idx, batch_size=2, save_every=2, progress=False, on_batch=crash_after)
    except Crash:
        pass
    saved = len(CodeStore.load(idx))
    assert 4 <= saved <= 6  # periodic saves happened before the crash
    report = indexing.build_index(enc, imgs, idx, batch_size=4, progress=False)
    assert report.added == 10 - saved and report.count == 10
    paths = [m["path"] for m in CodeStore.load(idx).metadata_rows()]
    assert len(set(paths)) == 10
