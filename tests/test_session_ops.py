"""Every handle operation agrees with numpy / torch, in fixed-point units (hypothesis:
random shapes, values up to each documented bound, 0 and +-1 ulp).

The references are computed on the *quantised* inputs (what the shares hold), so linear
ops, products, comparisons, max and ReLU are checked exactly; approximations (exp,
reciprocal, softmax, a public real factor) at their documented error.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import ss_engine as sse
from ss_engine.encoding import decode, encode

F = 16
U = 2.0 ** -F


@pytest.fixture(scope="module")
def s():
    with sse.LocalSession(frac_bits=F) as session:
        yield session


def q(x, f: int = F) -> np.ndarray:
    """x as the shares hold it (fixed point at f)."""
    return decode(encode(np.asarray(x, np.float64), f), f)


def shapes(min_dims=0, max_dims=3, max_side=5):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side)


def values(shape, bound: float):
    """Reals in [-bound, bound] with the edges, 0 and +-1 ulp well represented."""
    edge = st.sampled_from([0.0, U, -U, bound, -bound, bound - U, -(bound - U), 1.0, -1.0])
    return hnp.arrays(np.float64, shape, elements=st.one_of(
        edge, st.floats(-bound, bound, allow_nan=False, allow_infinity=False)))


@st.composite
def pair(draw, bound: float, broadcast: bool = True):
    shape = draw(shapes())
    other = draw(hnp.broadcastable_shapes(shape, max_dims=3, min_side=1)) if broadcast else shape
    return draw(values(shape, bound)), draw(values(other, bound))


# -- linear and local: exact --------------------------------------------------------------
LINEAR_BOUND = 2.0 ** (60 - F)


@given(pair(LINEAR_BOUND))
def test_add_sub_neg_exact_with_secret_and_public_operands(s, ab):
    a, b = ab
    x, y = s.share(a), s.share(b)
    got = s.reveal(x + y, x - y, -x, x + b, b - x, x - 1.5, 2 + x)
    want = [q(a) + q(b), q(a) - q(b), -q(a), q(a) + q(b), q(b) - q(a), q(a) - 1.5, q(a) + 2]
    for g, w in zip(got, want):
        assert g.shape == np.shape(w) and np.array_equal(g, w)


@given(st.data())
def test_shape_ops_exact(s, data):
    shape = data.draw(shapes(min_dims=1))
    a = data.draw(values(shape, LINEAR_BOUND / 128))   # sums of up to 125 values stay in range
    x = s.share(a)
    axes = tuple(data.draw(st.permutations(range(a.ndim))))
    axis = data.draw(st.integers(-a.ndim, a.ndim - 1))
    i = data.draw(st.integers(-shape[0], shape[0] - 1))
    sl = slice(data.draw(st.integers(0, shape[0] - 1)), None, data.draw(st.sampled_from([1, 2, -1])))
    keep = data.draw(st.booleans())
    cat = sse.concatenate([x, a, x], axis=axis)
    got = s.reveal(x.reshape(-1), x.transpose(axes), x.T, x[i], x[sl, ...], x[None], cat,
                   x.sum(axis, keepdims=keep), x.sum(), x.flatten())
    qa, ring = q(a), encode(a, F)      # sums compared in the ring: exact, unlike float sums
    want = [qa.reshape(-1), qa.transpose(axes), qa.T, qa[i], qa[sl, ...], qa[None],
            np.concatenate([qa, qa, qa], axis), decode(ring.sum(axis, keepdims=keep), F),
            decode(ring.sum(), F), qa.ravel()]
    for g, w in zip(got, want):
        assert g.shape == np.shape(w) and np.array_equal(g, w)


@given(pair(2.0 ** (29 - F) * 0.999))
def test_products_exact_at_2f(s, ab):
    """x * y stays untruncated (scale 2f): revealed, it is the exact product of the
    fixed-point inputs (float64 rounding aside)."""
    a, b = ab
    x, y = s.share(a), s.share(b)
    got = s.reveal(x * y, x * b, x * 3, a * y)
    for g, w in zip(got, [q(a) * q(b), q(a) * q(b), q(a) * 3, q(a) * q(b)]):
        assert np.allclose(g, w, rtol=2.0 ** -50, atol=2.0 ** (-2 * F))


@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6), st.data())
def test_matmul_exact_at_2f_secret_and_public(s, n, k, m, data):
    bound = 2.0 ** (28 - F) / k
    a = data.draw(values((n, k), bound))
    b = data.draw(values((k, m), bound))
    v = data.draw(values((k,), bound))
    x, w = s.share(a), s.share(b)
    got = s.reveal(x @ w, x @ b, a @ w, x @ v, v @ w, w.T @ x.T, x[0] @ v)
    qa, qb, qv = q(a), q(b), q(v)
    want = [qa @ qb, qa @ qb, qa @ qb, qa @ qv, qv @ qb, qb.T @ qa.T, qa[0] @ qv]
    for g, w_ in zip(got, want):
        assert g.shape == np.shape(w_)
        assert np.allclose(g, w_, rtol=2.0 ** -48, atol=k * 2.0 ** (-2 * F))


@pytest.mark.parametrize("f", [12, 16, 20, 24])
def test_products_truncate_to_one_ulp_at_every_scale(f):
    """A product used again is truncated exactly: error at most 1 ulp at f (+ the
    product's own rounding), at every supported f."""
    rng = np.random.default_rng(f)
    a, b, c = rng.uniform(-4, 4, (3, 5, 7))
    with sse.LocalSession(frac_bits=f) as s:
        x, y, z = (s.share(v) for v in (a, b, c))
        got = s.reveal((x * y) * z, (x @ y.T) @ z)
    qa, qb, qc = (q(v, f) for v in (a, b, c))
    u = 2.0 ** -f
    assert np.abs(got[0] - qa * qb * qc).max() <= u * (np.abs(qc).max() + 1)
    assert np.abs(got[1] - (qa @ qb.T) @ qc).max() <= 7 * u * (np.abs(qc).max() + 1)


def test_conv2d_agrees_with_torch_exactly_at_2f(s):
    rng = np.random.default_rng(4)
    for stride, padding in ((1, 0), (2, 1)):
        a, w, b = rng.normal(size=(2, 3, 7, 6)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
        x, kw = s.share(a), s.share(w)
        got = s.reveal(x.conv2d(kw, stride=stride, padding=padding),
                       x.conv2d(w, bias=b, stride=stride, padding=padding),
                       x.conv2d(kw, bias=s.share(b), stride=stride, padding=padding))
        t = lambda v: torch.as_tensor(q(v), dtype=torch.float64)  # noqa: E731
        ref = torch.nn.functional.conv2d(t(a), t(w), stride=stride, padding=padding).numpy()
        refb = ref + q(b).reshape(1, -1, 1, 1)
        for g, want in zip(got, (ref, refb, refb)):
            assert g.shape == want.shape and np.abs(g - want).max() <= 2.0 ** (-2 * F) * 64


@given(pair(2.0 ** (20 - F)))
def test_public_real_factors_division_and_mean(s, ab):
    """x * c: c is encoded at f (error |x| 2^-(f+1)); x / c and mean divide with 1/c kept
    to f significant bits and truncate at once: relative error 2^-f plus one ulp."""
    a, c = ab
    c = np.where(np.abs(c) < 2.0 ** -8, 1.0, c)
    x = s.share(a)
    got = s.reveal(x * c, x / c, x.mean(), x / 3, x / 1000.0)
    qa = q(a)
    rel = lambda w: np.abs(w) * 2.0 ** -F + U  # noqa: E731
    assert np.all(np.abs(got[0] - qa * c) <= np.abs(qa) * U / 2 + U)
    for g, w in zip(got[1:], (qa / c, qa.mean(), qa / 3, qa / 1000.0)):
        assert g.shape == np.shape(w) and np.all(np.abs(g - w) <= rel(w) + U)
    if a.ndim:
        m = x.mean(axis=0).reveal()
        assert np.all(np.abs(m - qa.mean(axis=0)) <= rel(qa.mean(axis=0)) + U)


# -- comparisons, ReLU, max: exact --------------------------------------------------------
CMP_BOUND = 2.0 ** (61 - F)


@given(pair(CMP_BOUND))
def test_comparisons_exact(s, ab):
    a, b = ab
    x, y = s.share(a), s.share(b)
    got = s.reveal(x < y, x <= y, x > y, x >= y, x == y, x != y, x < b, b < x, x >= 0)
    qa, qb = q(a), q(b)
    want = [qa < qb, qa <= qb, qa > qb, qa >= qb, qa == qb, qa != qb, qa < qb, qb < qa, qa >= 0]
    for g, w in zip(got, want):
        assert g.shape == np.shape(w) and np.array_equal(g, np.asarray(w, np.float64))


@given(pair(CMP_BOUND / 2))
def test_relu_and_where_exact(s, ab):
    a, b = ab
    x, y = s.share(a), s.share(b)
    c = x > y
    got = s.reveal(x.relu(), sse.where(c, x, y), sse.where(c, 1.0, -1.0), sse.where(x < 0, 0.0, x))
    qa, qb = q(a), q(b)
    want = [np.maximum(qa, 0), np.where(qa > qb, qa, qb), np.where(qa > qb, 1.0, -1.0),
            np.where(qa < 0, 0.0, qa)]
    for g, w in zip(got, want):
        assert g.shape == w.shape and np.array_equal(g, w)


@given(st.data())
def test_max_argmax_exact_first_index_wins(s, data):
    shape = data.draw(shapes(min_dims=1, max_side=20))
    # few distinct values, so ties are common
    a = data.draw(hnp.arrays(np.float64, shape, elements=st.sampled_from(
        [0.0, U, -U, 3.5, -3.5, CMP_BOUND / 4, -CMP_BOUND / 4])))
    axis = data.draw(st.integers(-a.ndim, a.ndim - 1))
    x = s.share(a)
    got = s.reveal(x.max(axis), x.argmax(axis), x.max(), x.argmax(), x.argmax(axis, one_hot=True))
    qa = q(a)
    hot = np.zeros_like(qa)
    np.put_along_axis(hot, np.expand_dims(qa.argmax(axis), axis), 1.0, axis)
    for g, w in zip(got, [qa.max(axis), qa.argmax(axis), qa.max(), qa.argmax(), hot]):
        assert g.shape == np.shape(w) and np.array_equal(g, w)


# -- the non-linear functions at their documented error (ss_engine.tensor.ops) --------------
X_HI = np.floor((61 - F) * np.log(2)) - 1        # exp's exact range ends here (30 at f = 16)


def positives(lo: float, hi: float):
    """Positive reals spread over [lo, hi] in magnitude, with both ends and +-1 ulp."""
    edge = st.sampled_from([lo, hi, lo + U, hi - U, 1.0, 1.0 - U, 1.0 + U])
    return st.one_of(edge, st.floats(np.log2(lo), np.log2(hi)).map(lambda e: float(2.0 ** e)))


@given(st.data())
def test_exp_everywhere(s, data):
    a = data.draw(hnp.arrays(np.float64, data.draw(shapes()), elements=st.one_of(
        st.sampled_from([0.0, -U, U, -40.0, X_HI, X_HI + 1, -(F + 1) * np.log(2) - 0.1, 40.0]),
        st.floats(-60, 40, allow_nan=False))))
    x = s.share(a)
    qa = q(a)
    want = np.exp(np.minimum(qa, X_HI + 1))                   # saturated above x_hi
    for g in s.reveal(x.exp(), (x * 1.0).exp()):              # at f, and from a 2f product
        inside = qa <= X_HI
        assert np.all(np.abs(g - want)[inside] <= 2.0 ** -(F - 1) * want[inside] + 2 * U)
        assert np.all(g[~inside] >= np.exp(X_HI) * (1 - 2.0 ** -(F - 1)))


@given(hnp.arrays(np.float64, shapes(), elements=st.one_of(
    st.sampled_from([0.0, U, -U, 2.0 ** (61 - 2 * F), -(2.0 ** (61 - 2 * F))]),
    st.floats(-60, 60, allow_nan=False))))
def test_sigmoid_everywhere(s, a):
    x = s.share(a)
    want = 0.5 * (1 + np.tanh(q(a) / 2))          # (stable for large |x|)
    for g in s.reveal(x.sigmoid(), (x * 1.0).sigmoid()):
        assert g.shape == a.shape and np.all(np.abs(g - want) <= 3 * U)


@given(st.data())
def test_log_reciprocal_rsqrt_on_their_default_domains(s, data):
    a = data.draw(hnp.arrays(np.float64, data.draw(shapes()),
                             elements=positives(2.0 ** -F, 2.0 ** (F + 2))))
    x = s.share(a)
    qa = q(a)
    log, rec, rs = s.reveal(x.log(), x.reciprocal(), x.rsqrt())
    assert np.all(np.abs(log - np.log(qa)) <= 2 * U)
    assert np.all(np.abs(rec - 1 / qa) <= 2 * U + 2.0 ** -(F - 1) / qa)
    assert np.all(np.abs(rs - qa ** -0.5) <= 2 * U + 2.0 ** -(F - 1) * qa ** -0.5)


@given(st.data())
def test_division_secret_and_public(s, data):
    shape = data.draw(shapes())
    b = data.draw(hnp.arrays(np.float64, shape, elements=positives(2.0 ** -4, 2.0 ** 12)))
    a = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-1000, 1000)))
    x, y = s.share(a), s.share(b)
    qa, qb = q(a), q(b)
    xy, inv, yx = s.reveal(x / y, 2.0 / y, y.div(x * 0 + 8.0, lo=1.0, hi=16.0))
    # the documented bound: |x| 2^-(f-1) (1 + 1/|y|) + 1 ulp
    bound = lambda x_, y_: np.abs(x_) * 2 * U * (1 + 1 / np.abs(y_)) + U  # noqa: E731
    assert np.all(np.abs(xy - qa / qb) <= bound(qa, qb))
    assert np.all(np.abs(inv - 2 / qb) <= bound(2.0, qb))
    assert np.all(np.abs(yx - qb / 8) <= bound(qb, 8.0))


def test_bounds_that_do_not_hold_are_refused(s):
    x = s.share(np.ones(3))
    for lo, hi in ((0.0, 1.0), (2.0, 1.0), (-1.0, 1.0), (1.0, float("inf"))):
        for op in (x.reciprocal, x.log, x.rsqrt):
            with pytest.raises(sse.OpError, match="0 < lo < hi"):
                op(lo, hi)
    with pytest.raises(sse.OpError, match="beyond the fixed-point range"):
        x.reciprocal(1.0, 2.0 ** 60)
    with pytest.raises(sse.OpError, match="lo and hi must be numbers"):
        s._op("log", [x], {"lo": "1", "hi": 4.0})


@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 12)),
                  elements=st.floats(-30, 30, allow_nan=False)), st.sampled_from([-1, 0]))
def test_softmax_along_either_axis(s, z, axis):
    p = s.share(z).softmax(axis=axis).reveal()
    ref = torch.softmax(torch.as_tensor(q(z)), dim=axis).numpy()
    assert p.shape == z.shape and np.all(np.abs(p - ref) <= 2.0 ** -14 * ref + 2 * U)
