"""SGD with momentum and weight decay on shares, with public learning rate and schedule.

Torch semantics (buf = mu buf + (g + wd w); w -= lr buf) with the buffer stored lr-scaled,
u = lr buf, so one step is a single fused, truncated expression per parameter:
    u <- trunc( (mu lr_t / lr_{t-1}) u + (lr_t / B) G + (lr_t wd) w ),   w <- w - u
G is the batch-summed gradient (the 1/B of the mean loss is folded in here).  The public
constants carry ``const_bits`` fractional bits of their own, so lr/B = 0.1/128 keeps three
significant digits.  Each parameter's update is one truncation; in training every update
is its own task, started as soon as backward has the parameter's gradient (``spawn_update``),
so the truncations share rounds with the rest of backward and only the first layer's costs
a round of its own.
Bound: |u|, |G|, |w| < 2^(62 - f - const_bits) (2^26 at f = 16).

Raw weight gradients: G may arrive untruncated, at 2f fractional bits (a Beaver product),
when ``takes_raw_gradients(f)``.  Each parameter's terms are then aligned to the larger scale
and the one truncation shifts by f + const_bits more, so the backward pass never truncates a
weight gradient (saving an opening and dealer material per weight).  Bound then: |u| <
2^(62 - 2f - const_bits) (1024 at f = 16), checked to leave at least 2^RAW_GRAD_HEADROOM_BITS;
beyond that (f > 17) such gradients are truncated to f first (one more round).
"""
from __future__ import annotations

import numpy as np

from ..protocols.rounds import join, spawn
from ..protocols.truncation import trunc_many_s
from ..tensor import SharedTensor, ops
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
        self._consts: tuple | None = None
        self._tasks: list = []

    def _const(self, c: float) -> np.int64:
        return np.int64(round(c * (1 << self.const_bits)))

    def takes_raw_gradients(self, frac_bits: int) -> bool:
        """Whether an update may take gradients at 2f fractional bits (module doc)."""
        return 2 * int(frac_bits) + self.const_bits <= 62 - RAW_GRAD_HEADROOM_BITS

    def begin_step(self, batch_size: int, lr: float | None = None) -> None:
        """Fix this step's public constants (learning rate, momentum ratio, batch size)."""
        lr = self.lr if lr is None else float(lr)
        mu = self.momentum * (lr / self._prev_lr) if self._prev_lr else self.momentum
        self._prev_lr = lr
        self._consts = (self._const(lr / batch_size), self._const(lr * self.weight_decay),
                        self._const(mu))
        self._tasks = []

    def _gradient(self, p: Parameter):
        """p's gradient at f or (where accepted) 2f fractional bits."""
        g = p.grad
        if g is None:
            raise RuntimeError(f"{p.name} has no gradient; run backward first")
        f = g.ctx.frac_bits
        if g.frac_bits == f or (g.frac_bits == 2 * f and self.takes_raw_gradients(f)):
            return g
        if g.frac_bits < f:
            return g.lift(f)
        return (yield from ops.truncate(g))

    def _raw_update(self, p: Parameter, g: SharedTensor) -> tuple[np.ndarray, int]:
        """(the untruncated update of p, its shift back to f)."""
        c_grad, c_wd, c_mu = self._consts
        f, cb = g.ctx.frac_bits, self.const_bits
        top = g.frac_bits  # every term is brought to top + cb fractional bits
        z = g.share * c_grad
        if self.weight_decay:
            z += p.value * (c_wd << np.int64(top - f))
        if self.momentum and p.velocity is not None:
            z += p.velocity * (c_mu << np.int64(top - f))
        return z, top - f + cb

    def _apply(self, p: Parameter, u: np.ndarray) -> None:
        p.value = p.value - u
        p.velocity = u if self.momentum else None
        p.grad = None

    def update(self, p: Parameter):
        """One parameter's update (a coroutine; one truncation round)."""
        g = yield from self._gradient(p)
        z, shift = self._raw_update(p, g)
        (u,) = yield from trunc_many_s(g.ctx, [z], shift, "sgd_trunc")
        self._apply(p, u)

    def spawn_update(self, p: Parameter):
        """Start p's update as a concurrent task (``finish`` waits for all of them)."""
        if p.grad is not None:
            self._tasks.append((yield from spawn(self.update(p))))

    def finish(self):
        """Wait for every update spawned this step."""
        for t in self._tasks:
            yield from join(t)
        self._tasks = []

    def step(self, batch_size: int, lr: float | None = None):
        """Update every parameter (their truncations in one round): a coroutine."""
        self.begin_step(batch_size, lr)
        grads = []
        for p in self.params:
            grads.append((yield from self._gradient(p)))
        raws = [self._raw_update(p, g) for p, g in zip(self.params, grads)]
        if not raws:
            return
        updates = yield from trunc_many_s(grads[0].ctx, [z for z, _ in raws], [s for _, s in raws],
                                          "sgd_trunc")
        for p, u in zip(self.params, updates):
            self._apply(p, u)
