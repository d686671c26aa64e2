"""reciprocal, rsqrt and log of a secret over its whole positive range, by normalising its
magnitude with ONE parallel comparison against the powers of the radix.

Common first steps for a secret x > 0 at ``scale`` s and a public domain [lo, hi]:
  1. [x >= t_i] for the powers t_i = r^(e_lo + i) of the radix r (2, or 4 for rsqrt)
     between lo and hi (``steps.threshold_bits_s``: one comparison round-set, 4 rounds in
     Z_2^64), x masked and opened in the same first message.
  2. m = x S(x) + T(x) with S = r^-(e+1) on [r^e, r^(e+1)) (a step form: the product is
     local, one dealer product per threshold) truncated once (1 round): m in [1/r, 1).
     Outside [r^e_lo, r^e_hi), S = 0 and T sets m to the value that gives the function
     at lo (below, x <= 0 included) or at hi (above): *saturation*, never garbage.
  3. The function of m on [1/r, 1) (a Goldschmidt iteration, or a polynomial), and its
     rescaling by another step function of the same bits (2^-(e+1) for the reciprocal),
     folded into the iteration as its numerator: R = R1 R2 with R1 in [2^-e_hi, 2) a form
     and R2 = 2^E an integer applied at the end with no truncation (``exp``'s trick).

reciprocal_s: 1/x.  Default domain [2^-f, 2^(f+2)] (1/x below a quarter ulp beyond it).
  Rounds: 4 + 1 + 1 + K, K = 2 (f <= 15) or 3 Goldschmidt steps (|e_0| <= 1/17): 8 at
  f = 12, 9 at f >= 16.  Bytes per element and party: 501 at f = 16 (387 to 697 over
  f = 12..24: J = f + 4 comparisons); dealer ~2.8 kB.
  Accuracy (tested bound, ``tests/test_protocols_normalized.py``, f = 12..24, the domain's
  ends, +-1 ulp, 1, and beyond it): |error| <= 2 ulp (1 + 1/x).  Measured over the domain
  (``benchmarks/nonlinear_accuracy.py``, f = 12 / 16 / 20 / 24): max absolute error where
  1/x <= 1: 1.26 / 1.24 / 1.26 / 1.21 ulp; max relative error (1/x >= 1/2) 3.8e-4 /
  3.2e-5 / 1.3e-6 / 1.1e-7 (<= 2.1 2^-f).
rsqrt_s: x^(-1/2), radix 4 (m in [1/4, 1), R = 2^-(e+1)); Goldschmidt's coupled iteration
  g -> sqrt m, h -> 1/(2 sqrt m), r = 1/2 - g h, (g, h) <- (g, h)(1 + r), two rounds per
  step.  Default domain [4^-ceil(f/2), 4^ceil((f+4)/2)] clipped to the format.
  Rounds: 4 + 1 + 1 + 2 K: 12 for f <= 20 (K = 3), 14 at f = 24.  Bytes per element and
  party: 353 at f = 16 (304 to 483); dealer ~2 kB.
  Accuracy (tested bound, as above): |error| <= 2 ulp (1 + x^(-1/2)).  Measured: max
  absolute error where x^(-1/2) <= 1: 1.61 / 1.84 / 1.68 / 1.91 ulp; max relative error
  (>= 1/2) 4.9e-4 / 4.0e-5 / 2.4e-6 / 1.5e-7.
log_s: log x = (e + 1) ln 2 + log m, log m by a Chebyshev polynomial in u = 4m - 3 on
  [-1, 1] (degree 8 to 11 for 2^-(f+2)).  Default domain [2^-f, 2^(59-f)].
  Rounds: 4 + 1 + 2 + L + 1, one less where the polynomial's innermost products take their
  coefficients directly (f <= 18): 8 at f = 12 and 16, 9 at f = 20, 10 at f = 24.
  Bytes per element and party: 783 (J = 60 comparisons at f = 16); dealer ~3.6 kB.
  Accuracy (tested bound, as above): |error| <= 2 ulp (1 + |log x|).  Measured over the
  domain (|log x| up to 31): max absolute error 1.55 / 1.54 / 1.72 / 1.52 ulp; max relative
  error (|log x| >= 1/2) 3.0e-4 / 2.2e-5 / 1.6e-6 / 9.2e-8.
rsqrt_times_s: c num x^(-1/2) with the numerator normalised alongside x (Adam's step;
  radix 16 and a polynomial of the degree the caller's precision needs).
Outside the domain every function saturates (never garbage); a public bound the format
cannot hold (lo <= 0, lo below one unit, hi beyond the range) is a one-line error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..party import PartyContext
from .forms import LinearForm, form_mul
from .polynomial import (SUM_BOUND_BITS, Numerator, approximants, goldschmidt_s, least_degree,
                         polys_s, powers_s, trunc_forms_s)
from .steps import combine, threshold_bits_s

__all__ = ["Domain", "reciprocal_s", "rsqrt_s", "rsqrt_times_s", "rsqrt_poly_coeffs", "log_s", "reciprocal_domain", "rsqrt_domain",
           "log_domain"]


@dataclass(frozen=True)
class Domain:
    """A public domain [lo, hi] of a normalised function, radix r: thresholds r^e for e in
    [e_lo, e_hi] (the first at or below lo, the last at or above hi)."""

    lo: float
    hi: float
    radix: int

    @property
    def e_lo(self) -> int:
        return math.floor(math.log(self.lo, self.radix) + 1e-12)

    @property
    def e_hi(self) -> int:
        return math.ceil(math.log(self.hi, self.radix) - 1e-12)

    @property
    def exponents(self) -> range:
        return range(self.e_lo, self.e_hi + 1)

    def check(self, scale: int, frac_bits: int, what: str) -> "Domain":
        """A public bound the format cannot hold is an error (one line, naming it)."""
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and 0 < self.lo < self.hi):
            raise ValueError(f"{what}: the domain needs 0 < lo < hi, got [{self.lo}, {self.hi}]")
        if self.radix ** self.e_lo < 2.0 ** -scale:
            raise ValueError(f"{what}: lo = {self.lo} is below one unit (2^-{scale}) of the input")
        if self.radix ** self.e_hi >= 2.0 ** (SUM_BOUND_BITS - 1 - scale):
            raise ValueError(f"{what}: hi = {self.hi} is beyond the fixed-point range "
                             f"(2^{SUM_BOUND_BITS - 1 - scale} at {scale} fractional bits)")
        return self


def reciprocal_domain(frac_bits: int, lo: float | None = None, hi: float | None = None) -> Domain:
    return Domain(2.0 ** -frac_bits if lo is None else float(lo),
                  2.0 ** (frac_bits + 2) if hi is None else float(hi), 2)


def rsqrt_domain(frac_bits: int, lo: float | None = None, hi: float | None = None) -> Domain:
    top = min(2 * math.ceil((frac_bits + 4) / 2), SUM_BOUND_BITS - 2 - frac_bits)
    return Domain(4.0 ** -math.ceil(frac_bits / 2) if lo is None else float(lo),
                  2.0 ** (top - top % 2) if hi is None else float(hi), 4)


def log_domain(frac_bits: int, lo: float | None = None, hi: float | None = None) -> Domain:
    return Domain(2.0 ** -frac_bits if lo is None else float(lo),
                  2.0 ** (SUM_BOUND_BITS - 2 - frac_bits) if hi is None else float(hi), 2)


def _ring(value: float, bits: int) -> int:
    return int(round(value * 2.0 ** bits))


def _s_bits(dom: Domain) -> int:
    """Fractional bits that make every normaliser r^-(e+1) of the domain an integer."""
    return max(0, math.ceil(math.log2(dom.radix) * (dom.e_hi + 1)))


def _normalized_raw(ctx: PartyContext, bits, xm, dom: Domain, scale: int) -> np.ndarray:
    """m = x S + T raw at scale + ``_s_bits`` (< 2^60: m < 1): S = r^-(e+1) on [r^e,
    r^(e+1)), 0 outside the domain's powers, where T sets m = 1/r."""
    exps = list(dom.exponents)
    s_bits = _s_bits(dom)
    s_vals = [0] + [_ring(float(dom.radix) ** -(e + 1), s_bits) for e in exps[:-1]] + [0]
    edge = _ring(1.0 / dom.radix, scale + s_bits)
    t_vals = [edge] + [0] * (len(exps) - 1) + [edge]
    return bits.times(ctx, s_vals, LinearForm.of_masked(xm)) + \
        bits.share(ctx, t_vals)


