"""Beaver products of secret operands with dealer triples, one opening per operand.

For Z = op(X, Y) with op bilinear (elementwise mul, matmul, im2col-convolution):
  1. Dealer masks A, B (seed-expanded, no dealer bytes) and C = op(A, B) (corrected: party 1
     receives its share of C; |C| words of dealer bytes).
  2. Open E = X - A and F = Y - B, *all operands of a step in one message*.
  3. Locally: Z_p = C_p + op(E, B_p + [p=0] F) + op(A_p, F).
A ``MaskedOperand`` keeps (share, opened E, mask item) so the same secret multiplied again
(the layer input X in forward and in the weight gradient X^T dY; the weights W in forward
and in dX = dY W^T) is never re-opened: the dealer builds the new triple from the old mask
(Mohassel-Zhang SecureML 2017, section 4.2 "reusing masks").

Rounds: 1 per batch of openings.  Bytes per party: 8 per element of every operand opened.
Products are returned *untruncated* (2f fractional bits); callers batch truncations.
Every function that communicates is a coroutine (``protocols.rounds``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .. import kernels
from ..party import PartyContext
from ..preprocessing.bilinear import apply_bilinear, matmul_share
from ..preprocessing.source import Material
from .rounds import open_ring, outgoing
from .truncation import trunc_s

__all__ = ["MaskedOperand", "mask_and_open", "product_share", "matmul_masked", "mul_masked",
           "conv_masked", "mul_ss", "matmul_ss", "conv2d_ss", "square_s", "conv_out_shape"]


@dataclass(frozen=True)
class MaskedOperand:
    """A secret X together with its opened masked value E = X - A and this party's share of A."""

    share: np.ndarray
    masked: np.ndarray
    mask: Material

    @property
    def mask_share(self) -> np.ndarray:
        return self.mask["a"]

    @property
    def shape(self) -> tuple:
        return self.share.shape

    def __bool__(self):
        raise TypeError("a secret operand has no truth value")


def mask_and_open(ctx: PartyContext, shares: Sequence[np.ndarray], label: str = "beaver_open"):
    """Mask every secret with a fresh dealer mask and open all of them in one message;
    returns their ``MaskedOperand``s.  Rounds: 1.  Bytes per party: 8 per element."""
    shares = [np.ascontiguousarray(s, dtype=np.int64) for s in shares]
    masks = [ctx.source.mask(s.shape) for s in shares]
    opened = yield from open_ring(ctx, [np.subtract(s, m["a"], out=outgoing(ctx, s.shape))
                                        for s, m in zip(shares, masks)], label)
    return [MaskedOperand(s, e, m) for s, e, m in zip(shares, opened, masks)]


def conv_out_shape(x_shape, w_shape, stride: int, padding: int) -> tuple[int, int, int, int]:
    n, c, h, w = x_shape
    o, c2, kh, kw = w_shape
    if c != c2:
        raise ValueError(f"conv channels differ: input {c}, weight {c2}")
    return (n, o) + kernels.conv_output_hw(h, w, kh, kw, stride, padding)


def product_share(ctx: PartyContext, op: str, x: MaskedOperand, y: MaskedOperand, *,
                  transpose_left: bool = False, transpose_right: bool = False, conv: tuple = ()
                  ) -> np.ndarray:
    """This party's share of op(X, Y) (untruncated) from two opened operands; no communication."""
    e, f = x.masked, y.masked
    z = matmul_share(e, f, x.mask_share, y.mask_share, ctx.rank == 0, transpose_left, transpose_right,
                     ctx.scratch) if op == "matmul" else None
    if z is None:
        b_plus = y.mask_share + f if ctx.rank == 0 else y.mask_share
        z = apply_bilinear(op, e, b_plus, transpose_left, transpose_right, conv)
        z += apply_bilinear(op, x.mask_share, f, transpose_left, transpose_right, conv)
    c = ctx.source.product(op, x.mask.ref("a"), y.mask.ref("a"), z.shape,
                           transpose_left=transpose_left, transpose_right=transpose_right, conv=conv)
    z += c["c"]
    return z


