"""Each layer's forward and backward on shares against torch autograd (float64).

Tolerances are in units of 2^-f: one truncation costs at most 1 ulp per product, so a
layer's output is within a few ulp and a gradient summed over n terms within n ulp plus
the rounding of its inputs.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from ss_engine.encoding import decode, encode
from ss_engine.nn import SGD, Adam, AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU
from ss_engine.nn.module import Module, Parameter
from ss_engine.protocols.rounds import resolve
from ss_engine.tensor import SharedTensor, ops

from .conftest import make_runtime

F = 16
ULP = 2.0 ** -F


def q(x):
    """The fixed-point value torch should see (inputs rounded like the engine's)."""
    return decode(encode(x, F), F)


def run_layer(rt, make, x, dy, params):
    """Forward + backward of one layer on both parties; returns opened (y, dx, grads), each
    decoded at the scale the layer left it (untruncated products stay at 2f)."""
    xs, dys = rt.share_float(x), rt.share_float(dy)
    ps = {k: rt.share_float(v) for k, v in params.items()}

    def body(ctx, xv, dyv, *pv):
        layer = make({k: v for k, v in zip(params, pv)})
        y = yield from resolve(layer.forward(SharedTensor(ctx, xv)))
        dx = yield from resolve(layer.backward(SharedTensor(ctx, dyv)))
        grads = [p.grad for p in layer.parameters()]
        return [(t.share, t.frac_bits) for t in [y, dx] + grads]

    r0, r1 = rt.run(body, (xs[0], dys[0]) + tuple(p[0] for p in ps.values()),
                    (xs[1], dys[1]) + tuple(p[1] for p in ps.values()))
    y, dx, *grads = [decode(a + b, bits) for (a, bits), (b, _) in zip(r0, r1)]
    return y, dx, grads


def torch_ref(fn, x, dy, params):
    xt = torch.tensor(q(x), requires_grad=True)
    pt = {k: torch.tensor(q(v), requires_grad=True) for k, v in params.items()}
    y = fn(xt, **pt)
    y.backward(torch.tensor(q(dy)))
    return y.detach().numpy(), xt.grad.numpy(), [pt[k].grad.numpy() for k in params]


@given(st.integers(1, 8), st.integers(1, 20), st.integers(1, 12), st.integers(0, 2 ** 16))
def test_linear_layer(batch, fin, fout, seed):
    rng = np.random.default_rng(seed)
    x, dy = rng.normal(size=(batch, fin)), rng.normal(size=(batch, fout))
    params = {"weight": rng.normal(size=(fout, fin)) / np.sqrt(fin), "bias": rng.normal(size=fout)}
    y, dx, (dw, db) = run_layer(make_runtime(), lambda p: Linear(p["weight"], p["bias"]), x, dy, params)
    ry, rdx, (rdw, rdb) = torch_ref(lambda x, weight, bias: x @ weight.T + bias, x, dy, params)
    assert np.abs(y - ry).max() <= 2 * ULP
    assert np.abs(dx - rdx).max() <= 2 * ULP
    assert np.abs(dw - rdw).max() <= 2 * ULP
    assert np.abs(db - rdb).max() <= batch * ULP


@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 2), (2, 1)])
def test_conv_layer(stride, padding):
    rng = np.random.default_rng(stride + padding)
    x = rng.normal(size=(3, 2, 8, 8))
    params = {"weight": rng.normal(size=(4, 2, 3, 3)) / 4, "bias": rng.normal(size=4)}
    out_hw = (8 + 2 * padding - 3) // stride + 1
    dy = rng.normal(size=(3, 4, out_hw, out_hw))
    y, dx, (dw, db) = run_layer(make_runtime(), lambda p: Conv2d(p["weight"], p["bias"], stride, padding),
                                x, dy, params)
    ry, rdx, (rdw, rdb) = torch_ref(lambda x, weight, bias: torch.nn.functional.conv2d(
        x, weight, bias, stride=stride, padding=padding), x, dy, params)
    assert np.abs(y - ry).max() <= 2 * ULP
    assert np.abs(dx - rdx).max() <= 2 * ULP
    assert np.abs(dw - rdw).max() <= 2 * ULP
    assert np.abs(db - rdb).max() <= dy[:, 0].size * ULP


