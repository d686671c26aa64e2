"""Truncation fused with the operation that follows it, saving a round and an opening.

The truncation result is public + coeff * [r_msb] - [r_hi] (``TruncOpening``): linear in
two dealer items.  So a product of the truncated value with a secret whose mask the dealer
knows needs no new opening — the dealer supplies [r_msb * m] and [r_hi * m].

``trunc_relu_s`` (Linear/Conv output -> ReLU):
  1. One message opens both the truncation mask c_t = z + 2^62 + r and the comparison mask
     c = z + r' of the *untruncated* z (same sign as the result).
  2. The comparator tree (ceil(log2(ceil((m-1)/2))) rounds) gives XOR shares of [z >= 0].
  3. B2A with dealer bit rho (1 round): b = e + (1 - 2e) rho; then
     relu = trunc(z) * b = public * b + coeff * (r_msb b) - (r_hi b), where
     s * b = e s + (1 - 2e)(s rho) and the dealer supplies s * rho.
  Rounds: 1 + 5 + 1 = 7 for m = 64 (unfused truncation + ReLU: 8).  Bytes per element per
  party: 8 + 8 + tree + 1 bit (unfused: 8 + 8 + 8 + tree + 1 bit).
``trunc_many_mul_s`` (backward: trunc(dX) * DReLU bit, the bit opened in forward as F = b - B):
  s * b = F s + [s * B] for s in {r_msb, r_hi}: the truncation round is the only round.

All three are one rule, ``form_mul``: a secret that is known as a *linear form*
P + sum_i c_i [u_i] (public P and c_i, dealer items u_i: a truncation result, a masked
opening X + [A], a B2A bit e + (1 - 2e)[rho]) is multiplied by another such form with no
round at all, the dealer supplying [u_i v_j] for every pair of items.  exp and the Newton
reciprocal (``protocols.nonlinear``) square and multiply truncation results this way, so
each of their steps costs one round (its truncation) instead of two.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..party import PartyContext
from ..preprocessing.source import Material
from .beaver import MaskedOperand
from .binary import open_words
from .compare import cmp_finish, cmp_prepare, flip_xor, unpack_bits
from .opening import open_many
from .truncation import TruncOpening, trunc_finish, trunc_open_many, trunc_prepare

__all__ = ["trunc_relu_s", "trunc_many_mul_s", "FormTerm", "LinearForm", "form_mul"]


def _lead(v, ndim: int):
    """Align a lower-rank array to the *leading* axes of an ndim-array (a per-row scalar),
    the broadcasting rule of the dealer's elementwise product."""
    v = np.asarray(v)
    return v.reshape(v.shape + (1,) * (ndim - v.ndim)) if 0 < v.ndim < ndim else v


@dataclass(frozen=True)
class FormTerm:
    """coeff * [material.field]: a public coefficient times a dealer item's shared field."""

    coeff: np.ndarray | np.int64
    material: Material
    field: str
    is_bit: bool = False  # the item is 0/1, so its square is itself (no product needed)

    def value(self) -> np.ndarray:
        return self.material[self.field]


@dataclass(frozen=True)
class LinearForm:
    """A secret held as public + sum of FormTerms (see module doc); shape = public's shape."""

    public: np.ndarray
    terms: tuple[FormTerm, ...]

    @classmethod
    def of_trunc(cls, t: TruncOpening) -> "LinearForm":
        return cls(t.public, (FormTerm(t.coeff, t.material, "r_msb", is_bit=True),
                              FormTerm(np.int64(-1), t.material, "r_hi")))

    @classmethod
    def of_masked(cls, x: MaskedOperand) -> "LinearForm":
        return cls(x.masked, (FormTerm(np.int64(1), x.mask, "a"),))

    def affine(self, scale: int, offset: int | np.ndarray = 0) -> "LinearForm":
        """scale * self + offset for public integers (ring units)."""
        k = np.int64(scale)
        return LinearForm(self.public * k + np.int64(offset) if np.isscalar(offset) else
                          self.public * k + np.asarray(offset, np.int64),
                          tuple(FormTerm(t.coeff * k, t.material, t.field, t.is_bit) for t in self.terms))

    def share(self, rank: int) -> np.ndarray:
        nd = self.public.ndim
        out = self.public.copy() if rank == 0 else np.zeros_like(self.public)
        for t in self.terms:
            out += _lead(t.coeff, nd) * _lead(t.value(), nd)
        return out


