"""Writing outputs safely: whole or not at all, and never over someone else's files.

Every file or folder a bgan_tf command writes goes through this module:

- `write_bytes` / `write_text` / `write_json`: one file, through a temp file in the
  same folder and a rename, so a reader never sees half a file; `writing(path)` is the
  same as a file object, for writers that stream (``np.save``).
- `staged_dir(target, what=..., is_ours=...)`: a whole folder (an index, a report, a
  model folder). The caller fills a hidden temp folder beside the target; on success it
  is swapped in atomically (`commit_dir`), on failure it is removed and the target is
  untouched. A crash between the two renames of the fallback swap leaves the previous
  folder under `.NAME.old-*`, which `recover_dir` renames back.
- `claim_output(path, what, is_ours)`: the guard every writer runs first. An output path
  is accepted only when it is absent, an empty folder, or already holds what this tool
  writes (``is_ours`` looks for the tool's own marker file, e.g. an index manifest).
  Anything else is refused with a one-line `UserError`, and nothing is touched. An
  output path that is a symbolic link is followed: its target is written, the link kept.
- `check_disjoint(output, *inputs)`: refuses an output that is, contains or lies inside
  an input (``--images X --index X``).
- `output_lock(target)`: an advisory `flock` on ``.NAME.lock`` beside the target, held
  across a read-modify-write, so a second concurrent writer gets a clear error instead
  of silently losing an update. Re-entrant within a process.
- Temp names are ``.NAME.tmp-*`` beside the target; the next writer of the same target
  (holding its lock, so no live writer owns them) removes leftovers of killed runs.
- Everything is created with the permissions of the process umask, as `mkdir` and
  `open` would (`mkdtemp` / `mkstemp` alone give 0700 / 0600).

To add a new kind of output: give it a marker file, pass ``is_ours`` that checks for it,
and write it through `staged_dir` (a folder) or `write_*` (a file).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from bgan_tf.errors import UserError

TMP_INFIX = ".tmp-"
OLD_INFIX = ".old-"
LOCK_SUFFIX = ".lock"

IsOurs = Callable[[Path], bool]

_umask_lock = threading.Lock()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read a megabyte at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def current_umask() -> int:
    """The process umask (read without leaving it changed)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def umask_mode(mode: int) -> int:
    """``mode`` as `open`/`mkdir` would apply it under the current umask."""
    return mode & ~current_umask()


def open_up(folder: str | os.PathLike[str]) -> None:
    """Give a folder tree made with mkdtemp/mkstemp the modes mkdir/open would have given."""
    dmode, fmode = umask_mode(0o777), umask_mode(0o666)
    for root, _dirs, files in os.walk(folder):
        os.chmod(root, dmode)
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                os.chmod(p, fmode)


