"""The C kernel's scan paths (scalar, AVX2, AVX-512) give the numpy answer, ties included."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from bgan_tf.codes import hamming_distances, pack
from bgan_tf.search import hamming_c


def _kernel():
    kernel = hamming_c.load_kernel()
    if kernel is None:
        assert not (shutil.which("cc") or shutil.which("gcc")), "a C compiler is here but the kernel did not build"
        pytest.skip("no C compiler")
    return kernel


def _cpu_flags() -> set:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _reference(q, db, k):
    """Top-k by (distance, position), the obvious way."""
    d = hamming_distances(q, db).astype(np.int64)
    order = np.lexsort((np.broadcast_to(np.arange(len(db)), d.shape), d), axis=1)[:, :k]
    return np.take_along_axis(d, order, 1), order


def _tied_codes(n, bits, seed):
    """Few distinct codes, each repeated many times: most distances tie, position decides."""
    rng = np.random.default_rng(seed)
    pool = pack(rng.integers(0, 2, (max(3, n // 40), bits), dtype=np.uint8))
    db = pool[rng.integers(0, len(pool), n)]
    q = np.concatenate([pool[:3], pack(rng.integers(0, 2, (4, bits), dtype=np.uint8))])
    return db, q


def test_avx2_path_is_selected_when_the_cpu_has_it(monkeypatch):
    kernel = _kernel()
    flags = _cpu_flags()
    assert ("avx2" in kernel.paths) == ("avx2" in flags)
    if "avx2" in flags and not {"avx512f", "avx512_vpopcntdq"} <= flags:
        assert kernel.path == "avx2"  # this project's AMD EPYC: the path the tests below exercise
    monkeypatch.setenv("BGAN_TF_NO_AVX512", "1")
    assert hamming_c._Kernel(kernel._lib).paths == tuple(p for p in ("scalar", "avx2") if p in kernel.paths)
    monkeypatch.setenv("BGAN_TF_NO_AVX2", "1")
    assert hamming_c._Kernel(kernel._lib).paths == ("scalar",)
    with pytest.raises(ValueError, match="not available"):
        hamming_c._Kernel(kernel._lib).topk(np.zeros((4, 4), np.uint8), np.zeros((1, 4), np.uint8), 1, "avx2")


@pytest.mark.parametrize("bits", [8, 12, 16, 24, 32, 48, 64, 128])
def test_every_path_matches_numpy_with_ties(bits):
    kernel = _kernel()
    n = 1000 + 13  # not a multiple of any vector width: the scalar tail runs too
    db, q = _tied_codes(n, bits, seed=bits)
    w = hamming_c.padded_width(db.shape[1])
    pdb, pq = hamming_c.pad_codes(db, w), hamming_c.pad_codes(q, w)
    for k in (1, 37, 100, n + 50):  # n + 50: more than there are codes
        td, ti = _reference(q, db, k)
        for path in kernel.paths:
            d, i = kernel.topk(pdb, pq, k, path)
            np.testing.assert_array_equal(d, td, err_msg=f"{path} {bits} bits k={k}")
            np.testing.assert_array_equal(i, ti, err_msg=f"{path} {bits} bits k={k}")


@pytest.mark.parametrize("bits", [32, 64])
def test_paths_agree_across_block_boundaries(bits):
    # More codes than one cache block (32,768): the threshold carries over between blocks.
    kernel = _kernel()
    db, q = _tied_codes(70_001, bits, seed=7)
    pq = hamming_c.pad_codes(q, hamming_c.padded_width(db.shape[1]))
    td, ti = _reference(q, db, 300)
    for path in kernel.paths:
        d, i = kernel.topk(db, pq, 300, path)
        np.testing.assert_array_equal(d, td, err_msg=path)
        np.testing.assert_array_equal(i, ti, err_msg=path)


_QUERY_WITH_THE_KERNEL = """
import numpy as np
from bgan_tf.search import hamming_c
k = hamming_c.load_kernel()
assert k is not None, "no kernel"
db = np.arange(64, dtype=np.uint8).reshape(16, 4)
d, i = k.topk(db, db[3:4], 1)
print("top", int(i[0, 0]), int(d[0, 0]))
"""


def test_a_truncated_cached_kernel_is_rebuilt_not_loaded(tmp_path):
    """Issue 27 case 9: a truncated cached hamming_*.so was dlopen'ed as it was: Bus error
    (rc 135) on every query until deleted by hand. It must be detected and rebuilt."""
    import os
    import subprocess
    import sys

    _kernel()  # skips without a compiler
    env = {**os.environ, "BGAN_TF_CACHE": str(tmp_path), "BGAN_TF_NO_C_KERNEL": "0"}

    def query() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", _QUERY_WITH_THE_KERNEL], env=env,
                              capture_output=True, text=True, timeout=180)

    first = query()
    assert first.returncode == 0 and "top 3 0" in first.stdout, first.stderr[-500:]
    (so,) = tmp_path.glob("hamming_*.so")
    with open(so, "r+b") as f:
        f.truncate(so.stat().st_size // 2)
    again = query()
    assert again.returncode == 0 and "top 3 0" in again.stdout, (again.returncode, again.stderr[-500:])
    assert "rebuilding" in again.stderr
    assert query().returncode == 0  # and the rebuilt one is trusted without a rebuild
