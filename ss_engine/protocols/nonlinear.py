"""exp, reciprocal and softmax on fixed-point secrets.

exp_s (limit approximation, as in CrypTen): exp(x) ~ (1 + x / 2^n)^(2^n), n squarings.
  Domain: x in [-2^n, 0] (softmax feeds max-subtracted logits); there the base lies in
  [0, 1].  Error: |(1+x/2^n)^(2^n) - e^x| <= e^x x^2 / 2^(n+1) <= 0.55 / 2^n (at x = -2),
  plus the fixed-point error of the squarings, < 2^(n+1) ulp.  n = 8: < 3e-3 absolute at
  f = 16.  Rounds: 1 + 2n.
reciprocal_s (Newton-Raphson) for x in a public interval [lo, hi], 0 < lo:
  y0 = alpha - beta x, with alpha = beta (lo + hi) and beta = 2 / (lo hi + (lo + hi)^2 / 4)
  (the equioscillating linear start), so |1 - x y0| <= e0 = 1 - beta lo hi; each step
  y <- y (2 - x y) squares the relative error.  Steps are chosen so e0^(2^k) < 2^-p
  (p = f + 1 by default; capped by ProtocolConfig.recip_iterations).  x is opened once and its mask reused in
  every step.  Rounds: 1 + 4k.  Relative error ~2^-f plus a few ulp.
softmax_s along the last axis: max-subtraction by all-pairs max (12 rounds for 10 classes),
  exp, sum, reciprocal on [1, k + 1/2] to 14 bits (4 steps for 10 classes), one product:
  12 + 17 + 17 + 2 = 48 rounds for 10 classes.  Error < 4e-3 absolute at f = 16.
"""
from __future__ import annotations

import math

import numpy as np

from ..encoding import encode
from ..party import PartyContext
from .beaver import mask_and_open, mul_masked, square_s
from .compare import max_s
from .truncation import trunc_s

__all__ = ["exp_s", "reciprocal_s", "softmax_s", "recip_steps", "SOFTMAX_RECIP_BITS"]

SOFTMAX_RECIP_BITS = 14


def _public(ctx: PartyContext, value: float, shape=()) -> np.ndarray:
    """A public constant as a sharing: party 0 holds it, party 1 holds zero."""
    v = encode(value, ctx.config.fixed) if ctx.rank == 0 else np.int64(0)
    return np.full(shape, v, dtype=np.int64)


def exp_s(ctx: PartyContext, x: np.ndarray) -> np.ndarray:
    """exp(x) for x in [-2^n, 0], n = ProtocolConfig.exp_iterations (see module doc)."""
    n = ctx.config.protocol.exp_iterations
    y = trunc_s(ctx, np.asarray(x, dtype=np.int64), n) + _public(ctx, 1.0, np.shape(x))
    for _ in range(n):
        y = square_s(ctx, y)
    return y


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


def reciprocal_s(ctx: PartyContext, x: np.ndarray, lo: float, hi: float,
                 precision_bits: int | None = None) -> np.ndarray:
    """1/x for x in [lo, hi] (public bounds, 0 < lo < hi), relative error below
    2^-precision_bits (default f + 1) plus fixed-point rounding.  See module doc."""
    if not 0 < lo < hi:
        raise ValueError("reciprocal_s needs 0 < lo < hi")
    f = ctx.frac_bits
    bits = f + 1 if precision_bits is None else int(precision_bits)
    alpha, beta, steps = recip_steps(lo, hi, bits, ctx.config.protocol.recip_iterations)
    x = np.asarray(x, dtype=np.int64)
    y = trunc_s(ctx, x * encode(-beta, ctx.config.fixed), f) + _public(ctx, alpha, x.shape)
    two = _public(ctx, 2.0, x.shape)
    x_op = None
    for _ in range(steps):
        if x_op is None:
            x_op, y_op = mask_and_open(ctx, [x, y], "recip_open")
        else:
            (y_op,) = mask_and_open(ctx, [y], "recip_open")
        xy = trunc_s(ctx, mul_masked(ctx, x_op, y_op), f)
        (u_op,) = mask_and_open(ctx, [two - xy], "recip_open")
        y = trunc_s(ctx, mul_masked(ctx, y_op, u_op), f)
    return y


def softmax_s(ctx: PartyContext, z: np.ndarray) -> np.ndarray:
    """Softmax along the last axis of a (rows, k) secret; k <= 2^(f-1) classes."""
    z = np.asarray(z, dtype=np.int64)
    k = z.shape[-1]
    m = max_s(ctx, z, axis=-1)
    e = exp_s(ctx, z - m[..., None])
    s = e.sum(axis=-1)
    # the max term is exactly (1 + 0)^(2^n) = 1 and every term is >= 0 and <= 1 (+1 ulp),
    # so s lies in [1, k]; 14 bits of relative precision are ample for a gradient
    inv = reciprocal_s(ctx, s, 1.0, float(k) + 0.5, precision_bits=SOFTMAX_RECIP_BITS)
    e_op, inv_op = mask_and_open(ctx, [e, inv], "softmax_open")
    return trunc_s(ctx, mul_masked(ctx, e_op, inv_op), ctx.frac_bits)
