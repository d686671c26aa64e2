"""SharedTensor: one party's share of a fixed-point tensor, with operators that run protocols.

A SharedTensor never exposes its value implicitly: ``__bool__`` and ``__array__`` raise,
``__repr__`` shows shape and scale only, and ``reveal()`` is the only way to open it.
``frac_bits`` is the tensor's own scale (the engine's f for values, 0 for 0/1 bits).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from . import kernels
from .encoding import decode, encode
from .party import PartyContext
from .preprocessing.bilinear import apply_bilinear
from . import protocols as P

__all__ = ["SharedTensor"]


class SharedTensor:
    __slots__ = ("ctx", "share", "frac_bits")
    __array_ufunc__ = None  # numpy must not treat a share as an array operand

    def __init__(self, ctx: PartyContext, share: np.ndarray, frac_bits: int | None = None):
        arr = np.asarray(share)
        if arr.dtype != np.int64:
            raise TypeError(f"a share must be int64 ring elements, got {arr.dtype}")
        self.ctx = ctx
        self.share = arr
        self.frac_bits = ctx.frac_bits if frac_bits is None else int(frac_bits)

    # -- safety ---------------------------------------------------------------------------
    def __bool__(self):
        raise TypeError("a secret has no truth value; compare with a protocol and reveal()")

    def __array__(self, *args, **kwargs):
        raise TypeError("a SharedTensor cannot be converted to an array; use reveal()")

    def __repr__(self) -> str:
        return f"SharedTensor(shape={self.shape}, party={self.ctx.rank}, frac_bits={self.frac_bits})"

    __str__ = __repr__

    # -- construction -----------------------------------------------------------------------
    def _new(self, share: np.ndarray, frac_bits: int | None = None) -> "SharedTensor":
        return SharedTensor(self.ctx, share, self.frac_bits if frac_bits is None else frac_bits)

    def _public(self, value) -> np.ndarray:
        """A public real as this party's share of it (party 0 holds it, party 1 zero)."""
        enc = encode(value, self.ctx.config.fixed) if self.frac_bits == self.ctx.frac_bits else \
            np.rint(np.asarray(value, np.float64) * (1 << self.frac_bits)).astype(np.int64)
        return enc if self.ctx.rank == 0 else np.zeros_like(enc)

    def _aligned(self, other: "SharedTensor") -> tuple[np.ndarray, np.ndarray, int]:
        if other.ctx is not self.ctx:
            raise ValueError("shares of different parties cannot be combined")
        f = max(self.frac_bits, other.frac_bits)
        return self.share << (f - self.frac_bits), other.share << (f - other.frac_bits), f

    # -- views -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.share.shape

    @property
    def ndim(self) -> int:
        return self.share.ndim

    @property
    def size(self) -> int:
        return self.share.size

    def __len__(self) -> int:
        return len(self.share)

    def reshape(self, *shape) -> "SharedTensor":
        return self._new(self.share.reshape(*shape))

    def transpose(self, *axes) -> "SharedTensor":
        return self._new(np.ascontiguousarray(self.share.transpose(*axes)))

    @property
    def T(self) -> "SharedTensor":
        return self.transpose()

    def __getitem__(self, idx) -> "SharedTensor":
        return self._new(np.ascontiguousarray(self.share[idx]))

    @staticmethod
    def concatenate(items: Sequence["SharedTensor"], axis: int = 0) -> "SharedTensor":
        first = items[0]
        f = max(t.frac_bits for t in items)
        return first._new(np.concatenate([t.share << (f - t.frac_bits) for t in items], axis), f)

    def sum(self, axis=None, keepdims: bool = False) -> "SharedTensor":
        return self._new(np.asarray(self.share.sum(axis=axis, keepdims=keepdims), dtype=np.int64))

    def im2col(self, kh: int, kw: int, stride: int = 1, padding: int = 0) -> "SharedTensor":
        return self._new(kernels.im2col(np.ascontiguousarray(self.share), kh, kw, stride, padding))

    # -- linear, local ----------------------------------------------------------------------
    def __neg__(self) -> "SharedTensor":
        return self._new(-self.share)

    def __add__(self, other) -> "SharedTensor":
        if isinstance(other, SharedTensor):
            a, b, f = self._aligned(other)
            return self._new(a + b, f)
        return self._new(self.share + self._public(other))

    __radd__ = __add__

    def __sub__(self, other) -> "SharedTensor":
        if isinstance(other, SharedTensor):
            a, b, f = self._aligned(other)
            return self._new(a - b, f)
        return self._new(self.share - self._public(other))

    def __rsub__(self, other) -> "SharedTensor":
        return (-self) + other

    # -- products (protocols) ------------------------------------------------------------------
    def __mul__(self, other) -> "SharedTensor":
        if isinstance(other, SharedTensor):
            if other.ctx is not self.ctx:
                raise ValueError("shares of different parties cannot be combined")
            z = P.mul_ss(self.ctx, self.share, other.share, truncate=False)
            return self._rescale(z, self.frac_bits + other.frac_bits)
        pub = np.asarray(other)
        if np.issubdtype(pub.dtype, np.integer):
            return self._new(self.share * pub.astype(np.int64))
        z = self.share * encode(pub, self.ctx.config.fixed)
        return self._rescale(z, self.frac_bits + self.ctx.frac_bits)

    __rmul__ = __mul__

    def __matmul__(self, other: "SharedTensor") -> "SharedTensor":
        if not isinstance(other, SharedTensor):
            pub = encode(np.asarray(other, np.float64), self.ctx.config.fixed)
            return self._rescale(apply_bilinear("matmul", self.share, pub),
                                 self.frac_bits + self.ctx.frac_bits)
        z = P.matmul_ss(self.ctx, self.share, other.share, truncate=False)
        return self._rescale(z, self.frac_bits + other.frac_bits)

    def _rescale(self, raw: np.ndarray, scale: int) -> "SharedTensor":
        """Truncate a product back to the engine's f (exact to 1 ulp, one round)."""
        target = self.ctx.frac_bits
        if scale <= target:
            return self._new(raw << (target - scale), target)
        return self._new(P.trunc_s(self.ctx, raw, scale - target), target)

    # -- nonlinear ---------------------------------------------------------------------------
    def relu(self) -> tuple["SharedTensor", "SharedTensor"]:
        y, bit = P.relu_s(self.ctx, self.share)
        return self._new(y), self._new(bit, 0)

    def drelu(self) -> "SharedTensor":
        return self._new(P.drelu_s(self.ctx, self.share), 0)

    def __lt__(self, other: "SharedTensor") -> "SharedTensor":
        a, b, _ = self._aligned(other)
        return self._new(P.lt_ss(self.ctx, a, b), 0)

    def max(self, axis: int = -1) -> "SharedTensor":
        return self._new(P.max_s(self.ctx, self.share, axis))

    def argmax(self, axis: int = -1) -> "SharedTensor":
        """Integer one-hot shares of the argmax along ``axis``."""
        return self._new(P.argmax_s(self.ctx, self.share, axis), 0)

    def exp(self) -> "SharedTensor":
        return self._new(P.exp_s(self.ctx, self.share))

    def reciprocal(self, lo: float, hi: float) -> "SharedTensor":
        return self._new(P.reciprocal_s(self.ctx, self.share, lo, hi))

    def softmax(self) -> "SharedTensor":
        return self._new(P.softmax_s(self.ctx, self.share))

    # -- opening -----------------------------------------------------------------------------
    def reveal(self, to: int | None = None) -> np.ndarray | None:
        """Open to both parties, or only to party ``to``; returns decoded floats (or None)."""
        v = P.reveal_s(self.ctx, self.share, to)
        return None if v is None else decode(v, self.frac_bits)
