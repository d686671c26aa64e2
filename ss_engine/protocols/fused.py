"""Truncation fused with the operation that follows it, saving a round and an opening.

The truncation result is public + coeff * [r_msb] - [r_hi] (``TruncOpening``): linear in
two dealer items.  So a product of the truncated value with a secret whose mask the dealer
knows needs no new opening — the dealer supplies [r_msb * m] and [r_hi * m].

``trunc_relu_s`` (Linear/Conv output -> ReLU):
  1. One message opens both the truncation mask c_t = z + 2^62 + r and the comparison mask
     c = z + r' of the *untruncated* z (same sign as the result).
  2. The comparator tree (ceil(log2(m-1)) rounds) gives XOR shares of [z >= 0].
  3. B2A with dealer bit rho (1 round): b = e + (1 - 2e) rho; then
     relu = trunc(z) * b = public * b + coeff * (r_msb b) - (r_hi b), where
     s * b = e s + (1 - 2e)(s rho) and the dealer supplies s * rho.
  Rounds: 1 + 6 + 1 = 8 for m = 64 (unfused truncation + ReLU: 9).  Bytes per element per
  party: 8 + 8 + tree + 1 bit (unfused: 8 + 8 + 8 + tree + 1 bit).
``trunc_many_mul_s`` (backward: trunc(dX) * DReLU bit, the bit opened in forward as F = b - B):
  s * b = F s + [s * B] for s in {r_msb, r_hi}: the truncation round is the only round.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..party import PartyContext
from .beaver import MaskedOperand
from .binary import open_words
from .compare import cmp_finish, cmp_prepare, flip_xor, unpack_bits
from .opening import open_many
from .truncation import trunc_finish, trunc_prepare

__all__ = ["trunc_relu_s", "trunc_many_mul_s"]


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
    one_minus_2e = 1 - 2 * e
    b = rho["a"] * one_minus_2e + (e if ctx.rank == 0 else 0)
    msb_rho = ctx.source.product("mul", tmat.ref("r_msb"), rho.ref("a"), (n,))["c"]
    hi_rho = ctx.source.product("mul", tmat.ref("r_hi"), rho.ref("a"), (n,))["c"]
    msb_b = e * tmat["r_msb"] + one_minus_2e * msb_rho
    hi_b = e * tmat["r_hi"] + one_minus_2e * hi_rho
    y = t.public * b + t.coeff * msb_b - hi_b
    return y.reshape(shape), b.reshape(shape)


def trunc_many_mul_s(ctx: PartyContext, raws: Sequence[np.ndarray], shift: int,
                     multipliers: Sequence[MaskedOperand | None], label: str = "trunc") -> list[np.ndarray]:
    """trunc(raw_i, shift) for every i, multiplied elementwise by multipliers[i] when given
    (an integer-scale secret already opened, e.g. a ReLU bit).  One round in all."""
    if len(raws) != len(multipliers):
        raise ValueError("one multiplier (or None) per tensor")
    prepared = [trunc_prepare(ctx, r, shift) for r in raws]
    opened = open_many(ctx, [c for _, c in prepared], label)
    out = []
    for (mat, _), c, mul in zip(prepared, opened, multipliers):
        t = trunc_finish(mat, c)
        if mul is None:
            out.append(t.share(ctx.rank))
            continue
        if mul.shape != mat.spec.shape:
            raise ValueError(f"multiplier shape {mul.shape} != {mat.spec.shape}")
        shape = mat.spec.shape
        msb_b = mul.masked * mat["r_msb"] + ctx.source.product("mul", mat.ref("r_msb"), mul.mask.ref("a"), shape)["c"]
        hi_b = mul.masked * mat["r_hi"] + ctx.source.product("mul", mat.ref("r_hi"), mul.mask.ref("a"), shape)["c"]
        out.append(t.public * mul.share + t.coeff * msb_b - hi_b)
    return out
