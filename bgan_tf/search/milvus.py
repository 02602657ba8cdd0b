"""The search-backend interface on Milvus (pymilvus MilvusClient).

Milvus Lite (an embedded server behind a local `.db` file) is the default; any
Milvus server or cluster URI (`http://host:19530`, with `token`) works the same.
Codes go into a BINARY_VECTOR field with metric HAMMING on a BIN_FLAT index,
the combination Milvus Lite 2.5.1 accepts (it refuses BIN_IVF_FLAT; Lite 3.x
refuses binary vectors altogether, hence the pins in requirements.txt).

Distances are exact; rows are sorted by (distance, id) like every backend, but
which of several items tied at the k-th distance Milvus returns is its choice.
Use it through `BinaryIndex(store, backend="milvus", uri=...)` (the store stays
the source of truth, so the collection is recreated from it: `fresh=True`) or
directly with `fresh=False` to reopen an existing collection.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from typing import Any

import numpy as np

from bgan_tf.errors import UserError
from bgan_tf.search.backend_base import NO_DISTANCE
from bgan_tf.search.store import code_bytes

_MAX_TOPK = 16384  # Milvus's limit on k per search
_INSERT_BATCH = 10000


def _client(uri: str, token: str | None) -> Any:
    with warnings.catch_warnings():
        # milvus-lite 2.5.1 imports pkg_resources, which warns on import.
        warnings.simplefilter("ignore")
        try:
            from pymilvus import MilvusClient
        except ImportError as e:
            raise UserError(f"the milvus backend needs pymilvus and milvus-lite ({e})") from None
        try:
            return MilvusClient(uri=uri, token=token or "")
        except Exception as e:  # pymilvus raises many types; the message is what matters
            raise UserError(f"cannot start/connect to Milvus at {uri}: {e}") from None


class MilvusBackend:
    """Binary codes in a Milvus collection: add / remove / search like the FAISS backends."""

    name = "milvus"

    def __init__(
        self,
        num_bits: int,
        uri: str | None = None,
        collection: str = "bgan_codes",
        token: str | None = None,
        fresh: bool = True,
    ) -> None:
        self.num_bits = int(num_bits)
        self.dim = 8 * code_bytes(num_bits)
        self._tmpdir = None
        if uri is None:
            # Private Milvus Lite file: the CodeStore is the persistent copy.
            self._tmpdir = tempfile.mkdtemp(prefix="bgan_milvus_")
            uri = os.path.join(self._tmpdir, "codes.db")
        self.uri, self.collection = uri, collection
        self._client = _client(uri, token)
        c = self._client
        if fresh and c.has_collection(collection):
            c.drop_collection(collection)
        if not c.has_collection(collection):
            from pymilvus import DataType

            schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("code", DataType.BINARY_VECTOR, dim=self.dim)
            params = c.prepare_index_params()
            params.add_index(field_name="code", index_type="BIN_FLAT", metric_type="HAMMING")
            # Strong consistency: a search right after an insert sees it.
            c.create_collection(collection, schema=schema, index_params=params, consistency_level="Strong")
        else:
            dims = [f.get("params", {}).get("dim") for f in c.describe_collection(collection)["fields"]
                    if f.get("name") == "code"]
            if dims and int(dims[0]) != self.dim:
                raise UserError(f"Milvus collection {collection!r} holds {dims[0]}-bit codes, not {self.dim}")
        c.load_collection(collection)

    @property
    def ntotal(self) -> int:
        res = self._client.query(self.collection, filter="", output_fields=["count(*)"],
                                 consistency_level="Strong")
        return int(res[0]["count(*)"])

    def add(self, packed: np.ndarray, ids: np.ndarray) -> None:
        packed = np.ascontiguousarray(packed, dtype=np.uint8)
        if packed.shape[1] != self.dim // 8:
            raise UserError(f"expected {self.dim // 8}-byte codes, got {packed.shape[1]}")
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        for s in range(0, len(ids), _INSERT_BATCH):
            rows = [{"id": int(i), "code": bytes(c)} for i, c in
                    zip(ids[s : s + _INSERT_BATCH].tolist(), packed[s : s + _INSERT_BATCH])]
            self._client.insert(self.collection, rows)

    def remove(self, ids: np.ndarray) -> None:
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        if ids:
            self._client.delete(self.collection, ids=ids)

    def search(self, packed_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(packed_queries, dtype=np.uint8)
        out_d = np.full((q.shape[0], k), NO_DISTANCE, dtype=np.int32)
        out_i = np.full((q.shape[0], k), -1, dtype=np.int64)
        if q.shape[0] == 0:
            return out_d, out_i
        if k > _MAX_TOPK:
            raise UserError(f"Milvus returns at most {_MAX_TOPK} neighbours; asked for {k}")
        hits = self._client.search(
            self.collection, data=[bytes(row) for row in q], anns_field="code", limit=k,
            search_params={"metric_type": "HAMMING"}, output_fields=[], consistency_level="Strong")
        for r, row in enumerate(hits):
            pairs = sorted((int(round(h["distance"])), int(h["id"])) for h in row)[:k]
            for j, (d, i) in enumerate(pairs):
                out_d[r, j], out_i[r, j] = d, i
        return out_d, out_i

    def close(self) -> None:
        """Stop using the collection (and the embedded server of a private Lite file)."""
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __del__(self) -> None:
        self.close()
