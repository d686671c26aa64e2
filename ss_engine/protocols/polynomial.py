"""Polynomials and Goldschmidt division on linear forms: every round is one truncation.

A truncation result is a linear form (``forms``), and a product of two forms costs no
opening, so a chain of products costs one round per truncation it needs.

``powers_s``: u^2 (1 round), then u^3 = u u^2 and u^4 = u^2 u^2 (1 round), all forms.
``polys_s``: polynomials of degree <= 4 L + 4 in u by Horner in u^4 over degree-4 blocks,
  p = Q_0 + u^4 (Q_1 + u^4 (Q_2 + ...)): every block is linear in the powers (no product),
  the innermost is truncated (1 round) and each Horner level adds one truncation.  Rounds
  after the powers: L + 1 (1 for degree <= 4, 2 for <= 8, 3 for <= 12), one less where
  the innermost block's products u^4 u^j can take their coefficients directly (their
  precision allows it up to f ~ 18); several polynomials of the same u share the powers
  and the rounds.  The coefficients are scaled
  to the most fractional bits that keep every sum below 2^61.
``approximants`` / ``least_degree``: Chebyshev interpolants of a function on an interval
  for every degree and their errors, built once (module constants of the protocols).
``goldschmidt_s``: n_k / d for forms d (public interval [lo, hi], 0 < lo) and numerators
  n_k, with the equioscillating linear start y0 = alpha - beta d:
    e_0 = 1 - d y0,  N_0 = n y0            (1 round: two truncations)
    N_{j+1} = N_j (1 + e_j),  e_{j+1} = e_j^2   (1 round each: both products share it)
  so N_K = (n / d)(1 - e_0^(2^K)) with |e_0| <= 1 - beta lo hi: relative error
  e_0^(2^K) plus one ulp per round.  The identity holds for the start actually used
  (whatever the rounding of alpha and beta), so only the convergence depends on it.
  Rounds: 1 + K.
Scales are fractional bits of each form (its real value is form / 2^scale).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..party import PartyContext
from .forms import LinearForm, form_mul
from .rounds import gather
from .truncation import trunc_open_many

__all__ = ["trunc_forms_s", "powers_s", "polys_s", "chebyshev_coeffs", "approximants",
           "least_degree", "goldschmidt_s",
           "goldschmidt_steps", "denominator_scale", "Numerator", "SUM_BOUND_BITS"]

#: every intermediate sum of these protocols stays below 2^SUM_BOUND_BITS raw units (the
#: truncation is exact below 2^62)
SUM_BOUND_BITS = 61


def trunc_forms_s(ctx: PartyContext, raws: Sequence[np.ndarray], shifts, label: str):
    """Truncate several shares (each by its own shift > 0) in one round; the results as
    linear forms.  Rounds: 1."""
    shifts = [int(shifts)] * len(raws) if np.isscalar(shifts) else [int(s) for s in shifts]
    if any(s <= 0 for s in shifts):
        raise ValueError(f"truncation shifts must be positive, got {shifts}")
    opened = yield from trunc_open_many(ctx, list(raws), shifts, label)
    return [LinearForm.of_trunc(t) for t in opened]


def powers_s(ctx: PartyContext, u: LinearForm, scale_u: int, scale: int, degree: int = 4,
             label: str = "powers"):
    """[u, u^2, ..., u^degree] (degree <= 4), u^2.. as forms at ``scale`` (u stays at
    ``scale_u`` <= scale); |u| <= 2.  Rounds: 1 for degree 2, 2 for 3 or 4."""
    if not 1 <= degree <= 4 or scale_u > scale or 2 * scale_u - scale <= 0:
        raise ValueError("powers_s: degree in [1, 4], scale_u <= scale < 2 scale_u")
    out = [u]
    if degree >= 2:
        out += (yield from trunc_forms_s(ctx, [form_mul(ctx, u, u)], 2 * scale_u - scale, label))
    if degree >= 3:
        u2 = out[1]
        raws, shifts = [form_mul(ctx, u, u2)], [scale_u]
        if degree >= 4:
            raws.append(form_mul(ctx, u2, u2))
            shifts.append(scale)
        out += (yield from trunc_forms_s(ctx, raws, shifts, label))
    return out


def _lift(x: np.ndarray, bits: int) -> np.ndarray:
    return x << np.int64(bits) if bits else x


def _block_raw(ctx: PartyContext, powers, lifts, coeffs, scale: int, bits: int) -> np.ndarray:
    """coeffs[0] + sum_{i>=1} coeffs[i] u^i, raw at scale + bits (each power lifted to
    ``scale`` by ``lifts``)."""
    raw = np.zeros(powers[0].public.shape, np.int64)
    for c, p, lift in zip(coeffs[1:], powers, lifts):
        a = np.int64(round(c * 2.0 ** bits))
        if a:
            raw += _lift(p.share(ctx.rank), lift) * a
    if ctx.rank == 0 and coeffs[0]:
        raw += np.int64(round(coeffs[0] * 2.0 ** (bits + scale)))
    return raw


def polys_s(ctx: PartyContext, powers: Sequence[LinearForm], scale_u: int, scale: int,
            polys: Sequence[Sequence[float]], out_scale: int, magnitude: float = 1.0,
            label: str = "poly", direct: bool = False):
    """Each polynomial sum_i c_i u^i of ``polys`` (power-basis coefficients) as a form at
    ``out_scale``, from ``powers_s``'s output (|u| <= ``magnitude``).  Rounds: L + 1 for
    degree <= 4 L + 4 (module doc), L with ``direct`` where the precision allows it (for a
    polynomial on the critical path: the round saved costs ~4 dealer products per term of
    u^4); the polynomials share them."""
    return (yield from gather(*(_poly(ctx, powers, scale_u, scale, [float(c) for c in cs],
                                      out_scale, magnitude, label, direct) for cs in polys)))


def _poly(ctx, powers, scale_u, scale, coeffs, out_scale, magnitude, label, direct):
    deg = len(coeffs) - 1
    if len(powers) < min(4, deg):
        raise ValueError(f"a degree-{deg} polynomial needs the powers up to u^{min(4, deg)}")
    blocks = [coeffs[0:5]] + [[0.0] + coeffs[4 * k + 1:4 * k + 5] for k in range(1, math.ceil(deg / 4))]
    lifts = [scale - scale_u] + [0] * (len(powers) - 1)
    total = sum(abs(c) * magnitude ** i for i, c in enumerate(coeffs)) + 1.0
    bits = SUM_BOUND_BITS - 1 - scale - math.ceil(math.log2(total))
    common = max(scale + bits, 2 * scale)
    if common + math.log2(total) > SUM_BOUND_BITS:
        raise ValueError(f"polynomial at scale {scale} does not fit the ring")
    inner = None   # Horner in u^4 over the blocks, innermost first
    top_k = len(blocks) - 1
    # the innermost block times u^4 can be multiplied out (u^4 u^j products, each with its
    # coefficient) instead of truncated first, where the coefficients keep 2 bits more than
    # the next level's result: one round less
    direct_bits = SUM_BOUND_BITS - 1 - 2 * scale - math.ceil(math.log2(total))
    direct = direct and top_k >= 1 and direct_bits >= (out_scale if top_k == 1 else scale) + 2
    for k in range(top_k - (1 if direct else 0), -1, -1):
        raw = _block_raw(ctx, powers, lifts, blocks[k], scale, bits)   # at scale + bits
        at = scale + bits
        if inner is not None:
            raw = _lift(raw, common - at) + _lift(form_mul(ctx, inner, powers[3]), common - 2 * scale)
            at = common
        elif direct:
            at = max(at, 2 * scale + direct_bits)
            raw = _lift(raw, at - scale - bits)
            for c, p, lift in zip(blocks[top_k][1:], powers, lifts):   # u is at scale_u
                a = np.int64(round(c * 2.0 ** direct_bits))
                if a:
                    raw += _lift(form_mul(ctx, powers[3], p), at - 2 * scale - direct_bits + lift) * a
        (inner,) = yield from trunc_forms_s(ctx, [raw], at - (out_scale if k == 0 else scale), label)
    return inner


def chebyshev_coeffs(fn, degree: int, lo: float, hi: float) -> list[float]:
    """Power-basis coefficients (in u) of the degree-``degree`` Chebyshev interpolant of
    ``fn`` on [lo, hi] (near-minimax)."""
    cheb = np.polynomial.Chebyshev.interpolate(fn, degree, domain=[lo, hi])
    return [float(c) for c in cheb.convert(kind=np.polynomial.Polynomial).coef]


def approximants(fn, lo: float, hi: float, max_degree: int, relative: bool) -> tuple:
    """((error, coefficients), ...) of ``chebyshev_coeffs`` for degrees 2..max_degree, the
    error the max on a fine grid (relative to fn or absolute): public constants, built once
    (at import) by the protocols that use them."""
    grid = np.linspace(lo, hi, 2049)
    ref = fn(grid)
    out = []
    for deg in range(2, max_degree + 1):
        c = chebyshev_coeffs(fn, deg, lo, hi)
        err = np.abs(np.polynomial.polynomial.polyval(grid, c) - ref)
        out.append((float((err / np.abs(ref)).max() if relative else err.max()), tuple(c)))
    return tuple(out)


def least_degree(table: tuple, bits: int) -> list[float]:
    """The coefficients of least degree in ``table`` whose error is below 2^-bits (the
    highest degree where none is)."""
    for err, coeffs in table:
        if err <= 2.0 ** -bits:
            return list(coeffs)
    return list(table[-1][1])


def goldschmidt_steps(lo: float, hi: float, bits: int, coeff_bits: int) -> tuple[int, int, int]:
    """(alpha, beta) as integers at ``coeff_bits`` fractional bits and the number K of
    iterations with |e_0|^(2^K) <= 2^-bits on [lo, hi] for that rounded start."""
    beta = 2.0 / (lo * hi + (lo + hi) ** 2 / 4.0)
    a, b = round(beta * (lo + hi) * 2 ** coeff_bits), round(beta * 2 ** coeff_bits)
    grid = np.linspace(lo, hi, 4097)
    e0 = float(np.abs(1.0 - grid * (a - b * grid) / 2.0 ** coeff_bits).max())
    if not e0 < 1.0:
        raise ValueError(f"no convergent linear start on [{lo}, {hi}] with {coeff_bits} bits")
    k, err = 0, e0
    while err > 2.0 ** -bits:
        err, k = err * err, k + 1
    return a, b, k


@dataclass(frozen=True)
class Numerator:
    """A numerator of ``goldschmidt_s``: its form and scale, a bound on |n / d| (real),
    and the scale of its result."""

    form: LinearForm
    scale: int
    bound: float
    out_scale: int


def denominator_scale(hi: float, num_scale: int, cap: int) -> int:
    """The most fractional bits (at most ``cap``) a denominator in [., hi] can have so that
    ``goldschmidt_s``'s start keeps 10 coefficient bits (its rounding then barely changes
    the iteration count) with numerators at ``num_scale``."""
    return min(cap, (SUM_BOUND_BITS - 12 - math.ceil(math.log2(max(hi, 1.0)))) // 2,
               SUM_BOUND_BITS - 12 - num_scale)


def goldschmidt_s(ctx: PartyContext, d: LinearForm, d_scale: int, lo: float, hi: float,
                  nums: Sequence[Numerator], bits: int, label: str = "goldschmidt",
                  flat: bool = False):
    """n / d for each numerator (d aligned to its leading axes) as forms at their
    ``out_scale`` (flattened with ``flat``, the layout of a value's form): relative error
    <= 2^-bits plus about one ulp of the work scale per round.
    d must lie in the public [lo, hi] (0 < lo); the caller guarantees it.
    Rounds: 1 + K (``goldschmidt_steps``)."""
    if not 0 < lo < hi:
        raise ValueError(f"goldschmidt_s needs 0 < lo < hi, got [{lo}, {hi}]")
    top = max(math.log2(2.0 * max(n.bound, 1.0)) + n.scale + d_scale for n in nums)
    c = min(24, SUM_BOUND_BITS - 2 - 2 * d_scale - math.ceil(math.log2(hi)),
            SUM_BOUND_BITS - 1 - math.ceil(top))
    if c < 6:
        raise ValueError(f"denominator scale {d_scale} leaves no room for the start")
    a, b, k = goldschmidt_steps(lo, hi, bits, c)
    # the numerators iterate 2 bits above their result; e as precise as the products allow
    work = [n.out_scale + 2 if k else n.out_scale for n in nums]
    e_scale = min(30, min(SUM_BOUND_BITS - 2 - w - math.ceil(math.log2(max(n.bound, 1.0)))
                          for w, n in zip(work, nums)))
    y0 = d.affine(-b, np.int64(a) << np.int64(d_scale))              # at d_scale + c
    one = (np.int64(1) << np.int64(2 * d_scale + c)) if ctx.rank == 0 else np.int64(0)
    raws = [form_mul(ctx, n.form, y0) for n in nums]
    if flat and not k:
        raws = [r.ravel() for r in raws]
    shifts = [n.scale + d_scale + c - w for n, w in zip(nums, work)]
    if k:
        raws.append(one - form_mul(ctx, d, y0))
        shifts.append(2 * d_scale + c - e_scale)
    got = yield from trunc_forms_s(ctx, raws, shifts, label)
    ns, e = got[:len(nums)], (got[-1] if k else None)
    for step in range(k):
        last = step == k - 1
        raws = [(n.share(ctx.rank) << np.int64(e_scale)) + form_mul(ctx, n, e) for n in ns]
        if flat and last:
            raws = [r.ravel() for r in raws]
        shifts = [e_scale + (w - num.out_scale if last else 0) for w, num in zip(work, nums)]
        if not last:
            raws.append(form_mul(ctx, e, e))
            shifts.append(e_scale)
        got = yield from trunc_forms_s(ctx, raws, shifts, label)
        ns = got[:len(nums)]
        e = got[-1] if not last else e
    return ns
