"""exp, reciprocal and softmax on fixed-point secrets.

Every step below multiplies *truncation results* and opened operands as linear forms
(``protocols.forms.form_mul``: the dealer supplies the products of its items), so a step's
only round is its truncation.  exp and softmax take their input at any scale s >= f
(``scale``, default f): an untruncated product (s = 2f) costs no truncation of its own, the
first step of exp shifts by n + s - f instead of n, and the max compares at scale s.

exp_s (limit approximation, as in CrypTen): exp(x) ~ (1 + x / 2^n)^(2^n), n squarings.
  Domain: x in [-2^n, 0] (softmax feeds max-subtracted logits); there the base lies in
  [0, 1].  Error: |(1+x/2^n)^(2^n) - e^x| <= e^x x^2 / 2^(n+1) <= 0.55 / 2^n (at x = -2),
  plus the fixed-point error of the squarings, < 2^(n+1) ulp.  n = 8: < 3e-3 absolute at
  f = 16.  Rounds: 1 + n (a truncation each; the square of a truncation result is local).
reciprocal_s (Newton-Raphson) for x in a public interval [lo, hi], 0 < lo:
  y0 = alpha - beta x, with alpha = beta (lo + hi) and beta = 2 / (lo hi + (lo + hi)^2 / 4)
  (the equioscillating linear start), so |1 - x y0| <= e0 = 1 - beta lo hi; each step
  y <- y (2 - x y) squares the relative error.  Steps are chosen so e0^(2^k) < 2^-p
  (p = f + 1 by default; capped by ProtocolConfig.recip_iterations).  x is opened once,
  in the message that truncates beta x.  Rounds: 1 + 2k.  Relative error ~2^-f plus a few
  ulp.
softmax_s along the last axis: max-subtraction by all-pairs max (5 rounds for 10 classes),
  exp, sum, reciprocal on [1, k + 1/2] to 14 bits (4 steps for 10 classes), one product
  and its truncation: 5 + 9 + 9 + 1 = 24 rounds for 10 classes, at any input scale.
  Error < 4e-3 absolute at f = 16.
"""
from __future__ import annotations

import numpy as np

from ..encoding import encode
from ..party import PartyContext
from .beaver import MaskedOperand
from .compare import max_s
from .forms import LinearForm, form_mul
from .rounds import open_ring
from .truncation import trunc_finish, trunc_open_many, trunc_prepare

__all__ = ["exp_s", "exp_form_s", "reciprocal_s", "recip_form_s", "softmax_s", "softmax_form_s",
           "recip_steps", "SOFTMAX_RECIP_BITS"]

SOFTMAX_RECIP_BITS = 14


def _scale(ctx: PartyContext, scale: int | None) -> int:
    s = ctx.frac_bits if scale is None else int(scale)
    if s < ctx.frac_bits:
        raise ValueError(f"input scale {s} below the engine's {ctx.frac_bits} fractional bits")
    return s


def _trunc_form(ctx: PartyContext, raw: np.ndarray, shift: int, label: str):
    return LinearForm.of_trunc((yield from trunc_open_many(ctx, [raw], shift, label))[0])


def exp_form_s(ctx: PartyContext, x: np.ndarray, scale: int | None = None):
    """exp(x) as a ``LinearForm`` (a truncation result) at f fractional bits."""
    n = ctx.config.protocol.exp_iterations
    first = n + _scale(ctx, scale) - ctx.frac_bits
    y = (yield from _trunc_form(ctx, np.asarray(x, dtype=np.int64), first, "exp")).affine(
        1, encode(1.0, ctx.config.fixed))
    for _ in range(n):
        y = yield from _trunc_form(ctx, form_mul(ctx, y, y), ctx.frac_bits, "exp")
    return y


def exp_s(ctx: PartyContext, x: np.ndarray, scale: int | None = None):
    """exp(x) for x in [-2^n, 0], n = ProtocolConfig.exp_iterations, x with ``scale``
    fractional bits (default f); the result has f (see module doc)."""
    return (yield from exp_form_s(ctx, x, scale)).share(ctx.rank)


