"""SGD with momentum and weight decay on shares, with public learning rate and schedule.

Torch semantics (buf = mu buf + (g + wd w); w -= lr buf) with the buffer stored lr-scaled,
u = lr buf, so one step is a single fused, truncated expression per parameter:
    u <- trunc( (mu lr_t / lr_{t-1}) u + (lr_t / B) G + (lr_t wd) w ),   w <- w - u
G is the batch-summed gradient (the 1/B of the mean loss is folded in here).  The public
constants carry ``const_bits`` fractional bits of their own, so lr/B = 0.1/128 keeps three
significant digits; all parameters are truncated in one opening: 1 round per step.
Bound: |u|, |G|, |w| < 2^(62 - f - const_bits) (2^26 at f = 16).

Raw weight gradients: G may arrive untruncated, with 2f fractional bits (``grad_bits``), when
``takes_raw_gradients(f)``.  Each parameter's terms are then aligned to the larger scale and
the one truncation shifts by f + const_bits more, so the backward pass never truncates a
weight gradient (saving an opening and dealer material per weight, and the first layer's
round).  Bound then: |u| < 2^(62 - 2f - const_bits) (1024 at f = 16), checked to leave
at least 2^RAW_GRAD_HEADROOM_BITS; beyond that (f > 17) gradients are truncated first.
"""
from __future__ import annotations

import numpy as np

from ..party import PartyContext
from ..protocols.truncation import trunc_many_s
from .module import Parameter

__all__ = ["SGD", "RAW_GRAD_HEADROOM_BITS"]

#: raw gradients are accepted only if the update may still reach 2**RAW_GRAD_HEADROOM_BITS
RAW_GRAD_HEADROOM_BITS = 8


class SGD:
    def __init__(self, params: list[Parameter], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, const_bits: int = 20):
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError("need lr > 0, 0 <= momentum < 1, weight_decay >= 0")
        self.params = params
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.const_bits = int(const_bits)
        self._prev_lr: float | None = None

    def _const(self, c: float) -> np.int64:
        return np.int64(round(c * (1 << self.const_bits)))

    def takes_raw_gradients(self, frac_bits: int) -> bool:
        """Whether ``step`` may receive weight gradients at 2f fractional bits (module doc)."""
        return 2 * int(frac_bits) + self.const_bits <= 62 - RAW_GRAD_HEADROOM_BITS

    def step(self, ctx: PartyContext, batch_size: int, lr: float | None = None) -> None:
        lr = self.lr if lr is None else float(lr)
        mu = self.momentum * (lr / self._prev_lr) if self._prev_lr else self.momentum
        self._prev_lr = lr
        c_grad, c_wd, c_mu = self._const(lr / batch_size), self._const(lr * self.weight_decay), self._const(mu)
        f, cb = ctx.frac_bits, self.const_bits
        raw, shifts = [], []
        for p in self.params:
            if p.grad is None:
                raise RuntimeError(f"{p.name} has no gradient; run backward first")
            g_bits = f if p.grad_bits is None else int(p.grad_bits)
            if g_bits != f and not (g_bits == 2 * f and self.takes_raw_gradients(f)):
                raise ValueError(f"{p.name}: gradient with {g_bits} fractional bits not accepted")
            top = max(g_bits, f)  # every term is brought to top + cb fractional bits
            z = p.grad * (c_grad << np.int64(top - g_bits))
            if self.weight_decay:
                z += p.value * (c_wd << np.int64(top - f))
            if self.momentum and p.velocity is not None:
                z += p.velocity * (c_mu << np.int64(top - f))
            raw.append(z)
            shifts.append(top - f + cb)
        updates = trunc_many_s(ctx, raw, shifts, "sgd_trunc")
        for p, u in zip(self.params, updates):
            p.value = p.value - u
            p.velocity = u if self.momentum else None
            p.grad, p.grad_bits = None, None
