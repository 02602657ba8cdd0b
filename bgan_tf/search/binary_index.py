"""How neighbours are found: interchangeable search backends over packed binary codes.

Every backend has the same small interface (`SearchBackend`):
    add(packed uint8 [N, B], ids int64 [N]); remove(ids); search(packed [Q, B], k)
    -> (distances int32 [Q, K], ids int64 [Q, K]) with K = min(k, N).
k is clamped to the number of indexed codes, so memory never grows with k beyond
the index size (a k of a billion on a 40-image index returns 40 columns). Rows where
an approximate backend finds fewer than K items are padded with id -1 and distance
INT32_MAX.

Order: every backend returns each row sorted by (distance, id). The exact backends
(`numpy`, `flat`, `ours_exact`) return exactly the first k items in that order,
ties at the k-th distance included, because they keep their codes sorted by id
and break ties by position. Approximate backends (`ivf`, `hnsw`, `multihash`)
return the best k of the candidates they visit, in the same order.

`BinaryIndex` ties a `CodeStore` (what is kept, persisted) to a backend (rebuilt
from the stored codes on load, so a saved index never depends on FAISS's file
format).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np

from bgan_tf import codes as codes_lib
from bgan_tf.search.hamming_c import load_kernel, pad_codes, padded_width
from bgan_tf.errors import UserError
from bgan_tf.search.store import CodeStore
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


def _check_knob(backend: str, name: str, value: Any, lo: int, hi: int) -> int:
    """An integer backend knob within [lo, hi], else UserError (FAISS would abort or blow up)."""
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{backend} backend: {name} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not lo <= v <= hi:
        raise UserError(f"{backend} backend: {name} must be between {lo} and {hi}, got {value!r}")
    return v


def _faiss_search(index, ids: np.ndarray, ntotal: int, packed_queries: np.ndarray,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
    """Search a FAISS binary index whose labels are positions into ``ids``.

    FAISS's heap keeps the lower label among equal distances, so with id-sorted
    positions an exact index gives the exact (distance, id) top-k.
    """
    q = np.ascontiguousarray(packed_queries, dtype=np.uint8)
    k = clamp_k(k, ntotal)
    if k == 0:
        return _sort_rows(np.zeros((q.shape[0], 0)), np.zeros((q.shape[0], 0)), k)
    dist, pos = index.search(q, k)
    out = np.where(pos >= 0, ids[np.maximum(pos, 0)], -1)
    return _sort_rows(dist, out, k)


def _sort_rows(dist: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
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


def _as_ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
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
        ids = _as_ids(ids)
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
        pos = np.nonzero(np.isin(self._ids, _as_ids(ids)))[0]
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
        return _faiss_search(self._index, self._ids, self.ntotal, packed_queries, k)


class OursExactBackend(_SortedCodes):
    """Exact scan in C (AVX-512 VPOPCNTDQ when the CPU has it), see bgan_tf/search/hamming_c.py.

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
            return _sort_rows(np.zeros((q.shape[0], 0)), np.zeros((q.shape[0], 0)), k)
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


