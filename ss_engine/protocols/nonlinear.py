"""softmax and sigmoid on fixed-point secrets: exp's integer split, then Goldschmidt division
on a denominator whose range is known, so no normalisation is needed.

softmax_s along the last axis (k classes), input at any scale s >= f:
  1. d = z - max(z) by ``compare.max_s`` (comparisons in a ring widened by the bits
     above f): 11 rounds for k = 10 with the all-pairs max of today.
  2. e^d for d <= 0 (``exp.exp_nonpositive_s``): split (1 round), [K >= j] for j in
     [K_lo, 0] in one comparison round-set (K < K_lo gives 0: e^d < 2^-(f+1)) in parallel
     with e^u's polynomial, the product R1 p left untruncated.
  3. One round truncates every e_i and the row sums s = sum_i e_i (raw, before the
     truncation); the max term is e^0 = 1 and every term is in [0, 1], so s in [1, k].
  4. p = e / s by ``polynomial.goldschmidt_s`` on [1, k]: 1 + K rounds (K = 4 for k = 10
     at the default 14 bits: |e_0| <= 0.518, 0.518^16 = 2^-15.2).
  Rounds: max + 1 + max(cmp(64 - s), 4) + 1 + 1 + K: 11 + 1 + 6 + 1 + 1 + 4 = 24 for ten
  classes of untruncated logits (s = 2f) with today's comparison; 25 at s = f.  The
  comparison of a faster DReLU takes its place (and the max's): with a 4-round comparison
  and a 5-round max of 10, 5 + 1 + 4 + 1 + 1 + 4 = 16.
  Error: relative <= 2^-bits (default 14) plus a few ulp: 3e-5 absolute at f = 16
  (``tests/test_protocols_nonlinear.py`` measures it at f = 12..24).  Exact for every
  input (the split and the comparisons cannot wrap): logit differences of any size.
  Bytes per element and party for 128 x 10 at s = 2f: 383 (the max ~45%, the 13
  comparisons of the split ~40%).
sigmoid_s: 1 / (1 + e^-x) = N / D with, from exp's split x = K + u:
  K >= 0: N = 1, D = 1 + e^-K e^-u;  K < 0: N = e^K e^u, D = 1 + N,
  both step functions of [K >= j] for j in [-T, T + 1] (T with e^-T e < 2^-(f+2)) times the
  two polynomials e^u, e^-u (which share their powers); D lies in [1, 1 + e], N / D by
  Goldschmidt.  Saturates to 0 and 1 exactly.  Rounds: 1 + max(cmp(64 - s), 4) + 1 + 1 + K
  (K = 3 at f = 16): 13.  Error <= 2 ulp.
"""
from __future__ import annotations

import math

import numpy as np

from ..party import PartyContext
from .compare import max_s
from .exp import _exp_parts, exp_nonpositive_s
from .polynomial import SUM_BOUND_BITS, Numerator, denominator_scale, goldschmidt_s, trunc_forms_s

__all__ = ["softmax_s", "softmax_form_s", "sigmoid_s", "sigmoid_form_s", "SOFTMAX_BITS"]

#: relative precision of the softmax's normalisation (its Goldschmidt iterations)
SOFTMAX_BITS = 14


def _scale(ctx: PartyContext, scale: int | None) -> int:
    s = ctx.frac_bits if scale is None else int(scale)
    if s < ctx.frac_bits:
        raise ValueError(f"input scale {s} below the engine's {ctx.frac_bits} fractional bits")
    return s


def softmax_form_s(ctx: PartyContext, z: np.ndarray, scale: int | None = None,
                   bits: int = SOFTMAX_BITS):
    """Softmax along the last axis as a flat ``LinearForm`` (a truncation result) at f
    fractional bits; relative error <= 2^-bits plus a few ulp.  See module doc."""
    z = np.asarray(z, dtype=np.int64)
    shape, k = z.shape, z.shape[-1]
    sc = _scale(ctx, scale)
    f = ctx.frac_bits
    # compare in a ring widened by the bits above f: the documented bound holds at any scale
    m = yield from max_s(ctx, z, axis=-1,
                         bits=min(64, ctx.config.protocol.cmp_bits + sc - ctx.frac_bits))
    raw, raw_scale = yield from exp_nonpositive_s(ctx, (z - m[..., None]).ravel(), sc,
                                                  math.ceil(math.log2(k)) + 1)
    raw = raw.reshape(shape)
    # the sum may need fewer bits than the terms: the start's product of two sums must fit
    work = f + 2
    s_scale = denominator_scale(k * (1.0 + 2.0 ** -8), work, work)
    e, s = yield from trunc_forms_s(ctx, [raw, raw.sum(axis=-1)],
                                    [raw_scale - work, raw_scale - s_scale], "softmax")
    (p,) = yield from goldschmidt_s(ctx, s, s_scale, 1.0 - 2.0 ** -8, k * (1.0 + 2.0 ** -8),
                                    [Numerator(e, work, 1.0, f)], bits, "softmax", flat=True)
    return p


def softmax_s(ctx: PartyContext, z: np.ndarray, scale: int | None = None, bits: int = SOFTMAX_BITS):
    """Softmax along the last axis of a (rows, k) secret with ``scale`` fractional bits
    (default f); the result has f."""
    return (yield from softmax_form_s(ctx, z, scale, bits)).share(ctx.rank).reshape(np.shape(z))


def sigmoid_form_s(ctx: PartyContext, x: np.ndarray, scale: int | None = None):
    """1 / (1 + e^-x) at f fractional bits as a flat form (module doc)."""
    f = ctx.frac_bits
    sc = _scale(ctx, scale)
    t = math.ceil((f + 2) * math.log(2) + 1)
    thresholds = list(range(-t, t + 2))
    bits, (p_plus, p_minus), p_scale = yield from _exp_parts(ctx, x, sc, thresholds, "sigmoid",
                                                             signs=(1, -1))
    ks = range(-t, t + 1)
    r_bits = min(f + 8, SUM_BOUND_BITS - 3 - p_scale)
    neg = [0] + [round(math.exp(k) * 2.0 ** r_bits) if k < 0 else 0 for k in ks] + [0]
    pos = [0] + [round(math.exp(-k) * 2.0 ** r_bits) if k >= 0 else 0 for k in ks] + [0]
    one = 1 << (p_scale + r_bits)
    geq0 = [0] + [one if k >= 0 else 0 for k in ks] + [one]
    n_raw = bits.times(ctx, neg, p_plus)              # e^x where K < 0
    g = bits.share(ctx, geq0)
    d_raw = bits.times(ctx, pos, p_minus) + n_raw
    if ctx.rank == 0:
        d_raw += np.int64(one)
    work = f + 2
    d_scale = denominator_scale((1 + math.e) * (1 + 2.0 ** -8), work, work)
    raw_scale = p_scale + r_bits
    n, d = yield from trunc_forms_s(ctx, [n_raw + g, d_raw], [raw_scale - work, raw_scale - d_scale],
                                    "sigmoid")
    (y,) = yield from goldschmidt_s(ctx, d, d_scale, 1.0 - 2.0 ** -8, (1 + math.e) * (1 + 2.0 ** -8),
                                    [Numerator(n, work, 1.0, f)], f + 2, "sigmoid")
    return y


def sigmoid_s(ctx: PartyContext, x: np.ndarray, scale: int | None = None):
    """1 / (1 + e^-x) at f fractional bits for a flat secret at ``scale`` (module doc)."""
    return (yield from sigmoid_form_s(ctx, x, scale)).share(ctx.rank)
