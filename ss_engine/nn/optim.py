"""SGD with momentum and Adam, on shares, with public hyper-parameters and schedule.

Both start each parameter's update as its own task as soon as backward has the
parameter's gradient (``spawn_update``), so their rounds merge with the rest of backward.

SGD with momentum and weight decay:

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

import math

from ..protocols.forms import form_mul
from ..protocols.normalized import rsqrt_times_s
from ..protocols.polynomial import SUM_BOUND_BITS, trunc_forms_s
from ..protocols.rounds import join, spawn
from ..protocols.truncation import trunc_many_s
from ..tensor import SharedTensor, ops
from .module import Parameter

__all__ = ["SGD", "Adam", "RAW_GRAD_HEADROOM_BITS", "RATIO_BOUND"]

#: raw gradients are accepted only if the update may still reach 2**RAW_GRAD_HEADROOM_BITS
RAW_GRAD_HEADROOM_BITS = 8
#: |m_t| / sqrt(v_t) <= (1 - b1) / sqrt(1 - b2) / sqrt(1 - b1^2 / b2) (7.3 for torch's
#: betas; Cauchy-Schwarz): Adam's normalised step is bounded, which is what lets it run in
#: fixed point whatever the gradients' magnitudes
RATIO_BOUND = 8.0


class _Tasks:
    """Each parameter's update as a concurrent task: ``spawn_update`` starts it, ``finish``
    waits for every update of the step."""

    _tasks: list

    def update(self, p: Parameter):
        raise NotImplementedError

    def spawn_update(self, p: Parameter):
        """Start p's update as a concurrent task (``finish`` waits for all of them)."""
        if p.grad is not None:
            self._tasks.append((yield from spawn(self.update(p))))

    def finish(self):
        """Wait for every update spawned this step."""
        for t in self._tasks:
            yield from join(t)
        self._tasks = []


class SGD(_Tasks):
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

    def schedule_key(self, step: int) -> tuple:
        """What step ``step``'s schedule depends on besides the batch (a plan key's part):
        nothing; the constants change values, never shifts or shapes (a first step without
        velocity only skips a local term)."""
        return ()

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


