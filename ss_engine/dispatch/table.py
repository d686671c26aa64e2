"""The op table: every operation a session can ask of the parties, checked and run.

One row per op: its name on the wire, how many secret inputs it takes, a *check* (the
op's parameters and input shapes -> its normalised parameters and output shape; OpError
with one line on anything invalid) and a *run* (what each party executes on its
SharedTensors: a secure op of :mod:`ss_engine.tensor.ops` or a local share operation).
Both sessions' front-ends call the checks when an op is made (an error at the call site),
and every party calls them again on what it receives (``batch.parse_batch``) before
running anything, so a server validates every op in full.  The runs are the same code
the training runs: nothing here is a second copy of a protocol.

A public operand travels as fixed-point ring values with its scale (0 for an integer, f
for a real): ``{"a": i}`` names payload array i, ``{"v": n}`` a scalar; ``"s"`` the scale.
A "const" makes it a value both parties hold as a trivial sharing (party 0 the ring
values, party 1 zeros): adding, subtracting and comparing with it cost what they cost
with a secret (nothing for + and -).  Products with a public are local (``mul_public``,
``matmul_public``); an operand above f is truncated first (one round), so no result
exceeds scale 2f.  ``div_public`` multiplies by a public 1/c given at scale f + k (k bits
more than f, so that it keeps f significant bits however large c is) and truncates the
product to f at once (one round).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import kernels
from ..protocols.normalized import log_domain, reciprocal_domain, rsqrt_domain
from ..tensor import SharedTensor, ops

__all__ = ["Op", "OPS", "OpError", "Env", "MAX_RANK", "MAX_DIM", "MAX_INPUTS", "index_from_wire",
           "index_to_wire"]

MAX_RANK = 6                 # dimensions of a value (the wire's max_rank)
MAX_DIM = 1 << 30            # length of one dimension
MAX_INPUTS = 64              # secret inputs of one op (concatenate)
_MAX_INT = (1 << 63) - 1


class OpError(ValueError):
    """An op or batch the parties refuse (one line, naming the op and what is wrong)."""


@dataclass(frozen=True)
class Env:
    """What a check may consult besides the op: the payload and the engine's scale."""

    arrays: list                 # this party's payload arrays (shapes and dtypes only)
    frac_bits: int
    max_macs: int                # multiply-accumulates one product may cost


@dataclass(frozen=True)
class Op:
    name: str
    arity: int | None            # secret inputs; None: 1..MAX_INPUTS (concatenate)
    check: Callable              # (params: dict, shapes: list[tuple], env) -> (params, shape)
    run: Callable                # (ctx, xs: list[SharedTensor], params, arrays) -> value | coroutine


