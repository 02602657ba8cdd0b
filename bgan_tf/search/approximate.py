"""Approximate search backends over packed binary codes: FAISS IVF, HNSW and multi-hash.

`ivf` (k-means lists), `hnsw` (a neighbour graph) and `multihash` (hash tables
keyed by substrings of the code, with `multihash_defaults` per code length)
implement the `SearchBackend` interface of bgan_tf/search/backend_base.py. They
return the best k of the candidates they visit, each row sorted by (distance,
id); build them with `backends.make_backend`. HNSW and multi-hash indexes cannot
delete, so they keep their codes and rebuild on remove (`_RebuildOnRemove`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bgan_tf.errors import UserError
from bgan_tf.search.backend_base import (MAX_EF, MAX_HASH_BITS, MAX_HNSW_M, MAX_NFLIP, MAX_NHASH, MAX_NLIST,
                                         as_ids, check_knob, clamp_k, faiss_search, sort_rows)
from bgan_tf.search.store import code_bytes as codes_lib_code_bytes


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
        self.nlist = check_knob("ivf", "nlist", nlist, 1, MAX_NLIST)
        self.nprobe = check_knob("ivf", "nprobe", nprobe, 1, MAX_NLIST)
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
        self._index.add_with_ids(packed, as_ids(ids))

    def remove(self, ids: np.ndarray) -> None:
        if self._index is not None:
            self._index.remove_ids(self._faiss.IDSelectorBatch(as_ids(ids)))

    def search(self, packed_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(packed_queries, dtype=np.uint8)
        k = clamp_k(k, self.ntotal)
        if k == 0:
            return sort_rows(np.zeros((q.shape[0], 0)), np.zeros((q.shape[0], 0)), k)
        dist, ids = self._index.search(q, k)
        return sort_rows(dist, ids, k)


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
        self._ids = np.concatenate([self._ids, as_ids(ids)])
        if packed.shape[0]:
            self._index.add(packed)  # labels = positions in self._ids

    def remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self._ids, as_ids(ids))
        if keep.all():
            return
        self._codes = np.ascontiguousarray(self._codes[keep])
        self._ids = self._ids[keep]
        self._index = self._new_index()
        if self.ntotal:
            self._index.add(self._codes)

    def search(self, packed_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return faiss_search(self._index, self._ids, self.ntotal, packed_queries, k)


class HNSWBackend(_RebuildOnRemove):
    """FAISS IndexBinaryHNSW graph: M links per node, efSearch candidates per query."""

    name = "hnsw"

    def __init__(self, num_bits: int, M: int = 32, ef_search: int = 128, ef_construction: int = 64) -> None:
        # FAISS aborts the process (C++ assertion) on M = 0; refuse before it is reached.
        self.M = check_knob("hnsw", "M", M, 1, MAX_HNSW_M)
        self.ef_search = check_knob("hnsw", "ef_search", ef_search, 1, MAX_EF)
        self.ef_construction = check_knob("hnsw", "ef_construction", ef_construction, 1, MAX_EF)
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
        self.nhash = check_knob("multihash", "nhash", nhash, 1, MAX_NHASH) if nhash else dflt["nhash"]
        if b:
            self.b = check_knob("multihash", "b (hash_bits)", b, 1, MAX_HASH_BITS)
        elif nhash:  # tables given, key length not: split the code between them
            self.b = max(1, min(24, d // self.nhash))
        else:
            self.b = dflt["b"]
        if self.nhash * self.b > d:
            raise UserError(f"multihash needs nhash * b <= {d} bits, got {self.nhash} * {self.b}")
        if nflip is None or (not isinstance(nflip, bool) and nflip == -1):
            self.nflip = min(dflt["nflip"], self.b)
        else:
            self.nflip = check_knob("multihash", "nflip", nflip, 0, min(self.b, MAX_NFLIP))
        super().__init__(num_bits)

    def _new_index(self) -> Any:
        index = self._faiss.IndexBinaryMultiHash(self.d, self.nhash, self.b)
        index.nflip = self.nflip
        return index
