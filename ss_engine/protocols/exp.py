"""exp on fixed-point secrets by an exact integer split and one parallel comparison.

Protocol ``exp_s`` for a secret x with ``scale`` s >= f fractional bits:
  1. Split (1 round): K = trunc(x, s), the integer part (floor(x) or floor(x) + 1, the
     exact truncation's unbiased rounding), and u = x - K in (-1, 1 + 2^-f) at f bits, as a
     linear form: for s = f, x is masked and opened in the same message (u = X - 2^f K);
     for s > f, u = trunc(x, s - f) - 2^f K (two truncations of the one value).  Nothing
     can wrap: K and u are exact for every |x| < 2^62 raw units.
  2. In parallel:
     a. [K >= j] for the integers j in [K_lo, K_hi + 1] in ONE comparison round-set
        (``steps.threshold_bits_s``) in Z_2^(64-s), exact for every K the split can give;
     b. e^u by a degree-d Chebyshev polynomial on [-1, 1] (``polynomial``: u^2; u^3, u^4;
        Q_1; p: 4 rounds, hidden behind the comparison).
  3. e^x = e^K e^u with e^K a step function of the bits, split into R1 = e^K / 2^E(K)
     (in [e, 2e) for K >= 1, e^K below: a form at F_R bits) and the integer R2 = 2^E(K):
     q = trunc(R1 p) >= 1 (1 round; it keeps f bits of relative precision), e^x = R2 q (a
     product of forms with an integer factor: no truncation, no round), so no product
     ever exceeds 2^61 raw units.
  Saturation (never garbage): K < K_lo gives 0 (e^x < 2^-(f+1)); K > K_hi gives
  e^(K_hi + 1), the largest value below the format bound (e^x beyond it).
  Domain (exact): x <= x_hi = K_hi = floor((61 - f) ln 2) - 1, i.e. 30 at f = 16.
  Rounds: 1 + max(comparison, 4) + 1 = 1 + 4 + 1 = 6 at every f (the comparison of K in
  Z_2^(64-s): 4 rounds with the block comparator, beside the polynomial's 4).
  Bytes per element and party: 8 (split) [+ 8 for s = f] + J comparisons in Z_2^(64-s)
  (J = K_hi - K_lo + 2, 44 at f = 16) + 8 per truncation of the polynomial (5) and the
  product (1): 554 at f = 16 (532 to 570 over f = 12..24).  Dealer, to party 1: ~3.1 kB.
  Accuracy (tested bound, ``tests/test_protocols_nonlinear.py``, at f = 12..24, the
  domain's ends, 0 and +-1 ulp): |error| <= 2 ulp + 2^-(f-1) e^x.  Measured over
  [-40, x_hi] (``benchmarks/nonlinear_accuracy.py``, f = 12 / 16 / 20 / 24): max absolute
  error where e^x <= 1: 1.00 / 0.97 / 0.99 / 0.98 ulp; max relative error (e^x >= 1/2):
  3.4e-4 / 1.8e-5 / 1.2e-6 / 8.9e-8, i.e. <= 1.5 2^-f.  (The Chebyshev degree is chosen so
  its error is below 2^-(f+1) on [-1, 1]; the rest is the rounding of K's and u's
  truncations, the polynomial's and R1's.)

``exp_nonpositive_s`` is the same protocol for x <= 0 (softmax's max-subtracted logits):
thresholds K in [K_lo, 0] (13 at f = 16), no R2, the product R1 p returned untruncated (the
softmax truncates it and its row sums in one round).
References: the split and table-free range reduction follow the usual 2^k m
decomposition (Muller, "Elementary functions", ch. 11); the comparisons against all
thresholds in one round and the forms are this engine's (``steps``).
"""
from __future__ import annotations

import math

import numpy as np

from ..party import PartyContext
from .beaver import MaskedOperand
from .forms import LinearForm
from .polynomial import SUM_BOUND_BITS, approximants, least_degree, polys_s, powers_s, trunc_forms_s
from .rounds import gather, open_ring
from .steps import combine, threshold_bits_s
from .truncation import trunc_finish, trunc_prepare

__all__ = ["exp_s", "exp_nonpositive_s", "exp_split_s", "exp_u_coeffs",
           "split_cmp_bits", "ExpDomain"]

#: u of the split lies in (-1, 1 + 2^-f); the polynomial is fitted on a little more, the
#: same on both sides (so e^-u's coefficients are e^u's with alternating signs)
U_LO, U_HI = -1.0 - 2.0 ** -10, 1.0 + 2.0 ** -10


def split_cmp_bits(scale: int) -> int:
    """The comparison ring for K = trunc(x, scale): exact for every K of a |x| < 2^62."""
    return max(8, 64 - int(scale))


#: e^u on the split's range, every degree up to 12 (public constants)
_EXP_U = approximants(np.exp, U_LO, U_HI, 12, relative=True)


def exp_u_coeffs(bits: int, sign: int = 1) -> list[float]:
    """Coefficients of e^(sign u) on the split's range, of the least degree (<= 12) whose
    Chebyshev error is below 2^-bits relative (e^-u: the same with alternating signs, the
    range being symmetric)."""
    c = least_degree(_EXP_U, bits)
    return c if sign > 0 else [v * (-1) ** i for i, v in enumerate(c)]


