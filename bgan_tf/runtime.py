"""Process-wide settings every bgan_tf binary applies before it does any work.

`tune_allocator()`: glibc malloc serves allocations above a dynamic threshold (128 KB
at first) with a fresh ``mmap`` and returns them with ``munmap``, and trims the heap
whenever 128 KB at its top is free. TensorFlow allocates and frees tensors of a few MB
on every training and encoding step, so each step maps, faults in and unmaps the same
memory again, and half the CPU time of a training run went to the kernel. Keeping such
blocks in the heap (mmap only above 32 MB, trim only above 1 GB, grow the heap 64 MB at a
time) removes most of those page faults for about 10% more resident memory;
benchmarks/allocator.py measures both settings on the digits job and writes
benchmarks/results/allocator.md. Set BGAN_TF_MALLOC_TUNING=0 to keep glibc's
defaults. Other C libraries (musl, macOS) are left alone.

`quiet_tensorflow_import()`: TensorFlow's C++ library logs notices while it loads that
``TF_CPP_MIN_LOG_LEVEL=3`` no longer silences (tensorflow/tensorflow#100442): on CPUs
where oneDNN is on by default (AVX512_VNNI, AMX) every binary's output began with
"oneDNN custom operations are on ..." twice and absl's "All log messages before
absl::InitializeLog() ..." line, so a bad input's one ``error:`` line came fourth. The
first ``import tensorflow``, wherever a binary makes it, now runs with file descriptor 2
captured; what TensorFlow wrote there is then passed on without those notice lines.
oneDNN itself stays on (turning it off to silence the notice costs 2-3x on the CPU).

`quiet_library_logs()`: libraries that log their own workings at INFO through Python's
logging, which absl's handler prints once a binary sets INFO: FAISS's loader wrote six
lines ("Loading faiss with AVX512 support.", "Could not load library with AVX512 support
due to: ModuleNotFoundError(...)", ...) whenever it was first imported, and TensorFlow's
checkpoint saver (through absl.logging) one "Sharding callback duration: N microseconds" line at every save
(each epoch of training). `errors.cli_run` drops them for every binary;
``quiet_library_logs(verbose=True)`` (``train --verbose``) brings them back, and so does
``TF_CPP_MIN_LOG_LEVEL=0`` for TensorFlow's, as it asks TensorFlow for all its logs.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20

_tuned: bool | None = None


def tune_allocator() -> bool:
    """Apply the malloc settings above once per process; True when they are in force."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if os.environ.get("BGAN_TF_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        # gnu_get_libc_version exists only in glibc: other C libraries keep their defaults.
        libc.gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD)))
    _tuned = ok
    return ok


# Lines TensorFlow's C++ side writes to stderr while it loads, dropped by the quiet import.
TENSORFLOW_IMPORT_NOTICES = (
    "oneDNN custom operations are on",
    "All log messages before absl::InitializeLog() is called are written to STDERR",
)


@contextlib.contextmanager
def stderr_without(notices: Sequence[str]) -> Iterator[None]:
    """Capture file descriptor 2 (C and C++ writes too); on exit pass on every captured
    line that contains none of ``notices``."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                captured.seek(0)
                lines = captured.read().splitlines(keepends=True)
                kept = b"".join(line for line in lines if not any(n.encode() in line for n in notices))
                if kept:
                    os.write(2, kept)
    finally:
        os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    """Runs a module's loader under ``stderr_without``, then gets out of the way: the
    module keeps its own loader."""

    def __init__(self, loader: importlib.abc.Loader, notices: Sequence[str]):
        self._loader, self._notices = loader, tuple(notices)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self._loader
        with stderr_without(self._notices):
            self._loader.exec_module(module)


class _QuietFinder(importlib.abc.MetaPathFinder):
    def __init__(self, name: str, notices: Sequence[str]):
        self.name, self.notices = name, tuple(notices)

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        if self in sys.meta_path:  # the first import only
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self.notices)
        return spec


def quiet_import(name: str, notices: Sequence[str]) -> importlib.abc.MetaPathFinder | None:
    """Make the first import of top-level module ``name`` drop ``notices`` lines from
    stderr. Returns the installed finder (None when ``name`` is already imported)."""
    if name in sys.modules:
        return None
    finder = _QuietFinder(name, notices)
    sys.meta_path.insert(0, finder)
    return finder


def quiet_tensorflow_import() -> None:
    """`quiet_import` for TensorFlow and its load-time notices (see the module docstring)."""
    quiet_import("tensorflow", TENSORFLOW_IMPORT_NOTICES)


# Python loggers whose INFO lines are about the library itself, and the messages (by their
# start) TensorFlow logs through absl about its internals at every epoch: see the docstring.
QUIET_LOGGERS = ("faiss.loader",)
TENSORFLOW_CHATTER = ("Sharding callback duration",)


class _DropMessages(logging.Filter):
    """Drops records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: Sequence[str]):
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


_tensorflow_filter = _DropMessages(TENSORFLOW_CHATTER)


def quiet_library_logs(verbose: bool = False) -> None:
    """Silence the library chatter above unless ``verbose``; callable again to switch.

    Works whether or not FAISS or TensorFlow is imported yet (a logger is configured by
    name before its library creates it) and imports neither."""
    # TensorFlow's checkpoint code logs with absl.logging, i.e. to absl's own logger (which
    # must come from absl: a plain logging.getLogger("absl") made first would replace it).
    from absl import logging as absl_logging

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    absl_logger = absl_logging.get_absl_logger()
    if verbose or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") == "0":
        absl_logger.removeFilter(_tensorflow_filter)
    else:
        absl_logger.addFilter(_tensorflow_filter)  # (adding the same filter twice keeps one)
