"""Piecewise-constant functions of a secret from one parallel comparison round-set.

``threshold_bits_s`` compares a secret x with J public thresholds t_0 < ... < t_{J-1} at
once: the J differences x - t_j go through ONE comparison (``compare.msb_xor_s`` on J n
elements, so its rounds are those of a single DReLU), and each bit [x >= t_j] becomes a
B2A linear form e_j + (1 - 2 e_j)[rho_j] in its own dealer bit (``compare.b2a_s``; the J
openings share the comparison's last round).

A step function g with value v_0 below t_0 and v_{j+1} on [t_j, t_{j+1}) is then
    g(x) = v_0 + sum_j (v_{j+1} - v_j) [x >= t_j],
a *linear form* in the J dealer bits (``Steps.form``): it costs no round, and a product of
it with another form costs no opening (one dealer product per pair of items).  ``Steps``
keeps the bits of one comparison and evaluates a step function's share and its product
with a form in one pass (``kernels.step_share`` / ``kernels.step_product``: the same
shares as ``forms.form_mul`` gives, without its J T temporaries).  This is how the nonlinear protocols normalise a magnitude (x times 2^-k for the
power of two just above x), select e^K for an integer K, or saturate outside a domain:
each is a step function of the same bits.

Cost of ``threshold_bits_s`` for n elements and J thresholds in Z_2^m: the rounds of one
comparison (2 + ceil(log_g ceil((m-1)/b)), ``compare``: 4 for m = 64 and for m = 32);
bytes per party: J n times those of one DReLU (8 bytes + ~33 bits + 1 bit for m = 64);
dealer: one comparison item of J n elements and J bit items of n.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import kernels
from ..party import PartyContext
from .compare import b2a_s, flip_xor, msb_xor_s, pack_bits, unpack_bits
from .forms import FormTerm, LinearForm
from .rounds import gather

__all__ = ["Steps", "threshold_bits_s", "step_form", "combine", "constant_form"]


class Steps:
    """The bits [x >= t_j] of one ``threshold_bits_s``: public e (J, n) and the dealer bits
    rho_j; step functions of them by their values (ring integers, one more than bits)."""

    def __init__(self, bit_forms: Sequence[LinearForm]):
        self.forms = list(bit_forms)
        self.e = np.stack([b.public for b in self.forms]).astype(np.int64, copy=False)
        self.materials = [b.terms[0].material for b in self.forms]

    def __len__(self) -> int:
        return len(self.forms)

    def _increments(self, values: Sequence[int]) -> tuple[int, np.ndarray]:
        if len(values) != len(self.forms) + 1:
            raise ValueError("a step function needs one value more than it has thresholds")
        v = [int(a) for a in values]
        return v[0], np.array([hi - lo for lo, hi in zip(v[:-1], v[1:])], dtype=np.int64)

    def form(self, values: Sequence[int]) -> LinearForm:
        """The step function as a linear form in the bits (``step_form``)."""
        return step_form(self.forms, values)

    def _rho(self) -> np.ndarray:
        return np.stack([m["a"] for m in self.materials])

    def share(self, ctx: PartyContext, values: Sequence[int]) -> np.ndarray:
        """This party's share of the step function.  Rounds: 0."""
        v0, d = self._increments(values)
        return kernels.step_share(self.e, d, self._rho(), v0, ctx.rank == 0)

    def times(self, ctx: PartyContext, values: Sequence[int], form: LinearForm) -> np.ndarray:
        """This party's share of (step function) * form for a flat form of the bits' length:
        the dealer's product of every bit with every item of the form.  Rounds: 0."""
        v0, d = self._increments(values)
        n = self.e.shape[1]
        if form.public.shape != (n,):
            raise ValueError(f"a step function of {n} elements times a form of {form.public.shape}")
        live = [j for j in range(len(d)) if d[j]]
        items = [t.value() for t in form.terms]
        coeffs = [np.broadcast_to(np.asarray(t.coeff, np.int64), (n,)) for t in form.terms]
        prods = [[ctx.source.product("mul", self.materials[j].ref("a"), t.material.ref(t.field), (n,))["c"]
                  for t in form.terms] for j in live]
        t_count = len(items)
        stack = (lambda rows: np.stack(rows) if rows else np.zeros((0, n), np.int64))
        return kernels.step_product(
            self.e[live], d[live], self._rho()[live] if live else np.zeros((0, n), np.int64), v0,
            np.asarray(form.public, np.int64), stack(coeffs), stack(items),
            np.stack([np.stack(r) for r in prods]) if prods and t_count else np.zeros((len(live), t_count, n), np.int64),
            ctx.rank == 0)


