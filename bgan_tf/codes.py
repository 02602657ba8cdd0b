"""Binary code representations shared by every module.

Codes live in three forms:
- signs: float/int array in {-1, +1}, shape [N, L] (what the model emits);
- bits: uint8 array in {0, 1}, shape [N, L] (bit = 1 where sign is +1);
- packed: uint8 array, shape [N, ceil(L / 8)], bits packed big-endian
  within each byte (numpy.packbits order, which is also FAISS's
  IndexBinary layout up to bit order inside a byte: Hamming distances are
  the same either way because both sides use the same packing).
"""

from __future__ import annotations

import numpy as np


def signs_to_bits(signs: np.ndarray) -> np.ndarray:
    """{-1,+1} (or any real: >= 0 counts as +1) -> {0,1} uint8."""
    return (np.asarray(signs) >= 0).astype(np.uint8)


def bits_to_signs(bits: np.ndarray) -> np.ndarray:
    """{0,1} -> {-1,+1} as float32."""
    return np.where(np.asarray(bits) > 0, 1.0, -1.0).astype(np.float32)


def pack(signs_or_bits: np.ndarray) -> np.ndarray:
    """[N, L] signs or bits -> [N, ceil(L/8)] packed uint8."""
    arr = np.asarray(signs_or_bits)
    bits = arr if arr.dtype == np.uint8 else signs_to_bits(arr)
    return np.packbits(bits, axis=-1)


def unpack(packed: np.ndarray, num_bits: int) -> np.ndarray:
    """[N, ceil(L/8)] packed uint8 -> [N, L] {-1,+1} float32."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=-1, count=num_bits)
    return bits_to_signs(bits)


def to_hex(packed: np.ndarray) -> list[str]:
    """One hex string per packed code."""
    return [bytes(row).hex() for row in np.asarray(packed, dtype=np.uint8)]


def hamming_distances(query_packed: np.ndarray, db_packed: np.ndarray) -> np.ndarray:
    """Exact Hamming distances [Q, N] between packed codes (int32)."""
    q = np.asarray(query_packed, dtype=np.uint8)
    d = np.asarray(db_packed, dtype=np.uint8)
    x = np.bitwise_xor(q[:, None, :], d[None, :, :])
    return np.bitwise_count(x).sum(axis=-1, dtype=np.int32)
