"""The bilinear maps Beaver products are built on, shared by the dealer and the parties.

One definition serves both sides, so C = op(A, B) on the dealer and the parties' local
terms op(E, B_p) + op(A_p, F) can never disagree.
"""
from __future__ import annotations

import numpy as np

from .. import kernels

__all__ = ["apply_bilinear", "BILINEAR_OPS"]

BILINEAR_OPS = ("mul", "matmul", "conv", "conv_wgrad", "conv_dgrad")


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # no forced copies: the kernel wrapper makes a and b^T contiguous itself, so a transposed
    # view for b (W^T, the weights in torch layout) costs nothing
    return kernels.ring_matmul_any(a, b)


def apply_bilinear(op: str, a: np.ndarray, b: np.ndarray, transpose_left: bool = False,
                   transpose_right: bool = False, conv: tuple = ()) -> np.ndarray:
    """op(a, b) in Z_2^64.

    mul:    elementwise; a lower-rank b is aligned to a's *leading* axes (a per-row scalar).
    matmul: op(a) @ op(b), transposes optional, leading axes broadcast.
    conv:   im2col(a; kh, kw, stride, padding) @ b.reshape(out, -1).T -> (N*OH*OW, out).
    conv_wgrad: a.T @ im2col(b; ...) -> (out, C*kh*kw)   (a: output gradient columns)
    conv_dgrad: a @ b.reshape(out, -1) -> (N*OH*OW, C*kh*kw) (col2im of it is dX)
    """
    if op == "mul":
        if b.ndim < a.ndim:
            b = b.reshape(b.shape + (1,) * (a.ndim - b.ndim))
        return a * b
    if op == "matmul":
        a = np.swapaxes(a, -1, -2) if transpose_left else a
        b = np.swapaxes(b, -1, -2) if transpose_right else b
        return _matmul(a, b)
    if op == "conv":
        kh, kw, stride, pad = conv
        cols = kernels.im2col(np.ascontiguousarray(a), kh, kw, stride, pad)
        return _matmul(cols, b.reshape(b.shape[0], -1).T)
    if op == "conv_wgrad":
        kh, kw, stride, pad = conv
        # the kernel wants the right operand transposed: build it that way (no copy)
        cols_t = kernels.im2col_t(np.ascontiguousarray(b), kh, kw, stride, pad)
        return _matmul(a.T, cols_t.T)
    if op == "conv_dgrad":
        return _matmul(a, b.reshape(b.shape[0], -1))
    raise ValueError(f"unknown bilinear op {op!r}")
