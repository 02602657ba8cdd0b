"""Reading an index folder's files: the manifest, checked, and all files of one save.

`bgan_tf.search.store.CodeStore` writes the folder (see its docstring for the layout);
this module reads it back. `read_manifest` validates the manifest alone (cheap: no codes
are read). `open_whole_save` opens the four files of ONE save even while a writer swaps
a new save in, so a concurrent load gets the old or the new index, never a mix.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import IO, Any, NoReturn

import numpy as np

from bgan_tf import atomic
from bgan_tf.errors import UserError

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
CODES_FILE = "codes.npy"
IDS_FILE = "ids.npy"
META_FILE = "metadata.jsonl"


def is_index(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder this module wrote (it has a manifest)."""
    return (Path(path) / MANIFEST_FILE).is_file()


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Just the manifest of an index folder (cheap: no codes are read), validated."""
    target = Path(path).absolute()
    atomic.recover_dir(target, is_index)
    man_path = target / MANIFEST_FILE
    if not man_path.is_file():
        raise UserError(f"no index at {path} (missing {MANIFEST_FILE}); build one first")
    try:
        with open(man_path, "rb") as f:
            return check_manifest(path, parse_manifest(path, f))
    except OSError as e:
        raise UserError(f"cannot read the index manifest {man_path}: {e.strerror or e}") from None


def parse_manifest(path: str | os.PathLike[str], f: IO[bytes]) -> Any:
    try:
        return json.loads(f.read().decode("utf-8"))
    except ValueError as e:  # bad JSON or bad UTF-8
        damaged(path, f"{MANIFEST_FILE} is not valid JSON: {e}")


def check_manifest(path: str | os.PathLike[str], man: Any) -> dict[str, Any]:
    """The manifest's fields, type-checked (UserError naming the index when damaged)."""
    if not isinstance(man, dict):
        damaged(path, f"{MANIFEST_FILE} is not a JSON object")
    if man.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"index {path} has format version {man.get('format_version')}, "
            f"this code reads {FORMAT_VERSION}; rebuild the index"
        )
    for key, types in _MANIFEST_TYPES.items():
        if key not in man:
            if key in _MANIFEST_REQUIRED:
                damaged(path, f"{MANIFEST_FILE} lacks {key!r}")
            continue
        val = man[key]
        if not isinstance(val, types) or isinstance(val, bool):
            damaged(path, f"{MANIFEST_FILE} field {key!r} is {type(val).__name__} {val!r:.40}")
    if man["num_bits"] <= 0 or man["count"] < 0 or man.get("next_id", 0) < 0:
        damaged(path, f"{MANIFEST_FILE} has num_bits {man['num_bits']}, count {man['count']}")
    return man


# ------------------------------------------------------------------ helpers
_MANIFEST_REQUIRED = ("num_bits", "model_id", "count")
_MANIFEST_TYPES: dict[str, type | tuple[type, ...]] = {
    "num_bits": int, "model_id": str, "count": int, "next_id": int, "created": str, "extra": dict,
}


def damaged(path: str | os.PathLike[str], detail: str) -> NoReturn:
    raise UserError(f"index {path} is damaged ({detail}); rebuild it with "
                    "python -m bgan_tf.index build into a new folder")


def open_whole_save(path: str | os.PathLike[str], tries: int = 20) -> dict[str, IO[bytes]]:
    """Open every file of the index at ``path`` from ONE save (issue 27 case 12).

    A save swaps a complete new folder in (atomic.commit_dir), then deletes the old one.
    Every file is opened relative to one descriptor of the folder, so a load never mixes
    two saves, and an open file stays readable after the old folder is deleted. A file
    missing from a folder that is no longer the one at ``path`` means a writer just
    swapped: start again on the new folder. Missing from the current folder: damaged.
    """
    target = Path(path).absolute()
    atomic.recover_dir(target, is_index)
    for attempt in range(tries):
        files: dict[str, IO[bytes]] = {}
        try:
            dfd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:  # absent, or the fallback swap's window between its two renames
            if attempt >= 2:
                break
            time.sleep(0.01)
            continue
        try:
            for name in (MANIFEST_FILE, CODES_FILE, IDS_FILE, META_FILE):
                files[name] = os.fdopen(os.open(name, os.O_RDONLY, dir_fd=dfd), "rb")
            return files
        except FileNotFoundError:
            for f in files.values():
                f.close()
            try:
                swapped = os.stat(target).st_ino != os.fstat(dfd).st_ino
            except OSError:
                swapped = True
            if not swapped:
                break
        except OSError as e:
            raise UserError(f"cannot read the index {path}: {e.strerror or e}") from None
        finally:
            os.close(dfd)
    if not is_index(target):
        raise UserError(f"no index at {path} (missing {MANIFEST_FILE}); build one first")
    missing = [n for n in (CODES_FILE, IDS_FILE, META_FILE) if not (target / n).is_file()]
    damaged(path, f"{', '.join(missing) or 'a file'} is missing")


def load_npy(path: str | os.PathLike[str], name: str, f: IO[bytes]) -> np.ndarray:
    try:
        return np.load(f, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # truncated, not .npy, object arrays
        damaged(path, f"{name} is unreadable: {e.__class__.__name__}: {str(e)[:80]}")


def load_metadata(path: str | os.PathLike[str], name: str, raw: IO[bytes]) -> list[dict[str, Any]]:
    meta = []
    try:
        with io.TextIOWrapper(raw, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if not isinstance(row, dict):
                    damaged(path, f"{name} line {lineno} is not a JSON object")
                meta.append(row)
    except UnicodeDecodeError:
        damaged(path, f"{name} is not UTF-8 text")
    except OSError as e:
        raise UserError(f"cannot read {name} of the index {path}: {e.strerror or e}") from None
    return meta
