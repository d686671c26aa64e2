"""Secure operations on SharedTensors, as coroutines: ``z = yield from mul(x, y)``.

Every op here is scale-aware (``SharedTensor.frac_bits``) and opens as little as the
values allow; what a round costs is decided by these rules and by the scheduler
(``protocols.rounds``), never by the caller:
  * Products return *untruncated* results (scale sx + sy).  An operand must be at scale f
    or below (0 for an integer): a larger scale is truncated first, once (the result is
    cached on the value), in the same message that opens the product's other operands.
  * ``mul`` (elementwise; a lower-rank y aligns to x's leading axes) uses an operand's
    linear form where it has one (a truncation result, a ReLU or comparison bit): no
    opening.  Other operands are masked and opened in one message.  So dy(2f) * bit is the
    fused truncate-and-multiply: one round, no opening of the bit.
  * ``matmul``/``conv2d`` (bilinear) open each operand once, in its own shape, and keep the
    opening on the value: the layer input X serves forward and X^T dY, the weights W
    forward and dY W, dY both gradients: exactly the Beaver bound of bytes.
  * Nonlinear ops take any scale: ``relu`` of an untruncated product truncates and compares
    in one opening; comparisons (``drelu``, ``lt``, ``max``) widen their ring by the extra
    bits; ``exp``, ``sigmoid`` and ``softmax`` fold the truncation into their first step.

Op        rounds (m = 64)             result scale
mul       0 with forms, else 1        sx + sy
matmul    1 (0 if both opened)        sx + sy      (+1 per operand above f; optional bias)
conv2d    1 (0 if both opened)        sx + sw      (optional bias per channel)
truncate  1                            f
relu      4 (1 + 2 + 1)                min(s, f); bit: 0
drelu/lt  4                            0
max       5 for k = 10, all pairs      s            (tournament from 2^14 values)
argmax    5 for k = 10                 0 (one-hot)
exp       6 (split, comparison, product) f       (every input: exact or saturated)
log       8 (+1 above f)               f           (positive domain, saturated outside)
sigmoid   10                           f
reciprocal 9 (+1 above f)              f           (positive domain, saturated outside)
div       reciprocal + 1               2f          (a public divisor: 0 rounds)
rsqrt     12 (+1 above f)              f
softmax   16 for 10 classes            f           (from logits at f or 2f)
(nonlinear rounds at f = 16; every f and the errors: the docstrings below and
``benchmarks/nonlinear_accuracy.py``)
reveal    1                            floats
"""
from __future__ import annotations

import builtins

import numpy as np

from .. import kernels
from ..protocols.beaver import conv_masked, conv_out_shape, product_share
from ..protocols.compare import drelu_form_s, lt_form_s, max_s, relu_form_s
from ..protocols.forms import LinearForm, form_mul
from ..protocols.fused import trunc_mask_open_s, trunc_relu_form_s
from ..protocols.exp import exp_s
from ..protocols.nonlinear import sigmoid_form_s, softmax_form_s
from ..protocols.normalized import log_s, reciprocal_s, rsqrt_s
from ..protocols.opening import reveal_s
from ..protocols.truncation import trunc_open_many
from .value import SharedTensor

__all__ = ["mul", "matmul", "conv2d", "conv2d_weight_grad", "conv2d_input_grad", "truncate",
           "truncate_all", "relu", "drelu", "lt", "max", "argmax", "max_argmax", "exp", "log",
           "sigmoid", "reciprocal", "div", "rsqrt", "softmax", "reveal"]


def _same_party(*ts: SharedTensor):
    ctx = ts[0].ctx
    if any(t.ctx is not ctx for t in ts):
        raise ValueError("shares of different parties cannot be combined")
    return ctx


def _unique(ts):
    seen, out = set(), []
    for t in ts:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def _cmp_bits(ctx, scale: int, base: int | None = None) -> int:
    """A comparison ring for values at ``scale``: the configured one, widened by the bits
    above f (so the documented real-valued bound holds at any scale)."""
    m = ctx.config.protocol.cmp_bits if base is None else int(base)
    return builtins.min(64, m + builtins.max(0, scale - ctx.frac_bits))


# -- truncation -------------------------------------------------------------------------------
def truncate_all(xs):
    """Every x at scale f (those above truncated, all in one message; exact to 1 ulp).
    Rounds: 1 (0 if none is above f).  Bytes per party: 8 per truncated element."""
    ctx = _same_party(*xs)
    f = ctx.frac_bits
    todo = [x for x in _unique(xs) if x.frac_bits > f and x.truncated is None]
    if todo:
        opened = yield from trunc_open_many(ctx, [x.share.ravel() for x in todo],
                                            [x.frac_bits - f for x in todo], "trunc")
        for x, t in zip(todo, opened):
            x.truncated = SharedTensor.of_form(ctx, LinearForm.of_trunc(t), x.shape, f)
    return [x.truncated if x.frac_bits > f else x for x in xs]


