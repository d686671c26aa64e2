"""Matrix products over the ring Z_2^64 (int64 with wrap-around), and their numpy twins.

Choice of method, measured on the 2-core Xeon (AVX-512), numba 0.68, numpy 2.4 (OpenBLAS),
minimum of 20-40 runs.  "idle": machine otherwise quiet; "busy": other jobs running (load
average ~2.5), as reported by ``python -m benchmarks.micro_kernels``:

=====================  =========  ===============  ===============  ==========  ===========
shape                  numpy @    kernel 2 thr.    kernel 1 thr.    f64 BLAS @  limb-split
=====================  =========  ===============  ===============  ==========  ===========
128x784 @ 784x128      13.7 ms    1.15 (busy 1.4)  2.2 (busy 2.3)   0.24 ms     >= 1.45 ms
128x128 @ 128x128       2.2 ms    0.18 (busy 0.4)  0.38             0.05 ms     >= 0.30 ms
784x128 @ 128x128      13.7 ms    1.11 (busy 2.5)  2.3 (busy 2.9)   0.21 ms     >= 1.26 ms
128x128 @ 128x10        0.08 ms   0.035            0.035            0.01 ms     -
=====================  =========  ===============  ===============  ==========  ===========

* numpy's integer ``@`` is a plain loop without BLAS.
* Limb-split float64 (the last column is only its BLAS part): exact float products need
  ``2*limb_bits + log2(k) <= 53``; balanced (signed) 22-bit limbs cover 64 bits with three
  limbs and the six limb pairs whose shift is below 64 are needed, i.e. six BLAS products
  (merging pairs of equal shift along k saves no flops) plus the split and recombination.
  Even with a free split it loses to the integer kernel at every shape we use (a plain
  numpy split + recombine measured 12 ms on the first shape), and it gets worse as k grows
  (k > 512 needs narrower limbs).  Not used.
* Used for every shape: a dot-product form (``b`` transposed once, free when the caller
  passes ``w.T`` of a C-contiguous ``w``), a 4x4 register block of 16 independent
  accumulators that LLVM vectorises along k (``vpmullq``), ``prange`` over blocks of 4 output
  rows.  An ikj ("axpy") variant was 1.3-2x slower at every shape, including the im2col
  products with k = 25 and 400.  Small products run the serial twin (threshold in
  ``_runtime``).  Forcing 512-bit vectors (``NUMBA_CPU_FEATURES`` with ``-prefer-256-bit``)
  gained a further ~10-40% but is a process-global setting and is not done.

Public API: :func:`ring_matmul` (2-D), :func:`ring_matmul_batched` (3-D, a 2-D operand
broadcasts), :func:`ring_matmul_any` (``np.matmul`` semantics: 1-D operands, any number of
broadcast leading axes, any strides), :func:`ring_matmul_bt` (the kernel's own layout: the
right operand given transposed, into an output it may add to: a Beaver product's two terms
land in one array with no copies).  Twins: ``*_np`` (plain ``np.matmul`` on int64, which
wraps silently), bit-for-bit equal.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._runtime import parallel_slot

__all__ = ["ring_matmul", "ring_matmul_batched", "ring_matmul_any", "ring_matmul_bt",
           "ring_matmul_np", "ring_matmul_batched_np", "ring_matmul_any_np", "ring_matmul_bt_np"]

# --------------------------------------------------------------------------- micro-kernels
# Each computes a small block of c = a @ bt.T from full rows of a (m, k) and bt (n, k).


@njit(cache=True)
def _block_4x4(a, bt, c, i, j, acc):
    # acc = 1 adds to what c holds, 0 overwrites it
    k = a.shape[1]
    s00, s01, s02, s03 = c[i, j] * acc, c[i, j + 1] * acc, c[i, j + 2] * acc, c[i, j + 3] * acc
    s10, s11, s12, s13 = c[i + 1, j] * acc, c[i + 1, j + 1] * acc, c[i + 1, j + 2] * acc, c[i + 1, j + 3] * acc
    s20, s21, s22, s23 = c[i + 2, j] * acc, c[i + 2, j + 1] * acc, c[i + 2, j + 2] * acc, c[i + 2, j + 3] * acc
    s30, s31, s32, s33 = c[i + 3, j] * acc, c[i + 3, j + 1] * acc, c[i + 3, j + 2] * acc, c[i + 3, j + 3] * acc
    for p in range(k):
        a0 = a[i, p]
        a1 = a[i + 1, p]
        a2 = a[i + 2, p]
        a3 = a[i + 3, p]
        b0 = bt[j, p]
        b1 = bt[j + 1, p]
        b2 = bt[j + 2, p]
        b3 = bt[j + 3, p]
        s00 += a0 * b0
        s01 += a0 * b1
        s02 += a0 * b2
        s03 += a0 * b3
        s10 += a1 * b0
        s11 += a1 * b1
        s12 += a1 * b2
        s13 += a1 * b3
        s20 += a2 * b0
        s21 += a2 * b1
        s22 += a2 * b2
        s23 += a2 * b3
        s30 += a3 * b0
        s31 += a3 * b1
        s32 += a3 * b2
        s33 += a3 * b3
    c[i, j] = s00
    c[i, j + 1] = s01
    c[i, j + 2] = s02
    c[i, j + 3] = s03
    c[i + 1, j] = s10
    c[i + 1, j + 1] = s11
    c[i + 1, j + 2] = s12
    c[i + 1, j + 3] = s13
    c[i + 2, j] = s20
    c[i + 2, j + 1] = s21
    c[i + 2, j + 2] = s22
    c[i + 2, j + 3] = s23
    c[i + 3, j] = s30
    c[i + 3, j + 1] = s31
    c[i + 3, j + 2] = s32
    c[i + 3, j + 3] = s33


@njit(cache=True)
def _block_4x1(a, bt, c, i, j, acc):
    k = a.shape[1]
    s0, s1, s2, s3 = c[i, j] * acc, c[i + 1, j] * acc, c[i + 2, j] * acc, c[i + 3, j] * acc
    for p in range(k):
        b = bt[j, p]
        s0 += a[i, p] * b
        s1 += a[i + 1, p] * b
        s2 += a[i + 2, p] * b
        s3 += a[i + 3, p] * b
    c[i, j] = s0
    c[i + 1, j] = s1
    c[i + 2, j] = s2
    c[i + 3, j] = s3


@njit(cache=True)
def _block_1x4(a, bt, c, i, j, acc):
    k = a.shape[1]
    s0, s1, s2, s3 = c[i, j] * acc, c[i, j + 1] * acc, c[i, j + 2] * acc, c[i, j + 3] * acc
    for p in range(k):
        x = a[i, p]
        s0 += x * bt[j, p]
        s1 += x * bt[j + 1, p]
        s2 += x * bt[j + 2, p]
        s3 += x * bt[j + 3, p]
    c[i, j] = s0
    c[i, j + 1] = s1
    c[i, j + 2] = s2
    c[i, j + 3] = s3


@njit(cache=True)
def _block_1x1(a, bt, c, i, j, acc):
    k = a.shape[1]
    s = c[i, j] * acc
    for p in range(k):
        s += a[i, p] * bt[j, p]
    c[i, j] = s


@njit(cache=True)
def _row_block(a, bt, c, i, acc):
    """Rows i .. min(i + 4, m) of c = a @ bt.T (c += a @ bt.T with acc = 1)."""
    m = a.shape[0]
    n = bt.shape[0]
    n4 = n - n % 4
    if i + 4 <= m:
        for j in range(0, n4, 4):
            _block_4x4(a, bt, c, i, j, acc)
        for j in range(n4, n):
            _block_4x1(a, bt, c, i, j, acc)
    else:
        for r in range(i, m):
            for j in range(0, n4, 4):
                _block_1x4(a, bt, c, r, j, acc)
            for j in range(n4, n):
                _block_1x1(a, bt, c, r, j, acc)


# --------------------------------------------------------------------------- drivers
# a: (Ba, m, k), bt: (Bb, n, k), c: (B, m, n); Ba and Bb are B or 1 (broadcast).


@njit(parallel=True, nogil=True, cache=True)
def _matmul_bt_par(a, bt, c, acc):
    batch, m = c.shape[0], c.shape[1]
    row_blocks = (m + 3) // 4
    for t in prange(batch * row_blocks):
        q = t // row_blocks
        i = (t - q * row_blocks) * 4
        ia = q if a.shape[0] > 1 else 0
        ib = q if bt.shape[0] > 1 else 0
        _row_block(a[ia], bt[ib], c[q], i, acc)


@njit(nogil=True, cache=True)
def _matmul_bt_ser(a, bt, c, acc):
    batch, m = c.shape[0], c.shape[1]
    for q in range(batch):
        ia = q if a.shape[0] > 1 else 0
        ib = q if bt.shape[0] > 1 else 0
        for i in range(0, m, 4):
            _row_block(a[ia], bt[ib], c[q], i, acc)


# --------------------------------------------------------------------------- wrappers


def _check_int64(*arrays: np.ndarray) -> None:
    for x in arrays:
        if not isinstance(x, np.ndarray) or x.dtype != np.int64:
            raise TypeError(f"ring kernels take int64 ndarrays, got "
                            f"{type(x).__name__} of dtype {getattr(x, 'dtype', None)}")


def _run_bt(a3: np.ndarray, bt3: np.ndarray, batch: int, c: np.ndarray | None = None,
            acc: int = 0) -> np.ndarray:
    """c[q] (+)= a3[q or 0] @ bt3[q or 0].T for q < batch; a3, bt3 C-contiguous int64 3-D."""
    m, k, n = a3.shape[1], a3.shape[2], bt3.shape[1]
    if c is None:
        c = np.empty((batch, m, n), dtype=np.int64)
    if c.size == 0:
        return c
    with parallel_slot(batch * m * n * max(k, 1)) as par:
        (_matmul_bt_par if par else _matmul_bt_ser)(a3, bt3, c, np.int64(acc))
    return c


def ring_matmul_bt(a: np.ndarray, bt: np.ndarray, out: np.ndarray | None = None,
                   accumulate: bool = False) -> np.ndarray:
    """a @ bt.T mod 2^64 for C-contiguous (m, k) ``a`` and (n, k) ``bt`` (the right operand
    already transposed: no copy), into ``out`` (a C-contiguous (m, n) int64 array, or a new
    one); with ``accumulate``, added to what ``out`` holds."""
    _check_int64(a, bt)
    if a.ndim != 2 or bt.ndim != 2 or a.shape[1] != bt.shape[1]:
        raise ValueError(f"ring_matmul_bt needs (m, k) and (n, k), got {a.shape} and {bt.shape}")
    if not (a.flags.c_contiguous and bt.flags.c_contiguous):
        raise ValueError("ring_matmul_bt takes C-contiguous operands")
    m, n = a.shape[0], bt.shape[0]
    if out is None:
        if accumulate:
            raise ValueError("accumulating needs an output")
        out = np.empty((m, n), np.int64)
    elif out.shape != (m, n) or out.dtype != np.int64 or not out.flags.c_contiguous:
        raise ValueError(f"ring_matmul_bt's output must be a C-contiguous int64 {(m, n)}")
    _run_bt(a[None], bt[None], 1, out[None], int(bool(accumulate)))
    return out


def ring_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(m, k) @ (k, n) mod 2^64 -> (m, n) int64.  Any strides; a transposed view for ``b``
    (``w.T``) is free, since the kernel wants b's transpose contiguous."""
    _check_int64(a, b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"ring_matmul needs (m, k) @ (k, n), got {a.shape} @ {b.shape}")
    a3 = np.ascontiguousarray(a)[None]
    bt3 = np.ascontiguousarray(b.T)[None]
    return _run_bt(a3, bt3, 1)[0]


