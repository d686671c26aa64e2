"""Truncation fused with the operation that follows it, saving a round and an opening.

The truncation result is public + coeff * [r_msb] - [r_hi] (``TruncOpening``): linear in
two dealer items.  So a product of the truncated value with a secret known as a linear form
(a B2A bit, a masked opening) needs no new opening — the dealer supplies the products of
their items (``protocols.forms.form_mul``).

``trunc_relu_s`` (Linear/Conv output -> ReLU):
  1. One message opens both the truncation mask c_t = z + 2^62 + r and the comparison mask
     c = z + r' of the *untruncated* z (same sign as the result).
  2. The comparator tree (``compare``: 2 rounds for m = 64) gives XOR shares of [z >= 0].
  3. B2A with dealer bit rho (1 round): b = e + (1 - 2e) rho; then
     relu = trunc(z) * b = public * b + coeff * (r_msb b) - (r_hi b), where
     s * b = e s + (1 - 2e)(s rho) and the dealer supplies s * rho (``compare.bit_mul``,
     one pass).
  Rounds: 1 + 2 + 1 = 4 for m = 64 (unfused truncation + ReLU: 5).  Bytes per element per
  party: 8 + 8 + tree + 1 bit (unfused: 8 + 8 + 8 + tree + 1 bit).
``trunc_mask_open_s``: truncations and mask openings of independent tensors in one
message (the operands of a product: ``tensor.ops`` multiplies a truncated dY(2f) by a ReLU
bit with this one round and no opening of the bit).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..party import PartyContext
from .beaver import MaskedOperand
from .compare import b2a_s, bit_mul, cmp_finish, cmp_prepare, flip_xor
from .forms import LinearForm
from .rounds import open_ring, outgoing
from .truncation import trunc_finish, trunc_prepare

__all__ = ["trunc_relu_s", "trunc_relu_form_s", "trunc_mask_open_s"]


def trunc_relu_form_s(ctx: PartyContext, z: np.ndarray, shift: int, bits: int | None = None):
    """(relu(trunc(z, shift)) share, the bit [z >= 0], trunc(z, shift)), both as flat
    ``LinearForm``s; the comparison runs in Z_2^m, m = (``bits`` or ``cmp_bits``) + shift
    (at most 64).  See module doc."""
    z = np.asarray(z, dtype=np.int64)
    shape, n = z.shape, z.size
    flat = z.ravel()
    # the comparison sees z at its raw scale, so widen the ring by the shift
    base = ctx.config.protocol.cmp_bits if bits is None else int(bits)
    m = min(64, base + int(shift))
    tmat, tz = trunc_prepare(ctx, flat, shift)
    cmat, cz, m = cmp_prepare(ctx, flat, m)
    c_t, c_c = yield from open_ring(ctx, [tz, cz], "trunc_relu_open")
    t = trunc_finish(tmat, c_t)
    msb = yield from cmp_finish(ctx, cmat, c_c, m)
    # b = e + (1 - 2e)[rho] (public e): a linear form in the dealer's rho, so relu =
    # trunc(z) * b needs no further round
    b_form = yield from b2a_s(ctx, flip_xor(ctx, msb), n)
    t_form = LinearForm.of_trunc(t)
    return bit_mul(ctx, b_form, t_form).reshape(shape), b_form, t_form


def trunc_relu_s(ctx: PartyContext, z: np.ndarray, shift: int, label: str = "trunc_relu"):
    """(relu(trunc(z, shift)), [z >= 0]) with integer 0/1 bit shares.  See module doc."""
    y, b, _ = yield from trunc_relu_form_s(ctx, z, shift)
    return y, b.share(ctx.rank).reshape(y.shape)


def trunc_mask_open_s(ctx: PartyContext, truncs: Sequence[tuple[np.ndarray, int]],
                      shares: Sequence[np.ndarray]):
    """Truncate each (x, shift) of ``truncs`` and mask-and-open each of ``shares``, all in one
    message: (``TruncOpening``s, ``MaskedOperand``s).  Rounds: 1.  Bytes per party: 8 per
    element of every tensor."""
    label = "trunc+beaver_open" if truncs and shares else "trunc" if truncs else "beaver_open"
    prepared = [trunc_prepare(ctx, x, shift) for x, shift in truncs]
    shares = [np.ascontiguousarray(s, dtype=np.int64) for s in shares]
    masks = [ctx.source.mask(s.shape) for s in shares]
    got = yield from open_ring(ctx, [c for _, c in prepared] +
                               [np.subtract(s, m["a"], out=outgoing(ctx, s.shape)) for s, m in zip(shares, masks)],
                               label)
    k = len(prepared)
    return ([trunc_finish(m, c) for (m, _), c in zip(prepared, got[:k])],
            [MaskedOperand(s, e, m) for s, e, m in zip(shares, got[k:], masks)])