def threshold_bits_s(ctx: PartyContext, x: np.ndarray, thresholds: Sequence[int],
                     bits: int | None = None, extra: Sequence[np.ndarray] = ()):
    """(``Steps``: [x >= t_j] for each public threshold t_j as flat B2A ``LinearForm``s,
    the ``MaskedOperand``s of ``extra``).  x is a flat share; thresholds are ring integers at
    x's scale; the comparison runs in Z_2^bits (default ``cmp_bits``) and is exact while
    |x - t_j| < 2^(bits-1).  ``extra`` secrets are masked and opened in the first message
    (for products with the bits later, at no round of their own)."""
    x = np.ascontiguousarray(x, dtype=np.int64).ravel()
    t = np.asarray(thresholds, dtype=np.int64)
    n, j = x.size, t.size
    if j == 0:
        raise ValueError("threshold_bits_s needs at least one threshold")
    diffs = (x[None, :] - t[:, None]) if ctx.rank == 0 else np.broadcast_to(x, (j, n))
    msb, opened = yield from msb_xor_s(ctx, np.ascontiguousarray(diffs).ravel(), extra=extra, bits=bits)
    # [x >= t] = NOT msb(x - t); XOR shares unpack and repack locally, one row per threshold
    geq = pack_bits(unpack_bits(flip_xor(ctx, msb)[None, :], j * n)[0].reshape(j, n))
    forms = yield from gather(*(b2a_s(ctx, geq[i], n) for i in range(j)))
    return Steps(forms), opened


def step_form(bit_forms: Sequence[LinearForm], values: Sequence[int]) -> LinearForm:
    """The step function with ``values[0]`` below the first threshold and ``values[j+1]``
    from threshold j on, as a linear form in the bits (public ring integers; a step with no
    change adds no term)."""
    if len(values) != len(bit_forms) + 1:
        raise ValueError("a step function needs one value more than it has thresholds")
    v = [int(a) for a in values]
    public = np.full(bit_forms[0].public.shape, v[0], dtype=np.int64)
    terms = []
    for b, lo, hi in zip(bit_forms, v[:-1], v[1:]):
        delta = np.int64(hi - lo)
        if delta == 0:
            continue
        public += b.public * delta
        (term,) = b.terms
        terms.append(FormTerm(term.coeff * delta, term.material, term.field, term.is_bit))
    return LinearForm(public, tuple(terms))


def combine(*pairs: tuple[int, LinearForm]) -> LinearForm:
    """sum_k c_k form_k for public integers c_k (forms of one shape): still a linear form,
    with the terms of all of them."""
    public = None
    terms: list[FormTerm] = []
    for c, form in pairs:
        k = np.int64(c)
        public = form.public * k if public is None else public + form.public * k
        terms += [FormTerm(t.coeff * k, t.material, t.field, t.is_bit) for t in form.terms]
    if public is None:
        raise ValueError("combine needs at least one form")
    return LinearForm(public, tuple(terms))


def constant_form(value: int, shape: tuple) -> LinearForm:
    """A public constant as a linear form without terms."""
    return LinearForm(np.full(shape, int(value), dtype=np.int64), ())
