"""The bilinear maps Beaver products are built on, shared by the dealer and the parties.

One definition serves both sides, so C = op(A, B) on the dealer and the parties' local
terms op(E, B_p) + op(A_p, F) can never disagree.
"""
from __future__ import annotations

import numpy as np

from .. import kernels

__all__ = ["apply_bilinear", "BILINEAR_OPS", "Scratch", "matmul_share"]

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


class Scratch:
    """Reused temporaries of one thread (a party's), by name and shape: arrays a call fills
    and reads before it returns (an operand laid out for a kernel), never results."""

    __slots__ = ("_bufs",)

    def __init__(self) -> None:
        self._bufs: dict = {}

    def get(self, name: str, shape: tuple) -> np.ndarray:
        key = (name, shape)
        buf = self._bufs.get(key)
        if buf is None:
            buf = self._bufs[key] = np.empty(shape, np.int64)
        return buf


def _rows(x: np.ndarray, transpose: bool, scratch: Scratch, name: str) -> np.ndarray:
    """op(x) as a C-contiguous (rows, k) operand: x itself, or its transpose in scratch."""
    if not transpose and x.flags.c_contiguous:
        return x
    src = x.T if transpose else x
    out = scratch.get(name, src.shape)
    np.copyto(out, src)
    return out


def matmul_share(e: np.ndarray, f: np.ndarray, a_p: np.ndarray, b_p: np.ndarray, first: bool,
                 transpose_left: bool, transpose_right: bool, scratch: Scratch) -> np.ndarray | None:
    """A party's local part of a Beaver matrix product, op(E, B_p + [first] F) + op(A_p, F),
    for 2-D operands, as two kernel calls into one fresh result: the operands are laid out in
    ``scratch`` (B_p + F added straight into the kernel's layout), nothing else is made.
    None for operands this does not cover (batched), which ``apply_bilinear`` then takes."""
    if e.ndim != 2 or f.ndim != 2 or a_p.shape != e.shape or b_p.shape != f.shape:
        return None
    le = e.T if transpose_left else e
    rf = f.T if transpose_right else f
    m, n = le.shape[0], rf.shape[1]
    out = np.empty((m, n), np.int64)
    # the right operand goes in transposed: (n, k) = op(y).T, i.e. y itself if transposed
    bt_shape = (n, rf.shape[0])
    if first:
        bt = scratch.get("bt", bt_shape)
        np.add(b_p if transpose_right else b_p.T, f if transpose_right else f.T, out=bt)
    else:
        bt = b_p if transpose_right and b_p.flags.c_contiguous else _rows(b_p, not transpose_right, scratch, "bt")
    kernels.ring_matmul_bt(_rows(e, transpose_left, scratch, "lhs"), bt, out)
    ft = f if transpose_right and f.flags.c_contiguous else _rows(f, not transpose_right, scratch, "bt")
    kernels.ring_matmul_bt(_rows(a_p, transpose_left, scratch, "lhs"), ft, out, accumulate=True)
    return out
