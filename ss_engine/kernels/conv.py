"""im2col / col2im for 2-D convolution as a ring matrix product, and their numpy twins.

Layout: for ``x`` of shape (N, C, H, W), kernel (kh, kw), stride (sh, sw), padding (ph, pw),
``OH = (H + 2 ph - kh) // sh + 1`` (likewise OW) and

    cols[(n*OH + oh)*OW + ow, (c*kh + i)*kw + j] = x[n, c, oh*sh + i - ph, ow*sw + j - pw]

(zero outside the image).  The column order is torch's weight layout (O, C, kh, kw) reshaped
to (O, C*kh*kw), so ``im2col(x) @ w.reshape(O, -1).T`` is the (N*OH*OW, O) convolution output;
``.reshape(N, OH, OW, O).transpose(0, 3, 1, 2)`` gives torch's (N, O, OH, OW).

:func:`col2im` is the adjoint (scatter-add; sums wrap mod 2^64 for int64), used by backprop:
``<im2col(x), y> == <x, col2im(y, x.shape, ...)>``.  Both take int64 (ring) or float64 arrays;
the output dtype is the input's.  Both are memory-bound copies: ``prange`` over output rows
(im2col) or over (n, c) image planes (col2im, so no two threads add into the same element).
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
from numba import njit, prange

from ._runtime import parallel_slot

__all__ = ["im2col", "im2col_t", "col2im", "im2col_np", "im2col_t_np", "col2im_np",
           "conv_output_hw"]

IntPair = Union[int, Sequence[int]]
_DTYPES = (np.dtype(np.int64), np.dtype(np.float64))


def _pair(v: IntPair, name: str) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    t = tuple(int(x) for x in v)
    if len(t) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {v!r}")
    return t


def conv_output_hw(h: int, w: int, kh: int, kw: int, stride: IntPair = 1,
                   padding: IntPair = 0) -> tuple[int, int]:
    """(OH, OW) of a convolution; raises ValueError if empty or parameters are invalid."""
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"bad conv parameters: kernel {(kh, kw)}, stride {(sh, sw)}, "
                         f"padding {(ph, pw)}")
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"convolution output would be empty: input {(h, w)}, "
                         f"kernel {(kh, kw)}, padding {(ph, pw)}")
    return oh, ow


def _check(x: np.ndarray, ndim: int, what: str) -> None:
    if not isinstance(x, np.ndarray) or x.dtype not in _DTYPES:
        raise TypeError(f"{what} must be an int64 or float64 ndarray, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != ndim:
        raise ValueError(f"{what} must be {ndim}-D, got shape {x.shape}")


# --------------------------------------------------------------------------- kernels


@njit(cache=True)
def _im2col_rows(x, out, r, kh, kw, sh, sw, ph, pw, oh_n, ow_n):
    """Output rows r*OW .. r*OW + OW - 1, where r = n*OH + oh."""
    _, c_n, h_n, w_n = x.shape
    n = r // oh_n
    oh = r - n * oh_n
    for ow in range(ow_n):
        row = r * ow_n + ow
        w0 = ow * sw - pw
        j_lo = min(max(0, -w0), kw)          # kernel columns [j_lo, j_hi) fall inside the image
        j_hi = max(min(kw, w_n - w0), j_lo)
        for c in range(c_n):
            for i in range(kh):
                h = oh * sh + i - ph
                base = (c * kh + i) * kw
                if h < 0 or h >= h_n:
                    for j in range(kw):
                        out[row, base + j] = 0
                else:
                    for j in range(j_lo):
                        out[row, base + j] = 0
                    for j in range(j_lo, j_hi):
                        out[row, base + j] = x[n, c, h, w0 + j]
                    for j in range(j_hi, kw):
                        out[row, base + j] = 0


@njit(parallel=True, nogil=True, cache=True)
def _im2col_par(x, out, kh, kw, sh, sw, ph, pw, oh_n, ow_n):
    for r in prange(x.shape[0] * oh_n):
        _im2col_rows(x, out, r, kh, kw, sh, sw, ph, pw, oh_n, ow_n)


@njit(nogil=True, cache=True)
def _im2col_ser(x, out, kh, kw, sh, sw, ph, pw, oh_n, ow_n):
    for r in range(x.shape[0] * oh_n):
        _im2col_rows(x, out, r, kh, kw, sh, sw, ph, pw, oh_n, ow_n)


@njit(cache=True)
def _im2col_t_row(x, out, q, kh, kw, sh, sw, ph, pw, oh_n, ow_n):
    """Row q = (c*kh + i)*kw + j of the transposed patch matrix: x[n, c, oh*sh+i-ph,
    ow*sw+j-pw] for every (n, oh, ow), written contiguously."""
    n_n, _, h_n, w_n = x.shape
    c = q // (kh * kw)
    i = (q // kw) % kh
    j = q % kw
    col = 0
    for n in range(n_n):
        for oh in range(oh_n):
            h = oh * sh + i - ph
            inside = 0 <= h < h_n
            for ow in range(ow_n):
                w = ow * sw + j - pw
                out[q, col] = x[n, c, h, w] if inside and 0 <= w < w_n else 0
                col += 1


@njit(parallel=True, nogil=True, cache=True)
def _im2col_t_par(x, out, kh, kw, sh, sw, ph, pw, oh_n, ow_n):
    for q in prange(out.shape[0]):
        _im2col_t_row(x, out, q, kh, kw, sh, sw, ph, pw, oh_n, ow_n)


@njit(nogil=True, cache=True)
def _im2col_t_ser(x, out, kh, kw, sh, sw, ph, pw, oh_n, ow_n):
    for q in range(out.shape[0]):
        _im2col_t_row(x, out, q, kh, kw, sh, sw, ph, pw, oh_n, ow_n)


@njit(cache=True)
def _col2im_plane(cols, x, t, kh, kw, sh, sw, ph, pw, oh_n, ow_n):
    """Scatter-add everything that lands in image plane t = n*C + c."""
    _, c_n, h_n, w_n = x.shape
    n = t // c_n
    c = t - n * c_n
    for oh in range(oh_n):
        for ow in range(ow_n):
            row = (n * oh_n + oh) * ow_n + ow
            w0 = ow * sw - pw
            j_lo = min(max(0, -w0), kw)
            j_hi = max(min(kw, w_n - w0), j_lo)
            for i in range(kh):
                h = oh * sh + i - ph
                if 0 <= h < h_n:
                    base = (c * kh + i) * kw
                    for j in range(j_lo, j_hi):
                        x[n, c, h, w0 + j] += cols[row, base + j]


@njit(parallel=True, nogil=True, cache=True)
def _col2im_par(cols, x, kh, kw, sh, sw, ph, pw, oh_n, ow_n):
    for t in prange(x.shape[0] * x.shape[1]):
        _col2im_plane(cols, x, t, kh, kw, sh, sw, ph, pw, oh_n, ow_n)


@njit(nogil=True, cache=True)
def _col2im_ser(cols, x, kh, kw, sh, sw, ph, pw, oh_n, ow_n):
    for t in range(x.shape[0] * x.shape[1]):
        _col2im_plane(cols, x, t, kh, kw, sh, sw, ph, pw, oh_n, ow_n)


# --------------------------------------------------------------------------- wrappers


def _geometry(x_shape, kh: int, kw: int, stride: IntPair, padding: IntPair):
    """(n, c, h, w, oh, ow, sh, sw, ph, pw) of a convolution, validated once for all four
    entry points."""
    n, c, h, w = (int(v) for v in x_shape)
    oh, ow = conv_output_hw(h, w, kh, kw, stride, padding)
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    return n, c, h, w, oh, ow, sh, sw, ph, pw


def _check_cols(cols: np.ndarray, x_shape, kh: int, kw: int, n, c, oh, ow) -> None:
    if cols.shape != (n * oh * ow, c * kh * kw):
        raise ValueError(f"cols shape {cols.shape} does not match x_shape {tuple(x_shape)} "
                         f"with kernel {(kh, kw)}: expected {(n * oh * ow, c * kh * kw)}")


def _patches(x: np.ndarray, kh: int, kw: int, stride: IntPair, padding: IntPair,
             transposed: bool) -> np.ndarray:
    _check(x, 4, "im2col input")
    n, c, h, w, oh, ow, sh, sw, ph, pw = _geometry(x.shape, kh, kw, stride, padding)
    x = np.ascontiguousarray(x)
    shape = (n * oh * ow, c * kh * kw)
    out = np.empty(shape[::-1] if transposed else shape, dtype=x.dtype)
    if out.size == 0:
        return out
    par_kernel, ser_kernel = (_im2col_t_par, _im2col_t_ser) if transposed else (_im2col_par, _im2col_ser)
    with parallel_slot(out.size) as par:
        (par_kernel if par else ser_kernel)(x, out, kh, kw, sh, sw, ph, pw, oh, ow)
    return out


def im2col(x: np.ndarray, kh: int, kw: int, stride: IntPair = 1,
           padding: IntPair = 0) -> np.ndarray:
    """(N, C, H, W) -> (N*OH*OW, C*kh*kw) patch matrix (layout in the module doc)."""
    return _patches(x, kh, kw, stride, padding, transposed=False)


def im2col_t(x: np.ndarray, kh: int, kw: int, stride: IntPair = 1,
             padding: IntPair = 0) -> np.ndarray:
    """``im2col(x).T`` made C-contiguous, written directly: (C*kh*kw, N*OH*OW).  The weight
    gradient dY^T @ im2col(X) wants exactly this layout for its right operand; a transpose
    of the patch matrix costs ~3x the im2col itself here."""
    return _patches(x, kh, kw, stride, padding, transposed=True)


def col2im(cols: np.ndarray, x_shape: Sequence[int], kh: int, kw: int, stride: IntPair = 1,
           padding: IntPair = 0) -> np.ndarray:
    """Adjoint of :func:`im2col`: scatter-add (N*OH*OW, C*kh*kw) back into x_shape."""
    _check(cols, 2, "col2im input")
    n, c, h, w, oh, ow, sh, sw, ph, pw = _geometry(x_shape, kh, kw, stride, padding)
    _check_cols(cols, x_shape, kh, kw, n, c, oh, ow)
    cols = np.ascontiguousarray(cols)
    x = np.zeros((n, c, h, w), dtype=cols.dtype)
    if cols.size == 0:
        return x
    with parallel_slot(cols.size) as par:
        (_col2im_par if par else _col2im_ser)(cols, x, kh, kw, sh, sw, ph, pw, oh, ow)
    return x


# --------------------------------------------------------------------------- numpy twins


def im2col_np(x: np.ndarray, kh: int, kw: int, stride: IntPair = 1,
              padding: IntPair = 0) -> np.ndarray:
    """Oracle for :func:`im2col` (pad, strided sliding windows, one copy)."""
    _check(x, 4, "im2col input")
    n, c, h, w, oh, ow, sh, sw, ph, pw = _geometry(x.shape, kh, kw, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    win = win[:, :, ::sh, ::sw][:, :, :oh, :ow]          # (N, C, OH, OW, kh, kw)
    return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(n * oh * ow, -1)


def im2col_t_np(x: np.ndarray, kh: int, kw: int, stride: IntPair = 1,
                padding: IntPair = 0) -> np.ndarray:
    """Oracle for :func:`im2col_t`."""
    return np.ascontiguousarray(im2col_np(x, kh, kw, stride, padding).T)


def col2im_np(cols: np.ndarray, x_shape: Sequence[int], kh: int, kw: int,
              stride: IntPair = 1, padding: IntPair = 0) -> np.ndarray:
    """Oracle for :func:`col2im`: one strided slice-add per kernel offset (i, j)."""
    _check(cols, 2, "col2im input")
    n, c, h, w, oh, ow, sh, sw, ph, pw = _geometry(x_shape, kh, kw, stride, padding)
    _check_cols(cols, x_shape, kh, kw, n, c, oh, ow)
    patches = cols.reshape(n, oh, ow, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] += patches[:, :, i, j]
    return np.ascontiguousarray(xp[:, :, ph:ph + h, pw:pw + w])
