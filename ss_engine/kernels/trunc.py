"""One-pass kernels of the exact truncation (``protocols.truncation``), and numpy twins.

Truncation runs on every activation, gradient and weight update, and its numpy form makes
six to eight temporaries per call; these loops touch each element once.

* :func:`trunc_split` (dealer): for masks r, (r >> 63, (r mod 2^63) >> f).

The parties' side (the opened c's public part and coefficient, the share, products) is in
:mod:`.forms`.

All values are int64 ring elements (arithmetic wraps mod 2^64); 1 <= f <= 61.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["trunc_split", "trunc_split_np"]

_LOW63 = (1 << 63) - 1


@njit(cache=True, nogil=True)
def _trunc_split(r, f, msb, hi):
    low63 = np.uint64(_LOW63)
    sh = np.uint64(f)
    for i in range(r.size):
        u = np.uint64(r[i])
        msb[i] = np.int64(u >> np.uint64(63))
        hi[i] = np.int64((u & low63) >> sh)


def _check(x: np.ndarray, f: int) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.int64:
        raise TypeError(f"truncation kernels take int64 arrays, got {getattr(x, 'dtype', type(x))}")
    if not 1 <= int(f) <= 61:
        raise ValueError(f"shift must be in [1, 61], got {f}")
    return np.ascontiguousarray(x).reshape(-1)


def _two_outputs(kernel, x: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    flat = _check(x, f)
    a, b = np.empty_like(flat), np.empty_like(flat)
    kernel(flat, int(f), a, b)
    return a.reshape(x.shape), b.reshape(x.shape)


def trunc_split(r: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    return _two_outputs(_trunc_split, r, f)


def trunc_split_np(r: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    u = r.view(np.uint64)
    return ((u >> np.uint64(63)).astype(np.int64),
            ((u & np.uint64(_LOW63)) >> np.uint64(f)).astype(np.int64))