def ring_matmul_batched(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(B, m, k) @ (B, k, n) mod 2^64 -> (B, m, n) int64; either operand may be 2-D and is
    then shared by every batch entry."""
    _check_int64(a, b)
    if a.ndim not in (2, 3) or b.ndim not in (2, 3) or a.ndim + b.ndim == 4:
        raise ValueError(f"ring_matmul_batched needs a 3-D operand, got {a.shape} @ {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"inner dimensions differ: {a.shape} @ {b.shape}")
    if a.ndim == 3 and b.ndim == 3 and a.shape[0] != b.shape[0]:
        raise ValueError(f"batch sizes differ: {a.shape} @ {b.shape}")
    if b.ndim == 2:
        # One shared right operand: fold the batch into the rows, a single product.
        batch, m, k = a.shape
        flat = ring_matmul(np.ascontiguousarray(a).reshape(batch * m, k), b)
        return flat.reshape(batch, m, b.shape[1])
    batch = b.shape[0]
    a3 = np.ascontiguousarray(a if a.ndim == 3 else a[None])
    bt3 = np.ascontiguousarray(np.swapaxes(b, 1, 2))
    return _run_bt(a3, bt3, batch)


def ring_matmul_any(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.matmul`` semantics mod 2^64 on int64: 1-D operands, broadcast leading axes."""
    _check_int64(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("ring_matmul_any does not take scalars")
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"inner dimensions differ: {a.shape} @ {b.shape}")
    lead = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    m, k, n = a2.shape[-2], a2.shape[-1], b2.shape[-1]
    batch = int(np.prod(lead, dtype=np.int64))
    if b2.ndim == 2:
        # Shared right operand: the leading axes of a become rows of one product.
        a_full = np.broadcast_to(a2, lead + (m, k))
        out = ring_matmul(np.ascontiguousarray(a_full).reshape(batch * m, k), b2)
    else:
        a3 = (np.ascontiguousarray(a2)[None] if a2.ndim == 2 else
              np.ascontiguousarray(np.broadcast_to(a2, lead + (m, k))).reshape(batch, m, k))
        bt3 = np.ascontiguousarray(np.swapaxes(np.broadcast_to(b2, lead + (k, n)), -1, -2))
        out = _run_bt(a3, bt3.reshape(batch, n, k), batch)
    out = out.reshape(lead + (m, n))
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out


# --------------------------------------------------------------------------- numpy twins


def ring_matmul_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Oracle for :func:`ring_matmul`: numpy's int64 ``@`` wraps mod 2^64 for arrays."""
    _check_int64(a, b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"ring_matmul needs (m, k) @ (k, n), got {a.shape} @ {b.shape}")
    return np.matmul(a, b)


def ring_matmul_bt_np(a: np.ndarray, bt: np.ndarray, out: np.ndarray | None = None,
                      accumulate: bool = False) -> np.ndarray:
    """Oracle for :func:`ring_matmul_bt`."""
    _check_int64(a, bt)
    c = np.matmul(a, bt.T)
    if out is None:
        return c
    if accumulate:
        out += c
    else:
        out[...] = c
    return out


def ring_matmul_batched_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Oracle for :func:`ring_matmul_batched`."""
    _check_int64(a, b)
    return np.matmul(a, b)


def ring_matmul_any_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Oracle for :func:`ring_matmul_any`."""
    _check_int64(a, b)
    return np.matmul(a, b)
