"""What a binary index keeps: packed codes, int64 ids, per-item metadata, a manifest.

On disk an index is one folder:

    manifest.json   format_version, num_bits, model_id, count, created, next_id, extra
    codes.npy       uint8 [N, ceil(num_bits / 8)] (bgan_tf.codes.pack order)
    ids.npy         int64 [N]
    metadata.jsonl  one JSON object per row (e.g. {"path": ..., "label": ...})

Saving writes a complete new folder beside the target and swaps it in
(`bgan_tf.atomic.staged_dir`): a crash leaves the old index or the new one, never a mix,
and a folder that is not an index is never replaced. Loading opens all four files from
one folder descriptor, so a load racing a save reads the old or the new index whole.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from bgan_tf import atomic
from bgan_tf.errors import UserError
# The on-disk readers live in index_files; is_index and read_manifest are re-exported here.
from bgan_tf.search.index_files import CODES_FILE, IDS_FILE, MANIFEST_FILE, META_FILE, FORMAT_VERSION, \
    check_manifest, damaged, load_metadata, load_npy, open_whole_save, parse_manifest, \
    is_index, read_manifest

# How error messages name an index folder ("... holds files that are not a binary index").
INDEX_WHAT = "binary index"


def code_bytes(num_bits: int) -> int:
    """Bytes per packed code."""
    return (int(num_bits) + 7) // 8


class CodeStore:
    """In-memory table of (id, packed code, metadata) rows plus the manifest."""

    def __init__(
        self,
        num_bits: int,
        model_id: str,
        *,
        created: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if int(num_bits) <= 0:
            raise UserError(f"num_bits must be positive, got {num_bits}")
        self.num_bits = int(num_bits)
        self.model_id = str(model_id)
        self.created = created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        # Free-form manifest fields owned by callers (e.g. the backend config).
        self.extra: dict[str, Any] = dict(extra or {})
        self._codes = np.zeros((0, code_bytes(num_bits)), dtype=np.uint8)
        self._ids = np.zeros((0,), dtype=np.int64)
        self._meta: list[dict[str, Any]] = []
        self._pos: dict[int, int] = {}
        # Never reuse an id, even after removal, so a stale result cannot point
        # at a different image.
        self.next_id = 0

    # ----------------------------------------------------------------- access
    @property
    def code_bytes(self) -> int:
        return self._codes.shape[1]

    @property
    def packed(self) -> np.ndarray:
        """uint8 [N, code_bytes], read-only view."""
        v = self._codes.view()
        v.flags.writeable = False
        return v

    @property
    def ids(self) -> np.ndarray:
        """int64 [N], read-only view."""
        v = self._ids.view()
        v.flags.writeable = False
        return v

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def __contains__(self, item_id: object) -> bool:
        return self.contains(int(item_id))  # type: ignore[arg-type]

    def contains(self, item_id: int) -> bool:
        return int(item_id) in self._pos

    def metadata(self, item_id: int) -> dict[str, Any]:
        """Metadata of one id (a copy); KeyError if absent."""
        return dict(self._meta[self._pos[int(item_id)]])

    def metadata_rows(self) -> list[dict[str, Any]]:
        """Metadata of every row, in row order (shared dicts: do not mutate)."""
        return self._meta

    def code(self, item_id: int) -> np.ndarray:
        return self._codes[self._pos[int(item_id)]].copy()

    def manifest(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "num_bits": self.num_bits,
            "code_bytes": self.code_bytes,
            "model_id": self.model_id,
            "count": len(self),
            "created": self.created,
            "next_id": int(self.next_id),
            "extra": self.extra,
        }

    # --------------------------------------------------------------- mutation
    def check_packed(self, packed: np.ndarray) -> np.ndarray:
        """Validate a packed batch against this store's code length."""
        arr = np.asarray(packed)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != self.code_bytes:
            raise UserError(
                f"expected packed uint8 codes of shape [N, {self.code_bytes}] "
                f"({self.num_bits} bits), got {arr.dtype} {arr.shape}"
            )
        return np.ascontiguousarray(arr)

    def assign_ids(self, n: int) -> np.ndarray:
        """Fresh ids for n new rows (not yet added)."""
        return np.arange(self.next_id, self.next_id + n, dtype=np.int64)

    def add(
        self,
        packed: np.ndarray,
        ids: Sequence[int] | np.ndarray | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> np.ndarray:
        """Append rows; returns their ids. Duplicate ids are refused (UserError)."""
        packed = self.check_packed(packed)
        n = packed.shape[0]
        ids_arr = self.assign_ids(n) if ids is None else np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids_arr.shape[0] != n:
            raise UserError(f"got {n} codes but {ids_arr.shape[0]} ids")
        if metadata is not None and len(metadata) != n:
            raise UserError(f"got {n} codes but {len(metadata)} metadata entries")
        if (ids_arr < 0).any():
            raise UserError("ids must be non-negative (-1 marks 'no result' in searches)")
        if np.unique(ids_arr).shape[0] != n:
            raise UserError("duplicate ids within one add() call")
        clash = [int(i) for i in ids_arr if int(i) in self._pos]
        if clash:
            raise UserError(f"ids already in the index: {clash[:5]} (remove them first)")
        base = len(self)
        self._codes = np.concatenate([self._codes, packed], axis=0)
        self._ids = np.concatenate([self._ids, ids_arr], axis=0)
        for j, i in enumerate(ids_arr.tolist()):
            self._pos[i] = base + j
        self._meta.extend(dict(m or {}) for m in (metadata or [None] * n))
        if n:
            self.next_id = max(self.next_id, int(ids_arr.max()) + 1)
        return ids_arr

    def remove(self, ids: Iterable[int]) -> np.ndarray:
        """Drop rows by id; returns the ids that were present (absent ones are ignored)."""
        wanted = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
        present = np.array([i for i in wanted.tolist() if i in self._pos], dtype=np.int64)
        if present.size == 0:
            return present
        keep = ~np.isin(self._ids, present)
        self._codes = self._codes[keep]
        self._ids = self._ids[keep]
        self._meta = [m for m, k in zip(self._meta, keep.tolist()) if k]
        self._pos = {i: p for p, i in enumerate(self._ids.tolist())}
        return present

    # ------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the store to folder `path` atomically (a previous index there is replaced).

        Goes through `atomic.staged_dir`: `path` must be absent, an empty folder or an
        index (anything else is refused untouched), writers are locked out of each
        other, temp folders of killed runs are cleaned and the folder follows the umask.
        """
        with atomic.staged_dir(path, what=INDEX_WHAT, is_ours=is_index,
                               before_commit=lambda tmp, target: _before_commit(tmp, target)) as tmp:
            _save_npy(tmp / CODES_FILE, self._codes)
            _save_npy(tmp / IDS_FILE, self._ids)
            with open(tmp / META_FILE, "w", encoding="utf-8") as f:
                for m in self._meta:
                    # ensure_ascii: a file name that is not valid UTF-8 arrives as a
                    # surrogate-escaped str, which only survives as a \udcXX escape.
                    f.write(json.dumps(m, ensure_ascii=True, sort_keys=True) + "\n")
                _fsync(f)
            # Manifest last: a folder without one is never a valid index.
            with open(tmp / MANIFEST_FILE, "w", encoding="utf-8") as f:
                json.dump(self.manifest(), f, indent=2, sort_keys=True, ensure_ascii=True)
                f.write("\n")
                _fsync(f)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        expect_num_bits: int | None = None,
        expect_model_id: str | None = None,
    ) -> "CodeStore":
        """Read a folder written by `save`; refuse a mismatched code length / model.

        A damaged index (bad manifest, truncated or missing arrays, a bad metadata
        line) is a UserError naming the index and saying to rebuild it.
        """
        files = open_whole_save(path)
        try:
            man = check_manifest(path, parse_manifest(path, files[MANIFEST_FILE]))
            num_bits = man["num_bits"]
            if expect_num_bits is not None and int(expect_num_bits) != num_bits:
                raise UserError(
                    f"index {path} holds {num_bits}-bit codes but the model makes "
                    f"{expect_num_bits}-bit codes; use the model that built it or rebuild the index"
                )
            if expect_model_id is not None and str(expect_model_id) != man["model_id"]:
                raise UserError(
                    f"index {path} was built by model {man['model_id']!r}, not {expect_model_id!r}; "
                    "use the same model or rebuild the index"
                )
            store = cls(num_bits, man["model_id"], created=man.get("created"), extra=man.get("extra"))
            n = man["count"]
            codes = load_npy(path, CODES_FILE, files[CODES_FILE])
            ids = load_npy(path, IDS_FILE, files[IDS_FILE])
            meta = load_metadata(path, META_FILE, files[META_FILE])
        finally:
            for f in files.values():
                f.close()
        if codes.dtype != np.uint8 or codes.shape != (n, store.code_bytes):
            damaged(path, f"{CODES_FILE} holds {codes.dtype} {codes.shape}, expected uint8 "
                           f"{(n, store.code_bytes)}")
        if ids.dtype.kind not in "iu" or ids.shape != (n,):
            damaged(path, f"{IDS_FILE} holds {ids.dtype} {ids.shape}, expected int64 {(n,)}")
        if len(meta) != n:
            damaged(path, f"{META_FILE} has {len(meta)} rows, the manifest counts {n}")
        store._codes = np.ascontiguousarray(codes, dtype=np.uint8)
        store._ids = ids.astype(np.int64, copy=False)
        if (store._ids < 0).any() or np.unique(store._ids).shape[0] != n:
            damaged(path, f"{IDS_FILE} holds negative or duplicate ids")
        store._meta = meta
        store._pos = {i: p for p, i in enumerate(store._ids.tolist())}
        store.next_id = max(man.get("next_id", 0), int(store._ids.max()) + 1 if n else 0)
        return store


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)
        _fsync(f)


def _fsync(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())


def _before_commit(tmp: Path, target: Path) -> None:
    """Hook between 'new folder complete' and 'swap'; tests patch it to simulate crashes."""