def _normalize_s(ctx: PartyContext, x: np.ndarray, scale: int, dom: Domain, m_scale: int,
                 label: str):
    """(bits of x against the radix powers, m as a form at ``m_scale``): m = x r^-(e+1) in
    [1/r, 1) inside the domain's powers, 1/r below the first (x <= 0 included) and above
    the last.  Rounds: comparison + 1."""
    x = np.ascontiguousarray(x, dtype=np.int64).ravel()
    thresholds = [_ring(float(dom.radix) ** e, scale) for e in dom.exponents]
    bits, (xm,) = yield from threshold_bits_s(ctx, x, thresholds, extra=[x])
    (m,) = yield from trunc_forms_s(ctx, [_normalized_raw(ctx, bits, xm, dom, scale)],
                                    scale + _s_bits(dom) - m_scale, label)
    return bits, m


def _rescale_values(dom: Domain, bucket: list[float], r1_bits: int) -> tuple[list[int], list[int]]:
    """Per bucket value R = R1 * 2^E: (R1 at r1_bits, 2^E) with R1 < 2 and E >= 0."""
    r1, r2 = [], []
    for v in bucket:
        e = max(0, math.floor(math.log2(v))) if v > 0 else 0
        r1.append(_ring(v / 2.0 ** e, r1_bits))
        r2.append(1 << e)
    return r1, r2