def conv_masked(ctx: PartyContext, x: MaskedOperand, w: MaskedOperand, stride: int = 1,
                padding: int = 0) -> np.ndarray:
    """conv2d(X, W) as (N, O, OH, OW), untruncated, from two opened operands."""
    n, o, oh, ow = conv_out_shape(x.shape, w.shape, stride, padding)
    cols = product_share(ctx, "conv", x, w, conv=(w.shape[2], w.shape[3], stride, padding))
    return np.ascontiguousarray(cols.reshape(n, oh, ow, o).transpose(0, 3, 1, 2))


def mul_masked(ctx: PartyContext, x: MaskedOperand, y: MaskedOperand) -> np.ndarray:
    """Elementwise X * Y (y broadcast over x's trailing axes), untruncated."""
    return product_share(ctx, "mul", x, y)


def matmul_masked(ctx: PartyContext, x: MaskedOperand, y: MaskedOperand, *,
                  transpose_left: bool = False, transpose_right: bool = False) -> np.ndarray:
    """op(X) @ op(Y), untruncated; batched over leading axes."""
    return product_share(ctx, "matmul", x, y, transpose_left=transpose_left,
                         transpose_right=transpose_right)


def mul_ss(ctx: PartyContext, x: np.ndarray, y: np.ndarray, truncate: bool = True):
    """Elementwise product of two fixed-point secrets.

    Rounds: 2 (open, truncate); 1 with ``truncate=False`` (e.g. a 0/1 secret times a value).
    Bytes per party: 8 (|x| + |y|) + 8 |z| for the truncation.
    """
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    if x.shape != y.shape:
        raise ValueError(f"mul_ss shapes differ: {x.shape} vs {y.shape}")
    xm, ym = yield from mask_and_open(ctx, [x, y], "mul_open")
    z = mul_masked(ctx, xm, ym)
    return (yield from trunc_s(ctx, z, ctx.frac_bits)) if truncate else z


def square_s(ctx: PartyContext, x: np.ndarray):
    """x^2 with a single mask: open E = X - A once; the dealer supplies A*A.

    Rounds: 2.  Bytes per party: 8 |x| + 8 |x| (truncation).
    """
    (xm,) = yield from mask_and_open(ctx, [np.asarray(x, dtype=np.int64)], "square_open")
    return (yield from trunc_s(ctx, mul_masked(ctx, xm, xm), ctx.frac_bits))


def matmul_ss(ctx: PartyContext, x: np.ndarray, y: np.ndarray, truncate: bool = True):
    """Matrix product of two secrets, (..., m, k) @ (..., k, n).

    Rounds: 2.  Bytes per party: 8 (|x| + |y|) + 8 |z|.
    """
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim < 2 or y.ndim < 2 or x.shape[-1] != y.shape[-2]:
        raise ValueError(f"matmul_ss shapes do not chain: {x.shape} @ {y.shape}")
    xm, ym = yield from mask_and_open(ctx, [x, y], "matmul_open")
    z = matmul_masked(ctx, xm, ym)
    return (yield from trunc_s(ctx, z, ctx.frac_bits)) if truncate else z


def conv2d_ss(ctx: PartyContext, x: np.ndarray, w: np.ndarray, stride: int = 1, padding: int = 0,
              truncate: bool = True):
    """2-D convolution (N,C,H,W) * (O,C,kh,kw) -> (N,O,OH,OW) via im2col on the ring kernel.

    The dealer masks the *image* (not the im2col columns), so E costs |x| words, not |cols|.
    Rounds: 2.  Bytes per party: 8 (|x| + |w|) + 8 |out|.
    """
    x = np.asarray(x, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv2d_ss wants (N,C,H,W) and (O,C,kh,kw), got {x.shape}, {w.shape}")
    conv_out_shape(x.shape, w.shape, stride, padding)  # channels must agree
    xm, wm = yield from mask_and_open(ctx, [x, w], "conv_open")
    z = conv_masked(ctx, xm, wm, stride, padding)
    return (yield from trunc_s(ctx, z, ctx.frac_bits)) if truncate else z