def recip_steps(lo: float, hi: float, precision_bits: int, cap: int) -> tuple[float, float, int]:
    """(alpha, beta, steps) so that the relative error is below 2^-precision_bits."""
    beta = 2.0 / (lo * hi + (lo + hi) ** 2 / 4.0)
    alpha = beta * (lo + hi)
    e0 = 1.0 - beta * lo * hi
    steps = 0
    err = e0
    while err > 2.0 ** -precision_bits and steps < cap:
        err = err * err
        steps += 1
    return alpha, beta, steps


def recip_form_s(ctx: PartyContext, x: np.ndarray, lo: float, hi: float,
                 precision_bits: int | None = None):
    """1/x as a ``LinearForm`` (a truncation result); see ``reciprocal_s``."""
    if not 0 < lo < hi:
        raise ValueError("reciprocal_s needs 0 < lo < hi")
    f = ctx.frac_bits
    bits = f + 1 if precision_bits is None else int(precision_bits)
    alpha, beta, steps = recip_steps(lo, hi, bits, ctx.config.protocol.recip_iterations)
    x = np.ascontiguousarray(x, dtype=np.int64)
    # one message opens x's mask (reused in every step) and truncates -beta x
    mask = ctx.source.mask(x.shape)
    tmat, tz = trunc_prepare(ctx, x * encode(-beta, ctx.config.fixed), f)
    e, c = yield from open_ring(ctx, [x - mask["a"], tz], "recip_open")
    x_form = LinearForm.of_masked(MaskedOperand(x, e, mask))
    y = LinearForm.of_trunc(trunc_finish(tmat, c)).affine(1, encode(alpha, ctx.config.fixed))
    two = encode(2.0, ctx.config.fixed)
    for _ in range(steps):
        u = yield from _trunc_form(ctx, form_mul(ctx, x_form, y), f, "recip")      # x y
        y = yield from _trunc_form(ctx, form_mul(ctx, y, u.affine(-1, two)), f, "recip")  # y (2 - x y)
    return y


def reciprocal_s(ctx: PartyContext, x: np.ndarray, lo: float, hi: float,
                 precision_bits: int | None = None):
    """1/x for x in [lo, hi] (public bounds, 0 < lo < hi), relative error below
    2^-precision_bits (default f + 1) plus fixed-point rounding.  See module doc."""
    return (yield from recip_form_s(ctx, x, lo, hi, precision_bits)).share(ctx.rank)


def softmax_form_s(ctx: PartyContext, z: np.ndarray, scale: int | None = None):
    """Softmax along the last axis as a flat ``LinearForm`` (a truncation result) at f bits."""
    z = np.asarray(z, dtype=np.int64)
    k = z.shape[-1]
    sc = _scale(ctx, scale)
    # compare in a ring widened by the bits above f: the documented bound holds at any scale
    m = yield from max_s(ctx, z, axis=-1,
                         bits=min(64, ctx.config.protocol.cmp_bits + sc - ctx.frac_bits))
    e = yield from exp_form_s(ctx, z - m[..., None], sc)
    s = e.share(ctx.rank).sum(axis=-1)
    # the max term is exactly (1 + 0)^(2^n) = 1 and every term is >= 0 and <= 1 (+1 ulp),
    # so s lies in [1, k]; 14 bits of relative precision are ample for a gradient
    inv = yield from recip_form_s(ctx, s, 1.0, float(k) + 0.5, SOFTMAX_RECIP_BITS)
    (p,) = yield from trunc_open_many(ctx, [form_mul(ctx, e, inv).ravel()], ctx.frac_bits, "softmax")
    return LinearForm.of_trunc(p)


def softmax_s(ctx: PartyContext, z: np.ndarray, scale: int | None = None):
    """Softmax along the last axis of a (rows, k) secret with ``scale`` fractional bits
    (default f; k <= 2^(f-1) classes); the result has f."""
    return (yield from softmax_form_s(ctx, z, scale)).share(ctx.rank).reshape(np.shape(z))
