"""Issue 11, search side: bad input and faults in `python -m bgan_tf.index` and its library.

One test per numbered item of the issue (1, 3, 5, 8, 10, 12, 13, 15); then issue 27's
index cases, named test_i27_<case>_... CLI runs are
subprocesses of the real binary (no TensorFlow import: about half a second each).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bgan_tf.data import images as data
from bgan_tf.inference.encoders import load_model
from bgan_tf.inference.pixel_lsh import PixelLSHEncoder
from bgan_tf.search import indexer as indexing
from bgan_tf.search import binary_index as search
from bgan_tf.codes import pack
from bgan_tf.errors import UserError
from bgan_tf.search.backends import make_backend
from bgan_tf.search.binary_index import BinaryIndex
from bgan_tf.search.store import CodeStore, read_manifest

ROOT = Path(__file__).resolve().parents[2]
ENC = PixelLSHEncoder(16)


def _png(path: Path | bytes, size: int = 12, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:  # bytes paths too: names that are not valid UTF-8
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(f, format="PNG")


def _images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i}.png" for i in range(n)]
    for i, p in enumerate(paths):
        _png(p, seed=i)
    return paths


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "bgan_tf.index", *args], cwd=ROOT, env=env,
                          capture_output=True, timeout=120)


def _one_error_line(r: subprocess.CompletedProcess, *needles: str) -> str:
    """rc 2 and stderr is exactly one `error:` line containing every needle."""
    err = r.stderr.decode("utf-8", "backslashreplace").strip()
    assert r.returncode == 2, (r.returncode, err)
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every entry under folder -> its bytes (None for folders)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


# ------------------------------------------------------------------ item 1
def test_1_build_never_replaces_a_foreign_folder_the_images_or_a_file(tmp_path):
    imgs = tmp_path / "imgs"
    _images(imgs, 3)
    foreign = tmp_path / "photos"
    (foreign / "album").mkdir(parents=True)
    (foreign / "keep.txt").write_text("precious")
    (foreign / "album" / "a.jpg").write_bytes(b"jpeg")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    before = {"imgs": _tree(imgs), "photos": _tree(foreign)}

    # Library: the checks run before anything is encoded, and save refuses too.
    for bad, needle in [(foreign, "not a binary index"), (imgs, "overlaps"),
                        (imgs / "sub", "overlaps"), (a_file, "is a file")]:
        with pytest.raises(UserError, match=needle):
            indexing.build_index(ENC, imgs, bad, progress=False)
    store = CodeStore(16, "m")
    with pytest.raises(UserError, match="not a binary index"):
        store.save(foreign)

    # CLI: a model that cannot be loaded shows the path is refused before loading it.
    missing_model = str(tmp_path / "no-such-model")
    _one_error_line(_run("build", f"--model={missing_model}", f"--images={imgs}", f"--index={foreign}",
                         "--noprogress"), "photos already holds files that are not a binary index")
    _one_error_line(_run("build", f"--model={missing_model}", f"--images={imgs}", f"--index={imgs}",
                         "--noprogress"), "overlaps the input")
    _one_error_line(_run("build", "--model=pixel-lsh:16", f"--images={imgs}", f"--index={a_file}",
                         "--noprogress"), "is a file")

    assert {"imgs": _tree(imgs), "photos": _tree(foreign)} == before
    assert a_file.read_text() == "mine"
    assert not list(tmp_path.glob(".*.tmp-*")) and not list(tmp_path.glob(".*.old-*"))
    # An existing index is still updated in place.
    idx = tmp_path / "idx"
    indexing.build_index(ENC, imgs, idx, progress=False)
    _images(imgs / "more", 1)
    assert indexing.build_index(ENC, imgs, idx, progress=False).count == 4


# ------------------------------------------------------------------ item 3
def test_3_a_second_concurrent_writer_gets_a_clear_error(tmp_path):
    imgs_a, imgs_b, idx = tmp_path / "a", tmp_path / "b", tmp_path / "idx"
    _images(imgs_a, 2)
    _images(imgs_b, 3)
    indexing.build_index(ENC, imgs_a, idx, progress=False)
    # Another process is writing the index (it holds the lock across its whole build).
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\nfrom bgan_tf import atomic\n"
         f"with atomic.output_lock({str(idx)!r}, 'binary index'):\n"
         "    print('locked', flush=True)\n    sys.stdin.read()\n"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match="another process is writing the binary index"):
            indexing.build_index(ENC, imgs_b, idx, progress=False)
        _one_error_line(_run("build", "--model=pixel-lsh:16", f"--images={imgs_b}", f"--index={idx}",
                             "--noprogress"), "another process is writing the binary index", "wait")
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert len(CodeStore.load(idx)) == 2  # the refused writers changed nothing
    # Once the first writer is done, the second run adds its images: none is lost.
    indexing.build_index(ENC, imgs_b, idx, progress=False)
    paths = {m["path"] for m in CodeStore.load(idx).metadata_rows()}
    assert len(paths) == 5


# ------------------------------------------------------------------ item 5
def test_5_k_is_bounded_at_parse_time_and_clamped_to_the_index_size(tmp_path):
    n = 40
    db = pack(np.random.default_rng(0).integers(0, 2, (n, 32), dtype=np.uint8))
    q = db[:1]
    huge = 10**6
    knobs = {"ivf": {"nlist": 2, "nprobe": 2}}
    for name in ["numpy", "flat", "ours_exact", "ivf", "hnsw", "multihash"]:
        b = make_backend(name, 32, **knobs.get(name, {}))
        b.add(db, np.arange(n))
        tracemalloc.start()
        try:
            d, i = b.search(q, huge)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert d.shape == i.shape == (1, n), name
        assert peak < 1 << 20, (name, peak)  # k columns would be 12 MB here
    index = BinaryIndex.create(32, "m")
    index.add(db)
    assert len(index.search_one(q[0], 10**9)) == n
    assert BinaryIndex.create(32, "m").search(q, 10**9) == [[]]
    with pytest.raises(UserError, match="k must be positive"):
        index.search(q, 0)

    imgs, idx = tmp_path / "imgs", tmp_path / "idx"
    first = _images(imgs, 3)[0]
    indexing.build_index(ENC, imgs, idx, progress=False, model_ref="pixel-lsh:16")
    _one_error_line(_run("query", f"--index={idx}", f"--image={first}", "--k=1000000000"),
                    "--k=1000000000", "[1, 10000]")
    r = _run("query", f"--index={idx}", f"--image={first}", "--k=10000", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["results"]) == 3


# ------------------------------------------------------------------ item 8
def test_8_file_names_that_are_not_utf8_round_trip_and_print(tmp_path):
    imgs, idx = tmp_path / "imgs", tmp_path / "idx"
    first = _images(imgs, 2)[0]
    raw = os.fsencode(imgs) + b"/caf\xe9.png"
    _png(raw, seed=9)
    report = indexing.build_index(ENC, imgs, idx, progress=False, model_ref="pixel-lsh:16")
    assert report.added == 3 and not report.failed
    paths = [m["path"] for m in CodeStore.load(idx).metadata_rows()]
    assert os.fsencode(os.path.abspath(os.fsdecode(raw))) in [os.fsencode(p) for p in paths]
    again = indexing.build_index(ENC, imgs, idx, progress=False)
    assert (again.added, again.skipped) == (0, 3)
    table = indexing.format_results(indexing.open_index(idx, ENC).search_one(
        ENC.encode(indexing.read_image(first)[None])[0], 3))
    table.encode("utf-8")  # strict: what a UTF-8 stdout does
    assert "caf\\xe9.png" in table

    r = _run("query", f"--index={idx}", f"--image={first}", "--k=3")
    assert r.returncode == 0, r.stderr
    assert b"caf\\xe9.png" in r.stdout
    r = _run("query", f"--index={idx}", f"--image={first}", "--k=3", "--json")
    assert r.returncode == 0, r.stderr
    got = {os.fsencode(x["metadata"]["path"]) for x in json.loads(r.stdout)["results"]}
    assert raw in got


# ------------------------------------------------------------------ item 10
def test_10_batch_bounds_empty_folders_unsupported_and_oversized_files(tmp_path):
    from absl import flags

    from flags import search_flags

    search_flags.define_index_flags()  # what the binary's run() defines

    for name, bad in [("batch_size", "0"), ("batch_size", "-1"), ("batch_size", "1000000"),
                      ("max_pixels", "0"), ("save_every", "0")]:
        with pytest.raises(ValueError):
            flags.FLAGS[name].parser.parse(bad)
    assert search_flags.index_max_pixels() == data.DEFAULT_MAX_PIXELS

    imgs = tmp_path / "imgs"
    _images(imgs, 3)
    for bs in (0, -1):
        with pytest.raises(UserError, match="at least 1"):
            indexing.build_index(ENC, imgs, tmp_path / "i0", batch_size=bs, progress=False)
    # The last image is not dropped whatever the batch size.
    assert indexing.build_index(ENC, imgs, tmp_path / "i1", batch_size=2, progress=False).count == 3

    empty, junk = tmp_path / "empty", tmp_path / "junk"
    empty.mkdir()
    junk.mkdir()
    (junk / "a.png").write_bytes(b"not a png")
    (junk / "b.jpg").write_bytes(b"")
    (junk / "readme.txt").write_text("x")
    with pytest.raises(UserError, match="no images"):
        indexing.build_index(ENC, empty, tmp_path / "ie", progress=False)
    with pytest.raises(UserError, match="none of the 2 image files .* could be read.*no index was written"):
        indexing.build_index(ENC, junk, tmp_path / "ij", progress=False)
    assert not (tmp_path / "ie").exists() and not (tmp_path / "ij").exists()
    assert not list(tmp_path.glob(".i*.tmp-*"))
    _one_error_line(_run("build", "--model=pixel-lsh:16", f"--images={junk}", f"--index={tmp_path / 'ij'}",
                         "--noprogress"), "could be read", "no index was written")
    _one_error_line(_run("build", "--model=pixel-lsh:16", f"--images={imgs}", f"--index={tmp_path / 'ib'}",
                         "--batch_size=0"), "--batch_size=0")

    # Unsupported, unreadable and over-budget files are counted in the summary.
    mixed = tmp_path / "mixed"
    _images(mixed, 2)
    _png(mixed / "big.png", size=40)
    (mixed / "broken.jpg").write_bytes(b"nope")
    (mixed / "notes.txt").write_text("x")
    (mixed / "clip.heic").write_bytes(b"x")
    r = _run("build", "--model=pixel-lsh:16", f"--images={mixed}", f"--index={tmp_path / 'im'}",
             "--noprogress", "--max_pixels=1000")
    assert r.returncode == 0, r.stderr
    assert ("indexed 2 new images (0 already indexed, 1 unreadable); skipped 1 over the pixel "
            "budget and 2 with unsupported extensions; index holds 2") in r.stdout.decode()
    assert "over the limit of 1,000 pixels" in r.stdout.decode()
    report = indexing.build_index(ENC, mixed, tmp_path / "im", progress=False, max_pixels=1000)
    assert (report.unsupported, len(report.too_large), len(report.failed)) == (2, 1, 1)
    # An over-budget query image is one line.
    _one_error_line(_run("query", f"--index={tmp_path / 'im'}", f"--image={mixed / 'big.png'}",
                         "--max_pixels=1000"), "40x40 pixels is over the limit")


# ------------------------------------------------------------------ item 12
def _corruptions() -> list[tuple[str, str, bytes | None]]:
    bad_npy = b"\x93NUMPY\x01\x00v\x00{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }"
    return [
        ("manifest.json", "not valid JSON", b"{not json"),
        ("manifest.json", "not a JSON object", b"[1, 2]"),
        ("manifest.json", "lacks 'num_bits'", json.dumps({"format_version": 1, "model_id": "m",
                                                          "count": 3}).encode()),
        ("manifest.json", "field 'count' is str", json.dumps({"format_version": 1, "num_bits": 16,
                                                              "model_id": "m", "count": "3"}).encode()),
        ("manifest.json", "field 'extra' is list", json.dumps({"format_version": 1, "num_bits": 16,
                                                               "model_id": "m", "count": 3,
                                                               "extra": []}).encode()),
        ("codes.npy", "codes.npy is missing", None),
        ("codes.npy", "codes.npy is unreadable", b"\x93NUMPY"),  # truncated
        ("ids.npy", "ids.npy is unreadable", bad_npy),
        ("ids.npy", "ids.npy is missing", None),
        ("metadata.jsonl", "line 2 is not a JSON object", b'{"path": "a"}\n[1, 2]\n{"path": "c"}\n'),
        ("metadata.jsonl", "line 1 is not a JSON object", b"{broken\n"),
        ("metadata.jsonl", "metadata.jsonl is missing", None),
        ("metadata.jsonl", "not UTF-8", b"\xff\xfe\n"),
    ]


def test_12_a_damaged_index_is_one_line_saying_to_rebuild(tmp_path):
    imgs, good = tmp_path / "imgs", tmp_path / "good"
    _images(imgs, 3)
    indexing.build_index(ENC, imgs, good, progress=False, model_ref="pixel-lsh:16")
    for i, (name, needle, content) in enumerate(_corruptions()):
        idx = tmp_path / f"bad{i}"
        idx.mkdir()
        for f in good.iterdir():
            (idx / f.name).write_bytes(f.read_bytes())
        if content is None:
            (idx / name).unlink()
        else:
            (idx / name).write_bytes(content)
        with pytest.raises(UserError) as e:
            BinaryIndex.load(idx)
        msg = str(e.value)
        assert str(idx) in msg and needle in msg and "rebuild" in msg, (name, msg)
    (tmp_path / "bad0" / "manifest.json").write_bytes(b"{not json")
    with pytest.raises(UserError, match="damaged"):
        read_manifest(tmp_path / "bad0")
    # Saved backend knobs of the wrong shape are refused too (not an AttributeError).
    man = json.loads((good / "manifest.json").read_text())
    man["extra"]["backend"] = ["flat"]
    (tmp_path / "bad1" / "manifest.json").write_text(json.dumps(man))
    (tmp_path / "bad1" / "codes.npy").write_bytes((good / "codes.npy").read_bytes())
    with pytest.raises(UserError, match="damaged"):
        BinaryIndex.load(tmp_path / "bad1")
    # The CLI: one line, exit 2, for a corrupt manifest and for truncated codes.
    img = str(imgs / "0.png")
    _one_error_line(_run("query", f"--index={tmp_path / 'bad0'}", f"--image={img}"), "damaged", "rebuild")
    _one_error_line(_run("query", f"--index={tmp_path / 'bad6'}", f"--image={img}",
                         "--model=pixel-lsh:16"), "codes.npy is unreadable", "rebuild")


# ------------------------------------------------------------------ item 13
def test_13_backend_knobs_and_model_bits_are_bounded(tmp_path):
    from absl import flags

    from flags.search_flags import define_index_flags

    define_index_flags()

    for name, bad in [("hnsw_m", "0"), ("nlist", "0"), ("nprobe", "0"), ("ef_search", "0"),
                      ("nhash", "-1"), ("hash_bits", "65"), ("nflip", "99"), ("nflip", "-2"),
                      ("threads", "0"), ("k", "0")]:
        with pytest.raises(ValueError):
            flags.FLAGS[name].parser.parse(bad)
    # The library refuses the same values (FAISS aborts the process on M = 0).
    for name, knobs in [("hnsw", {"M": 0}), ("hnsw", {"ef_search": 0}), ("hnsw", {"M": "x"}),
                        ("ivf", {"nlist": 0}), ("ivf", {"nprobe": -3}),
                        ("multihash", {"nhash": -1}), ("multihash", {"b": 65}),
                        ("multihash", {"nflip": 99}), ("multihash", {"nflip": -5})]:
        with pytest.raises(UserError, match=r"between|integer"):
            make_backend(name, 32, **knobs)
    imgs, idx = tmp_path / "imgs", tmp_path / "idx"
    _images(imgs, 2)
    indexing.build_index(ENC, imgs, idx, backend="hnsw", progress=False)
    man = json.loads((idx / "manifest.json").read_text())
    man["extra"]["backend"]["knobs"]["M"] = 0  # a hand-edited manifest
    (idx / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(UserError, match="M must be between 1 and"):
        BinaryIndex.load(idx)

    for spec in ["pixel-lsh:-5", "pixel-lsh:0", "pixel-lsh:100000", "pixel-lsh:8:-1",
                 "pixel-lsh:x", "pixel-lshx:8", "pixel-lsh:8:0:1"]:
        with pytest.raises(UserError, match="pixel-lsh"):
            load_model(spec)
    assert load_model("pixel-lsh:4096").num_bits == 4096

    out = tmp_path / "new-idx"
    _one_error_line(_run("build", "--model=pixel-lsh:-5", f"--images={imgs}", f"--index={out}",
                         "--noprogress"), "pixel-lsh takes 1 to 4096 bits")
    _one_error_line(_run("build", "--model=pixel-lsh:16", f"--images={imgs}", f"--index={out}",
                         "--backend=hnsw", "--hnsw_m=0"), "--hnsw_m=0")
    assert not out.exists()


# ------------------------------------------------------------------ item 15
def test_15_killed_runs_temps_are_cleaned_and_the_index_follows_the_umask(tmp_path):
    imgs, idx = tmp_path / "imgs", tmp_path / "idx"
    _images(imgs, 2)
    stale = tmp_path / ".idx.tmp-x"
    stale.mkdir()
    (stale / "codes.npy").write_bytes(b"half")
    old = os.umask(0o022)
    try:
        indexing.build_index(ENC, imgs, idx, progress=False)
    finally:
        os.umask(old)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".idx.lock", "idx", "imgs"]
    assert stat.S_IMODE(idx.stat().st_mode) == 0o755
    for f in idx.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name
    # and an interrupted run's temp next to an existing index goes on the next save
    (tmp_path / ".idx.tmp-y").mkdir()
    _images(imgs / "more", 1)
    assert indexing.build_index(ENC, imgs, idx, progress=False).added == 1
    assert not (tmp_path / ".idx.tmp-y").exists()
    manifest = search.BinaryIndex.load(idx).store.manifest()
    assert manifest["count"] == 3
    # the service shows paths relative to this recorded root, not absolute server paths
    assert manifest["extra"]["image_root"] == str(imgs.absolute())


# ------------------------------------------------------------------ issue 27
def test_i27_13_an_output_symlink_is_followed_and_kept(tmp_path):
    """Issue 27 case 13: --index given as a symlink to an index replaced the link by a real
    folder (the target left stale, a dangling temp link behind), and a symlink to an empty
    folder failed after all the encoding. The link's target is written; the link is kept."""
    imgs = tmp_path / "imgs"
    _images(imgs, 3)
    real, link = tmp_path / "real", tmp_path / "link"
    indexing.build_index(ENC, imgs, real, progress=False)
    link.symlink_to(real)
    _images(imgs / "more", 2)
    r = _run("build", "--model=pixel-lsh:16", f"--images={imgs}", f"--index={link}", "--noprogress")
    assert r.returncode == 0, r.stderr.decode()
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert read_manifest(real)["count"] == 5  # the real target holds the update
    empty, link2 = tmp_path / "empty", tmp_path / "link2"
    empty.mkdir()
    link2.symlink_to(empty)
    r = _run("build", "--model=pixel-lsh:16", f"--images={imgs}", f"--index={link2}", "--noprogress")
    assert r.returncode == 0, r.stderr.decode()
    assert link2.is_symlink() and read_manifest(empty)["count"] == 5
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []


def test_i27_17_another_models_weights_in_a_model_folder_are_refused(tiny_model_dir, tmp_path):
    """Issue 27 case 17: weights of another model with the same code length copied into a
    model folder kept metadata.json's model_id, so an index accepted their wrong codes. The id
    is now checked against the loaded weights; a mismatch is one UserError at load."""
    import shutil

    from bgan_tf.inference.keras_model import load_encoder

    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    enc = load_encoder(str(copy))  # the folder as written loads
    other = enc.model.get_weights()
    other[0] = other[0] + 0.5  # "another model": same architecture and bits, other values
    enc.model.set_weights(other)
    enc.model.save_weights(str(copy / "encoder.weights.h5"))
    with pytest.raises(UserError, match="not the ones this model folder was written with"):
        load_encoder(str(copy))


def test_i27_19_huge_files_are_refused_unread_and_deep_trees_list(tmp_path):
    """Issue 27 case 19: a 6 GB file named .jpg aborted a build with out-of-memory, `query`
    read a 3 GB non-image whole before "cannot decode", and a folder 1,100 levels deep was
    a RecursionError. Files over max_file_bytes are skipped (build) or one line (query)
    from their size alone; sparse files make the huge ones instantly and cost no disk."""
    imgs = tmp_path / "imgs"
    _images(imgs, 2)
    with open(imgs / "huge.jpg", "wb") as f:
        f.truncate(6 << 30)
    report = indexing.build_index(ENC, imgs, tmp_path / "idx", progress=False)
    assert report.added == 2 and len(report.too_large) == 1 and "bytes, over the limit" in report.too_large[0]
    other = tmp_path / "q.png"
    with open(other, "wb") as f:
        f.truncate(3 << 30)
    _one_error_line(_run("query", f"--index={tmp_path / 'idx'}", f"--image={other}", "--model=pixel-lsh:16"),
                    "bytes, over the limit")
    deep = tmp_path / "deep"
    deep.mkdir()
    fd = os.open(deep, os.O_RDONLY)
    for _ in range(1100):  # made relative to a descriptor: pathlib's mkdir(parents=True) recurses
        os.mkdir("d", dir_fd=fd)
        fd, old = os.open("d", os.O_RDONLY, dir_fd=fd), fd
        os.close(old)
    with os.fdopen(os.open("x.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
        os.close(fd)
        Image.new("RGB", (4, 4)).save(f, format="PNG")
    try:
        listing = data.list_image_files(str(deep))
        assert [os.path.basename(p) for p, _ in listing.entries] == ["x.png"] and listing.entries[0][1] == "d"
    finally:  # bottom up: pytest's recursive rmtree of tmp_path would hit the recursion limit
        os.unlink(os.path.join(deep, *["d"] * 1100, "x.png"))
        for depth in range(1100, 0, -1):
            os.rmdir(os.path.join(deep, *["d"] * depth))


_CAPPED_BUILD = """
import resource, sys
import numpy as np
from bgan_tf.inference.pixel_lsh import PixelLSHEncoder
from bgan_tf.search import indexer
from bgan_tf.search.binary_index import BinaryIndex
warm = BinaryIndex.create(16, "warm")  # load the search backend (FAISS and its threads) first
warm.add(np.ones((4, 16), np.float32))
warm.search_one(np.ones(16, np.float32), 2)
base = next(int(l.split()[1]) << 10 for l in open("/proc/self/status") if l.startswith("VmSize"))
cap = base + (400 << 20)
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
r = indexer.build_index(PixelLSHEncoder(16), sys.argv[1], sys.argv[2], progress=False)
peak = next(int(l.split()[1]) << 10 for l in open("/proc/self/status") if l.startswith("VmPeak"))
print("added", r.added, "base_mb", base >> 20, "peak_mb", peak >> 20)
"""


def test_i27_19_a_batch_of_phone_photos_is_encoded_within_a_memory_cap(tmp_path):
    """Issue 27 case 19: 64 phone photos (4000x3000) at the default --batch_size exhausted
    memory: the whole batch was held decoded, then stacked again. A build holds at most
    ENCODE_PIXEL_BUDGET decoded pixels. Twelve such photos (hard links of one PNG) under an
    address-space cap of 400 MB over the process's size once imports and FAISS are loaded
    (RLIMIT_AS works here: this process imports no TensorFlow): measured peak 670 MB of
    address space (base 477) after the fix, MemoryError before (uncapped peak 1.35 GB)."""
    imgs = tmp_path / "photos"
    imgs.mkdir()
    Image.new("RGB", (4000, 3000), (90, 120, 200)).save(imgs / "p0.png")
    for i in range(1, 12):
        os.link(imgs / "p0.png", imgs / f"p{i}.png")
    r = subprocess.run([sys.executable, "-c", _CAPPED_BUILD, str(imgs), str(tmp_path / "idx")], cwd=ROOT,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "added 12 " in r.stdout, r.stderr[-800:]


def test_i27_21_control_characters_in_names_cannot_spoof_query_rows(tmp_path):
    """Issue 27 case 21: a file name holding a newline and ANSI escapes printed a spoofed row
    in `query`'s table. Control characters print escaped; each result is one line."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    _png(imgs / "a\n   1         0  \x1b[31m etc passwd.png")
    indexing.build_index(ENC, imgs, tmp_path / "idx", progress=False)
    r = _run("query", f"--index={tmp_path / 'idx'}", f"--image={next(imgs.iterdir())}", "--model=pixel-lsh:16")
    out = r.stdout.decode()
    assert r.returncode == 0 and len(out.strip().splitlines()) == 2, out
    assert "\x1b" not in out and "\\n" in out and "\\x1b" in out


def test_i27_21_symlinks_in_an_image_folder_are_counted_and_not_followed_out(tmp_path):
    """Issue 27 case 21: directory symlinks inside an image folder were skipped without being
    counted. Links to folders are never followed and links to files outside the folder are
    not indexed (the index never records a file outside its root); both are counted and the
    build's summary says so. A link to a file inside the folder is indexed."""
    imgs, outside = tmp_path / "imgs", tmp_path / "outside"
    _images(imgs / "a", 2)
    _images(outside, 1)
    (imgs / "linked_dir").symlink_to(outside)
    (imgs / "a" / "escape.png").symlink_to(outside / "0.png")
    (imgs / "a" / "inside.png").symlink_to(imgs / "a" / "0.png")
    listing = data.list_image_files(str(imgs))
    assert sorted(os.path.basename(p) for p, _ in listing.entries) == ["0.png", "1.png", "inside.png"]
    assert sorted(os.path.basename(p) for p in listing.links) == ["escape.png", "linked_dir"]
    r = _run("build", "--model=pixel-lsh:16", f"--images={imgs}", f"--index={tmp_path / 'idx'}", "--noprogress")
    assert r.returncode == 0 and "not followed: 2 symbolic link(s)" in r.stdout.decode(), r.stderr


def test_i27_21_a_model_folder_named_like_the_pixel_lsh_spec_is_a_folder(tmp_path, monkeypatch):
    """Issue 27 case 21: a model folder named `pixel-lsh-x` was parsed as a bad pixel-LSH spec.
    Only `pixel-lsh` and `pixel-lsh:...` are specs, and an existing folder wins."""
    import bgan_tf.inference.keras_model as keras_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "pixel-lsh-x").mkdir()
    loaded = []
    monkeypatch.setattr(keras_model, "load_encoder", lambda p: loaded.append(p) or ENC)
    assert load_model("pixel-lsh-x") is ENC and loaded == ["pixel-lsh-x"]
    with pytest.raises(UserError, match="model folder not found: pixel-lsh-y"):
        load_model("pixel-lsh-y")
    assert load_model("pixel-lsh:8").num_bits == 8


class _ConstantEncoder:
    """A collapsed model: the same code (or NaN) for every image."""

    num_bits, model_id, metadata = 16, "collapsed", {}

    def __init__(self, value: float) -> None:
        self.value = value

    def encode(self, images: np.ndarray) -> np.ndarray:
        return np.full((len(images), 16), self.value, np.float32)


def test_i27_non_finite_codes_are_refused_and_one_code_for_all_is_loud(tmp_path, capsys):
    """Issue 27 (build item 3, case 6's index): an index built from a NaN model mapped 200
    images to one code with rc 0. Non-finite codes are refused with one line and nothing is
    written; an index whose images all share one code is built with a warning on stderr."""
    imgs = tmp_path / "imgs"
    _images(imgs, 10)
    with pytest.raises(UserError, match="non-finite codes for 10 of"):
        indexing.build_index(_ConstantEncoder(np.nan), imgs, tmp_path / "nan", progress=False)
    assert not (tmp_path / "nan").exists()
    indexing.build_index(_ConstantEncoder(1.0), imgs, tmp_path / "one", progress=False)
    assert "warning: all 10 images" in capsys.readouterr().err