# -- checks -----------------------------------------------------------------------------------
def _int(v, lo: int, hi: int, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise OpError(f"{what} must be an integer in [{lo}, {hi}], got {str(v)[:40]}")
    return v


def _keys(p: dict, allowed: tuple) -> None:
    extra = set(p) - set(allowed)
    if extra:
        raise OpError(f"unknown parameters {sorted(str(k)[:20] for k in extra)}")


def _axis(v, ndim: int) -> int:
    a = _int(v, -max(ndim, 1), max(ndim - 1, 0), "axis")
    if ndim == 0:
        raise OpError("a scalar has no axis")
    return a % ndim


def _broadcast(*shapes) -> tuple:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise OpError(f"shapes {' and '.join(str(tuple(s)) for s in shapes)} do not broadcast") from None


def _payload(p: dict, env: Env) -> tuple:
    """The shape of a public or share operand named by ``p`` ({"a": i} or {"v": n})."""
    if ("a" in p) == ("v" in p):
        raise OpError("an operand is either a payload array {'a': i} or a scalar {'v': n}")
    if "v" in p:
        _int(p["v"], -_MAX_INT - 1, _MAX_INT, "a scalar operand")
        return ()
    i = _int(p["a"], 0, len(env.arrays) - 1 if env.arrays else -1, "payload index")
    a = env.arrays[i]
    if not isinstance(a, np.ndarray) or a.dtype != np.int64:
        raise OpError(f"payload array {i} must be int64 ring values")
    if a.ndim > MAX_RANK:
        raise OpError(f"payload array {i} has {a.ndim} dimensions (at most {MAX_RANK})")
    return tuple(a.shape)


def _scale(p: dict, env: Env) -> int:
    s = p.get("s")
    if s not in (0, env.frac_bits) or isinstance(s, bool):
        raise OpError(f"a public operand's scale must be 0 (an integer) or {env.frac_bits} "
                      f"(a real), got {str(s)[:20]}")
    return s


def _no_params(p, shapes, env):
    _keys(p, ())
    return {}, shapes[0]


def _same_shape_binary(p, shapes, env):
    _keys(p, ())
    return {}, _broadcast(*shapes)


def _check_share(p, shapes, env):
    _keys(p, ("a",))
    return p, _payload(p, env)


def _check_const(p, shapes, env):
    _keys(p, ("a", "v", "s"))
    shape = _payload(p, env)
    _scale(p, env)
    return p, shape


def _check_mul_public(p, shapes, env):
    _keys(p, ("a", "v", "s"))
    shape = _payload(p, env)
    _scale(p, env)
    return p, _broadcast(shapes[0], shape)


def _check_div_public(p, shapes, env):
    _keys(p, ("a", "v", "k"))
    shape = _payload(p, env)
    _int(p.get("k"), 0, env.frac_bits, "the divisor's extra scale k")
    return p, _broadcast(shapes[0], shape)


def _macs_ok(n: int, env: Env, what: str) -> None:
    if n > env.max_macs:
        raise OpError(f"{what} would cost {n} multiply-accumulates (at most {env.max_macs})")


def _check_matmul(p, shapes, env):
    _keys(p, ())
    (x, y) = shapes
    if len(x) != 2 or len(y) != 2 or x[1] != y[0]:
        raise OpError(f"matmul needs (n, k) @ (k, m), got {x} @ {y}")
    _macs_ok(x[0] * x[1] * y[1], env, "matmul")
    return {}, (x[0], y[1])


def _check_matmul_public(p, shapes, env):
    _keys(p, ("a", "s", "side"))
    if "a" not in p:
        raise OpError("matmul_public needs a payload array {'a': i}")
    pub = _payload(p, env)
    _scale(p, env)
    if p.get("side") not in ("left", "right"):
        raise OpError("side must be 'left' (public @ secret) or 'right' (secret @ public)")
    x, y = (shapes[0], pub) if p["side"] == "right" else (pub, shapes[0])
    return p, _check_matmul({}, [x, y], env)[1]


def _check_sum(p, shapes, env):
    _keys(p, ("axis", "keepdims"))
    shape, axis = shapes[0], p.get("axis")
    keep = p.get("keepdims", False)
    if not isinstance(keep, bool):
        raise OpError("keepdims must be a boolean")
    if axis is None:
        axes = tuple(range(len(shape)))
    elif isinstance(axis, list) and len(axis) <= MAX_RANK:
        axes = tuple(sorted({_axis(a, len(shape)) for a in axis}))
        if len(axes) != len(axis):
            raise OpError("sum: an axis is named twice")
    else:
        raise OpError("axis must be null or a list of axes")
    out = tuple(1 if i in axes else d for i, d in enumerate(shape)) if keep else \
        tuple(d for i, d in enumerate(shape) if i not in axes)
    return {"axis": list(axes), "keepdims": keep}, out


def _check_reshape(p, shapes, env):
    _keys(p, ("shape",))
    new = p.get("shape")
    if not isinstance(new, list) or len(new) > MAX_RANK:
        raise OpError(f"shape must be a list of at most {MAX_RANK} dimensions")
    dims = [_int(d, -1, MAX_DIM, "a dimension") for d in new]
    size = math.prod(shapes[0])
    if dims.count(-1) > 1 or 0 in dims:
        raise OpError("reshape takes positive dimensions and at most one -1")
    if -1 in dims:
        rest = math.prod(d for d in dims if d != -1)
        if size % rest:
            raise OpError(f"cannot reshape {shapes[0]} to {tuple(new)}")
        dims[dims.index(-1)] = size // rest
    if math.prod(dims) != size:
        raise OpError(f"cannot reshape {shapes[0]} ({size} elements) to {tuple(new)}")
    return {"shape": dims}, tuple(dims)


def _check_transpose(p, shapes, env):
    _keys(p, ("axes",))
    shape, axes = shapes[0], p.get("axes")
    if axes is None:
        axes = list(range(len(shape)))[::-1]
    if not isinstance(axes, list) or sorted(axes) != list(range(len(shape))) \
            or any(isinstance(a, bool) for a in axes):
        raise OpError(f"axes must be a permutation of 0..{len(shape) - 1}")
    return {"axes": axes}, tuple(shape[a] for a in axes)


def index_to_wire(idx) -> list:
    """A Python index (ints, slices, None, Ellipsis) as wire items."""
    out = []
    for it in idx if isinstance(idx, tuple) else (idx,):
        if isinstance(it, (int, np.integer)) and not isinstance(it, bool):
            out.append(["i", int(it)])
        elif isinstance(it, slice):
            out.append(["s", *(None if v is None else int(v) for v in (it.start, it.stop, it.step))])
        elif it is None:
            out.append(["n"])
        elif it is Ellipsis:
            out.append(["e"])
        else:
            raise OpError(f"an index may hold integers, slices, None and ..., not "
                          f"{type(it).__name__}")
    return out


def index_from_wire(items) -> tuple:
    if not isinstance(items, list) or len(items) > 2 * MAX_RANK:
        raise OpError(f"an index is a list of at most {2 * MAX_RANK} items")
    big = 1 << 62
    out = []
    for it in items:
        if not isinstance(it, list) or not it or it[0] not in ("i", "s", "n", "e"):
            raise OpError("index items are ['i', n], ['s', start, stop, step], ['n'] or ['e']")
        kind, rest = it[0], it[1:]
        if kind == "i" and len(rest) == 1:
            out.append(_int(rest[0], -big, big, "an index"))
        elif kind == "s" and len(rest) == 3:
            vals = [None if v is None else _int(v, -big, big, "a slice bound") for v in rest]
            if vals[2] == 0:
                raise OpError("a slice step cannot be zero")
            out.append(slice(*vals))
        elif kind in ("n", "e") and not rest:
            out.append(None if kind == "n" else Ellipsis)
        else:
            raise OpError(f"malformed index item {str(it)[:40]}")
    return tuple(out)


def _check_index(p, shapes, env):
    _keys(p, ("idx",))
    idx = index_from_wire(p.get("idx"))
    try:   # a zero-strided view: numpy's own rules, without allocating the value
        out = np.broadcast_to(np.zeros((), np.int8), shapes[0])[idx].shape
    except (IndexError, ValueError, TypeError) as exc:
        raise OpError(f"index {str(p.get('idx'))[:60]} on shape {shapes[0]}: {exc}") from None
    return {"idx": p["idx"]}, tuple(out)


def _check_concat(p, shapes, env):
    _keys(p, ("axis",))
    first = shapes[0]
    axis = _axis(p.get("axis", 0), len(first))
    if any(len(s) != len(first) or any(a != b for i, (a, b) in enumerate(zip(s, first))
                                       if i != axis) for s in shapes):
        raise OpError(f"concatenate: shapes {shapes} differ off axis {axis}")
    return {"axis": axis}, first[:axis] + (sum(s[axis] for s in shapes),) + first[axis + 1:]


def _check_conv2d(p, shapes, env):
    _keys(p, ("stride", "padding"))
    stride = _int(p.get("stride", 1), 1, 64, "stride")
    padding = _int(p.get("padding", 0), 0, 64, "padding")
    x, w = shapes
    if len(x) != 4 or len(w) != 4 or x[1] != w[1]:
        raise OpError(f"conv2d needs (N, C, H, W) and (O, C, kh, kw), got {x} and {w}")
    try:
        oh, ow = kernels.conv_output_hw(x[2], x[3], w[2], w[3], stride, padding)
    except ValueError as exc:
        raise OpError(f"conv2d: {exc}") from None
    out = (x[0], w[0], oh, ow)
    _macs_ok(math.prod(out) * w[1] * w[2] * w[3], env, "conv2d")
    return {"stride": stride, "padding": padding}, out


def _domain(check):
    """The check of an op on a positive public domain [lo, hi] (each optional): the domain
    the op itself would refuse is refused here, before anything runs."""
    def checked(p, shapes, env):
        _keys(p, ("lo", "hi"))
        lo, hi = p.get("lo"), p.get("hi")
        if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                   for v in (lo, hi)):
            raise OpError("lo and hi must be numbers (or absent for the default domain)")
        try:
            check(env.frac_bits, lo, hi).check(env.frac_bits, env.frac_bits, "the domain")
        except (ValueError, OverflowError) as exc:
            raise OpError(str(exc)) from None
        return {k: float(v) for k, v in (("lo", lo), ("hi", hi)) if v is not None}, shapes[0]
    return checked


