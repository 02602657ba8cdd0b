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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

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
