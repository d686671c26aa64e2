"""reciprocal / rsqrt / log over every positive value of their domain (the magnitude
normalised by one parallel comparison), saturated outside it, at f = 12..24; public bounds
the format cannot hold are one-line errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from ss_engine import protocols as P
from ss_engine.protocols import normalized as N

from .conftest import FRAC_BITS, make_runtime, opened

FEW = settings(max_examples=6)

#: (protocol, domain, reference, error bound in ulp units of 1 + |ref|, rounds at f = 16)
FUNCTIONS = {
    "reciprocal": (P.reciprocal_s, N.reciprocal_domain, lambda x: 1 / x, 2.0, 9),
    "rsqrt": (P.rsqrt_s, N.rsqrt_domain, lambda x: x ** -0.5, 2.0, 12),
    "log": (P.log_s, N.log_domain, np.log, 2.0, 8),
}


def _inputs(f, dom, unit_draws):
    """Log-uniform draws over the domain, its ends, +-1 ulp around them, 1, and values
    outside it (0, negative, beyond hi), rounded to what the encoding holds."""
    ulp = 2.0 ** -f
    inside = np.exp(np.log(dom.lo) + np.asarray(unit_draws) * (np.log(dom.hi) - np.log(dom.lo)))
    edges = [dom.lo, dom.lo + ulp, dom.hi, dom.hi - ulp, 1.0, 1.0 - ulp, 1.0 + ulp]
    x = np.round(np.concatenate([inside, edges]) / ulp) * ulp
    x = x[(x >= dom.lo) & (x <= dom.hi)]
    out = np.array([0.0, -ulp, -3.0, dom.lo - ulp, 2.0 * dom.hi])
    out = out[(out < dom.lo) & (out > -2.0 ** (40 - f)) | (out > dom.hi)]
    return x, out


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("f", FRAC_BITS)
@FEW
@given(draws=hnp.arrays(np.float64, st.integers(1, 30), elements=st.floats(0, 1)))
def test_normalized_function_on_its_domain_and_outside(name, f, draws):
    fn, domain, ref_fn, ulps, _ = FUNCTIONS[name]
    dom = domain(f)
    x, out = _inputs(f, dom, draws)
    rt = make_runtime(frac_bits=f)
    y = opened(rt.run_same(fn, rt.share_float(np.concatenate([x, out]))), f)
    ref = ref_fn(x)
    err = np.abs(y[:x.size] - ref)
    assert np.all(err <= ulps * 2.0 ** -f * (1 + np.abs(ref))), (x[np.argmax(err)], err.max() * 2 ** f)
    # saturation: the value at lo below the domain (0 and negatives too), at hi above it
    sat = np.where(out < dom.lo, ref_fn(dom.lo), ref_fn(dom.hi))
    assert np.all(np.abs(y[x.size:] - sat) <= ulps * 2.0 ** -f * (1 + np.abs(sat)))


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_rounds_and_a_narrower_public_domain(name):
    fn, _, ref_fn, ulps, rounds = FUNCTIONS[name]
    rt = make_runtime()
    x = np.array([0.5, 1.0, 3.0, 10.0, 20.0])
    y = opened(rt.run_same(lambda c, v: fn(c, v, lo=0.5, hi=20.0), rt.share_float(x)), 16)
    assert np.all(np.abs(y - ref_fn(x)) <= ulps * 2.0 ** -16 * (1 + np.abs(ref_fn(x))))
    st = rt.contexts[0].channel.stats
    assert st.rounds == rounds
    # one comparison per element and threshold (log_r(hi/lo) + 1 of them) and x's opening
    # share the first message: its bytes shrink with the domain
    j = len(FUNCTIONS[name][1](16, 0.5, 20.0).exponents)
    assert st.by_label["cmp_open"] == (1, 8 * x.size * (j + 1))
    assert j < len(FUNCTIONS[name][1](16).exponents) / 2


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("lo, hi, match", [
    (0.0, 1.0, "0 < lo < hi"), (2.0, 1.0, "0 < lo < hi"), (float("nan"), 1.0, "0 < lo < hi"),
    (2.0 ** -20, 1.0, "below one unit"), (1.0, 2.0 ** 50, "beyond the fixed-point range")])
def test_public_bounds_the_format_cannot_hold_are_errors(name, lo, hi, match):
    fn = FUNCTIONS[name][0]
    rt = make_runtime()
    with pytest.raises(Exception, match=match):
        rt.run_same(lambda c, v: fn(c, v, lo=lo, hi=hi), rt.share_float(np.ones(3)))


def _div_bound(f, x, y):
    """The documented error of x / y: x times 1/y (within 2 ulp (1 + 1/y)), then one
    truncation: |x| 2^-(f-1) (1 + 1/|y|) + 1 ulp."""
    return 2.0 ** -f * (2 * np.abs(x) * (1 + 1 / np.abs(y)) + 1)


@pytest.mark.parametrize("f", FRAC_BITS)
@FEW
@given(draws=hnp.arrays(np.float64, st.integers(1, 30), elements=st.floats(0, 1)),
       quotients=st.floats(-200, 200))
def test_division_by_a_secret_on_its_domain_and_outside(f, draws, quotients):
    """x / y for y over [1/16, 256] (its ends, +-1 ulp, 1) and beyond it (0, negative,
    above): within the documented bound inside, x / lo or x / hi outside (the reciprocal's
    saturation), never garbage; x = 0 and +-1 ulp included."""
    from ss_engine.protocols.rounds import resolve
    from ss_engine.tensor import SharedTensor, ops
    lo, hi, ulp = 2.0 ** -4, 2.0 ** 8, 2.0 ** -f
    dom = N.Domain(lo, hi, 2)
    y, out = _inputs(f, dom, draws)
    x = np.round(quotients * y / ulp) * ulp
    x[:3] = [0.0, ulp, -ulp][:min(3, x.size)]
    xo = np.round(np.full(out.size, 3.0 + quotients / 256) / ulp) * ulp
    rt = make_runtime(frac_bits=f)

    def body(ctx, sx, sy):
        q = yield from ops.div(SharedTensor(ctx, sx), SharedTensor(ctx, sy), lo=lo, hi=hi)
        return (yield from resolve(ops.truncate(q))).share

    got = opened(rt.run_same(body, rt.share_float(np.concatenate([x, xo])),
                             rt.share_float(np.concatenate([y, out]))), f)
    assert np.all(np.abs(got[:x.size] - x / y) <= _div_bound(f, x, y))
    sat = np.where(out < lo, lo, hi)
    assert np.all(np.abs(got[x.size:] - xo / sat) <= _div_bound(f, xo, sat))