def truncate(x):
    """x at scale f (see ``truncate_all``)."""
    return (yield from truncate_all([x]))[0]


# -- products ---------------------------------------------------------------------------------
def _form_in(t: SharedTensor, shape: tuple) -> LinearForm | None:
    """t as a linear form laid out in ``shape`` (flat or t's own), if it has one."""
    if t.form is not None and t.form.shape == shape:
        return t.form
    if t.opened is not None and t.opened.shape == shape:
        return LinearForm.of_masked(t.opened)
    return None


def mul(x: SharedTensor, y: SharedTensor):
    """Elementwise x * y, untruncated (scale sx + sy); y of x's shape or aligned to x's
    leading axes (a per-row factor).  Rounds: 0 if both have linear forms, else 1."""
    ctx = _same_party(x, y)
    f = ctx.frac_bits
    srcs = {id(t): t if t.frac_bits <= f or t.truncated is None else t.truncated for t in (x, y)}
    if x.shape == y.shape:
        # forms on values are flat; two values opened in their own shape multiply as they are
        own = x.ndim > 1 and all(srcs[id(t)].opened is not None for t in (x, y))
        layout = {id(t): t.shape if own else (t.size,) for t in (x, y)}
    elif x.shape[:y.ndim] == y.shape:
        layout = {id(x): x.shape, id(y): y.shape}
    else:
        raise ValueError(f"mul operands do not align: {x.shape} * {y.shape}")
    forms, truncs, opens = {}, [], []
    for t in _unique([x, y]):
        src, shape = srcs[id(t)], layout[id(t)]
        form = _form_in(src, shape)
        if form is not None:
            forms[id(t)] = form
        elif src.frac_bits > f:
            truncs.append(t)
        else:
            opens.append((t, src))
    if truncs or opens:
        tres, mres = yield from trunc_mask_open_s(
            ctx, [(t.share.reshape(layout[id(t)]), t.frac_bits - f) for t in truncs],
            [src.share.reshape(layout[id(t)]) for t, src in opens])
        for t, tr in zip(truncs, tres):
            forms[id(t)] = form = LinearForm.of_trunc(tr)
            srcs[id(t)] = SharedTensor.of_form(ctx, form, t.shape, f) if len(form.shape) == 1 \
                else SharedTensor(ctx, form.share(ctx.rank), f)
            t.truncated = srcs[id(t)]
        for (t, src), mo in zip(opens, mres):
            forms[id(t)] = LinearForm.of_masked(mo)
            if mo.shape == src.shape:
                src.opened = mo
            elif src.form is None:
                src.form = forms[id(t)]
    z = form_mul(ctx, forms[id(x)], forms[id(y)])
    return SharedTensor(ctx, z.reshape(x.shape), srcs[id(x)].frac_bits + srcs[id(y)].frac_bits)


def _bilinear_operands(*ts: SharedTensor):
    """Each operand's masked opening in its own shape (at scale <= f), opened once and
    kept; operands above f are truncated first (one more round)."""
    ctx = _same_party(*ts)
    f = ctx.frac_bits
    uniq = _unique(ts)
    truncs = [t for t in uniq if t.frac_bits > f and t.truncated is None]
    opens = [t for t in uniq if t.frac_bits <= f and t.opened is None]
    if truncs or opens:
        tres, mres = yield from trunc_mask_open_s(
            ctx, [(t.share.ravel(), t.frac_bits - f) for t in truncs], [t.share for t in opens])
        for t, tr in zip(truncs, tres):
            t.truncated = SharedTensor.of_form(ctx, LinearForm.of_trunc(tr), t.shape, f)
        for t, mo in zip(opens, mres):
            t.opened = mo
    srcs = [t.truncated if t.frac_bits > f else t for t in ts]
    late = [s for s in _unique(srcs) if s.opened is None]
    if late:
        _, mres = yield from trunc_mask_open_s(ctx, [], [s.share for s in late])
        for s, mo in zip(late, mres):
            s.opened = mo
    return srcs