def test_relu_keeps_its_bit_and_backward_is_exact():
    rng = np.random.default_rng(5)
    x, dy = rng.normal(size=(6, 7)), rng.normal(size=(6, 7))
    x[0, :3] = [0.0, ULP, -ULP]
    y, dx, _ = run_layer(make_runtime(), lambda p: ReLU(), x, dy, {})
    assert np.array_equal(y, np.maximum(q(x), 0))
    assert np.array_equal(dx, np.where(q(x) >= 0, q(dy), 0))


@pytest.mark.parametrize("cls,fn", [(MaxPool2d, torch.nn.functional.max_pool2d),
                                    (AvgPool2d, torch.nn.functional.avg_pool2d)])
def test_pooling(cls, fn):
    rng = np.random.default_rng(7)
    x, dy = rng.normal(size=(2, 3, 6, 6)), rng.normal(size=(2, 3, 3, 3))
    y, dx, _ = run_layer(make_runtime(), lambda p: cls(2), x, dy, {})
    ry, rdx, _ = torch_ref(lambda x: fn(x, 2), x, dy, {})
    assert np.abs(y - ry).max() <= ULP
    assert np.abs(dx - rdx).max() <= ULP


def test_flatten_roundtrip():
    x = np.random.default_rng(8).normal(size=(2, 3, 2, 2))
    y, dx, _ = run_layer(make_runtime(), lambda p: Flatten(), x, x.reshape(2, -1), {})
    assert y.shape == (2, 12) and np.array_equal(dx, q(x))


def test_sgd_matches_torch_over_steps_with_momentum_decay_and_lr_change():
    rng = np.random.default_rng(9)
    w = rng.normal(size=(5, 4))
    grads = [rng.normal(size=(5, 4)) * 8 for _ in range(3)]  # batch-summed gradients, B = 8
    lrs = [0.1, 0.1, 0.01]
    rt = make_runtime()
    ws = rt.share_float(w)
    gs = [rt.share_float(g) for g in grads]

    def body(ctx, wv, *gv):
        p = Parameter("w", wv)
        opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=5e-4)
        for g, lr in zip(gv, lrs):
            p.grad = SharedTensor(ctx, g)
            yield from opt.step(batch_size=8, lr=lr)
        return p.value

    r = rt.run(body, (ws[0],) + tuple(g[0] for g in gs), (ws[1],) + tuple(g[1] for g in gs))
    wt = torch.tensor(q(w), requires_grad=True)
    opt = torch.optim.SGD([wt], lr=0.1, momentum=0.9, weight_decay=5e-4)
    for g, lr in zip(grads, lrs):
        opt.param_groups[0]["lr"] = lr
        wt.grad = torch.tensor(q(g) / 8)
        opt.step()
    assert np.abs(decode(r[0] + r[1], F) - wt.detach().numpy()).max() <= 4 * ULP
    # one truncation round per step for all parameters
    assert rt.contexts[0].channel.stats.rounds == 3


@pytest.mark.parametrize("f", [12, 16, 17, 20])
def test_sgd_takes_untruncated_weight_gradients_where_the_bound_allows(f):
    """A gradient at 2f fractional bits (straight from the Beaver product) gives the same
    update as its truncation, within an ulp; beyond f = 17 it is truncated to f first."""
    rng = np.random.default_rng(f)
    w, g = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) * 40
    rt = make_runtime(frac_bits=f)
    ws = rt.share_float(w)
    g_raw = rt.share_ring(encode(g * 2.0 ** f, f))   # 2f fractional bits, like matmul_masked
    g_cut = rt.share_float(g)

    def body(ctx, wv, graw, gcut):
        out = []
        rounds = []
        for grad, bits in ((graw, 2 * f), (gcut, f)):
            p = Parameter("w", wv.copy(), grad=SharedTensor(ctx, grad, bits))
            opt = SGD([p], lr=0.05, momentum=0.9, weight_decay=5e-4)
            before = ctx.channel.stats.rounds
            yield from opt.step(batch_size=128)
            rounds.append(ctx.channel.stats.rounds - before)
            out.append(p.value)
        return out, opt.takes_raw_gradients(f), rounds

    (r0, takes, rounds), (r1, _, _) = rt.run(body, (ws[0], g_raw[0], g_cut[0]), (ws[1], g_raw[1], g_cut[1]))
    assert takes == (f <= 17)
    # a raw gradient the bound does not allow is truncated first: one more round
    assert rounds == [1 if f <= 17 else 2, 1]
    cut = decode(r0[1] + r1[1], f)
    c_grad, c_wd = (round(c * 2 ** 20) / 2 ** 20 for c in (0.05 / 128, 0.05 * 5e-4))  # const_bits
    want = q_f(w, f) - (c_grad * q_f(g, f) + c_wd * q_f(w, f))
    assert np.abs(cut - want).max() <= 4 * 2.0 ** -f
    assert np.abs(decode(r0[0] + r1[0], f) - want).max() <= 4 * 2.0 ** -f


