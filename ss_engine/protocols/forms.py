"""Linear forms: a secret known as public + sum of public coefficients times dealer items.

A truncation result is public + coeff * [r_msb] - [r_hi] (``TruncOpening``), a masked
opening is X = E + [A] (``MaskedOperand``), a B2A bit is e + (1 - 2e)[rho]: each is linear in
dealer items.  ``form_mul`` multiplies two such forms with no round at all, the dealer
supplying [u_i v_j] for every pair of items:

    a * b = Pa Pb + Pa sum_j d_j [v_j] + Pb sum_i c_i [u_i] + sum_ij c_i d_j [u_i v_j].

That one rule is every fused protocol: a truncation times a ReLU bit (forward ``trunc_relu_s``
and backward), a select by a comparison bit, exp's squarings and the Newton reciprocal's
products, each costing its truncation round and no opening.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import kernels
from ..party import PartyContext
from ..preprocessing.source import Material
from .beaver import MaskedOperand
from .truncation import TruncOpening

__all__ = ["FormTerm", "LinearForm", "TruncForm", "form_mul"]


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


class LinearForm:
    """A secret held as public + sum of FormTerms (see module doc); shape = public's shape."""

    __slots__ = ("public", "terms")

    def __init__(self, public: np.ndarray, terms: tuple[FormTerm, ...]):
        self.public, self.terms = public, tuple(terms)

    @property
    def shape(self) -> tuple:
        return self.public.shape

    @property
    def size(self) -> int:
        return self.public.size

    @classmethod
    def of_trunc(cls, t: TruncOpening) -> "LinearForm":
        return TruncForm(t)

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
            _accumulate(out, _scaled(_lead(t.value(), nd), t.coeff, nd))
        return out


class TruncForm(LinearForm):
    """A truncation result (``TruncOpening``) as a linear form: public + coeff [r_msb] -
    [r_hi], its parts computed from the opened c only when asked for; its share and its
    products with one-term forms run as single kernels reading c (``kernels.forms``)."""

    __slots__ = ("trunc",)

    def __init__(self, t: TruncOpening):
        self.trunc = t

    @property
    def shape(self) -> tuple:
        return self.trunc.c.shape

    @property
    def size(self) -> int:
        return self.trunc.c.size

    @property
    def public(self) -> np.ndarray:
        return self.trunc.public

    @property
    def terms(self) -> tuple[FormTerm, ...]:
        t = self.trunc
        return (FormTerm(t.coeff, t.material, "r_msb", is_bit=True), FormTerm(np.int64(-1), t.material, "r_hi"))

    def share(self, rank: int) -> np.ndarray:
        return self.trunc.share(rank)


def _unit(coeff) -> int:
    """1 or -1 if ``coeff`` is that scalar (its product is a sign, not a pass), else 0."""
    if np.ndim(coeff) == 0 and int(coeff) in (1, -1):
        return int(coeff)
    return 0


def _scaled(v: np.ndarray, coeff, nd: int, fresh: bool = False) -> tuple[int, np.ndarray]:
    """(sign, array) with sign * array = coeff * v, multiplying only by a coefficient that is
    not +-1; ``fresh``: v is a temporary this call may overwrite."""
    unit = _unit(coeff)
    if unit:
        return unit, v
    c = _lead(coeff, nd)
    return 1, (np.multiply(v, c, out=v) if fresh and v.shape == np.broadcast_shapes(v.shape, np.shape(c))
               else v * c)


def _accumulate(out: np.ndarray, term: tuple[int, np.ndarray]) -> None:
    sign, x = term
    if sign > 0:
        out += x
    else:
        out -= x


def form_mul(ctx: PartyContext, a: LinearForm, b: LinearForm) -> np.ndarray:
    """This party's share of a * b, untruncated; b is aligned to a's leading axes.

    a * b = Pa Pb + Pa sum_j d_j [v_j] + Pb sum_i c_i [u_i] + sum_ij c_i d_j [u_i v_j].
    Rounds: 0.  Dealer: one product item per pair of terms; a square (``a is b``) asks each
    unordered pair once and takes [u u] = [u] for a 0/1 item.  A coefficient +-1 (a masked
    opening's, a truncation's r_hi) costs no multiplication.
    """
    fused = _trunc_times_term(ctx, a, b)
    if fused is not None:
        return fused
    nd = a.public.ndim
    square = a is b
    pb = _lead(b.public, nd)
    out = a.public * pb if ctx.rank == 0 else np.zeros(np.broadcast_shapes(a.public.shape, pb.shape),
                                                        dtype=np.int64)
    for t in b.terms:
        _accumulate(out, _scaled(a.public * _lead(t.value(), nd), t.coeff, nd, fresh=True))
    for t in a.terms:
        _accumulate(out, _scaled(_lead(t.value(), nd) * pb, t.coeff, nd, fresh=True))
    for i, ta in enumerate(a.terms):
        for j, tb in enumerate(b.terms):
            if square and j < i:
                continue
            if square and i == j and ta.is_bit:
                uv = _lead(ta.value(), nd)
            else:
                uv = ctx.source.product("mul", ta.material.ref(ta.field), tb.material.ref(tb.field),
                                        out.shape)["c"]
            sign, x = _scaled(uv, ta.coeff, nd)
            sign_b, x = _scaled(x, tb.coeff, nd, fresh=x is not uv)
            if square and i != j:
                x = x * np.int64(2) if x is uv else np.multiply(x, 2, out=x)
            _accumulate(out, (sign * sign_b, x))
    return out


def _trunc_times_term(ctx: PartyContext, a: LinearForm, b: LinearForm) -> np.ndarray | None:
    """form_mul of a truncation form and a one-term form of the same size (either order), as
    one kernel (``kernels.trunc_form_mul``); None if the operands are not of that kind.  The
    dealer products are asked for in ``form_mul``'s order, so the plan is the same."""
    if a is b:
        return None
    if isinstance(a, TruncForm) and not isinstance(b, TruncForm):
        t, other, trunc_left = a.trunc, b, True
    elif isinstance(b, TruncForm) and not isinstance(a, TruncForm):
        t, other, trunc_left = b.trunc, a, False
    else:
        return None
    if len(other.terms) != 1 or other.shape != t.c.shape:
        return None
    (term,) = other.terms
    coeff = np.asarray(term.coeff, np.int64)
    if coeff.size not in (1, t.c.size) or (coeff.size > 1 and coeff.shape != t.c.shape):
        return None
    tm, v_ref = t.material, term.material.ref(term.field)
    shape = t.c.shape
    if trunc_left:
        w_mv = ctx.source.product("mul", tm.ref("r_msb"), v_ref, shape)["c"]
        w_hv = ctx.source.product("mul", tm.ref("r_hi"), v_ref, shape)["c"]
    else:
        w_mv = ctx.source.product("mul", v_ref, tm.ref("r_msb"), shape)["c"]
        w_hv = ctx.source.product("mul", v_ref, tm.ref("r_hi"), shape)["c"]
    out = kernels.trunc_form_mul(t.c, t.frac_bits, tm["r_msb"], tm["r_hi"], other.public, coeff,
                                 term.value(), w_mv, w_hv, ctx.rank == 0)
    return out.reshape(shape)