def _with_bias(z: np.ndarray, scale: int, bias: SharedTensor | None, shape: tuple) -> np.ndarray:
    """z + bias (aligned to z's scale, in ``shape`` for broadcasting), added in place: z is
    a product this op just made."""
    if bias is not None:
        if bias.frac_bits > scale:
            raise ValueError(f"a bias at scale {bias.frac_bits} cannot join a product at {scale}")
        z += bias.lift(scale).share.reshape(shape)
    return z


def matmul(x: SharedTensor, y: SharedTensor, *, transpose_left: bool = False,
           transpose_right: bool = False, bias: SharedTensor | None = None):
    """op(x) @ op(y) (optional transposes, leading axes batched), untruncated, plus ``bias``
    over the last axis if given.  Rounds: 1 to open what is not yet open (0 if both are).
    Bytes per party: 8 per element opened."""
    xs = x.shape[-2:][::-1] if transpose_left else x.shape[-2:]
    ys = y.shape[-2:][::-1] if transpose_right else y.shape[-2:]
    if x.ndim < 2 or y.ndim < 2 or xs[1] != ys[0]:
        raise ValueError(f"matmul shapes do not chain: {x.shape} @ {y.shape} "
                         f"(transposes {transpose_left}, {transpose_right})")
    a, b = yield from _bilinear_operands(x, y)
    z = product_share(x.ctx, "matmul", a.opened, b.opened, transpose_left=transpose_left,
                      transpose_right=transpose_right)
    scale = a.frac_bits + b.frac_bits
    return SharedTensor(x.ctx, _with_bias(z, scale, bias, (-1,)), scale)


def conv2d(x: SharedTensor, w: SharedTensor, stride: int = 1, padding: int = 0,
           bias: SharedTensor | None = None):
    """2-D convolution (N,C,H,W) * (O,C,kh,kw) -> (N,O,OH,OW), untruncated, plus ``bias``
    (O,) per output channel if given; the image (not its im2col columns) is what is opened.
    Rounds: 1 (0 if both are open)."""
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv2d wants (N,C,H,W) and (O,C,kh,kw), got {x.shape}, {w.shape}")
    conv_out_shape(x.shape, w.shape, stride, padding)
    a, b = yield from _bilinear_operands(x, w)
    scale = a.frac_bits + b.frac_bits
    z = conv_masked(x.ctx, a.opened, b.opened, stride, padding)
    return SharedTensor(x.ctx, _with_bias(z, scale, bias, (1, -1, 1, 1)), scale)


def conv2d_weight_grad(dy_cols: SharedTensor, x: SharedTensor, w_shape: tuple, stride: int = 1,
                       padding: int = 0):
    """dW (O,C,kh,kw) of a convolution from dY as columns (N*OH*OW, O) and its input x
    (x's opening from forward is reused).  Rounds: 1 to open dY (0 if open)."""
    g, a = yield from _bilinear_operands(dy_cols, x)
    conv = (w_shape[2], w_shape[3], int(stride), int(padding))
    z = product_share(x.ctx, "conv_wgrad", g.opened, a.opened, conv=conv)
    return SharedTensor(x.ctx, z.reshape(w_shape), g.frac_bits + a.frac_bits)


def conv2d_input_grad(dy_cols: SharedTensor, w: SharedTensor, x_shape: tuple, stride: int = 1,
                      padding: int = 0):
    """dX (N,C,H,W) of a convolution from dY as columns and the weights (both openings
    reused when they exist).  Rounds: 1 to open what is not open."""
    g, b = yield from _bilinear_operands(dy_cols, w)
    kh, kw = w.shape[2], w.shape[3]
    dcols = product_share(w.ctx, "conv_dgrad", g.opened, b.opened)
    return SharedTensor(w.ctx, kernels.col2im(dcols, x_shape, kh, kw, int(stride), int(padding)),
                        g.frac_bits + b.frac_bits)


# -- comparisons ------------------------------------------------------------------------------
def relu(x: SharedTensor):
    """(max(x, 0), [x >= 0] as an integer bit with a linear form).  Above f, the truncation
    to f and the comparison share one opening (``trunc_relu_s``).  Rounds: 4 (m = 64)."""
    ctx, f = x.ctx, x.ctx.frac_bits
    if x.frac_bits > f:
        y, bit, t = yield from trunc_relu_form_s(ctx, x.share, x.frac_bits - f)
        if x.truncated is None:
            x.truncated = SharedTensor.of_form(ctx, t, x.shape, f)
        out = SharedTensor(ctx, y, f)
    else:
        y, bit = yield from relu_form_s(ctx, x.share, x_form=_form_in(x, (x.size,)))
        out = SharedTensor(ctx, y, x.frac_bits)
    return out, SharedTensor.of_form(ctx, bit, x.shape, 0)


