"""How neighbours are found: the search-backend interface, its exact backends, make_backend.

Every backend has the same small interface (`SearchBackend`):
    add(packed uint8 [N, B], ids int64 [N]); remove(ids); search(packed [Q, B], k)
    -> (distances int32 [Q, K], ids int64 [Q, K]) with K = min(k, N).
k is clamped to the number of indexed codes, so memory never grows with k beyond
the index size (a k of a billion on a 40-image index returns 40 columns). Rows where
an approximate backend finds fewer than K items are padded with id -1 and distance
INT32_MAX.

Order: every backend returns each row sorted by (distance, id). The exact backends
here (`numpy`, `flat`, `ours_exact`) return exactly the first k items in that order,
ties at the k-th distance included, because they keep their codes sorted by id
and break ties by position. Approximate backends (`ivf`, `hnsw`, `multihash`, in
bgan_tf/search/approximate.py) return the best k of the candidates they visit, in
the same order; `milvus` is in bgan_tf/search/milvus.py.

Also here: the thread setting every backend follows, the bounds of the backend
knobs (shared with the CLI flags), the helpers the backends share, and
`BACKEND_NAMES`, the one list of backend names (importing this module imports
neither FAISS nor pymilvus: the flags read it at definition time).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Protocol

import numpy as np

from bgan_tf.search.hamming_c import load_kernel, pad_codes, padded_width
from bgan_tf.errors import UserError
from bgan_tf.search.store import code_bytes as codes_lib_code_bytes

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


class _SortedCodes:
    """Codes kept sorted by id, so position order == id order (exact tie-breaking)."""

    def __init__(self, num_bits: int, width: int | None = None) -> None:
        self.num_bits = int(num_bits)
        self.code_bytes = codes_lib_code_bytes(num_bits)
        self.width = width or self.code_bytes
        self._codes = np.zeros((0, self.width), dtype=np.uint8)
        self._ids = np.zeros((0,), dtype=np.int64)

    @property
    def ntotal(self) -> int:
        return int(self._ids.shape[0])

    def _merge(self, packed: np.ndarray, ids: np.ndarray) -> bool:
        """Insert rows; returns True when existing positions moved (out-of-order ids)."""
        packed = pad_codes(packed, self.width)
        ids = as_ids(ids)
        moved = self._ids.size > 0 and ids.size > 0 and ids.min() <= self._ids[-1]
        self._codes = np.concatenate([self._codes, packed])
        self._ids = np.concatenate([self._ids, ids])
        if moved or (ids.size > 1 and (np.diff(ids) <= 0).any()):
            order = np.argsort(self._ids, kind="stable")
            self._codes = np.ascontiguousarray(self._codes[order])
            self._ids = self._ids[order]
            return True
        return False

    def _drop(self, ids: np.ndarray) -> np.ndarray:
        """Remove ids; returns the positions removed."""
        pos = np.nonzero(np.isin(self._ids, as_ids(ids)))[0]
        if pos.size:
            keep = np.ones(self._ids.shape[0], dtype=bool)
            keep[pos] = False
            self._codes = np.ascontiguousarray(self._codes[keep])
            self._ids = self._ids[keep]
        return pos


# ---------------------------------------------------------------- exact
class NumpyBackend(_SortedCodes):
    """Reference: plain XOR + np.bitwise_count over every code (slow, obviously right)."""

    name = "numpy"

    def __init__(self, num_bits: int) -> None:
        super().__init__(num_bits)

    def add(self, packed: np.ndarray, ids: np.ndarray) -> None:
        self._merge(packed, ids)

    def remove(self, ids: np.ndarray) -> None:
        self._drop(ids)

    def search(self, packed_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(packed_queries, dtype=np.uint8)
        n = self.ntotal
        k = clamp_k(k, n)
        out_d = np.full((q.shape[0], k), NO_DISTANCE, dtype=np.int32)
        out_i = np.full((q.shape[0], k), -1, dtype=np.int64)
        if n == 0:
            return out_d, out_i
        m = min(k, n)
        pos = np.arange(n, dtype=np.int64)
        # Bound memory: a few query rows of [N] int64 keys at a time.
        qb = max(1, (32 << 20) // (8 * n * max(1, self.code_bytes)))
        for s in range(0, q.shape[0], qb):
            x = np.bitwise_xor(q[s : s + qb, None, :], self._codes[None, :, :])
            dist = np.bitwise_count(x).sum(axis=-1, dtype=np.int64)
            key = dist * n + pos  # (distance, position) == (distance, id)
            part = np.argpartition(key, m - 1, axis=1)[:, :m] if m < n else np.tile(pos, (key.shape[0], 1))
            part = np.take_along_axis(part, np.argsort(np.take_along_axis(key, part, 1), axis=1), 1)
            out_d[s : s + qb, :m] = np.take_along_axis(dist, part, 1)
            out_i[s : s + qb, :m] = self._ids[part]
        return out_d, out_i


class FlatBackend(_SortedCodes):
    """FAISS IndexBinaryFlat (exact). FAISS labels are positions; we map them to ids."""

    name = "flat"

    def __init__(self, num_bits: int) -> None:
        import faiss

        super().__init__(num_bits)
        self._faiss = faiss
        self._index = faiss.IndexBinaryFlat(8 * self.code_bytes)

    def add(self, packed: np.ndarray, ids: np.ndarray) -> None:
        start = self.ntotal
        if self._merge(packed, ids):
            self._index.reset()
            self._index.add(self._codes)
        else:
            self._index.add(self._codes[start:])

    def remove(self, ids: np.ndarray) -> None:
        pos = self._drop(ids)
        if pos.size:
            # remove_ids on a flat index compacts in order, so positions stay id-sorted.
            self._index.remove_ids(self._faiss.IDSelectorBatch(pos.astype(np.int64)))

    def search(self, packed_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return faiss_search(self._index, self._ids, self.ntotal, packed_queries, k)


class OursExactBackend(_SortedCodes):
    """Exact scan in C (AVX-512 VPOPCNTDQ, else AVX2, else scalar POPCNT: whichever the CPU has), see bgan_tf/search/hamming_c.py.

    Raises UserError at construction when no C compiler is available; use
    `make_backend("ours_exact", ..., fallback=True)` to get `flat` instead.
    """

    name = "ours_exact"

    def __init__(self, num_bits: int) -> None:
        kernel = load_kernel()
        if kernel is None:
            raise UserError("backend ours_exact needs a C compiler (cc/gcc); use --backend=flat")
        super().__init__(num_bits, width=padded_width(codes_lib_code_bytes(num_bits)))
        self._kernel = kernel

    def add(self, packed: np.ndarray, ids: np.ndarray) -> None:
        self._merge(packed, ids)

    def remove(self, ids: np.ndarray) -> None:
        self._drop(ids)

    def search(self, packed_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = pad_codes(np.asarray(packed_queries, dtype=np.uint8), self.width)
        k = clamp_k(k, self.ntotal)
        if k == 0 or q.shape[0] == 0:
            return sort_rows(np.zeros((q.shape[0], 0)), np.zeros((q.shape[0], 0)), k)
        codes, ids = self._codes, self._ids  # snapshot: safe against a concurrent swap
        nt = get_num_threads()
        if nt > 1 and q.shape[0] >= 2 * nt:
            chunks = np.array_split(np.arange(q.shape[0]), nt)
            with ThreadPoolExecutor(nt) as ex:  # ctypes releases the GIL
                parts = list(ex.map(lambda c: self._kernel.topk(codes, q[c], k), chunks))
            dist = np.concatenate([p[0] for p in parts])
            pos = np.concatenate([p[1] for p in parts])
        else:
            dist, pos = self._kernel.topk(codes, q, k)
        out_i = np.where(pos >= 0, ids[np.maximum(pos, 0)], -1)
        return dist, out_i


# Every backend make_backend knows, by name: the default (flat) first, then the other
# exact ones, the approximate ones and milvus.
BACKEND_NAMES = ("flat", "ours_exact", "numpy", "ivf", "hnsw", "multihash", "milvus")
EXACT_BACKENDS = ("numpy", "flat", "ours_exact")


def _constructors() -> dict[str, Callable[..., SearchBackend]]:
    """The class of each backend, by its name."""
    # Imported on use: approximate.py imports this module's helpers, and the milvus
    # backend is used rarely (it imports pymilvus when constructed).
    from bgan_tf.search.approximate import HNSWBackend, IVFBackend, MultiHashBackend
    from bgan_tf.search.milvus import MilvusBackend

    classes = (NumpyBackend, FlatBackend, OursExactBackend, IVFBackend, HNSWBackend, MultiHashBackend,
               MilvusBackend)
    return {cls.name: cls for cls in classes}


def make_backend(name: str, num_bits: int, *, fallback: bool = False, **knobs: Any) -> SearchBackend:
    """Create a backend by name. fallback=True turns an unavailable ours_exact into flat."""
    if name not in BACKEND_NAMES:
        raise UserError(f"unknown search backend {name!r}; choose one of {sorted(BACKEND_NAMES)}")
    set_num_threads(get_num_threads())  # make sure FAISS follows our thread setting
    try:
        return _constructors()[name](num_bits, **knobs)
    except (TypeError, ValueError) as e:  # unknown knob names, or a saved knob of the wrong type
        raise UserError(f"bad options for backend {name!r}: {e}") from e
    except UserError:
        if fallback and name == "ours_exact":
            return FlatBackend(num_bits)
        raise
