"""The `ours_exact` kernel: an exact top-k Hamming scan in C, built at first use.

Why: FAISS IndexBinaryFlat compares codes one scalar popcount at a time; a SIMD scan
that tests the admission threshold for 32 codes at once and sends only candidates to
the top-k does several times more (benchmarks/search_speed.py; docs/search.md). Three
scan paths, chosen at run time from what the CPU has: AVX-512 VPOPCNTDQ (32/64-bit
codes), AVX2 (pshufb nibble-table popcount; 32, 64 and 128-bit codes) and scalar
POPCNT (every width, and the tail of each block). All give the same answer, ties
included: positions are scanned in increasing order into per-distance buckets.
BGAN_TF_NO_AVX512=1 / BGAN_TF_NO_AVX2=1 switch paths off (tests, comparisons).

Robustness: the C source (hamming.c beside this module) is compiled with the system
C compiler into a cache folder (BGAN_TF_CACHE or ~/.cache/bgan_tf), keyed by a hash of the source
and compiler, with the .so's sha256 beside it (a damaged .so is rebuilt, never
loaded); everything is optional. `load_kernel()` returns None when there is
no compiler or the build fails, and callers fall back to FAISS/numpy.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
from absl import logging

from bgan_tf import atomic

# The C source ships beside this module (package data); its hash keys the build cache.
_SOURCE = (Path(__file__).parent / "hamming.c").read_text()

_lock = threading.Lock()
_kernel: "_Kernel | None | bool" = False  # False = not tried yet


def padded_width(code_bytes: int) -> int:
    """Bytes per code inside the kernel: 4, 8 or a multiple of 8 (zero padding keeps distances)."""
    if code_bytes <= 4:
        return 4
    return ((code_bytes + 7) // 8) * 8


def pad_codes(packed: np.ndarray, width: int) -> np.ndarray:
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.shape[1] == width:
        return np.ascontiguousarray(packed)
    out = np.zeros((packed.shape[0], width), dtype=np.uint8)
    out[:, : packed.shape[1]] = packed
    return out


PATHS = ("scalar", "avx2", "avx512")  # scan paths, in order of preference (last = fastest)


class _Kernel:
    def __init__(self, lib: ctypes.CDLL) -> None:
        self._fn = lib.bgan_topk
        self._fn.restype = ctypes.c_int
        p = ctypes.c_void_p
        self._fn.argtypes = [p, ctypes.c_int64, ctypes.c_int, p, ctypes.c_int64, ctypes.c_int,
                             ctypes.c_int, p, p, p]
        lib.bgan_simd_support.restype = ctypes.c_int
        bits = lib.bgan_simd_support()
        # What the CPU runs, minus what the environment switches off (tests, comparisons):
        # BGAN_TF_NO_AVX512=1 leaves AVX2 and scalar, BGAN_TF_NO_AVX2=1 leaves scalar only.
        no_avx2 = os.environ.get("BGAN_TF_NO_AVX2") == "1"
        no_avx512 = no_avx2 or os.environ.get("BGAN_TF_NO_AVX512") == "1"
        self.paths = tuple(name for name, ok in zip(PATHS, (True, bits & 1 and not no_avx2,
                                                            bits & 2 and not no_avx512)) if ok)
        self._lib = lib  # tests build a second _Kernel to check the environment switches
        self.path = self.paths[-1]  # the one topk uses unless told otherwise
        lib.bgan_add_chain.restype = ctypes.c_int64
        lib.bgan_add_chain.argtypes = [ctypes.c_int64]
        lib.bgan_read_bytes.restype = ctypes.c_uint64
        lib.bgan_read_bytes.argtypes = [ctypes.c_void_p, ctypes.c_int64]

    def add_chain(self, rounds: int) -> None:
        """Run 8 * rounds dependent one-cycle adds (benchmarks time it to measure the clock)."""
        self._lib.bgan_add_chain(int(rounds))

    def read_bytes(self, arr: np.ndarray) -> int:
        """Read a C-contiguous array once, 32 bytes at a time (benchmarks time it: bandwidth)."""
        arr = np.ascontiguousarray(arr)
        return int(self._lib.bgan_read_bytes(arr.ctypes.data, arr.nbytes // 32 * 32))

    def topk(self, db: np.ndarray, queries: np.ndarray, k: int,
             path: "str | None" = None) -> tuple[np.ndarray, np.ndarray]:
        """db, queries: padded uint8 [*, W]. Returns (int32 [Q,K], positions int64 [Q,K]), K = min(k, N).

        path: one of self.paths (default self.path); every path returns the same answer.

        ctypes drops the GIL during the call, so threads can run batches in parallel.
        """
        path = self.path if path is None else path
        if path not in self.paths:
            raise ValueError(f"scan path {path!r} is not available here; choose one of {self.paths}")
        n, w = db.shape
        nq = queries.shape[0]
        # The per-query scratch grows with k: never ask for more than there are codes.
        k = min(int(k), n)
        if k <= 0:
            return np.zeros((nq, 0), dtype=np.int32), np.zeros((nq, 0), dtype=np.int64)
        m = 8 * w
        stride = 2 + (m + 1) + (m + 1) * k
        out_d = np.empty((nq, k), dtype=np.int32)
        out_i = np.empty((nq, k), dtype=np.int64)
        # Batch queries so the per-query state stays a few MB at most.
        qb = max(1, min(64, (8 << 20) // (4 * stride)))
        scratch = np.empty(min(nq, qb) * stride, dtype=np.int32)
        for s in range(0, nq, qb):
            e = min(nq, s + qb)
            rc = self._fn(db.ctypes.data, n, w, queries[s:e].ctypes.data, e - s, k,
                          PATHS.index(path), scratch.ctypes.data,
                          out_d[s:e].ctypes.data, out_i[s:e].ctypes.data)
            if rc != 0:
                raise RuntimeError(f"bgan_topk failed with code {rc}")
        return out_d, out_i


def _cache_dir() -> Path:
    root = os.environ.get("BGAN_TF_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bgan_tf")
    return Path(root)


def _cached_ok(out: Path) -> bool:
    """The cached .so matches the sha256 recorded beside it when it was built.

    Why: dlopen of a truncated .so (a full disk, a killed copy) is a Bus error on every
    query (issue 27 case 9), and no Python code can catch that; the hash is checked first.
    """
    try:
        return atomic.file_sha256(out) == Path(f"{out}.sha256").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return False


def _build(cc: str) -> Path:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256((_SOURCE + version).encode()).hexdigest()[:16]
    out = _cache_dir() / f"hamming_{key}.so"
    if _cached_ok(out):
        return out
    if out.exists():  # our own cache file: rebuilding it is always safe
        logging.warning("the cached C kernel %s does not match its recorded sha256 (truncated or "
                        "changed); rebuilding it", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        src = Path(tmp) / "hamming.c"
        src.write_text(_SOURCE)
        so = Path(tmp) / "hamming.so"
        subprocess.run([cc, "-O3", "-fPIC", "-shared", "-std=c11", str(src), "-o", str(so)],
                       check=True, capture_output=True, timeout=120)
        digest = atomic.file_sha256(so)
        # The hash goes in before the .so, each by an atomic rename: a reader sees an old
        # .so with a new hash at worst, which fails the check and is rebuilt, never loaded.
        atomic.write_text(f"{out}.sha256", digest + "\n")
        os.replace(so, out)  # atomic: concurrent builders never see a half-written .so
    if not _cached_ok(out):  # a concurrent builder's .so landed between our two renames
        raise OSError(f"the C kernel cache {out} changed while it was built")
    return out


def load_kernel() -> "_Kernel | None":
    """The compiled kernel, or None when it cannot be built here (callers fall back)."""
    global _kernel
    with _lock:
        if _kernel is False:
            _kernel = None
            if os.environ.get("BGAN_TF_NO_C_KERNEL") != "1":
                cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
                if cc:
                    try:
                        _kernel = _Kernel(ctypes.CDLL(str(_build(cc))))
                    except (OSError, subprocess.SubprocessError, AttributeError):
                        _kernel = None
        return _kernel  # type: ignore[return-value]
