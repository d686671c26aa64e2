"""softmax and sigmoid on fixed-point secrets: exp's integer split, then Goldschmidt division
on a denominator whose range is known, so no normalisation is needed.

softmax_s along the last axis (k classes), input at any scale s >= f:
  1. d = z - max(z) by ``compare.max_s`` (comparisons in a ring widened by the bits
     above f): 5 rounds for k = 10 (all pairs, one AND gate, the B2A with the select).
  2. e^d for d <= 0 (``exp.exp_nonpositive_s``): split (1 round), [K >= j] for j in
     [K_lo, 0] in one comparison round-set (K < K_lo gives 0: e^d < 2^-(f+1)) in parallel
     with e^u's polynomial (4 rounds each), the product R1 p left untruncated.
  3. One round truncates every e_i and the row sums s = sum_i e_i (raw, before the
     truncation); the max term is e^0 = 1 and every term is in [0, 1], so s in [1, k].
  4. p = e / s by ``polynomial.goldschmidt_s`` on [1, k]: 1 + K rounds (K = 4 for k = 10
     at the default 14 bits: |e_0| <= 0.518, 0.518^16 = 2^-15.2).
  Rounds: max + 1 + max(cmp(64 - s), 4) + 1 + 1 + K = 5 + 1 + 4 + 1 + 1 + 4 = 16 for ten
  classes, at s = f and at s = 2f (the loss's untruncated logits), at every f.
  Bytes per logit and party (128 x 10): 317 at f = 16 (299 to 374 over f = 12..24; most
  of it the max's 45 comparisons per row and the split's 13 per logit); dealer ~1.5 kB.
  Accuracy (tested bound, ``tests/test_protocols_nonlinear.py``, f = 12..24, logit gaps of
  any size): |error| <= 2^-13 p + 4 ulp.  Measured (``benchmarks/nonlinear_accuracy.py``,
  f = 12 / 16 / 20 / 24, rows of 10 logits spread 0.1 to 40 and a gap of 300): max
  absolute error 1.45 / 2.17 / 18.7 / 289 ulp (2.2e-4 / 3.3e-5 / 1.8e-5 / 1.7e-5: above
  f = 16 the 14-bit division dominates), max relative error (p >= 1/2) 5.2e-4 / 3.4e-5 /
  1.8e-5 / 1.7e-5.  Exact for every input (the split and the comparisons cannot wrap).
sigmoid_s: 1 / (1 + e^-x) = N / D with, from exp's split x = K + u:
  K >= 0: N = 1, D = 1 + e^-K e^-u;  K < 0: N = e^K e^u, D = 1 + N,
  both step functions of [K >= j] for j in [-T, T + 1] (T with e^-T e < 2^-(f+2)) times the
  two polynomials e^u, e^-u (which share their powers); D lies in [1, 1 + e], N / D by
  Goldschmidt.  Domain: every input; saturates to 0 and 1 exactly.
  Rounds: 1 + max(cmp(64 - s), 4) + 1 + 1 + K: 10 for f <= 16 (K = 3), 11 above.
  Bytes per element and party: 478 at f = 16 (420 to 606); dealer ~2.3 kB.
  Accuracy (tested bound, f = 12..24, 0, +-1 ulp, +-2^(40-f)): |error| <= 3 ulp.
  Measured over [-50, 50] (f = 12 / 16 / 20 / 24): max absolute error 1.42 / 1.35 / 1.45 /
  2.57 ulp, max relative error (y >= 1/2) 3.7e-4 / 3.1e-5 / 1.8e-6 / 1.5e-7.
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
