"""What the benchmarks record about the CPU they ran on: one reader of /proc/cpuinfo.

Each benchmark picks the SIMD extensions its numbers depend on from ``cpu_flags()``
(popcount and AVX-512 for search, VNNI for int8, FMA for float work).
"""

from __future__ import annotations

import platform


def _cpuinfo_lines() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read().splitlines()
    except OSError:  # not Linux: the model falls back to platform, the flags are unknown
        return []


def cpu_model() -> str:
    """The first CPU's model name, e.g. "AMD EPYC"."""
    for line in _cpuinfo_lines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def cpu_flags() -> set[str]:
    """The first CPU's feature flags (x86 ``flags``, ARM ``Features``); empty when unknown."""
    for line in _cpuinfo_lines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()