class ExpDomain:
    """The public constants of ``exp_s`` at f fractional bits."""

    def __init__(self, frac_bits: int):
        f = int(frac_bits)
        self.k_lo = math.floor(-(f + 1) * math.log(2))          # e^K_lo <= 2^-(f+1)
        self.k_hi = math.floor((SUM_BOUND_BITS - f) * math.log(2)) - 1
        self.x_hi = float(self.k_hi)
        self.thresholds = list(range(self.k_lo, self.k_hi + 2))
        # R1 < 2e at r_bits: the products R1 p (p < e at f + 2 bits) stay below 2^61
        self.r_bits = min(f + 8, SUM_BOUND_BITS - (f + 2) - 4)

    @staticmethod
    def exponent(k: int) -> int:
        """E(K) >= 0 of R2 = 2^E: e^K / 2^E in [e, 2e) for K >= 1 (so q = R1 p >= 1 keeps
        f bits of relative precision), 0 for K <= 0."""
        return 0 if k <= 0 else math.floor((k - 1) * math.log2(math.e))


def exp_split_s(ctx: PartyContext, x: np.ndarray, scale: int, label: str = "exp_split"):
    """(K, u): K = trunc(x, scale) (an integer form) and u = x - K as a form at f
    fractional bits, in (-1, 1 + 2^-f).  Rounds: 1."""
    f = ctx.frac_bits
    x = np.ascontiguousarray(x, dtype=np.int64).ravel()
    if scale == f:
        mask = ctx.source.mask(x.shape)
        tmat, tz = trunc_prepare(ctx, x, f)
        e, c = yield from open_ring(ctx, [x - mask["a"], tz], label)
        k = LinearForm.of_trunc(trunc_finish(tmat, c))
        whole = LinearForm.of_masked(MaskedOperand(x, e, mask))
    elif scale > f:
        whole, k = yield from trunc_forms_s(ctx, [x, x], [scale - f, scale], label)
    else:
        raise ValueError(f"input scale {scale} below the engine's {f} fractional bits")
    return k, combine((1, whole), (-(1 << f), k))


def _exp_parts(ctx: PartyContext, x: np.ndarray, scale: int, thresholds, label: str,
               signs: tuple = (1,)):
    """Split, bits of K against ``thresholds`` and p = e^(sign u) for each sign (forms at
    f + 2 bits; one set of powers), the comparison and the polynomials concurrently:
    (bits, [p per sign], p's scale)."""
    f = ctx.frac_bits
    k, u = yield from exp_split_s(ctx, x, scale, label)
    p_scale = f + 2

    def polys():
        pw = yield from powers_s(ctx, u, f, p_scale, 4, label)
        return (yield from polys_s(ctx, pw, f, p_scale, [exp_u_coeffs(min(f, 23) + 2, sg) for sg in signs],
                                   p_scale, 1.0 + 2.0 ** -10, label))

    (bits, _), ps = yield from gather(
        threshold_bits_s(ctx, k.share(ctx.rank), thresholds, split_cmp_bits(scale)), polys())
    return bits, ps, p_scale


def exp_s(ctx: PartyContext, x: np.ndarray, scale: int | None = None):
    """exp(x) at f fractional bits for a flat secret x at ``scale`` (default f); see the
    module doc for domain, saturation, rounds and error.  Returns this party's share."""
    f = ctx.frac_bits
    s = f if scale is None else int(scale)
    dom = ExpDomain(f)
    bits, (p,), p_scale = yield from _exp_parts(ctx, x, s, dom.thresholds, "exp")
    ks = range(dom.k_lo, dom.k_hi + 1)
    r1 = [0] + [round(math.exp(k - dom.exponent(k) * math.log(2)) * 2.0 ** dom.r_bits) for k in ks] + [0]
    r2 = [0] + [1 << dom.exponent(k) for k in ks] + [0]
    top = [0] * (len(ks) + 1) + [round(math.exp(dom.k_hi + 1) * 2.0 ** f)]
    (q,) = yield from trunc_forms_s(ctx, [bits.times(ctx, r1, p)],
                                    p_scale + dom.r_bits - f, "exp")
    return bits.times(ctx, r2, q) + bits.share(ctx, top)


def exp_nonpositive_s(ctx: PartyContext, x: np.ndarray, scale: int, headroom_bits: int = 0):
    """e^x for a flat secret x <= 0 (a softmax's max-subtracted logits), *untruncated*:
    (raw share, its scale).  Thresholds K in [K_lo, 0] only (K_lo - 1 and below give 0),
    no R2; the raw products leave ``headroom_bits`` for the caller to sum them (a softmax's
    row sums) before the one truncation it runs itself.  Rounds: 1 + max(comparison, 4)."""
    f = ctx.frac_bits
    dom = ExpDomain(f)
    thresholds = list(range(dom.k_lo, 1))
    bits, (p,), p_scale = yield from _exp_parts(ctx, x, scale, thresholds, "exp")
    r_bits = min(f + 8, SUM_BOUND_BITS - 1 - p_scale - int(headroom_bits))
    r1 = [0] + [round(math.exp(k) * 2.0 ** r_bits) for k in thresholds]
    return bits.times(ctx, r1, p), p_scale + r_bits