# ---------------------------------------------------------------- approximate
class IVFBackend:
    """FAISS IndexBinaryIVF: k-means over codes into nlist lists, search nprobe of them.

    Trains on the first codes it is given (BinaryIndex passes all indexed codes on
    build). nlist is capped so every list gets ~39 training codes (FAISS's own rule).
    """

    name = "ivf"

    def __init__(self, num_bits: int, nlist: int = 1024, nprobe: int = 32) -> None:
        import faiss

        self._faiss = faiss
        self.num_bits = int(num_bits)
        self.d = 8 * codes_lib_code_bytes(num_bits)
        self.nlist = _check_knob("ivf", "nlist", nlist, 1, MAX_NLIST)
        self.nprobe = _check_knob("ivf", "nprobe", nprobe, 1, MAX_NLIST)
        self._index = None
        self._quantizer = None

    @property
    def ntotal(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def _train(self, packed: np.ndarray) -> None:
        nlist = max(1, min(self.nlist, packed.shape[0] // 39))
        # Keep a Python reference to the quantizer instead of own_fields=True,
        # which crashes at interpreter exit with faiss-cpu 1.15.1 (probe_deps.md).
        self._quantizer = self._faiss.IndexBinaryFlat(self.d)
        self._index = self._faiss.IndexBinaryIVF(self._quantizer, self.d, nlist)
        self._index.nprobe = min(self.nprobe, nlist)
        self._index.train(packed)

    def add(self, packed: np.ndarray, ids: np.ndarray) -> None:
        packed = np.ascontiguousarray(packed, dtype=np.uint8)
        if packed.shape[0] == 0:
            return
        if self._index is None:
            self._train(packed)
        self._index.add_with_ids(packed, _as_ids(ids))

    def remove(self, ids: np.ndarray) -> None:
        if self._index is not None:
            self._index.remove_ids(self._faiss.IDSelectorBatch(_as_ids(ids)))

    def search(self, packed_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(packed_queries, dtype=np.uint8)
        k = clamp_k(k, self.ntotal)
        if k == 0:
            return _sort_rows(np.zeros((q.shape[0], 0)), np.zeros((q.shape[0], 0)), k)
        dist, ids = self._index.search(q, k)
        return _sort_rows(dist, ids, k)


class _RebuildOnRemove:
    """Backends whose FAISS index cannot delete: keep the codes, rebuild on remove.

    Removal costs a rebuild (HNSW on 1M codes: tens of seconds); fine for an
    index that is mostly appended to, which is how this project uses it.
    """

    name = "?"

    def __init__(self, num_bits: int) -> None:
        import faiss

        self._faiss = faiss
        self.num_bits = int(num_bits)
        self.d = 8 * codes_lib_code_bytes(num_bits)
        self._codes = np.zeros((0, self.d // 8), dtype=np.uint8)
        self._ids = np.zeros((0,), dtype=np.int64)
        self._index = self._new_index()

    def _new_index(self) -> Any:
        raise NotImplementedError

    @property
    def ntotal(self) -> int:
        return int(self._ids.shape[0])

    def add(self, packed: np.ndarray, ids: np.ndarray) -> None:
        packed = np.ascontiguousarray(packed, dtype=np.uint8)
        self._codes = np.concatenate([self._codes, packed])
        self._ids = np.concatenate([self._ids, _as_ids(ids)])
        if packed.shape[0]:
            self._index.add(packed)  # labels = positions in self._ids

    def remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self._ids, _as_ids(ids))
        if keep.all():
            return
        self._codes = np.ascontiguousarray(self._codes[keep])
        self._ids = self._ids[keep]
        self._index = self._new_index()
        if self.ntotal:
            self._index.add(self._codes)

    def search(self, packed_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return _faiss_search(self._index, self._ids, self.ntotal, packed_queries, k)


class HNSWBackend(_RebuildOnRemove):
    """FAISS IndexBinaryHNSW graph: M links per node, efSearch candidates per query."""

    name = "hnsw"

    def __init__(self, num_bits: int, M: int = 32, ef_search: int = 128, ef_construction: int = 64) -> None:
        # FAISS aborts the process (C++ assertion) on M = 0; refuse before it is reached.
        self.M = _check_knob("hnsw", "M", M, 1, MAX_HNSW_M)
        self.ef_search = _check_knob("hnsw", "ef_search", ef_search, 1, MAX_EF)
        self.ef_construction = _check_knob("hnsw", "ef_construction", ef_construction, 1, MAX_EF)
        super().__init__(num_bits)

    def _new_index(self) -> Any:
        index = self._faiss.IndexBinaryHNSW(self.d, self.M)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    def search(self, packed_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # HNSW returns <= efSearch items; k is clamped to the index size first, so a huge
        # k cannot make FAISS allocate a huge candidate list.
        self._index.hnsw.efSearch = max(self.ef_search, clamp_k(k, self.ntotal))
        return super().search(packed_queries, k)


def multihash_defaults(num_bits: int) -> dict[str, int]:
    """Sane (nhash, b, nflip) for a code length.

    Each table probes sum_{i<=nflip} C(b, i) buckets; with N codes a bucket holds
    about N / 2**b of them, so short keys make every probe a scan. 8-bit keys at
    32 bits (the old nhash=4 default) visit ~all of 1M codes (2 q/s). Keys of
    16-24 bits keep buckets small: 32 bits -> 2 tables x 16 bits, 64 -> 4 x 16,
    codes of 16 bits or less keep 4 short keys (their whole space is 65,536 codes),
    longer codes -> 24-bit keys with one flip (C(24, 2) probes per table is too many).
    """
    d = 8 * codes_lib_code_bytes(num_bits)
    if d <= 16:  # tiny code space: 4 short keys probe ~all buckets, i.e. exact
        return {"nhash": 4 if d >= 4 else 1, "b": max(1, d // 4) if d >= 4 else d, "nflip": 2}
    if d <= 48:
        return {"nhash": 2, "b": d // 2, "nflip": 2}
    b = 16 if d <= 96 else 24
    return {"nhash": max(1, d // b), "b": b, "nflip": 2 if b <= 16 else 1}


class MultiHashBackend(_RebuildOnRemove):
    """FAISS IndexBinaryMultiHash: nhash tables keyed by b-bit substrings, probing
    every key within nflip bit flips; exact distances on the candidates found.

    Unset knobs (None / 0) take `multihash_defaults(num_bits)`.
    """

    name = "multihash"

    def __init__(self, num_bits: int, nhash: int | None = None, b: int | None = None,
                 nflip: int | None = None) -> None:
        d = 8 * codes_lib_code_bytes(num_bits)
        dflt = multihash_defaults(num_bits)
        # None / 0 (nhash, b) and None / -1 (nflip) mean "the default for this code length".
        self.nhash = _check_knob("multihash", "nhash", nhash, 1, MAX_NHASH) if nhash else dflt["nhash"]
        if b:
            self.b = _check_knob("multihash", "b (hash_bits)", b, 1, MAX_HASH_BITS)
        elif nhash:  # tables given, key length not: split the code between them
            self.b = max(1, min(24, d // self.nhash))
        else:
            self.b = dflt["b"]
        if self.nhash * self.b > d:
            raise UserError(f"multihash needs nhash * b <= {d} bits, got {self.nhash} * {self.b}")
        if nflip is None or (not isinstance(nflip, bool) and nflip == -1):
            self.nflip = min(dflt["nflip"], self.b)
        else:
            self.nflip = _check_knob("multihash", "nflip", nflip, 0, min(self.b, MAX_NFLIP))
        super().__init__(num_bits)

    def _new_index(self) -> Any:
        index = self._faiss.IndexBinaryMultiHash(self.d, self.nhash, self.b)
        index.nflip = self.nflip
        return index


def _milvus(num_bits: int, **knobs: Any) -> SearchBackend:
    # Imported on use: pymilvus is heavy and only this backend needs it.
    from bgan_tf.search.milvus import MilvusBackend

    return MilvusBackend(num_bits, **knobs)


BACKENDS: dict[str, Callable[..., SearchBackend]] = {
    "numpy": NumpyBackend,
    "flat": FlatBackend,
    "ours_exact": OursExactBackend,
    "ivf": IVFBackend,
    "hnsw": HNSWBackend,
    "multihash": MultiHashBackend,
    "milvus": _milvus,
}
EXACT_BACKENDS = ("numpy", "flat", "ours_exact")


def make_backend(name: str, num_bits: int, *, fallback: bool = False, **knobs: Any) -> SearchBackend:
    """Create a backend by name. fallback=True turns an unavailable ours_exact into flat."""
    if name not in BACKENDS:
        raise UserError(f"unknown search backend {name!r}; choose one of {sorted(BACKENDS)}")
    set_num_threads(get_num_threads())  # make sure FAISS follows our thread setting
    try:
        return BACKENDS[name](num_bits, **knobs)
    except (TypeError, ValueError) as e:  # unknown knob names, or a saved knob of the wrong type
        raise UserError(f"bad options for backend {name!r}: {e}") from e
    except UserError:
        if fallback and name == "ours_exact":
            return FlatBackend(num_bits)
        raise


# ---------------------------------------------------------------- BinaryIndex
@dataclasses.dataclass(frozen=True)
class SearchResult:
    id: int
    distance: int
    metadata: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "distance": self.distance, "metadata": self.metadata}


class _RWLock:
    """Many concurrent searches, one exclusive mutation."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    def read(self) -> "_Guard":
        return _Guard(self, False)

    def write(self) -> "_Guard":
        return _Guard(self, True)


class _Guard:
    def __init__(self, lock: _RWLock, write: bool) -> None:
        self.lock, self.write = lock, write

    def __enter__(self) -> None:
        c = self.lock._cond
        with c:
            if self.write:
                c.wait_for(lambda: not self.lock._writer and self.lock._readers == 0)
                self.lock._writer = True
            else:
                c.wait_for(lambda: not self.lock._writer)
                self.lock._readers += 1

    def __exit__(self, *exc: object) -> None:
        c = self.lock._cond
        with c:
            if self.write:
                self.lock._writer = False
            else:
                self.lock._readers -= 1
            c.notify_all()


class BinaryIndex:
    """A persistent, searchable set of binary codes: CodeStore + search backend.

    Thread-safe: searches share a read lock, add/remove/save take it exclusively.
    """

    def __init__(self, store: CodeStore, backend: str = "flat", **knobs: Any) -> None:
        self.store = store
        self.backend_name = backend
        self.knobs = dict(knobs)
        self._lock = _RWLock()
        self.backend = make_backend(backend, store.num_bits, fallback=True, **knobs)
        if len(store):
            # Approximate backends train on these codes (all indexed codes).
            self.backend.add(store.packed, store.ids)

    @classmethod
    def create(cls, num_bits: int, model_id: str, backend: str = "flat", **knobs: Any) -> "BinaryIndex":
        return cls(CodeStore(num_bits, model_id), backend, **knobs)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        expect_num_bits: int | None = None,
        expect_model_id: str | None = None,
        backend: str | None = None,
        **knobs: Any,
    ) -> "BinaryIndex":
        """Load a saved index; backend/knobs default to the ones it was saved with."""
        store = CodeStore.load(path, expect_num_bits=expect_num_bits, expect_model_id=expect_model_id)
        saved = store.extra.get("backend", {}) or {}
        if not isinstance(saved, dict) or not isinstance(saved.get("knobs", {}), dict) \
                or not isinstance(saved.get("name", "flat"), str):
            raise UserError(f"index {path} is damaged (manifest.json extra.backend is {saved!r:.60}); "
                            "rebuild it with python -m bgan_tf.index build into a new folder")
        name = backend or saved.get("name", "flat")
        if backend is None or backend == saved.get("name"):
            knobs = {**saved.get("knobs", {}), **knobs}
        return cls(store, name, **knobs)

    # ----------------------------------------------------------------- info
    @property
    def num_bits(self) -> int:
        return self.store.num_bits

    @property
    def model_id(self) -> str:
        return self.store.model_id

    def __len__(self) -> int:
        return len(self.store)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.store

    def stats(self) -> dict[str, Any]:
        return {**self.store.manifest(), "backend": self.backend_name, "knobs": self.knobs,
                "threads": get_num_threads()}

    def to_packed(self, signs_or_packed: np.ndarray) -> np.ndarray:
        """Accept packed uint8 [N, B], bits uint8 [N, L] or signs [N, L] (1-D = one code)."""
        arr = np.asarray(signs_or_packed)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise UserError(f"codes must be 1-D or 2-D, got shape {arr.shape}")
        if arr.dtype == np.uint8 and arr.shape[1] == self.store.code_bytes and arr.shape[1] != self.num_bits:
            return np.ascontiguousarray(arr)
        if arr.shape[1] == self.num_bits:
            return codes_lib.pack(arr)
        raise UserError(
            f"codes have {arr.shape[1]} columns; this index takes {self.num_bits}-bit signs "
            f"or {self.store.code_bytes}-byte packed codes"
        )

    # ------------------------------------------------------------- mutation
    def add(
        self,
        signs_or_packed: np.ndarray,
        ids: Sequence[int] | np.ndarray | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> np.ndarray:
        """Add codes (ids assigned when None); returns the ids."""
        packed = self.to_packed(signs_or_packed)
        with self._lock.write():
            new_ids = self.store.add(packed, ids, metadata)
            try:
                self.backend.add(packed, new_ids)
            except Exception:
                self.store.remove(new_ids)  # keep store and backend in step
                raise
            return new_ids

    def remove(self, ids: Iterable[int]) -> int:
        """Remove ids (absent ones ignored); returns how many were removed."""
        with self._lock.write():
            present = self.store.remove(ids)
            if present.size:
                self.backend.remove(present)
            return int(present.size)

    def save(self, path: str | os.PathLike[str]) -> None:
        with self._lock.read():  # saving only reads; blocks mutations meanwhile
            self.store.extra["backend"] = {"name": self.backend_name, "knobs": self.knobs}
            self.store.save(path)

    # --------------------------------------------------------------- search
    def search_arrays(self, query_signs_or_packed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw backend output: (distances int32 [Q,K], ids int64 [Q,K]), K = min(k, len(self))."""
        packed = self.to_packed(query_signs_or_packed)
        with self._lock.read():
            k = clamp_k(k, len(self.store))
            if k == 0:  # empty index: no backend call (some cannot search with k = 0)
                return (np.zeros((packed.shape[0], 0), np.int32), np.zeros((packed.shape[0], 0), np.int64))
            return self.backend.search(packed, k)

    def search(self, query_signs_or_packed: np.ndarray, k: int) -> list[list[SearchResult]]:
        """Top-k per query, sorted by (distance, id); fewer than k if the index is small."""
        dist, ids = self.search_arrays(query_signs_or_packed, k)
        out: list[list[SearchResult]] = []
        with self._lock.read():
            for drow, irow in zip(dist.tolist(), ids.tolist()):
                row = []
                for d, i in zip(drow, irow):
                    if i < 0 or not self.store.contains(i):
                        continue
                    row.append(SearchResult(int(i), int(d), self.store.metadata(i)))
                out.append(row)
        return out

    def search_one(self, query_signs_or_packed: np.ndarray, k: int) -> list[SearchResult]:
        """Top-k for a single query code."""
        return self.search(np.asarray(query_signs_or_packed).reshape(1, -1), k)[0]