def _check_div(p, shapes, env):
    params, _ = _domain(reciprocal_domain)(p, shapes[1:], env)
    return params, _broadcast(*shapes)


def _check_reduce(keep: bool):
    def check(p, shapes, env):
        _keys(p, ("axis",))
        shape = shapes[0]
        axis = _axis(p.get("axis", -1), len(shape))
        return {"axis": axis}, shape if keep else shape[:axis] + shape[axis + 1:]
    return check


def _check_last_axis(p, shapes, env):
    _keys(p, ())
    if not shapes[0]:
        raise OpError("softmax needs at least one axis")
    return {}, shapes[0]


# -- runs -------------------------------------------------------------------------------------
def _public(p: dict, arrays: list) -> np.ndarray:
    return np.asarray(arrays[p["a"]] if "a" in p else np.int64(p["v"]), dtype=np.int64)


def _const(ctx, xs, p, arrays):
    raw = _public(p, arrays)
    return SharedTensor(ctx, raw.copy() if ctx.rank == 0 else np.zeros_like(raw), p["s"])


def _spread(x: SharedTensor, shape: tuple) -> SharedTensor:
    """x broadcast to ``shape`` (a new value: its openings are of another shape)."""
    if x.shape == shape:
        return x
    return SharedTensor(x.ctx, np.ascontiguousarray(np.broadcast_to(x.share, shape)), x.frac_bits)


