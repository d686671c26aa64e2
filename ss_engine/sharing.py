"""Two-party additive secret sharing over Z_2^64 and XOR sharing of bit-packed words."""
from __future__ import annotations

import numpy as np

from .encoding import as_ring
from .prg import PRG

__all__ = ["share", "reconstruct", "share_xor", "reconstruct_xor"]


def share(secret, prg: PRG) -> tuple[np.ndarray, np.ndarray]:
    """Split ring elements into (s0, s1) with s0 uniform and s0 + s1 = secret mod 2^64."""
    x = as_ring(secret)
    s0 = prg.random_int64(x.shape)
    return s0, x - s0


def reconstruct(s0, s1) -> np.ndarray:
    a, b = as_ring(s0), as_ring(s1)
    if a.shape != b.shape:
        raise ValueError(f"share shapes differ: {a.shape} vs {b.shape}")
    return a + b


def share_xor(secret_words, prg: PRG) -> tuple[np.ndarray, np.ndarray]:
    w = np.ascontiguousarray(secret_words).view(np.uint64) if np.asarray(secret_words).dtype == np.int64 \
        else np.ascontiguousarray(secret_words, dtype=np.uint64)
    s0 = prg.random_uint64(w.shape)
    return s0, w ^ s0


def reconstruct_xor(s0, s1) -> np.ndarray:
    return np.asarray(s0, dtype=np.uint64) ^ np.asarray(s1, dtype=np.uint64)
