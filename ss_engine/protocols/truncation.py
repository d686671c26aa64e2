"""Dealer-assisted exact truncation (no catastrophic failure).

Reference: Escudero, Ghosh, Keller, Rachuri, Scholl, "Improved primitives for MPC over
mixed arithmetic-binary circuits", CRYPTO 2020 (truncation from a masked opening with the
mask's top bit shared).  Contrast: SecureML's local share truncation fails with probability
about |x|/2^64 per element; CrypTen's 2PC default, the cause of its "negative loss" blow-ups.

Protocol ``trunc_s`` for a secret x with |x| < 2^62 (raw units) and shift f:
  1. x' = x + 2^62 (party 0 adds), so 0 <= x' < 2^63.
  2. Dealer material: mask r (uniform in Z_2^64), shares of r_msb = r >> 63 and
     r_hi = (r mod 2^63) >> f.
  3. Open c = x' + r (1 round, 8 bytes per element per party); c is uniform, so it reveals nothing.
  4. w = c_msb XOR r_msb is the carry of x' + (r mod 2^63) into bit 63; hence
     x' = (c mod 2^63) - (r mod 2^63) + 2^63 w, and locally
     y = (c mod 2^63) >> f  -  r_hi  +  2^(63-f) w  -  2^(62-f).
Result: y - floor(x / 2^f) is 0 or 1 (one unit in the last place) for *every* x in the bound;
nothing wraps.  The rounding is stochastic and unbiased: P(y = floor + 1) = frac(x / 2^f).
Rounds: 1.  Bytes per element per party: 8 sent.  Dealer: 16 bytes per element to party 1
only.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import kernels
from ..party import PartyContext
from ..preprocessing.source import Material
from .rounds import open_ring, outgoing

__all__ = ["trunc_s", "trunc_many_s", "trunc_open_many", "TRUNC_BOUND_BITS", "TruncOpening",
           "trunc_prepare", "trunc_finish"]

#: Inputs must satisfy |x| < 2**TRUNC_BOUND_BITS (raw ring units).
TRUNC_BOUND_BITS = 62


class TruncOpening:
    """A truncation after its opening c: result = public + coeff * [r_msb] - [r_hi].

    ``public`` (known to both parties) and ``coeff`` are functions of the opened c, computed
    when first asked for; the secret part is linear in the dealer's r_msb and r_hi, which is
    what lets a product take the result with no opening of its own (``protocols.forms``,
    whose kernels read c directly).
    """

    __slots__ = ("c", "frac_bits", "material", "_public", "_coeff")

    def __init__(self, c: np.ndarray, frac_bits: int, material: Material):
        self.c, self.frac_bits, self.material = c, int(frac_bits), material
        self._public = self._coeff = None

    @property
    def public(self) -> np.ndarray:
        if self._public is None:
            self._public = kernels.trunc_public(self.c, self.frac_bits)
        return self._public

    @property
    def coeff(self) -> np.ndarray:
        if self._coeff is None:
            self._coeff = kernels.trunc_coeff(self.c, self.frac_bits)
        return self._coeff

    def share(self, rank: int) -> np.ndarray:
        m = self.material
        return kernels.trunc_share(self.c, self.frac_bits, m["r_msb"], m["r_hi"], rank == 0)


def trunc_prepare(ctx: PartyContext, x: np.ndarray, shift: int) -> tuple[Material, np.ndarray]:
    """Fetch truncation material and the value this party contributes to the opening."""
    f = int(shift)
    if not 0 < f < 62:
        raise ValueError(f"truncation shift must be in (0, 62), got {f}")
    x = np.asarray(x, dtype=np.int64)
    m = ctx.source.trunc(x.shape, f)
    c = np.add(x, m["r"], out=outgoing(ctx, x.shape))
    if ctx.rank == 0:
        c += np.int64(1 << TRUNC_BOUND_BITS)
    return m, c


def trunc_finish(material: Material, c: np.ndarray) -> TruncOpening:
    # w = c_msb XOR r_msb = c_msb + (1 - 2 c_msb) r_msb is linear in r_msb as c_msb is public;
    # so the result is public + coeff r_msb - r_hi with public = (c mod 2^63) >> f +
    # 2^(63-f) c_msb - 2^(62-f) and coeff = (1 - 2 c_msb) 2^(63-f), both read off c
    return TruncOpening(c, material.spec.frac_bits, material)


def trunc_open_many(ctx: PartyContext, shares: Sequence[np.ndarray], shift: int | Sequence[int],
                    label: str = "trunc"):
    """Truncate several secrets (each by its own shift) with one opening; the results stay
    in their public-plus-dealer-items form (``TruncOpening``, see ``protocols.forms``)."""
    shifts = [int(shift)] * len(shares) if np.isscalar(shift) else [int(s) for s in shift]
    if len(shifts) != len(shares):
        raise ValueError("one shift per tensor")
    prepared = [trunc_prepare(ctx, x, f) for x, f in zip(shares, shifts)]
    opened = yield from open_ring(ctx, [c for _, c in prepared], label)
    return [trunc_finish(m, c) for (m, _), c in zip(prepared, opened)]


def trunc_many_s(ctx: PartyContext, shares: Sequence[np.ndarray], shift: int | Sequence[int],
                 label: str = "trunc"):
    """Truncate several secrets (each by its own shift) with one opening."""
    return [t.share(ctx.rank) for t in (yield from trunc_open_many(ctx, shares, shift, label))]


def trunc_s(ctx: PartyContext, x: np.ndarray, shift: int, label: str = "trunc"):
    """Exact-to-1-ulp truncation of one secret (see module docstring)."""
    return (yield from trunc_many_s(ctx, [x], shift, label))[0]