def _scales(f: int) -> tuple[int, int]:
    """(m's scale, R1's scale): the Goldschmidt start's products stay in the ring."""
    m_scale = min(f + 2, 26)
    return m_scale, min(f + 4, SUM_BOUND_BITS - 10 - m_scale)


def reciprocal_s(ctx: PartyContext, x: np.ndarray, scale: int | None = None,
                 lo: float | None = None, hi: float | None = None):
    """1/x at f fractional bits for a flat secret x at ``scale`` (default f) in the public
    domain [lo, hi] (default [2^-f, 2^(f+2)]): 1/lo below it (x <= 0 too), 1/hi above.
    See the module doc.  Returns this party's share."""
    f = ctx.frac_bits
    s = f if scale is None else int(scale)
    dom = reciprocal_domain(f, lo, hi).check(s, f, "reciprocal")
    if 1.0 / dom.lo >= 2.0 ** (SUM_BOUND_BITS - 2 - f):
        raise ValueError(f"reciprocal: 1/lo = {1 / dom.lo} is beyond the fixed-point range")
    m_scale, r1_bits = _scales(f)
    bits, m = yield from _normalize_s(ctx, x, s, dom, m_scale, "reciprocal")
    exps = list(dom.exponents)
    # R = 1/(x m): 2^-(e+1) in the buckets; 1/(lo / 2) and 1/(hi / 2) where m is set to 1/2
    bucket = [0.5 / dom.lo] + [2.0 ** -(e + 1) for e in exps[:-1]] + [0.5 / dom.hi]
    r1, r2 = _rescale_values(dom, bucket, r1_bits)
    (n,) = yield from goldschmidt_s(ctx, m, m_scale, 0.5, 1.0,
                                    [Numerator(bits.form(r1), r1_bits, 4.0, f)], f + 1,
                                    "reciprocal")
    return bits.times(ctx, r2, n)


#: y0 = a - b m, the linear start for m^(-1/2) on [1/4, 1] minimising max |1 - m y0^2|
#: (0.1708; a grid search to 1e-4)
RSQRT_START = (2.1248, 1.2140)


