"""How neighbours are found: the backend registry (`make_backend`) and the exact backends.

Every backend has the same small interface (`backend_base.SearchBackend`):
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

The registry (`BACKEND_NAMES`, `backend_class`, `make_backend`) imports a backend's
module when that backend is asked for (as tensorflow/similarity's make_search does), so
importing this module imports neither FAISS nor pymilvus (the flags read
`BACKEND_NAMES` at definition time). The thread setting, knob bounds and helpers every
backend shares are in bgan_tf/search/backend_base.py, which imports no backend: no
import cycle between the registry and the backends.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from bgan_tf.errors import UserError
from bgan_tf.search.backend_base import (NO_DISTANCE, SearchBackend, as_ids, clamp_k, faiss_search,
                                         get_num_threads, set_num_threads, sort_rows)
from bgan_tf.search.hamming_c import load_kernel, pad_codes, padded_width
from bgan_tf.search.store import code_bytes as codes_lib_code_bytes


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
EXACT_BACKENDS = ("flat", "ours_exact", "numpy")
APPROXIMATE_BACKENDS = ("ivf", "hnsw", "multihash")
BACKEND_NAMES = (*EXACT_BACKENDS, *APPROXIMATE_BACKENDS, "milvus")


def backend_class(name: str) -> type:
    """The class of the backend called ``name``, importing its module only now: the
    approximate backends' module when one of them is asked for, pymilvus's wrapper for milvus."""
    if name in EXACT_BACKENDS:
        classes = (NumpyBackend, FlatBackend, OursExactBackend)
    elif name in APPROXIMATE_BACKENDS:
        from bgan_tf.search import approximate

        classes = (approximate.IVFBackend, approximate.HNSWBackend, approximate.MultiHashBackend)
    elif name == "milvus":
        from bgan_tf.search import milvus

        classes = (milvus.MilvusBackend,)
    else:
        raise UserError(f"unknown search backend {name!r}; choose one of {sorted(BACKEND_NAMES)}")
    return next(cls for cls in classes if cls.name == name)


def make_backend(name: str, num_bits: int, *, fallback: bool = False, **knobs: Any) -> SearchBackend:
    """Create a backend by name. fallback=True turns an unavailable ours_exact into flat."""
    cls = backend_class(name)
    set_num_threads(get_num_threads())  # make sure FAISS follows our thread setting
    try:
        return cls(num_bits, **knobs)
    except (TypeError, ValueError) as e:  # unknown knob names, or a saved knob of the wrong type
        raise UserError(f"bad options for backend {name!r}: {e}") from e
    except UserError:
        if fallback and name == "ours_exact":
            return FlatBackend(num_bits)
        raise