def form_mul(ctx: PartyContext, a: LinearForm, b: LinearForm) -> np.ndarray:
    """This party's share of a * b, untruncated; b is aligned to a's leading axes.

    a * b = Pa Pb + Pa sum_j d_j [v_j] + Pb sum_i c_i [u_i] + sum_ij c_i d_j [u_i v_j].
    Rounds: 0.  Dealer: one product item per pair of terms; a square (``a is b``) asks each
    unordered pair once and takes [u u] = [u] for a 0/1 item.
    """
    nd = a.public.ndim
    square = a is b
    pb = _lead(b.public, nd)
    out = a.public * pb if ctx.rank == 0 else np.zeros(np.broadcast_shapes(a.public.shape, pb.shape),
                                                        dtype=np.int64)
    for t in b.terms:
        out += a.public * (_lead(t.coeff, nd) * _lead(t.value(), nd))
    for t in a.terms:
        out += pb * (_lead(t.coeff, nd) * _lead(t.value(), nd))
    for i, ta in enumerate(a.terms):
        for j, tb in enumerate(b.terms):
            if square and j < i:
                continue
            weight = _lead(ta.coeff, nd) * _lead(tb.coeff, nd)
            if square and i != j:
                weight = weight * np.int64(2)
            if square and i == j and ta.is_bit:
                uv = _lead(ta.value(), nd)
            else:
                uv = ctx.source.product("mul", ta.material.ref(ta.field), tb.material.ref(tb.field),
                                        out.shape)["c"]
            out += weight * uv
    return out


def trunc_relu_s(ctx: PartyContext, z: np.ndarray, shift: int, label: str = "trunc_relu"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(relu(trunc(z, shift)), [z >= 0]) with integer 0/1 bit shares.  See module doc."""
    z = np.asarray(z, dtype=np.int64)
    shape, n = z.shape, z.size
    flat = z.ravel()
    # the comparison sees z at its raw scale, so widen the ring by the shift
    m = min(64, ctx.config.protocol.cmp_bits + int(shift))
    tmat, tz = trunc_prepare(ctx, flat, shift)
    cmat, cz, m = cmp_prepare(ctx, flat, m)
    c_t, c_c = open_many(ctx, [tz, cz], f"{label}_open")
    t = trunc_finish(tmat, c_t)
    msb = cmp_finish(ctx, cmat, c_c, m)
    rho = ctx.source.bits(n)
    (e_words,) = open_words(ctx, [flip_xor(ctx, msb) ^ rho["x"]], "b2a_open")
    e = unpack_bits(e_words, n)
    # b = e + (1 - 2e)[rho] (public e): a linear form in the dealer's rho, so relu =
    # trunc(z) * b needs no further round
    b_form = LinearForm(e, (FormTerm(1 - 2 * e, rho, "a"),))
    b = b_form.share(ctx.rank)
    y = form_mul(ctx, LinearForm.of_trunc(t), b_form)
    return y.reshape(shape), b.reshape(shape)


def trunc_many_mul_s(ctx: PartyContext, raws: Sequence[np.ndarray], shift: int,
                     multipliers: Sequence[MaskedOperand | None], label: str = "trunc") -> list[np.ndarray]:
    """trunc(raw_i, shift) for every i, multiplied elementwise by multipliers[i] when given
    (an integer-scale secret already opened, e.g. a ReLU bit).  One round in all."""
    if len(raws) != len(multipliers):
        raise ValueError("one multiplier (or None) per tensor")
    for r, mul in zip(raws, multipliers):
        if mul is not None and mul.shape != np.shape(r):
            raise ValueError(f"multiplier shape {mul.shape} != {np.shape(r)}")
    out = []
    for t, mul in zip(trunc_open_many(ctx, raws, shift, label), multipliers):
        out.append(t.share(ctx.rank) if mul is None else
                   form_mul(ctx, LinearForm.of_trunc(t), LinearForm.of_masked(mul)))
    return out
