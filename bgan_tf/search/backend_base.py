"""What every search backend shares: the interface, the knob bounds, the thread setting, helpers.

`SearchBackend` is the interface every backend implements (see bgan_tf/search/backends.py
for the contract and the registry, `make_backend`). The exact backends (backends.py),
the approximate ones (approximate.py) and milvus (milvus.py) import their shared limits
and helpers from here, and nothing here imports a backend: the registry imports a
backend's module only when that backend is asked for. Importing this module imports
neither FAISS nor pymilvus (the flags read its bounds at definition time).
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

import numpy as np

from bgan_tf.errors import UserError

NO_DISTANCE = np.iinfo(np.int32).max

# Bounds of the backend knobs, shared by the constructors (so the library refuses
# values FAISS would abort on or that cost unbounded memory/time) and the CLI flags.
MAX_NLIST = 1 << 20  # ivf lists (capped further at codes / 39 when trained)
MAX_HNSW_M = 256  # hnsw links per node: memory per code grows with it
MAX_EF = 1 << 16  # hnsw candidate list per query
MAX_HASH_BITS = 64  # multihash keys are read into 64-bit words
MAX_NHASH = 4096  # multihash tables (nhash * key bits <= code bits anyway)
MAX_NFLIP = 4  # multihash probes C(b, 0..nflip) buckets per table: 4 is ~10^4 at b=24
MAX_THREADS = 256

_threads = 1


def set_num_threads(n: int) -> None:
    """Threads used by FAISS (OpenMP) and ours_exact. Default 1: on shared CI cores
    two FAISS threads were measured 2-4x slower than one (probe_deps.md)."""
    global _threads
    import faiss

    _threads = max(1, min(int(n), MAX_THREADS))
    faiss.omp_set_num_threads(_threads)


def get_num_threads() -> int:
    return _threads


def apply_num_threads() -> None:
    """Apply the thread setting to the calling thread.

    OpenMP keeps its thread count per OS thread: set_num_threads() in the main
    thread does not reach executor/worker threads, which otherwise run FAISS with
    one OpenMP team per thread sized to every core (oversubscription on shared
    cores). Call this at the start of any thread that searches.
    """
    import faiss

    faiss.omp_set_num_threads(_threads)


class SearchBackend(Protocol):
    name: str
    num_bits: int

    @property
    def ntotal(self) -> int: ...

    def add(self, packed: np.ndarray, ids: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> None: ...

    def search(self, packed_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


# ---------------------------------------------------------------- helpers
def clamp_k(k: int, ntotal: int) -> int:
    """The number of result columns for a request of k over ntotal codes: min(k, ntotal).

    Every backend calls this first, so what a search allocates is bounded by the
    index, never by the k a caller asks for.
    """
    k = int(k)
    if k <= 0:
        raise UserError(f"k must be positive, got {k}")
    return min(k, int(ntotal))


def check_knob(backend: str, name: str, value: Any, lo: int, hi: int) -> int:
    """An integer backend knob within [lo, hi], else UserError (FAISS would abort or blow up)."""
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{backend} backend: {name} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not lo <= v <= hi:
        raise UserError(f"{backend} backend: {name} must be between {lo} and {hi}, got {value!r}")
    return v


def faiss_search(index, ids: np.ndarray, ntotal: int, packed_queries: np.ndarray,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
    """Search a FAISS binary index whose labels are positions into ``ids``.

    FAISS's heap keeps the lower label among equal distances, so with id-sorted
    positions an exact index gives the exact (distance, id) top-k.
    """
    q = np.ascontiguousarray(packed_queries, dtype=np.uint8)
    k = clamp_k(k, ntotal)
    if k == 0:
        return sort_rows(np.zeros((q.shape[0], 0)), np.zeros((q.shape[0], 0)), k)
    dist, pos = index.search(q, k)
    out = np.where(pos >= 0, ids[np.maximum(pos, 0)], -1)
    return sort_rows(dist, out, k)


def sort_rows(dist: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by (distance, id), pad/truncate to k, padding = (INT32_MAX, -1)."""
    dist = np.asarray(dist, dtype=np.int64)
    ids = np.asarray(ids, dtype=np.int64)
    invalid = ids < 0
    dist = np.where(invalid, NO_DISTANCE, dist)
    # Invalid entries sort last; -1 ids would otherwise sort first among equals.
    key_id = np.where(invalid, np.iinfo(np.int64).max, ids)
    order = np.lexsort((key_id, dist), axis=-1) if dist.size else np.zeros_like(ids)
    dist = np.take_along_axis(dist, order, axis=1)
    ids = np.take_along_axis(ids, order, axis=1)
    q = dist.shape[0]
    out_d = np.full((q, k), NO_DISTANCE, dtype=np.int32)
    out_i = np.full((q, k), -1, dtype=np.int64)
    m = min(k, dist.shape[1])
    out_d[:, :m] = dist[:, :m]
    out_i[:, :m] = ids[:, :m]
    out_d[out_i < 0] = NO_DISTANCE
    return out_d, out_i


def as_ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    return np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64).reshape(-1)
