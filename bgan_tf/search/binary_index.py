"""BinaryIndex: a persistent, searchable set of binary codes (a CodeStore + a search backend).

`BinaryIndex` ties a `CodeStore` (what is kept, persisted) to a backend made by
`backends.make_backend` (rebuilt from the stored codes on load, so a saved index
never depends on FAISS's file format). Searches return `SearchResult`s; a
read/write lock lets many searches run together while add/remove/save run alone.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any, Iterable, Sequence

import numpy as np

from bgan_tf import atomic
from bgan_tf import codes as codes_lib
from bgan_tf.errors import UserError
from bgan_tf.search.backend_base import clamp_k, get_num_threads
from bgan_tf.search.backends import make_backend
from bgan_tf.search.query_encoder import QUERY_ENCODER_FILE, kept_query_encoder
from bgan_tf.search.store import CodeStore


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
            # A save swaps in a new folder: the verified TFLite query encoder that
            # `index build` keeps in the old one is carried over, or a service that adds
            # images would leave every later CLI query on the slow Keras path.
            kept = kept_query_encoder(path, self.store.extra)
            self.store.save(path)
            if kept is not None:
                atomic.write_bytes(os.path.join(os.fspath(path), QUERY_ENCODER_FILE), kept)

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