class Adam(_Tasks):
    """Adam (Kingma & Ba 2015) with torch's semantics: L2 weight decay added to the gradient,
    bias corrections, w -= lr m_hat / (sqrt(v_hat) + eps).  Per parameter and step:

      1. m_t = trunc(b1 m + (1 - b1) g) and g' = trunc(sqrt(1 - b2) g), g = G / B + wd w,
         both from the batch-summed gradient G in one round (G may stay at 2f, untruncated,
         where ``takes_raw_gradients``);
      2. v_t = v - trunc((1 - b2) v) + trunc(g'^2): one round (g' is a form, so its square
         costs no opening);
      3. u = c_t m_t v_hat^(-1/2), v_hat = v_t 2^k_t (2^k_t, a power of two, nearest to the
         bias correction 1/(1 - b2^t): a shift, the rest of it joins the public constant
         c_t = lr sqrt(1 - b2^t) 2^(k_t/2) / (1 - b1^t)): ``protocols.normalized.
         rsqrt_times_s``: one comparison of v_hat against the powers of 16 of its domain
         (4 rounds), m = v_hat 16^-(e+1) and n = c_t m_t 4^-(e+1) (bounded, whatever the
         magnitudes) in one round, m^(-1/2) by a polynomial of the degree the update's
         precision needs (``_precision``; 4 to 7 rounds), u = n p (1 round);
      4. w -= u.
    Rounds: 2 + 4 + 1 + 5 + 1 = 13 per update at f = 16, lr = 1e-3 (15 at lr = 1e-2), all in
    the parameter's own task.

    Fixed point (f fractional bits): m at F_m = min(2f, 36), v at F_v = min(2f + 18, 48)
    (v_1 = (1 - b2) g^2 is a thousand times below g^2, and still has ~6 bits for a gradient
    of one unit at f = 16; the decay's constant 1 - b2 = 2^-a (1 + rho) keeps its bits
    because 2^-a v is a shift), g' = sqrt(1 - b2) g at 30.  Bounds: |g| = |G/B + wd w| <= 11
    (so |g'| < 1/2 and v < 2^7); the ratio |m_t| / sqrt(v_t) <= 7.3 for b1^2 < b2
    (Cauchy-Schwarz), which bounds the update by 7.3 lr and lets v^(-1/2) be computed to
    the relative precision the update needs (``_precision``: 2^-10 for lr = 1e-3 at f = 16).
    eps enters as sqrt(v_hat + eps^2) instead of sqrt(v_hat) + eps (equal where v_hat >>
    eps^2 or << eps^2, within a factor sqrt 2 between), and v_hat is floored at
    max(eps^2, 2^-2f, 2^-(F_v - 2)): the square of one unit of the gradient, below which
    the gradient itself is 0 (a parameter with zero gradients gets a zero update, as in
    torch).  v_hat above 2^8 saturates (the update shrinks).  Agreement with torch per
    step: a few ulp at f <= 16; at f = 20, 24 v's 48 bits bound it to ~1e-3 lr.
    Bytes per parameter and party: ~380 (the comparison of v against the 11 powers of 16
    of its domain is ~40% of it); ~9x an SGD step's for network-a.
    """

    #: v < V_MAX (|g| <= 11); v_hat (up to sqrt 2 more: the shift 2^k_t) below V_TOP
    V_MAX, V_TOP = 2.0 ** 7, 2.0 ** 8
    G_SCALE = 30

    def __init__(self, params: list[Parameter], lr: float, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, step: int = 0):
        b1, b2 = (float(b) for b in betas)
        if lr <= 0 or not 0 <= b1 < 1 or not 0 < b2 < 1 or b1 * b1 >= b2 or eps < 0 or weight_decay < 0:
            raise ValueError("need lr > 0, 0 <= beta1 < 1, 0 < beta2 < 1, beta1^2 < beta2, "
                             "eps >= 0, weight_decay >= 0")
        self.params = params
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), (b1, b2), float(eps), float(weight_decay)
        self.t = int(step)
        self._consts: dict | None = None
        self._tasks: list = []

    def takes_raw_gradients(self, frac_bits: int) -> bool:
        """Whether G may arrive at 2f: m_t's one truncation then aligns it (2f <= F_m)."""
        return 2 * int(frac_bits) <= self._scales(frac_bits)[0]

    @staticmethod
    def _scales(f: int) -> tuple[int, int]:
        return min(2 * f, 36), min(2 * f + 18, 48)

    def _precision(self, f: int) -> int:
        """Relative precision bits of v_hat^(-1/2) that keep the update within half an ulp:
        |m_hat| / sqrt(v_hat) <= 7.3 sqrt(1 - b2^t) / (1 - b1^t) <= 7.3, so the update is at
        most 7.3 lr, at f fractional bits (at least 8 bits)."""
        return max(8, math.ceil(f + 1 + math.log2(RATIO_BOUND * self.lr)))

    def _decay(self, f_v: int) -> tuple[int, int, int]:
        """(a, rho, bits) with 1 - b2 = 2^-a (1 + rho / 2^bits), rho an integer (0 when
        1 - b2 is a power of two), bits as many as v rho keeps in the ring."""
        one_minus = 1.0 - self.betas[1]
        a = math.floor(math.log2(1.0 / one_minus))
        frac = one_minus * 2.0 ** a - 1.0
        if frac <= 0:
            return a, 0, 0
        bits = SUM_BOUND_BITS - 1 - f_v - math.ceil(math.log2(self.V_MAX * frac))
        return a, round(frac * 2.0 ** bits), bits

    def schedule_key(self, step: int) -> tuple:
        """What step ``step``'s schedule depends on besides the batch (a plan key's part):
        its count t, for the truncations' shifts follow the bias corrections (the
        normalisation's coefficient, ``rsqrt_times_s``) and the first step has no v yet; so
        Adam's steps are each a plan of their own, fetched item by item."""
        return ("adam", int(step) + 1)

    def _shift(self, t: int) -> int:
        return round(math.log2(1.0 / (1.0 - self.betas[1] ** t)))

    def begin_step(self, batch_size: int, lr: float | None = None) -> None:
        """Fix this step's public constants (step count, bias corrections, batch size)."""
        self.t += 1
        lr = self.lr if lr is None else float(lr)
        b1, b2 = self.betas
        t, k = self.t, self._shift(self.t)
        self._consts = {"t": t, "k": k, "B": int(batch_size), "lr": lr,
                        "c": lr * math.sqrt(1 - b2 ** t) * 2.0 ** (k / 2) / (1 - b1 ** t)}
        self._tasks = []

    def update(self, p: Parameter):
        """One parameter's update (a coroutine; module doc)."""
        g = p.grad
        if g is None:
            raise RuntimeError(f"{p.name} has no gradient; run backward first")
        ctx = g.ctx
        f = ctx.frac_bits
        f_m, f_v = self._scales(f)
        if g.frac_bits > f_m:
            g = yield from ops.truncate(g)
        elif g.frac_bits < f:
            g = g.lift(f)
        cs, (b1, b2), wd = self._consts, self.betas, self.weight_decay
        sg = g.frac_bits
        # 1. m_t (all terms at f_m + cb) and g' (at sg + cb_g), one round
        cb = SUM_BOUND_BITS - 1 - f_m - 4
        grad, w = g.share.ravel(), p.value.ravel()
        raw_m = grad * _c((1 - b1) / cs["B"], cb + f_m - sg)
        if wd:
            raw_m += w * _c((1 - b1) * wd, cb + f_m - f)
        if p.velocity is not None:
            raw_m += p.velocity.ravel() * _c(b1, cb)
        cb_g = SUM_BOUND_BITS - 1 - sg
        root = math.sqrt(1 - b2)
        raw_g = grad * _c(root / cs["B"], cb_g)
        if wd:
            raw_g += w * _c(root * wd, cb_g + sg - f)
        m_t, g1 = yield from trunc_forms_s(ctx, [raw_m, raw_g], [cb, sg + cb_g - self.G_SCALE], "adam")
        # 2. v_t = v - (1 - b2) v + g'^2, one round: (1 - b2) v = 2^-a v + 2^-a rho v with
        # 2^-a v a shift (exact) and only rho (small) a constant, which then keeps its bits
        a, rho, r_bits = self._decay(f_v)
        v_prev = None if p.moment2 is None else p.moment2.ravel()
        raws = [form_mul(ctx, g1, g1)]
        shifts = [2 * self.G_SCALE - f_v]
        if v_prev is not None:
            raws += [v_prev, v_prev * np.int64(rho)] if rho else [v_prev]
            shifts += [a, a + r_bits] if rho else [a]
        got = yield from trunc_forms_s(ctx, raws, shifts, "adam")
        v_t = got[0].share(ctx.rank)
        if v_prev is not None:
            v_t = v_t + v_prev - sum(t.share(ctx.rank) for t in got[1:])
        # 3. m_t (v_t 2^k)^(-1/2) + eps^2, floored (documented domain)
        floor = max(self.eps ** 2, 2.0 ** (-2 * f), 2.0 ** -(f_v - 2))
        x = v_t << np.int64(cs["k"])
        if self.eps ** 2 * 2.0 ** f_v >= 1 and ctx.rank == 0:
            x = x + np.int64(round(self.eps ** 2 * 2.0 ** f_v))
        # 4. the update (c_t rides with m_t in the normalisation round)
        u = yield from rsqrt_times_s(ctx, x, f_v, floor, self.V_TOP, m_t, f_m, RATIO_BOUND, cs["c"],
                                     self._precision(f))
        p.value = p.value - u.share(ctx.rank).reshape(p.value.shape)
        p.velocity = m_t.share(ctx.rank).reshape(p.value.shape)
        p.moment2 = v_t.reshape(p.value.shape)
        p.grad = None

    def step(self, batch_size: int, lr: float | None = None):
        """Update every parameter (concurrently): a coroutine."""
        self.begin_step(batch_size, lr)
        for p in self.params:
            yield from self.spawn_update(p)
        yield from self.finish()


def _c(value: float, bits: int) -> np.int64:
    """A public constant at ``bits`` fractional bits."""
    return np.int64(round(value * 2.0 ** bits))

