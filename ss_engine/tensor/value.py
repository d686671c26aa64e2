"""SharedTensor: one party's share of a fixed-point tensor, with its scale and what the
protocols already know about it.

A SharedTensor never exposes its value implicitly: ``__bool__`` and ``__array__`` raise,
``__repr__`` shows shape and scale only; ``ops.reveal`` is the only way to open it.

What a value carries:
  * ``frac_bits``, its scale: f for a normal value, 2f for an untruncated product (a Linear
    or Conv output, a weight gradient), 0 for an integer (a 0/1 bit, a one-hot).  Nothing
    truncates eagerly: an op that needs an operand at f truncates it (``ops``).
  * ``form``: the value as a linear form in dealer items (``protocols.forms.LinearForm``:
    a truncation result, a B2A bit, a masked opening), over the *flattened* tensor.  An
    elementwise product of two forms costs no opening (the dealer supplies the products of
    their items), so a ReLU bit or a truncated gradient is never masked and opened.
  * ``opened``: its masked opening E = X - A with the mask item (``MaskedOperand``, in the
    tensor's own shape), made by the first bilinear product that needed it and reused by
    every later one: X in forward and in X^T dY, W in forward and in dY W, dY in dW and dX.
Local operations (add, subtract, negate, public factors, reshapes, sums) need no protocol
and are operators here; everything that communicates is a coroutine in ``ops``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import kernels
from ..encoding import decode, encode
from ..party import PartyContext
from ..protocols.beaver import MaskedOperand
from ..protocols.forms import LinearForm

__all__ = ["SharedTensor"]


class SharedTensor:
    __slots__ = ("ctx", "_share", "_shape", "frac_bits", "form", "opened", "truncated")
    __array_ufunc__ = None  # numpy must not treat a share as an array operand

    def __init__(self, ctx: PartyContext, share: np.ndarray, frac_bits: int | None = None):
        arr = np.asarray(share)
        if arr.dtype != np.int64:
            raise TypeError(f"a share must be int64 ring elements, got {arr.dtype}")
        self.ctx = ctx
        self._share: np.ndarray | None = arr
        self._shape = arr.shape
        self.frac_bits = ctx.frac_bits if frac_bits is None else int(frac_bits)
        self.form: LinearForm | None = None
        self.opened: MaskedOperand | None = None
        self.truncated: SharedTensor | None = None  # this value truncated to f (cached by ops)

    @classmethod
    def of_form(cls, ctx: PartyContext, form: LinearForm, shape: tuple, frac_bits: int) -> "SharedTensor":
        """A value known as a (flat) linear form; its share is computed when first needed."""
        if form.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"a form of {form.size} elements cannot have shape {shape}")
        t = cls.__new__(cls)
        t.ctx, t._share, t._shape, t.frac_bits = ctx, None, tuple(shape), int(frac_bits)
        t.form, t.opened, t.truncated = form, None, None
        return t

    @property
    def share(self) -> np.ndarray:
        if self._share is None:
            self._share = self.form.share(self.ctx.rank).reshape(self._shape)
        return self._share

    # -- safety ---------------------------------------------------------------------------
    def __bool__(self):
        raise TypeError("a secret has no truth value; compare with a protocol and reveal()")

    def __array__(self, *args, **kwargs):
        raise TypeError("a SharedTensor cannot be converted to an array; use ops.reveal()")

    def __repr__(self) -> str:
        return f"SharedTensor(shape={self.shape}, party={self.ctx.rank}, frac_bits={self.frac_bits})"

    __str__ = __repr__

    # -- construction -----------------------------------------------------------------------
    def _new(self, share: np.ndarray, frac_bits: int | None = None) -> "SharedTensor":
        return SharedTensor(self.ctx, share, self.frac_bits if frac_bits is None else frac_bits)

    def encode_public(self, value, frac_bits: int | None = None) -> np.ndarray:
        """A public real at this tensor's scale (or ``frac_bits``), as this party's share of
        it: party 0 holds it, party 1 zero."""
        bits = self.frac_bits if frac_bits is None else int(frac_bits)
        enc = encode(value, self.ctx.config.fixed) if bits == self.ctx.frac_bits else \
            np.rint(np.asarray(value, np.float64) * float(1 << bits)).astype(np.int64)
        return enc if self.ctx.rank == 0 else np.zeros_like(enc)

    def lift(self, frac_bits: int) -> "SharedTensor":
        """The same value at a larger scale (exact: a shift)."""
        if frac_bits == self.frac_bits:
            return self
        if frac_bits < self.frac_bits:
            raise ValueError("lowering a scale is a truncation (ops.truncate), not a lift")
        return self._new(self.share << np.int64(frac_bits - self.frac_bits), frac_bits)

    def _aligned(self, other: "SharedTensor") -> tuple[np.ndarray, np.ndarray, int]:
        if other.ctx is not self.ctx:
            raise ValueError("shares of different parties cannot be combined")
        f = max(self.frac_bits, other.frac_bits)
        return self.lift(f).share, other.lift(f).share, f

    # -- views -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self._shape

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def size(self) -> int:
        return int(np.prod(self._shape, dtype=np.int64))

    def __len__(self) -> int:
        return self._shape[0]

    def reshape(self, *shape) -> "SharedTensor":
        """Same elements in another shape; a (flat) form survives, an opening does not."""
        if self.form is not None and self._share is None:
            new_shape = np.empty(self._shape, dtype=np.int8).reshape(*shape).shape
            return SharedTensor.of_form(self.ctx, self.form, new_shape, self.frac_bits)
        t = self._new(self.share.reshape(*shape))
        t.form = self.form
        return t

    def transpose(self, *axes) -> "SharedTensor":
        return self._new(np.ascontiguousarray(self.share.transpose(*axes)))

    @property
    def T(self) -> "SharedTensor":
        return self.transpose()

    def __getitem__(self, idx) -> "SharedTensor":
        return self._new(np.ascontiguousarray(self.share[idx]))

    @staticmethod
    def concatenate(items: Sequence["SharedTensor"], axis: int = 0) -> "SharedTensor":
        f = max(t.frac_bits for t in items)
        return items[0]._new(np.concatenate([t.lift(f).share for t in items], axis), f)

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
        return self._new(self.share + self.encode_public(other))

    __radd__ = __add__

    def __sub__(self, other) -> "SharedTensor":
        if isinstance(other, SharedTensor):
            a, b, f = self._aligned(other)
            return self._new(a - b, f)
        return self._new(self.share - self.encode_public(other))

    def __rsub__(self, other) -> "SharedTensor":
        return (-self) + other

    def __mul__(self, other) -> "SharedTensor":
        """Times a public factor: an integer keeps the scale (exact); a real is encoded at f
        and the product keeps its 2f scale (untruncated, as every product here)."""
        if isinstance(other, SharedTensor):
            raise TypeError("a product of two secrets is a protocol: use `yield from ops.mul(x, y)`")
        pub = np.asarray(other)
        if np.issubdtype(pub.dtype, np.integer):
            return self._new(self.share * pub.astype(np.int64))
        return self._new(self.share * encode(pub, self.ctx.config.fixed),
                         self.frac_bits + self.ctx.frac_bits)

    __rmul__ = __mul__

    def __matmul__(self, other):
        raise TypeError("a product of two secrets is a protocol: use `yield from ops.matmul(x, y)`")

    def decode(self, ring: np.ndarray) -> np.ndarray:
        """An opened ring value of this tensor as reals."""
        return decode(ring, self.frac_bits)