def _adam_case(f):
    """Gradients of several sizes over six steps (a sign change, a tiny one, a zero one, a
    parameter whose only gradient is its weight decay), an lr change between them."""
    rng = np.random.default_rng(9)
    w = rng.normal(size=(6, 5))
    grads = [rng.normal(size=(6, 5)) * 8 * s for s in (1, 0.01, 3, 1e-3, 0.5, 0.2)]
    grads[2][0, 0] = grads[0][1, 1] = grads[1][1, 1] = 0.0
    for g in grads:
        g[2, 2] = 0.0
    return w, grads, [1e-2] * 4 + [3e-3] * 2


@pytest.mark.parametrize("f, tol", [(12, 4), (16, 4), (20, 40), (24, 640)])
def test_adam_matches_torch_over_steps(f, tol):
    """The secure Adam update against torch.optim.Adam, six steps (batch-summed gradients,
    B = 8), weight decay, an lr change: within ``tol`` ulp of 2^-f at every step.  The bound
    is the stochastic rounding of w at f <= 16 (a few ulp over six steps); at f >= 20 it is
    v's 40 fractional bits, ~1e-3 of lr (``nn.optim.Adam``)."""
    w, grads, lrs = _adam_case(f)
    rt = make_runtime(frac_bits=f)
    qf = lambda x: decode(encode(x, f), f)  # noqa: E731
    ws, gs = rt.share_float(w), [rt.share_float(g) for g in grads]

    def body(ctx, wv, *gv):
        p = Parameter("w", wv)
        opt = Adam([p], lr=1e-2, weight_decay=1e-2)
        out = []
        for g, lr in zip(gv, lrs):
            p.grad = SharedTensor(ctx, g)
            yield from opt.step(batch_size=8, lr=lr)
            out.append(p.value)
        return out

    r = rt.run(body, (ws[0],) + tuple(g[0] for g in gs), (ws[1],) + tuple(g[1] for g in gs))
    wt = torch.tensor(qf(w), requires_grad=True, dtype=torch.float64)
    opt = torch.optim.Adam([wt], lr=1e-2, weight_decay=1e-2)
    for i, (g, lr) in enumerate(zip(grads, lrs)):
        opt.param_groups[0]["lr"] = lr
        wt.grad = torch.tensor(qf(g) / 8)
        opt.step()
        got = decode(r[0][i] + r[1][i], f)
        assert np.abs(got - wt.detach().numpy()).max() <= tol * 2.0 ** -f, (i, f)
    # the update is one task per parameter: 2 rounds for m and v, 11 or 13 for the
    # normalised v^(-1/2) with m riding along (polynomial degree from lr and f)
    assert rt.contexts[0].channel.stats.rounds == {12: 13, 16: 15, 20: 15, 24: 15}[f] * len(lrs)


def test_adam_bounds_are_checked():
    with pytest.raises(ValueError, match="beta1\\^2 < beta2"):
        Adam([], lr=1e-3, betas=(0.99, 0.9))
    with pytest.raises(ValueError, match="lr > 0"):
        Adam([], lr=0.0)


def q_f(x, f):
    return decode(encode(x, f), f)


class Square(Module):
    """A layer a user adds: x^2, written with the secure ops only (no rounds, openings or
    truncations named)."""

    def forward(self, x):
        self._x = x
        return (yield from ops.mul(x, x))

    def backward(self, dy, need_input_grad=True):
        return (yield from ops.mul(dy, self._x)) * 2


def test_a_new_layer_needs_no_knowledge_of_rounds():
    rng = np.random.default_rng(11)
    x, dy = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    rt = make_runtime()
    y, dx, _ = run_layer(rt, lambda p: Square(), x, dy, {})
    ry, rdx, _ = torch_ref(lambda x: x * x, x, dy, {})
    assert np.abs(y - ry).max() <= 2 * ULP and np.abs(dx - rdx).max() <= 4 * ULP
    # forward opens x once (the square's one mask), backward reuses it and opens only dy
    s = rt.contexts[0].channel.stats
    assert (s.rounds, s.bytes_sent) == (2, 8 * (x.size + dy.size))
