"""One-pass kernels of the exact truncation (``protocols.truncation``), and numpy twins.

Truncation runs on every activation, gradient and weight update, and its numpy form makes
six to eight temporaries per call; these loops touch each element once.

* :func:`trunc_split` (dealer): for masks r, (r >> 63, (r mod 2^63) >> f).
* :func:`trunc_open_parts` (both parties): for the opened c = x + 2^62 + r,
  ``public = (c mod 2^63) >> f + 2^(63-f) c_msb - 2^(62-f)`` and
  ``coeff = (1 - 2 c_msb) 2^(63-f)``.

All values are int64 ring elements (arithmetic wraps mod 2^64); 1 <= f <= 61.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["trunc_split", "trunc_split_np", "trunc_open_parts", "trunc_open_parts_np"]

_LOW63 = (1 << 63) - 1


@njit(cache=True, nogil=True)
def _trunc_split(r, f, msb, hi):
    low63 = np.uint64(_LOW63)
    sh = np.uint64(f)
    for i in range(r.size):
        u = np.uint64(r[i])
        msb[i] = np.int64(u >> np.uint64(63))
        hi[i] = np.int64((u & low63) >> sh)


@njit(cache=True, nogil=True)
def _trunc_open_parts(c, f, public, coeff):
    low63 = np.uint64(_LOW63)
    sh = np.uint64(f)
    up = np.int64(63 - f)
    offset = np.int64(1) << np.int64(62 - f)
    for i in range(c.size):
        u = np.uint64(c[i])
        msb = np.int64(u >> np.uint64(63))
        public[i] = np.int64((u & low63) >> sh) + (msb << up) - offset
        coeff[i] = (np.int64(1) - np.int64(2) * msb) << up


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


def trunc_open_parts(c: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    return _two_outputs(_trunc_open_parts, c, f)


def trunc_open_parts_np(c: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    cu = c.view(np.uint64)
    c_msb = (cu >> np.uint64(63)).astype(np.int64)
    public = ((cu & np.uint64(_LOW63)) >> np.uint64(f)).astype(np.int64)
    public += (c_msb << np.int64(63 - f)) - np.int64(1 << (62 - f))
    return public, (1 - 2 * c_msb) << np.int64(63 - f)
