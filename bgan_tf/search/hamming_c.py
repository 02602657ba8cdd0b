"""The `ours_exact` kernel: an exact top-k Hamming scan in C, built at first use.

Why: FAISS IndexBinaryFlat reaches ~0.85 G codes/s per core here while an
AVX-512 VPOPCNTDQ loop can do several times that (measured by
benchmarks/search_speed.py; docs/search.md). The kernel also gives exact (distance, position) tie order for
free, because it scans positions in increasing order and keeps per-distance
buckets of positions.

Robustness: the C source below is compiled with the system C compiler into a
cache folder (BGAN_TF_CACHE or ~/.cache/bgan_tf), keyed by a hash of the source
and compiler; everything is optional. `load_kernel()` returns None when there is
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

_SOURCE = r"""
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* Per-query state, all int32 in one scratch block of stride S = 2 + (M+1) + (M+1)*k:
   [0] tau (current admission threshold), [1] total (#kept with d <= tau),
   [2 .. 2+M] cnt[d], then buckets[d][0..k) of positions (scan order). */

static inline void accept(int32_t *st, int32_t *cnt, int32_t *bk, int k, int d, int32_t pos) {
    int tau = st[0];
    if (d > tau) return;
    if (d == tau && st[1] >= k) return;   /* k earlier items already rank ahead */
    bk[(int64_t)d * k + cnt[d]] = pos;
    cnt[d] += 1;
    st[1] += 1;
    /* Shrink tau while the buckets strictly below it already hold >= k items. */
    while (tau > 0 && st[1] - cnt[tau] >= k) {
        st[1] -= cnt[tau];
        cnt[tau] = 0;
        tau -= 1;
    }
    st[0] = tau;
}

static void init_state(int32_t *st, int M) {
    st[0] = M; st[1] = 0;
    memset(st + 2, 0, sizeof(int32_t) * (M + 1));
}

static void emit(const int32_t *st, int M, int k, int32_t *out_d, int64_t *out_i) {
    const int32_t *cnt = st + 2;
    const int32_t *bk = st + 2 + (M + 1);
    int o = 0;
    for (int d = 0; d <= st[0] && o < k; d++)
        for (int j = 0; j < cnt[d] && o < k; j++) { out_d[o] = d; out_i[o] = bk[(int64_t)d * k + j]; o++; }
    for (; o < k; o++) { out_d[o] = 0x7fffffff; out_i[o] = -1; }
}

/* ---------------------------------------------------------- portable scalar */
__attribute__((target("popcnt")))
static void scan_scalar(const uint8_t *db, int64_t n0, int64_t n1, int W, const uint8_t *q,
                        int32_t *st, int M, int k) {
    int32_t *cnt = st + 2, *bk = st + 2 + (M + 1);
    int nw = W / 8;
    for (int64_t i = n0; i < n1; i++) {
        const uint8_t *c = db + i * W;
        int d = 0;
        if (W == 4) {
            uint32_t a, b; memcpy(&a, c, 4); memcpy(&b, q, 4);
            d = __builtin_popcount(a ^ b);
        } else {
            for (int w = 0; w < nw; w++) {
                uint64_t a, b; memcpy(&a, c + 8 * w, 8); memcpy(&b, q + 8 * w, 8);
                d += __builtin_popcountll(a ^ b);
            }
        }
        if (d <= st[0]) accept(st, cnt, bk, k, d, (int32_t)i);
    }
}

#if defined(__x86_64__)
/* ------------------------------------------------ AVX-512 VPOPCNTDQ, W = 8 */
__attribute__((target("avx512f,avx512vpopcntdq,popcnt")))
static int64_t scan64_avx512(const uint8_t *db, int64_t n0, int64_t n1, const uint8_t *q,
                             int32_t *st, int M, int k) {
    int32_t *cnt = st + 2, *bk = st + 2 + (M + 1);
    uint64_t q64; memcpy(&q64, q, 8);
    const __m512i qv = _mm512_set1_epi64((long long)q64);
    int64_t i = n0;
    for (; i + 32 <= n1; i += 32) {
        const uint8_t *p = db + i * 8;
        __m512i t = _mm512_set1_epi64(st[0]);
        __m512i d0 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(p), qv));
        __m512i d1 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(p + 64), qv));
        __m512i d2 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(p + 128), qv));
        __m512i d3 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(p + 192), qv));
        uint32_t m = (uint32_t)_mm512_cmple_epu64_mask(d0, t)
                   | ((uint32_t)_mm512_cmple_epu64_mask(d1, t) << 8)
                   | ((uint32_t)_mm512_cmple_epu64_mask(d2, t) << 16)
                   | ((uint32_t)_mm512_cmple_epu64_mask(d3, t) << 24);
        if (m) {
            int64_t ds[32];
            _mm512_storeu_si512(ds, d0); _mm512_storeu_si512(ds + 8, d1);
            _mm512_storeu_si512(ds + 16, d2); _mm512_storeu_si512(ds + 24, d3);
            while (m) { int j = __builtin_ctz(m); m &= m - 1; accept(st, cnt, bk, k, (int)ds[j], (int32_t)(i + j)); }
        }
    }
    return i;
}