def _coupled_rsqrt_s(ctx: PartyContext, m: LinearForm, m_scale: int, num: LinearForm,
                     num_scale: int, num_bound: float, work: int, out_scale: int, bits: int,
                     coeff: tuple[int, int] = (1, 0)):
    """coeff * num * m^(-1/2) for m in [1/4, 1] as a form at ``out_scale``: Goldschmidt's
    coupled iteration g -> sqrt m, h -> 1/(2 sqrt m) with the numerator H = num h riding
    along at ``work`` bits (|num| <= ``num_bound``); |r| <= 2^-bits.  ``coeff`` = (integer,
    its fractional bits), a public factor folded into the last truncation.
    Rounds: 1 + 2 K (``_rsqrt_steps``)."""
    # y0 = a - b m at c bits; g0 = m y0, h0 = y0 / 2 at w, H0 = num y0 / 2 at `work`
    top = math.ceil(math.log2(2.0 * max(num_bound, 1.0)))        # |num y0| < 2 |num|
    c = min(12, SUM_BOUND_BITS - 2 - 2 * m_scale, SUM_BOUND_BITS - 1 - num_scale - m_scale - top)
    if c < 6 or work + m_scale + top > SUM_BOUND_BITS - 1:
        raise ValueError(f"rsqrt: a numerator at {num_scale} bits leaves no room for the iteration")
    a, b = (_ring(v, c) for v in RSQRT_START)
    y0 = m.affine(-b, np.int64(a) << np.int64(m_scale))            # at m_scale + c
    w = m_scale
    g, h, hh = yield from trunc_forms_s(
        ctx, [form_mul(ctx, m, y0), y0.share(ctx.rank), form_mul(ctx, num, y0)],
        [m_scale + c, c + 1, num_scale + m_scale + c + 1 - work], "rsqrt")
    half = (np.int64(1) << np.int64(2 * w - 1)) if ctx.rank == 0 else np.int64(0)
    steps = _rsqrt_steps(bits)
    k, k_bits = coeff
    for i in range(steps):
        (r,) = yield from trunc_forms_s(ctx, [half - form_mul(ctx, g, h)], w, "rsqrt")
        last = i == steps - 1
        raw = (hh.share(ctx.rank) << np.int64(w)) + form_mul(ctx, hh, r)
        raws = [raw * np.int64(k) if last and k != 1 else raw]
        shifts = [w + work + k_bits - out_scale - 1 if last else w]     # the last: 2 k H
        if not last:
            raws += [(g.share(ctx.rank) << np.int64(w)) + form_mul(ctx, g, r),
                     (h.share(ctx.rank) << np.int64(w)) + form_mul(ctx, h, r)]
            shifts += [w, w]
        got = yield from trunc_forms_s(ctx, raws, shifts, "rsqrt")
        hh = got[0]
        if not last:
            g, h = got[1], got[2]
    return hh


def _rsqrt_buckets(dom: Domain) -> list[float]:
    """R = x^(-1/2) / m^(-1/2) per bucket: 2^-(e+1) inside; where saturated m = 1/4
    (m^(-1/2) = 2), so lo^(-1/2) / 2 and hi^(-1/2) / 2."""
    return [0.5 / math.sqrt(dom.lo)] + [2.0 ** -(e + 1) for e in list(dom.exponents)[:-1]] + \
        [0.5 / math.sqrt(dom.hi)]


def rsqrt_s(ctx: PartyContext, x: np.ndarray, scale: int | None = None,
            lo: float | None = None, hi: float | None = None):
    """x^(-1/2) at f fractional bits for a flat secret x at ``scale`` in [lo, hi] (default
    ``rsqrt_domain``): lo^(-1/2) below (x <= 0 too), hi^(-1/2) above.  Module doc."""
    f = ctx.frac_bits
    s = f if scale is None else int(scale)
    dom = rsqrt_domain(f, lo, hi).check(s, f, "rsqrt")
    m_scale, r1_bits = _scales(f)
    bits, m = yield from _normalize_s(ctx, x, s, dom, m_scale, "rsqrt")
    r1, r2 = _rescale_values(dom, _rsqrt_buckets(dom), r1_bits)
    hh = yield from _coupled_rsqrt_s(ctx, m, m_scale, bits.form(r1), r1_bits, 2.0, m_scale, f, f + 1)
    return bits.times(ctx, r2, hh)


