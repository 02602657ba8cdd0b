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


def test_query_from_another_folder_runs_the_verified_tflite_copy_without_tensorflow(tmp_path, tiny_model_dir):
    """Issue 29 item 4: a build given a relative --model records it by absolute path, so
    `index query` from another working folder finds it ("model folder not found" before);
    build keeps a float TFLite copy whose codes it checked, and query runs it without
    importing TensorFlow (15-17 s of every cold query) and answers as the Keras model does;
    later saves keep the copy, and a damaged copy is not used."""
    rng = np.random.default_rng(3)
    (tmp_path / "imgs").mkdir()
    for i in range(12):
        size = (32, 32) if i % 2 else (20 + i, 40 - i)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    idx = tmp_path / "idx"
    r = _run("build", f"--model={os.path.relpath(tiny_model_dir, ROOT)}", f"--images={tmp_path / 'imgs'}",
             f"--index={idx}", "--noprogress")
    assert r.returncode == 0, r.stderr
    assert "float TFLite copy" in r.stdout and r.stderr == "", r.stderr
    extra = json.loads((idx / "manifest.json").read_text())["extra"]
    # Checked on the 12 images, the 6 already at the 32-px input size also at twice it.
    assert extra["model"] == tiny_model_dir and extra["query_encoder"]["checked_images"] == 18
    # From another folder, reporting at exit whether TensorFlow was imported.
    query = [f"--index={idx}", f"--image={tmp_path / 'imgs' / '3.png'}", "--k=12", "--json"]
    code = ("import atexit, runpy, sys; atexit.register(lambda: print('TF imported:', 'tensorflow' in "
            "sys.modules, file=sys.stderr)); sys.argv = ['index', 'query', *sys.argv[1:]]; "
            "runpy.run_module('bgan_tf.index', run_name='__main__')")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    fast = subprocess.run([sys.executable, "-c", code, *query], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert fast.returncode == 0 and "TF imported: False" in fast.stderr, fast.stderr
    # The Keras model in this process (a third TensorFlow process would cost ~5 s) answers alike.
    import bgan_tf

    keras = bgan_tf.open_index(idx, model=tiny_model_dir).search(tmp_path / "imgs" / "3.png", k=12)
    assert json.loads(fast.stdout)["results"] == [row.to_dict() for row in keras]
    assert str(tmp_path / "imgs" / "3.png") in [row["metadata"]["path"] for row in
                                                json.loads(fast.stdout)["results"] if row["distance"] == 0]
    # A later save (the service adding an image) keeps the verified copy in the new folder.
    from bgan_tf.search.binary_index import BinaryIndex
    from bgan_tf.search.query_encoder import QUERY_ENCODER_FILE, fast_encoder

    index = BinaryIndex.load(idx)
    index.add(np.ones((1, index.num_bits), np.float32), metadata=[{"path": "added"}])
    index.save(idx)
    assert (idx / QUERY_ENCODER_FILE).is_file() and fast_encoder(idx) is not None
    (idx / QUERY_ENCODER_FILE).write_bytes(b"TFL3 damaged")  # a damaged copy is never run
    assert fast_encoder(idx) is None


def test_old_index_with_a_relative_model_path(tmp_path, monkeypatch, tiny_model_dir):
    """Issue 29 item 4: an index that recorded its model as typed (relative) still finds it
    from the folder it was built in; from anywhere else `query` prints one error line naming
    the recorded path and suggesting --model, instead of "model folder not found; train one"."""
    from bgan_tf.search.query_encoder import resolve_recorded_model

    _images(tmp_path / "imgs", 3, seed=0)
    idx = tmp_path / "idx"
    indexing.build_index(PixelLSHEncoder(32, 0), tmp_path / "imgs", idx, progress=False)
    store = CodeStore.load(idx)
    store.extra["model"] = os.path.relpath(tiny_model_dir, tmp_path)  # what old builds recorded
    store.save(idx)
    monkeypatch.chdir(tmp_path)
    assert resolve_recorded_model(idx, None) == store.extra["model"]
    r = _run("query", f"--index={idx}", f"--image={tmp_path / 'imgs' / 'cats' / '0_0.png'}")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"records its model as '{store.extra['model']}'" in r.stderr and "--model" in r.stderr