# ---------------------------------------------------------------- single files
@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file object whose contents replace ``path`` only if the block succeeds.

    For writers that stream (``np.save``, ``Image.save``) rather than hold the bytes:
    the file is a temp file in the same folder, renamed over ``path`` at the end.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + TMP_INFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` through a temp file in the same folder, then rename."""
    with writing(path) as f:
        f.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) atomically: a reader never sees half a file."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


# ---------------------------------------------------------------- output guard
def _describe(path: Path) -> str:
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return ""
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f" ({len(names)} entries: {shown})"


def is_empty_dir(path: Path) -> bool:
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except OSError:
        return False


def resolve_output(path: str | os.PathLike[str], what: str = "output") -> Path:
    """The absolute folder an output path names; a symbolic link is followed.

    Why: swapping a new folder in at the link's own path replaced the link by a real
    folder, left its target stale and a temp link behind (issue 27 case 13). Writing at
    the link's target keeps the link and updates what it points to; locks, temps and the
    swap all use this path. A broken link is refused (UserError, nothing touched).
    """
    p = Path(path).absolute()
    if not p.is_symlink():
        return p
    if not p.exists():
        raise UserError(f"{path} is a broken symbolic link; choose another path for the {what}")
    return Path(os.path.realpath(p))


def claim_output(path: str | os.PathLike[str], what: str, is_ours: IsOurs) -> Path:
    """Refuse ``path`` as the output folder unless it is absent, empty or already ``what``.

    Returns the absolute path (a symbolic link's target, see `resolve_output`). Raises
    UserError (nothing touched) when the path is a file, is not writable, or is a folder
    holding anything else.
    """
    p = resolve_output(path, what)
    if p.exists() and not p.is_dir():
        raise UserError(f"{path} is a file, not a folder; choose another path for the {what} "
                        "(nothing was changed)")
    if p.is_dir() and not is_empty_dir(p) and not is_ours(p):
        raise UserError(f"{path} already holds files that are not a {what}{_describe(p)}; "
                        f"choose a new or empty folder (nothing was changed)")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot create {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.is_dir() and not os.access(p, os.W_OK | os.X_OK)):
        raise UserError(f"cannot write the {what} at {path}: permission denied; choose a writable path")
    return p


def check_disjoint(output: str | os.PathLike[str], *inputs: str | os.PathLike[str] | None,
                   what: str = "output") -> None:
    """UserError when the output folder is, contains or lies inside one of the inputs."""
    out = Path(os.path.realpath(output))
    for inp in inputs:
        if inp is None:
            continue
        i = Path(os.path.realpath(inp))
        if out == i or i in out.parents or out in i.parents:
            raise UserError(f"the {what} {output} overlaps the input {inp}; write it somewhere "
                            "outside the input (nothing was changed)")


# ---------------------------------------------------------------- locking
_held: dict[str, list] = {}  # lock path -> [fd, depth]
_held_lock = threading.RLock()


def lock_path(target: str | os.PathLike[str]) -> Path:
    t = resolve_output(target)
    return t.parent / f".{t.name}{LOCK_SUFFIX}"


@contextlib.contextmanager
def output_lock(target: str | os.PathLike[str], what: str = "output") -> Iterator[None]:
    """Hold an exclusive advisory lock on ``target`` for the duration (re-entrant).

    A second process asking for the same target gets a UserError at once.
    """
    lp = lock_path(target)
    key = str(lp)
    with _held_lock:
        if key in _held:
            _held[key][1] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_lock:
                _held[key][1] -= 1
        return
    lp.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lp, os.O_RDWR | os.O_CREAT, umask_mode(0o666))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"another process is writing the {what} at {target} (it holds {lp.name}); "
                        "wait for it to finish, then run again") from None
    with _held_lock:
        _held[key] = [fd, 1]
    try:
        yield
    finally:
        with _held_lock:
            _held[key][1] -= 1
            done = _held[key][1] == 0
            if done:
                del _held[key]
        if done:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


# ---------------------------------------------------------------- whole folders
def make_temp_dir(target: Path) -> Path:
    """A hidden, umask-mode temp folder beside ``target`` (``.NAME.tmp-*``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{TMP_INFIX}", dir=target.parent))
    os.chmod(tmp, umask_mode(0o777))
    return tmp


def clean_stale(target: str | os.PathLike[str]) -> list[Path]:
    """Remove ``.NAME.tmp-*`` and (when NAME exists) ``.NAME.old-*`` left by killed runs.

    Call it only while holding `output_lock(target)`: then no live writer owns them.
    """
    t = resolve_output(target)
    if not t.parent.is_dir():
        return []
    removed = []
    patterns = [f".{t.name}{TMP_INFIX}*"]
    if t.exists():
        patterns.append(f".{t.name}{OLD_INFIX}*")
    for pat in patterns:
        for p in t.parent.glob(pat):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
            removed.append(p)
    return removed


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit_dir(tmp: Path, target: Path, is_ours: IsOurs, what: str = "output") -> None:
    """Make the complete folder ``tmp`` become ``target``.

    New (or empty) target: one rename. Existing target: it must pass ``is_ours`` (checked
    again here, so no caller can replace a stranger's folder), then an atomic exchange where
    the kernel supports it; otherwise target is renamed aside to ``.NAME.old-*``, tmp renamed
    in, and the old one deleted. A crash between those two renames leaves only the
    ``.old-*`` folder, which `recover_dir` renames back.
    """
    if target.is_dir() and is_empty_dir(target):
        target.rmdir()
    if not target.exists():
        os.rename(tmp, target)
    else:
        if not target.is_dir() or not is_ours(target):
            raise UserError(f"{target} changed while the {what} was written and no longer holds a "
                            f"{what}; nothing was replaced")
        if _renameat2_exchange(tmp, target):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous version
        else:
            old = target.parent / f".{target.name}{OLD_INFIX}{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
    fsync_dir(target.parent)


def recover_dir(target: str | os.PathLike[str], is_ours: IsOurs) -> None:
    """If a fallback swap was interrupted, restore the newest complete previous folder."""
    t = Path(target).absolute()
    if t.is_symlink() and t.exists():
        t = resolve_output(t)
    if t.exists() or not t.parent.is_dir():
        return
    olds = sorted((p for p in t.parent.glob(f".{t.name}{OLD_INFIX}*") if p.is_dir() and is_ours(p)),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    if olds:
        os.rename(olds[0], t)


def _noop(tmp: Path, target: Path) -> None:
    """Default hook between 'folder complete' and 'swap'."""


@contextlib.contextmanager
def staged_dir(target: str | os.PathLike[str], *, what: str, is_ours: IsOurs,
               before_commit: Callable[[Path, Path], None] = _noop) -> Iterator[Path]:
    """Write a whole folder: yields a temp folder to fill; swapped in on success.

    Holds `output_lock(target)` throughout, refuses a target that `claim_output` refuses,
    and cleans temp leftovers of killed runs first. On any exception the temp folder is
    removed and the target is left exactly as it was.
    """
    t = resolve_output(target, what)
    with output_lock(t, what):
        recover_dir(t, is_ours)
        claim_output(t, what, is_ours)
        clean_stale(t)
        tmp = make_temp_dir(t)
        try:
            yield tmp
            before_commit(tmp, t)
            commit_dir(tmp, t, is_ours, what)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