#: m^(-1/2) on [1/16, 1] in w = 2m - 1 (w in [-7/8, 1]) and log m on [1/2, 1] in u = 4m - 3
#: (u in [-1, 1]), every degree up to 20 and 12: public constants
_RSQRT16 = approximants(lambda w: ((w + 1) / 2) ** -0.5, -7.0 / 8.0 - 2.0 ** -12, 1.0 + 2.0 ** -12, 20,
                        relative=True)
_LOG = approximants(lambda v: np.log((v + 3) / 4), -1.0, 1.0, 12, relative=False)


def rsqrt_poly_coeffs(bits: int) -> list[float]:
    """Coefficients in w = 2m - 1 of m^(-1/2) on [1/16, 1], of the least degree (<= 20)
    whose relative error is below 2^-bits (degree 20's otherwise)."""
    return least_degree(_RSQRT16, bits)


def rsqrt_times_s(ctx: PartyContext, x: np.ndarray, scale: int, lo: float, hi: float,
                  num: LinearForm, num_scale: int, bound: float, coeff: float = 1.0,
                  bits: int | None = None):
    """coeff * num * x^(-1/2) as a flat form at f, for a flat secret x at ``scale`` in
    [lo, hi] (saturated outside: lo^(-1/2) below, x <= 0 too; hi^(-1/2) above) and a
    numerator form at ``num_scale`` with |num x^(-1/2)| <= ``bound``: Adam's step, where
    num and x may both be tiny and the result is bounded.  Relative error <= 2^-bits
    (default f + 1) plus 2 ulp.

    Radix 16 (one comparison against 16^e, half the thresholds of radix 4): m = x 16^-(e+1)
    in [1/16, 1) and the numerator n = coeff num 4^-(e+1) (bounded by |coeff| bound, so the
    public coeff keeps ~28 bits) in one round; m^(-1/2) by a Chebyshev polynomial in
    w = 2m - 1 at 26 bits (degree 12 for 2^-10, 17 for 2^-14: Horner in w^4, 5 or 6
    rounds); the product n p (1 round).
    Rounds: 4 + 1 + 5 + 1 = 11 at 10 bits.  Bytes per element and party: 8 + J (8 + ~5.5)
    + 8 per truncation (J = log_16(hi / lo) + 1)."""
    f = ctx.frac_bits
    want = f + 1 if bits is None else int(bits)
    dom = Domain(float(lo), float(hi), 16).check(scale, f, "rsqrt")
    coeffs = rsqrt_poly_coeffs(want)
    # m and its powers at ~26 bits whatever f: the polynomial's coefficients (sum |c| ~ 40 at
    # degree 12, ~250 at 17) multiply the powers' rounding; the Horner products (twice the
    # scale) must still fit
    m_scale = min(26, int((SUM_BOUND_BITS - 1 - math.log2(sum(abs(c) for c in coeffs) + 1)) // 2))
    # n = coeff num 4^-(e+1) <= |coeff| bound, p = m^(-1/2) in [1, 4]: n at as many bits as
    # the product n p allows (a small lr makes n small: its relative precision counts)
    p_scale = f + 2
    n_scale = SUM_BOUND_BITS - 4 - p_scale - math.ceil(math.log2(max(bound * abs(coeff), 2.0 ** -40)))
    r_bits = 2 * (dom.e_hi + 1)                     # every 4^-(e+1) an integer
    c_bits = SUM_BOUND_BITS - 2 - num_scale - r_bits - math.ceil(math.log2(max(bound * abs(coeff), 2.0 ** -40)))
    if num_scale + r_bits - n_scale + c_bits <= 0 or c_bits < 8:
        raise ValueError(f"rsqrt_times_s: a bound of {bound} at {num_scale} bits does not fit")
    x = np.ascontiguousarray(x, dtype=np.int64).ravel()
    thresholds = [_ring(16.0 ** e, scale) for e in dom.exponents]
    bits_f, (xm,) = yield from threshold_bits_s(ctx, x, thresholds, extra=[x])
    # R = x^(-1/2) / m^(-1/2): 4^-(e+1) inside; m = 1/16 where saturated (m^(-1/2) = 4)
    r = [_ring(v, r_bits) for v in [0.25 / math.sqrt(dom.lo)] +
         [4.0 ** -(e + 1) for e in list(dom.exponents)[:-1]] + [0.25 / math.sqrt(dom.hi)]]
    num_r = bits_f.times(ctx, r, num)
    c_int = _ring(coeff, c_bits)
    raws = [_normalized_raw(ctx, bits_f, xm, dom, scale), num_r * np.int64(c_int)]
    shifts = [scale + _s_bits(dom) - m_scale, num_scale + r_bits + c_bits - n_scale]
    # coeff keeps c_bits bits in that product; where that leaves it short of 2^-30 relative
    # its residual (a far smaller number: more bits) is a second truncation of the same round
    rest = coeff - c_int / 2.0 ** c_bits
    rest_bits = c_bits + 24
    if rest and abs(coeff) * 2.0 ** c_bits < 2.0 ** 30 and num_scale + r_bits + rest_bits > n_scale:
        raws.append(num_r * np.int64(_ring(rest, rest_bits)))
        shifts.append(num_scale + r_bits + rest_bits - n_scale)
    got = yield from trunc_forms_s(ctx, raws, shifts, "rsqrt")
    m, n = got[0], got[1] if len(got) == 2 else combine((1, got[1]), (1, got[2]))
    w = m.affine(2, -(1 << m_scale))                                # 2m - 1 in [-7/8, 1]
    pw = yield from powers_s(ctx, w, m_scale, m_scale, min(4, len(coeffs) - 1), "rsqrt")
    (p,) = yield from polys_s(ctx, pw, m_scale, m_scale, [coeffs], p_scale, 1.0, "rsqrt")
    (u,) = yield from trunc_forms_s(ctx, [form_mul(ctx, n, p)], n_scale + p_scale - f, "rsqrt")
    return u


def _rsqrt_steps(bits: int) -> int:
    """Coupled iterations for |r| <= 2^-bits from the start's worst |r_0| (quadratic)."""
    a, b = RSQRT_START
    grid = np.linspace(0.25, 1.0, 2049)
    r = float(np.abs(0.5 * (1 - grid * (a - b * grid) ** 2)).max()) + 2.0 ** -10
    k = 0
    while r > 2.0 ** -bits:
        r, k = 1.5 * r * r + r ** 3, k + 1
    return k


def log_s(ctx: PartyContext, x: np.ndarray, scale: int | None = None,
          lo: float | None = None, hi: float | None = None):
    """log x at f fractional bits for a flat secret x at ``scale`` in [lo, hi] (default
    ``log_domain``): log lo below (x <= 0 too), log hi above.  Module doc."""
    f = ctx.frac_bits
    s = f if scale is None else int(scale)
    dom = log_domain(f, lo, hi).check(s, f, "log")
    m_scale = min(f + 2, 26)
    bits, m = yield from _normalize_s(ctx, x, s, dom, m_scale, "log")
    exps = list(dom.exponents)
    # log x = log m + (e + 1) ln 2; saturated buckets have m = 1/2
    offsets = [math.log(dom.lo) + math.log(2)] + [(e + 1) * math.log(2) for e in exps[:-1]] + \
        [math.log(dom.hi) + math.log(2)]
    u = m.affine(4, -(3 << m_scale))                                 # 4m - 3 in [-1, 1]
    coeffs = least_degree(_LOG, min(f, 24) + 2)
    pw = yield from powers_s(ctx, u, m_scale, m_scale, 4, "log")
    (p,) = yield from polys_s(ctx, pw, m_scale, m_scale, [coeffs], f, 1.0, "log", direct=True)
    return p.share(ctx.rank) + bits.share(ctx, [_ring(v, f) for v in offsets])
