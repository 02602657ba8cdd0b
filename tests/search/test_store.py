"""CodeStore: add/remove/contains, save/load roundtrip, atomic saves, mismatch refusal."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from bgan_tf import atomic
from bgan_tf.search import store as store_lib
from bgan_tf.codes import pack
from bgan_tf.errors import UserError
from bgan_tf.search.store import CodeStore


def _codes(n: int, bits: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return pack(rng.integers(0, 2, (n, bits), dtype=np.uint8))


def test_add_remove_contains_and_ids_never_reused():
    s = CodeStore(24, "m1")
    ids = s.add(_codes(5), metadata=[{"path": f"/x/{i}.png", "label": "a"} for i in range(5)])
    assert ids.tolist() == [0, 1, 2, 3, 4] and len(s) == 5
    assert 3 in s and s.contains(3) and not s.contains(99)
    assert s.metadata(2) == {"path": "/x/2.png", "label": "a"}
    assert s.remove([1, 3, 77]).tolist() == [1, 3]
    assert len(s) == 3 and 1 not in s
    assert s.add(_codes(1, seed=1)).tolist() == [5]  # removed ids are not handed out again
    s.add(_codes(2, seed=2), ids=[100, 50])
    assert s.metadata(100) == {}
    with pytest.raises(UserError, match="already in the index"):
        s.add(_codes(1), ids=[50])
    with pytest.raises(UserError, match="packed uint8"):
        s.add(np.zeros((1, 4), np.uint8))


def test_save_load_roundtrip(tmp_path):
    s = CodeStore(24, "model-abc", extra={"note": "x"})
    s.add(_codes(7), ids=np.arange(10, 17), metadata=[{"path": f"p{i}", "label": i % 2} for i in range(7)])
    s.remove([12])
    s.save(tmp_path / "idx")
    t = CodeStore.load(tmp_path / "idx", expect_num_bits=24, expect_model_id="model-abc")
    assert np.array_equal(t.packed, s.packed) and np.array_equal(t.ids, s.ids)
    assert [t.metadata(i) for i in t.ids] == [s.metadata(i) for i in s.ids]
    man = t.manifest()
    assert man["count"] == 6 and man["num_bits"] == 24 and man["model_id"] == "model-abc"
    assert man["format_version"] == store_lib.FORMAT_VERSION and man["created"] == s.created
    assert t.next_id == 17 and t.extra == {"note": "x"}
    # Saving over an existing index replaces it; no temp folders are left behind
    # (only the writers' lock file, which stays so every writer locks the same inode).
    t.add(_codes(1, seed=3))
    t.save(tmp_path / "idx")
    assert len(CodeStore.load(tmp_path / "idx")) == 7
    assert sorted(os.listdir(tmp_path)) == [".idx.lock", "idx"]


def test_load_refuses_mismatch_and_missing(tmp_path):
    s = CodeStore(24, "model-a")
    s.add(_codes(3))
    s.save(tmp_path / "idx")
    with pytest.raises(UserError, match="24-bit codes but the model makes 32-bit"):
        CodeStore.load(tmp_path / "idx", expect_num_bits=32)
    with pytest.raises(UserError, match="built by model 'model-a'"):
        CodeStore.load(tmp_path / "idx", expect_model_id="model-b")
    with pytest.raises(UserError, match="no index"):
        CodeStore.load(tmp_path / "nothing")


def test_crash_mid_save_keeps_previous_index(tmp_path, monkeypatch):
    s = CodeStore(24, "m")
    s.add(_codes(4))
    s.save(tmp_path / "idx")
    s.add(_codes(3, seed=1))

    def boom(tmp, target):
        raise RuntimeError("simulated crash after writing the new files")

    monkeypatch.setattr(store_lib, "_before_commit", boom)
    with pytest.raises(RuntimeError):
        s.save(tmp_path / "idx")
    assert len(CodeStore.load(tmp_path / "idx")) == 4
    assert sorted(os.listdir(tmp_path)) == [".idx.lock", "idx"]


def test_hard_kill_mid_save_keeps_previous_index(tmp_path):
    """A process killed (os._exit) while writing leaves the old index loadable."""
    s = CodeStore(24, "m")
    s.add(_codes(4))
    s.save(tmp_path / "idx")
    code = f"""
import os, numpy as np
from bgan_tf.search import store as st
s = st.CodeStore.load({str(tmp_path / 'idx')!r})
s.add(np.zeros((5, 3), np.uint8))
real = st._save_npy
def half(path, arr):
    real(path, arr)
    if path.name == 'ids.npy':
        os._exit(9)   # die after some of the new files are written
st._save_npy = half
s.save({str(tmp_path / 'idx')!r})
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert r.returncode == 9
    assert len(CodeStore.load(tmp_path / "idx")) == 4


def test_interrupted_fallback_swap_is_recovered(tmp_path, monkeypatch):
    """Without renameat2, a crash between the two renames is repaired on load."""
    s = CodeStore(24, "m")
    s.add(_codes(4))
    s.save(tmp_path / "idx")
    monkeypatch.setattr(atomic, "_renameat2_exchange", lambda a, b: False)
    calls = {"n": 0}
    real_rename = os.rename

    def rename(a, b):
        calls["n"] += 1
        if calls["n"] == 2:  # target moved aside, new one not yet in place
            raise KeyboardInterrupt
        real_rename(a, b)

    monkeypatch.setattr(store_lib.os, "rename", rename)
    s.add(_codes(1))
    with pytest.raises(KeyboardInterrupt):
        s.save(tmp_path / "idx")
    monkeypatch.setattr(store_lib.os, "rename", real_rename)
    assert not (tmp_path / "idx").exists()
    assert len(CodeStore.load(tmp_path / "idx")) == 4  # the old index, restored
    s.save(tmp_path / "idx")  # and the fallback path works end to end
    assert len(CodeStore.load(tmp_path / "idx")) == 5


def test_load_racing_repeated_saves_gets_one_whole_save(tmp_path):
    """Issue 27 case 12: `load` while another thread saves read a manifest and arrays of
    different saves ("damaged index", 8 of 1,062 loads). Each save here has its own row
    count, so a mixed read fails the count check; every load must get one whole save."""
    import threading
    import time

    from bgan_tf.search.binary_index import BinaryIndex

    path = tmp_path / "idx"
    saves = []
    for n in (5, 9):
        s = CodeStore(24, "m")
        s.add(_codes(n, seed=n), metadata=[{"path": f"{n}-{i}"} for i in range(n)])
        saves.append(s)
    saves[0].save(path)
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            saves[i % 2].save(path)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    loads, errors, deadline = 0, [], time.time() + 2.5
    try:
        while time.time() < deadline:
            try:
                idx = BinaryIndex.load(path)
            except UserError as e:
                errors.append(str(e))
                continue
            loads += 1
            n = len(idx)
            assert n in (5, 9) and {m["path"].split("-")[0] for m in idx.store.metadata_rows()} == {str(n)}
    finally:
        stop.set()
        t.join()
    assert loads > 20 and errors == [], (loads, errors[:3])