/* ------------------------------------------------ AVX-512 VPOPCNTDQ, W = 4 */
__attribute__((target("avx512f,avx512vpopcntdq,popcnt")))
static int64_t scan32_avx512(const uint8_t *db, int64_t n0, int64_t n1, const uint8_t *q,
                             int32_t *st, int M, int k) {
    int32_t *cnt = st + 2, *bk = st + 2 + (M + 1);
    uint32_t q32; memcpy(&q32, q, 4);
    const __m512i qv = _mm512_set1_epi32((int)q32);
    int64_t i = n0;
    for (; i + 32 <= n1; i += 32) {
        const uint8_t *p = db + i * 4;
        __m512i t = _mm512_set1_epi32(st[0]);
        __m512i d0 = _mm512_popcnt_epi32(_mm512_xor_si512(_mm512_loadu_si512(p), qv));
        __m512i d1 = _mm512_popcnt_epi32(_mm512_xor_si512(_mm512_loadu_si512(p + 64), qv));
        uint32_t m = (uint32_t)_mm512_cmple_epu32_mask(d0, t)
                   | ((uint32_t)_mm512_cmple_epu32_mask(d1, t) << 16);
        if (m) {
            int32_t ds[32];
            _mm512_storeu_si512(ds, d0); _mm512_storeu_si512(ds + 16, d1);
            while (m) { int j = __builtin_ctz(m); m &= m - 1; accept(st, cnt, bk, k, ds[j], (int32_t)(i + j)); }
        }
    }
    return i;
}
#endif

int bgan_has_avx512(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
#else
    return 0;
#endif
}

/* Exact top-k of nq queries over n codes of W bytes (W = 4, or a multiple of 8).
   Ties are broken by position. The database is scanned in blocks that fit in L2
   and every query of the batch visits the block before moving on, so codes are
   read from memory once per batch rather than once per query.
   scratch: int32 [nq * (2 + (M+1) + (M+1)*k)] with M = 8*W. */
int bgan_topk(const uint8_t *db, int64_t n, int W, const uint8_t *queries, int64_t nq, int k,
              int use_simd, int32_t *scratch, int32_t *out_d, int64_t *out_i) {
    if (k <= 0 || (W != 4 && W % 8 != 0) || n > 0x7fffffff) return -1;
    const int M = 8 * W;
    const int64_t S = 2 + (int64_t)(M + 1) + (int64_t)(M + 1) * k;
    for (int64_t qi = 0; qi < nq; qi++) init_state(scratch + qi * S, M);
    const int64_t block = (W <= 8) ? 32768 : 262144 / W;
    for (int64_t b0 = 0; b0 < n; b0 += block) {
        int64_t b1 = b0 + block < n ? b0 + block : n;
        for (int64_t qi = 0; qi < nq; qi++) {
            int32_t *st = scratch + qi * S;
            const uint8_t *q = queries + qi * W;
            int64_t i = b0;
#if defined(__x86_64__)
            if (use_simd && W == 8) i = scan64_avx512(db, b0, b1, q, st, M, k);
            else if (use_simd && W == 4) i = scan32_avx512(db, b0, b1, q, st, M, k);
#endif
            scan_scalar(db, i, b1, W, q, st, M, k);
        }
    }
    for (int64_t qi = 0; qi < nq; qi++) emit(scratch + qi * S, M, k, out_d + qi * k, out_i + qi * k);
    return 0;
}
"""

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


class _Kernel:
    def __init__(self, lib: ctypes.CDLL) -> None:
        self._fn = lib.bgan_topk
        self._fn.restype = ctypes.c_int
        p = ctypes.c_void_p
        self._fn.argtypes = [p, ctypes.c_int64, ctypes.c_int, p, ctypes.c_int64, ctypes.c_int,
                             ctypes.c_int, p, p, p]
        lib.bgan_has_avx512.restype = ctypes.c_int
        self.has_avx512 = bool(lib.bgan_has_avx512()) and os.environ.get("BGAN_TF_NO_AVX512") != "1"

    def topk(self, db: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """db, queries: padded uint8 [*, W]. Returns (int32 [Q,K], positions int64 [Q,K]), K = min(k, N).

        ctypes drops the GIL during the call, so threads can run batches in parallel.
        """
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
                          int(self.has_avx512), scratch.ctypes.data,
                          out_d[s:e].ctypes.data, out_i[s:e].ctypes.data)
            if rc != 0:
                raise RuntimeError(f"bgan_topk failed with code {rc}")
        return out_d, out_i


def _cache_dir() -> Path:
    root = os.environ.get("BGAN_TF_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bgan_tf")
    return Path(root)


def _build(cc: str) -> Path:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256((_SOURCE + version).encode()).hexdigest()[:16]
    out = _cache_dir() / f"hamming_{key}.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        src = Path(tmp) / "hamming.c"
        src.write_text(_SOURCE)
        so = Path(tmp) / "hamming.so"
        subprocess.run([cc, "-O3", "-fPIC", "-shared", "-std=c11", str(src), "-o", str(so)],
                       check=True, capture_output=True, timeout=120)
        os.replace(so, out)  # atomic: concurrent builders never see a half-written .so
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
