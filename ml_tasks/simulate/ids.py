"""Deterministic, collision-free identifiers built with vectorized numpy.

Ids are bijective hashes of counters: two different counters (under the same key) can never
give the same id, and the same seed always gives the same ids.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_M32 = np.uint64(0xFFFFFFFF)


def mix64(values: np.ndarray, key: int) -> np.ndarray:
    """A bijection of uint64 (splitmix64 finalizer applied to ``values + key``)."""
    x = values.astype(np.uint64) + np.uint64(key & 0xFFFFFFFFFFFFFFFF)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def mix32(values: np.ndarray, key: int) -> np.ndarray:
    """A bijection of the 32-bit integers (lowbias32 applied to ``values + key`` mod 2**32)."""
    x = (values.astype(np.uint64) + np.uint64(key & 0xFFFFFFFF)) & _M32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & _M32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & _M32
    x ^= x >> np.uint64(16)
    return x


def hex_strings(prefix: str, values: np.ndarray, width: int) -> pa.StringArray:
    """``prefix`` followed by the low ``width`` hex digits of each value, as an Arrow array."""
    if width % 2 or not 2 <= width <= 16:
        raise ValueError("width must be an even number of hex digits between 2 and 16")
    n = len(values)
    raw = np.ascontiguousarray(values.astype(">u8")).view(np.uint8).reshape(n, 8)
    raw = raw[:, 8 - width // 2 :]
    pre = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    row = len(pre) + width
    buf = np.empty((n, row), dtype=np.uint8)
    buf[:, : len(pre)] = pre
    buf[:, len(pre) :: 2] = _HEX[raw >> 4]
    buf[:, len(pre) + 1 :: 2] = _HEX[raw & 15]
    offsets = np.arange(n + 1, dtype=np.int32) * row
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf.tobytes()))


def key_from(rng: np.random.Generator) -> int:
    """A 64-bit hash key drawn from ``rng``."""
    return int(rng.integers(0, 2**63, dtype=np.int64))