def _mul(ctx, xs, p, arrays):
    shape = tuple(np.broadcast_shapes(xs[0].shape, xs[1].shape))
    return ops.mul(_spread(xs[0], shape), _spread(xs[1], shape))


def _at_most_f(x: SharedTensor, scale: int):
    """x ready to multiply by a public of ``scale``: truncated to f first if the product
    would exceed 2f."""
    if scale and x.frac_bits > x.ctx.frac_bits:
        return (yield from ops.truncate(x))
    return x


def _mul_public(ctx, xs, p, arrays):
    x = yield from _at_most_f(xs[0], p["s"])
    return SharedTensor(ctx, np.asarray(x.share * _public(p, arrays), np.int64), x.frac_bits + p["s"])


def _div_public(ctx, xs, p, arrays):
    x = yield from _at_most_f(xs[0], 1)
    z = SharedTensor(ctx, np.asarray(x.share * _public(p, arrays), np.int64),
                     x.frac_bits + ctx.frac_bits + p["k"])
    return (yield from ops.truncate(z))


def _matmul_public(ctx, xs, p, arrays):
    x = yield from _at_most_f(xs[0], p["s"])
    pub = _public(p, arrays)
    z = kernels.ring_matmul(x.share, pub) if p["side"] == "right" else kernels.ring_matmul(pub, x.share)
    return SharedTensor(ctx, z, x.frac_bits + p["s"])