def drelu(x: SharedTensor):
    """[x >= 0] as an integer bit (with a linear form).  Rounds: 4 (m = 64)."""
    bit = yield from drelu_form_s(x.ctx, x.share, bits=_cmp_bits(x.ctx, x.frac_bits))
    return SharedTensor.of_form(x.ctx, bit, x.shape, 0)


def lt(x: SharedTensor, y: SharedTensor):
    """[x < y] as an integer bit; exact while |x - y| < 2^(m-1) raw units at f.  Rounds: 4."""
    a, b, s = x._aligned(y)
    bit = yield from lt_form_s(x.ctx, a, b, bits=_cmp_bits(x.ctx, s))
    return SharedTensor.of_form(x.ctx, bit, np.broadcast_shapes(a.shape, b.shape), 0)


def max_argmax(x: SharedTensor, axis: int = -1, bits: int | None = None):
    """(max along ``axis`` at x's scale, the first maximal index as an integer one-hot);
    comparisons in Z_2^m, m = (``bits`` or ``cmp_bits``) widened by the bits above f."""
    m, hot = yield from max_s(x.ctx, x.share, axis, return_onehot=True,
                              bits=_cmp_bits(x.ctx, x.frac_bits, bits))
    return SharedTensor(x.ctx, m, x.frac_bits), SharedTensor(x.ctx, hot, 0)


def max(x: SharedTensor, axis: int = -1, bits: int | None = None):  # noqa: A001 - the op's name
    """Maximum along ``axis`` at x's scale (see ``max_argmax``)."""
    m = yield from max_s(x.ctx, x.share, axis, bits=_cmp_bits(x.ctx, x.frac_bits, bits))
    return SharedTensor(x.ctx, m, x.frac_bits)


def argmax(x: SharedTensor, axis: int = -1, bits: int | None = None):
    """The first maximal index along ``axis`` as an integer one-hot (see ``max_argmax``)."""
    return (yield from max_argmax(x, axis, bits))[1]


# -- exp, log, sigmoid, reciprocal, division, rsqrt, softmax ------------------------------------
def _at_least_f(x: SharedTensor) -> SharedTensor:
    return x.lift(x.ctx.frac_bits) if x.frac_bits < x.ctx.frac_bits else x


def _at_f(x: SharedTensor):
    """x at scale f exactly: lifted from below, truncated (1 round) from above."""
    return (yield from truncate(_at_least_f(x)))


def _result(x: SharedTensor, value) -> SharedTensor:
    """A protocol's flat result (a form or a share) as a value of x's shape at f."""
    if isinstance(value, LinearForm):
        return SharedTensor.of_form(x.ctx, value, x.shape, x.ctx.frac_bits)
    return SharedTensor(x.ctx, value.reshape(x.shape), x.ctx.frac_bits)


def exp(x: SharedTensor):
    """e^x at f for x at any scale >= f (``protocols.exp``), every input: exact for
    x <= x_hi = floor((61 - f) ln 2) - 1 (30 at f = 16), 0 below -(f+1) ln 2, saturated to
    e^(x_hi + 1) above.  Error <= 2 ulp + 2^-(f-1) e^x (measured at f = 12..24: <= 1.0 ulp
    where e^x <= 1, <= 1.5 2^-f relative).  Rounds: 6 (1 + 4 + 1) at every f; ~550 bytes
    per element and party."""
    x = _at_least_f(x)
    return _result(x, (yield from exp_s(x.ctx, x.share.ravel(), x.frac_bits)))


def log(x: SharedTensor, lo: float | None = None, hi: float | None = None):
    """log x at f (``protocols.normalized``) for x in [lo, hi] (default every positive
    value from 2^-f to 2^(59-f)); log lo below (x <= 0 too), log hi above.  Error <= 2 ulp
    (1 + |log x|) (measured at f = 12..24: <= 1.72 ulp absolute over the default domain).
    Rounds: 8 at f <= 16, 9 at 20, 10 at 24 (+1 if x is above f); ~780 bytes per element
    and party for the default domain (fewer for a narrower one)."""
    x = yield from _at_f(x)
    return _result(x, (yield from log_s(x.ctx, x.share.ravel(), x.frac_bits, lo, hi)))


def sigmoid(x: SharedTensor):
    """1 / (1 + e^-x) at f for x at any scale >= f (``protocols.nonlinear``): every input,
    exactly 0 and 1 far out; error <= 3 ulp (measured at f = 12..24: <= 1.45 ulp, 2.6 at
    f = 24).  Rounds: 10 at f <= 16, 11 above; ~480 bytes per element and party."""
    x = _at_least_f(x)
    return _result(x, (yield from sigmoid_form_s(x.ctx, x.share.ravel(), x.frac_bits)))


