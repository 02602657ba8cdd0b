"""What the search service may read from disk, and how it names paths to clients.

The security rule (docs/search.md, "What the service may read"): ``GET /images/{id}``
serves a file only when the path recorded for that id resolves (``os.path.realpath``,
relative paths against the image root, never the server's working folder) to a
regular file inside the real path of one of the index's recorded image roots
(``extra["image_roots"]``: every folder ``python -m bgan_tf.index build`` read into
it; older indexes record one ``extra["image_root"]``). A symlink
inside the root whose target stays inside it is served; one that leaves the root,
absolute or ``..`` paths in ``metadata.jsonl`` that land outside, devices, FIFOs and
folders are not. An index that records no root serves no file at all.

The check and the open cannot be raced: after resolving, `open_indexed_file` walks
the resolved path down from the root one component at a time with ``O_NOFOLLOW``
(``openat`` on the previous folder's descriptor), so a component swapped for a
symlink after the check fails to open instead of being followed, and the file is
served from the descriptor it checked (``fstat``: a regular file).

Paths shown to clients never leave the server as they are: an indexed file's path is
shown relative to the image root, and any other absolute or ``..`` path (the model
folder in /stats, a doctored metadata row) by its last component.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any, Iterator

from bgan_tf.search.binary_index import BinaryIndex

_CHUNK = 256 * 1024  # bytes per read when streaming an image file
_MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif",
                ".bmp": "image/bmp", ".webp": "image/webp", ".tif": "image/tiff", ".tiff": "image/tiff"}
_SPEC_PATH = re.compile(r"^([A-Za-z][A-Za-z0-9_+.-]*:)(/(?!/).*)$")  # e.g. folder:/data/imgs


def recorded_roots(index: BinaryIndex) -> list[str]:
    """The image roots the index's builds recorded, first build first.

    ``extra["image_roots"]`` (one per folder a build read) and the older single
    ``extra["image_root"]``; anything that is not an absolute path is ignored.
    """
    extra = index.store.extra
    listed = extra.get("image_roots")
    candidates = ([extra.get("image_root")] + (list(listed) if isinstance(listed, list) else []))
    roots: list[str] = []
    for r in candidates:
        if isinstance(r, str) and r and "\0" not in r and os.path.isabs(r):
            r = os.path.normpath(r)
            if r not in roots:
                roots.append(r)
    return roots


def recorded_root(index: BinaryIndex) -> str | None:
    """The first recorded image root (what paths are shown relative to), or None."""
    roots = recorded_roots(index)
    return roots[0] if roots else None


def image_root(index: BinaryIndex) -> str | None:
    """The folder indexed paths are shown relative to, or None when there is none.

    ``extra["image_root"]`` when the index records it; else the common folder of the
    indexed absolute paths, one level up when every item carries the same label and
    that folder is named after it (a folder with a single class subfolder). Only for
    naming: files are served from the recorded root alone (`open_indexed_file`).
    """
    recorded = recorded_root(index)
    if recorded:
        return recorded
    rows = [m for m in index.store.metadata_rows() if isinstance(m.get("path"), str) and m["path"]]
    if not rows or not all(os.path.isabs(m["path"]) for m in rows):
        return None
    try:
        common = os.path.commonpath([os.path.dirname(os.path.normpath(m["path"])) for m in rows])
    except ValueError:
        return None
    labels = {m.get("label") for m in rows}
    if len(labels) == 1 and None not in labels and os.path.basename(common) == str(next(iter(labels))):
        common = os.path.dirname(common)
    return common


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([root, path]) == root and path != root
    except ValueError:  # absolute and relative mixed
        return False


def _escapes(path: str) -> bool:
    """Whether a relative path climbs out of the folder it is relative to."""
    p = os.path.normpath(path)
    return p == ".." or p.startswith(".." + os.sep)


def shown_path(path: str, root: str | None) -> str:
    """``path`` relative to ``root`` when inside it, else its last component.

    A relative path is taken relative to ``root``; one whose ``..`` climbs out of it
    is shown by its last component like any outside path.
    """
    p = os.path.normpath(path)
    if root and not os.path.isabs(p) and not _escapes(p):
        return p.replace(os.sep, "/")
    if root and os.path.isabs(p) and _inside(p, root):
        return os.path.relpath(p, root).replace(os.sep, "/")
    return os.path.basename(p)


def hide_paths(value: Any, root: str | None) -> Any:
    """A JSON-able value with every absolute or ``..``-escaping path string replaced by
    `shown_path` (so `/etc/passwd` and `../../etc/hostname` leave as `passwd`, `hostname`)."""
    if isinstance(value, dict):
        return {k: hide_paths(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [hide_paths(v, root) for v in value]
    if isinstance(value, str) and len(value) > 1:
        if (os.path.isabs(value) and not value.startswith("//")) or _escapes(value):
            return shown_path(value, root)
        m = _SPEC_PATH.match(value)
        if m:
            return m.group(1) + shown_path(m.group(2), root)
    return value


class NotServed(Exception):
    """The file of an id is not served; the message says why (safe to show a client)."""


def open_indexed_file(index: BinaryIndex, item_id: int) -> tuple[int, int]:
    """(open read-only descriptor, size) of the file recorded for ``item_id``.

    NotServed when the id is absent, the index records no image root, or the path does
    not resolve to a regular file inside the root's real path (module docstring). The
    caller owns (and must close) the descriptor.
    """
    if item_id not in index:
        raise NotServed(f"no item {item_id} in the index")
    roots = recorded_roots(index)
    if not roots:
        raise NotServed("this index records no image root, so no image file is served; "
                        "rebuild it with python -m bgan_tf.index build")
    path = index.store.metadata(item_id).get("path")
    unavailable = NotServed(f"image of item {item_id} is not available")
    if not isinstance(path, str) or not path or "\0" in path:
        raise unavailable
    # Relative paths are relative to the first root, never to the server's working folder;
    # an absolute one is served from whichever recorded root holds it.
    real_root = real = ""
    for root in roots if os.path.isabs(path) else roots[:1]:
        real_root = os.path.realpath(root)
        real = os.path.realpath(os.path.join(real_root, path))
        if _inside(real, real_root):
            break
    else:
        raise unavailable
    parts = os.path.relpath(real, real_root).split(os.sep)
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    try:
        dir_fd = os.open(real_root, flags | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        raise unavailable from None
    try:
        for part in parts[:-1]:
            nxt = os.open(part, flags | nofollow | getattr(os, "O_DIRECTORY", 0), dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = nxt
        # O_NONBLOCK: opening a FIFO planted in the root must not hang the request.
        fd = os.open(parts[-1], flags | nofollow | getattr(os, "O_NONBLOCK", 0), dir_fd=dir_fd)
    except OSError:  # gone, a symlink swapped in (ELOOP), not a folder, no permission
        raise unavailable from None
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise unavailable
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, int(st.st_size)


def file_chunks(fd: int, size: int) -> Iterator[bytes]:
    """The first ``size`` bytes of an open file (from `open_indexed_file`), in chunks;
    closes the descriptor when done or abandoned."""
    try:
        left = size
        while left > 0:
            chunk = os.read(fd, min(_CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
    finally:
        os.close(fd)


def media_type(path: object) -> str:
    """The content type an indexed file is served with, from its extension."""
    ext = os.path.splitext(path)[1].lower() if isinstance(path, str) else ""
    return _MEDIA_TYPES.get(ext, "application/octet-stream")