def _view(x: SharedTensor, share: np.ndarray) -> SharedTensor:
    """A copy of an index or a transpose of x's share (np.array keeps a 0-d value 0-d)."""
    return SharedTensor(x.ctx, np.array(share, dtype=np.int64), x.frac_bits)


def _div(ctx, xs, p, arrays):
    shape = tuple(np.broadcast_shapes(xs[0].shape, xs[1].shape))
    return ops.div(_spread(xs[0], shape), _spread(xs[1], shape), **p)


def _relu(ctx, xs, p, arrays):
    return (yield from ops.relu(xs[0]))[0]


def _unary(fn):
    return lambda ctx, xs, p, arrays: fn(xs[0], **p)


OPS: dict[str, Op] = {op.name: op for op in (
    Op("share", 0, _check_share, lambda ctx, xs, p, arrays: SharedTensor(ctx, np.array(arrays[p["a"]]))),
    Op("const", 0, _check_const, _const),
    Op("add", 2, _same_shape_binary, lambda ctx, xs, p, arrays: xs[0] + xs[1]),
    Op("sub", 2, _same_shape_binary, lambda ctx, xs, p, arrays: xs[0] - xs[1]),
    Op("neg", 1, _no_params, lambda ctx, xs, p, arrays: -xs[0]),
    Op("mul", 2, _same_shape_binary, _mul),
    Op("mul_public", 1, _check_mul_public, _mul_public),
    Op("div_public", 1, _check_div_public, _div_public),
    Op("matmul", 2, _check_matmul, lambda ctx, xs, p, arrays: ops.matmul(xs[0], xs[1])),
    Op("matmul_public", 1, _check_matmul_public, _matmul_public),
    Op("sum", 1, _check_sum, lambda ctx, xs, p, arrays: xs[0].sum(tuple(p["axis"]), p["keepdims"])),
    Op("reshape", 1, _check_reshape, lambda ctx, xs, p, arrays: xs[0].reshape(p["shape"])),
    Op("transpose", 1, _check_transpose,
       lambda ctx, xs, p, arrays: _view(xs[0], xs[0].share.transpose(p["axes"]))),
    Op("index", 1, _check_index,
       lambda ctx, xs, p, arrays: _view(xs[0], xs[0].share[index_from_wire(p["idx"])])),
    Op("concat", None, _check_concat,
       lambda ctx, xs, p, arrays: SharedTensor.concatenate(xs, p["axis"])),
    Op("conv2d", 2, _check_conv2d, lambda ctx, xs, p, arrays: ops.conv2d(xs[0], xs[1], **p)),
    Op("relu", 1, _no_params, _relu),
    Op("lt", 2, _same_shape_binary, lambda ctx, xs, p, arrays: ops.lt(xs[0], xs[1])),
    Op("max", 1, _check_reduce(False), _unary(ops.max)),
    Op("argmax", 1, _check_reduce(True), _unary(ops.argmax)),
    Op("exp", 1, _no_params, _unary(ops.exp)),
    Op("sigmoid", 1, _no_params, _unary(ops.sigmoid)),
    Op("log", 1, _domain(log_domain), _unary(ops.log)),
    Op("reciprocal", 1, _domain(reciprocal_domain), _unary(ops.reciprocal)),
    Op("rsqrt", 1, _domain(rsqrt_domain), _unary(ops.rsqrt)),
    Op("div", 2, _check_div, _div),
    Op("softmax", 1, _check_last_axis, _unary(ops.softmax)),
)}