def reciprocal(x: SharedTensor, lo: float | None = None, hi: float | None = None):
    """1/x at f (``protocols.normalized``) for x in [lo, hi] (default [2^-f, 2^(f+2)]:
    every positive value, 1/x below a quarter ulp beyond); 1/lo below (x <= 0 too), 1/hi
    above.  Error <= 2 ulp (1 + 1/x) (measured at f = 12..24: <= 1.26 ulp where 1/x <= 1,
    <= 2.1 2^-f relative).  Rounds: 9 at f >= 16, 8 at 12 (+1 above f); ~500 bytes per
    element and party for the default domain."""
    x = yield from _at_f(x)
    return _result(x, (yield from reciprocal_s(x.ctx, x.share.ravel(), x.frac_bits, lo, hi)))


def div(x: SharedTensor, y, lo: float | None = None, hi: float | None = None):
    """x / y, untruncated (scale 2f), for a secret y in [lo, hi] (``reciprocal``'s domain:
    x times 1/y, one product more; x / lo or x / hi outside it) or a public y (a product
    with 1/y: no round).  A public y whose reciprocal the fixed-point format cannot hold is
    an error.  Error (secret y, once truncated): <= |x| 2^-(f-1) (1 + 1/|y|) + 1 ulp, i.e.
    relative ~2^-(f-1) (1 + |y|): the rounding of 1/y to f bits grows with y (measured for
    y in [1/16, 256], |x / y| <= 256, f = 12 / 16 / 20 / 24: 5.7e-2 / 4.1e-3 / 2.6e-4 /
    1.5e-5 relative where |x / y| >= 1/2).  Rounds: reciprocal's + 1 (10 at f = 16; 11
    once truncated); ~250 bytes per element and party for that domain."""
    if isinstance(y, SharedTensor):
        r = yield from reciprocal(y, lo, hi)
        return (yield from mul(x, r) if x.shape == r.shape or x.shape[:r.ndim] == r.shape
                else mul(r, x))
    y = np.asarray(y, dtype=np.float64)
    if not np.all(np.isfinite(y)) or np.any(y == 0):
        raise ValueError("division by a public zero or non-finite value")
    inv = 1.0 / y
    if np.any(np.abs(inv) * 2.0 ** x.ctx.frac_bits < 0.5):
        raise ValueError(f"a public divisor above 2^{x.ctx.frac_bits + 1} has a reciprocal below one "
                         f"unit at {x.ctx.frac_bits} fractional bits")
    return x * inv   # encoding 1/y refuses one beyond the fixed-point range


def rsqrt(x: SharedTensor, lo: float | None = None, hi: float | None = None):
    """x^(-1/2) at f (``protocols.normalized``) for x in [lo, hi] (default [4^-ceil(f/2),
    ~4^(f/2+2)]); lo^(-1/2) below (x <= 0 too), hi^(-1/2) above.  Error <= 2 ulp
    (1 + x^(-1/2)) (measured at f = 12..24: <= 1.91 ulp where x^(-1/2) <= 1, <= 2.6 2^-f
    relative).  Rounds: 12 at f <= 20, 14 at 24 (+1 above f); ~350 bytes per element and
    party."""
    x = yield from _at_f(x)
    return _result(x, (yield from rsqrt_s(x.ctx, x.share.ravel(), x.frac_bits, lo, hi)))


def softmax(x: SharedTensor):
    """Softmax along the last axis (max-subtracted), at f, from x at any scale >= f, every
    input exact (``protocols.nonlinear``): error <= 2^-13 p + 4 ulp (measured at
    f = 12..24: <= 3.4e-5 relative where p >= 1/2 from f = 16 on, 2.2 ulp at f = 16).
    Rounds: 16 for 10 classes at every f (the max's 5 included); ~320 bytes per logit
    and party."""
    x = _at_least_f(x)
    form = yield from softmax_form_s(x.ctx, x.share, x.frac_bits)
    return SharedTensor.of_form(x.ctx, form, x.shape, x.ctx.frac_bits)


def reveal(x: SharedTensor, to: int | None = None):
    """Open x to both parties (``to=None``) or to party ``to`` only: decoded reals at x's
    scale on the parties that learn it, None on the other.  Rounds: 1."""
    v = yield from reveal_s(x.ctx, x.share, to)
    return None if v is None else x.decode(v)
