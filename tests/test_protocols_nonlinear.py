"""exp / sigmoid / softmax meet their documented accuracy over their whole domain, saturate
outside it, and cost the rounds their cards state, at f = 12..24."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from ss_engine import protocols as P
from ss_engine.protocols.exp import ExpDomain

from .conftest import FRAC_BITS, make_runtime, opened

#: each example runs the protocol once on a whole array (edge values included)
FEW = settings(max_examples=6)


def _values(f, draws, edges):
    x = np.concatenate([np.asarray(draws, np.float64), np.asarray(edges, np.float64)])
    return np.round(x * 2.0 ** f) / 2.0 ** f          # what the encoding holds


def _exp_bound(f, ref):
    """The documented error of exp: 2 ulp + 2^-(f-1) relative."""
    return 2.0 ** -f * (2 + 2 * ref)


@pytest.mark.parametrize("f", FRAC_BITS)
@FEW
@given(draws=hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(-60, 40)))
def test_exp_is_exact_on_its_domain_and_saturates_beyond(f, draws):
    dom = ExpDomain(f)
    ulp = 2.0 ** -f
    x = _values(f, draws, [0.0, ulp, -ulp, dom.x_hi, dom.x_hi - ulp, dom.k_lo, dom.k_lo - ulp,
                           -(2.0 ** (40 - f)), 2.0 ** (40 - f), dom.x_hi + 1.0 + ulp])
    rt = make_runtime(frac_bits=f)
    y = opened(rt.run_same(P.exp_s, rt.share_float(x)), f)
    inside = x <= dom.x_hi
    ref = np.exp(np.minimum(x, dom.x_hi + 1))
    assert np.all(np.abs(y - ref)[inside] <= _exp_bound(f, ref[inside]))
    top = np.exp(dom.k_hi + 1)
    # beyond x_hi + 1 the result is the saturation value, between x_hi and x_hi + 1 either it
    # or e^x: never garbage
    far = x > dom.x_hi + 1
    assert np.all(np.abs(y[far] - top) <= _exp_bound(f, top))
    mid = ~inside & ~far
    assert np.all((np.abs(y[mid] - top) <= _exp_bound(f, top)) |
                  (np.abs(y[mid] - ref[mid]) <= _exp_bound(f, ref[mid])))
    assert rt.contexts[0].channel.stats.rounds == 6       # 1 + 4 + 1 (module doc)


def test_exp_of_an_untruncated_product():
    """A 2f input (a Beaver product) is split by two truncations of the one value."""
    x = np.array([-30.0, -3.5, -1e-4, 0.0, 0.25, 7.3, 29.0])
    rt = make_runtime()
    raw = rt.share_ring(np.rint(x * 2.0 ** 32).astype(np.int64))
    y = opened(rt.run_same(lambda c, v: P.exp_s(c, v, scale=32), raw), 16)
    assert np.all(np.abs(y - np.exp(x)) <= _exp_bound(16, np.exp(x)))
    # the comparison of K runs in the narrower ring 64 - 32 bits (the same two gate levels,
    # beside the polynomial's 4 rounds): 1 + 4 + 1
    assert rt.contexts[0].channel.stats.rounds == 6


def _softmax_ref(z):
    ref = np.exp(z - z.max(-1, keepdims=True))
    return ref / ref.sum(-1, keepdims=True)


def _softmax_bound(f, ref):
    """The documented error: relative 2^-14 (its Goldschmidt division) plus 4 ulp."""
    return 2.0 ** -13 * ref + 4 * 2.0 ** -f


@pytest.mark.parametrize("f", FRAC_BITS)
@FEW
@given(z=hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(2, 12)),
                    elements=st.floats(-40, 40)))
def test_softmax_property(f, z):
    z = np.round(z * 2.0 ** f) / 2.0 ** f
    z[0, 0] = z[0, -1] + 300.0            # a logit gap far beyond any exp domain: still exact
    rt = make_runtime(frac_bits=f)
    p = opened(rt.run_same(P.softmax_s, rt.share_float(z)), f)
    ref = _softmax_ref(z)
    assert np.all(np.abs(p - ref) <= _softmax_bound(f, ref))
    assert np.all(np.abs(p.sum(-1) - 1) <= z.shape[1] * _softmax_bound(f, 1.0))
    # the argmax survives wherever the top two probabilities are further apart than the error
    top2 = np.sort(ref, -1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * _softmax_bound(f, 1.0)
    assert np.array_equal(p.argmax(-1)[clear], ref.argmax(-1)[clear])


def test_softmax_rounds_for_ten_classes():
    rt = make_runtime()
    z = np.random.default_rng(3).normal(0, 4, (16, 10))
    p = opened(rt.run_same(P.softmax_s, rt.share_float(z)), 16)
    assert np.all(np.abs(p - _softmax_ref(z)) <= _softmax_bound(16, _softmax_ref(z)))
    # max 5 + split 1 + comparison in Z_2^48 4 (beside e^u's 4) + truncation of e and s 1 +
    # Goldschmidt 1 + 4
    assert rt.contexts[0].channel.stats.rounds == 16


@pytest.mark.parametrize("cmp_bits", [64, 40])
def test_softmax_of_untruncated_logits(cmp_bits):
    """Logits at 2f (a Linear output, not truncated): the max compares in a ring widened by
    f bits and exp's split truncates by f and 2f; same accuracy, 16 rounds (K compares in
    Z_2^32).  With a 40-bit ring, differences up to 240 real units exceed 2^39 raw units at
    2f: only the widening keeps them exact."""
    rng = np.random.default_rng(cmp_bits)
    z = rng.uniform(-120, 120, (12, 10))
    z[:, 0], z[:, 1] = 120.0, -120.0
    rt = make_runtime(cmp_bits=cmp_bits)
    raw = rt.share_ring(np.rint(z * 2.0 ** 32).astype(np.int64))
    p = opened(rt.run_same(lambda c, v: P.softmax_s(c, v, scale=32), raw), 16)
    ref = _softmax_ref(z)
    assert np.all(np.abs(p - ref) <= _softmax_bound(16, ref))
    assert rt.contexts[0].channel.stats.rounds == 16


@pytest.mark.parametrize("f", FRAC_BITS)
@FEW
@given(draws=hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(-50, 50)))
def test_sigmoid_property(f, draws):
    ulp = 2.0 ** -f
    x = _values(f, draws, [0.0, ulp, -ulp, 1.0, -1.0, 2.0 ** (40 - f), -(2.0 ** (40 - f))])
    rt = make_runtime(frac_bits=f)
    y = opened(rt.run_same(P.sigmoid_s, rt.share_float(x)), f)
    ref = 0.5 * (1.0 + np.tanh(x / 2))
    assert np.all(np.abs(y - ref) <= 3 * ulp)
    assert rt.contexts[0].channel.stats.rounds == (10 if f <= 16 else 11)


def test_step_function_kernels_give_form_muls_values():
    """``Steps.share``/``Steps.times`` (one-pass kernels) reconstruct to what the generic
    linear-form algebra gives: the step function of the bits, times a truncation result."""
    from ss_engine.protocols.forms import form_mul
    from ss_engine.protocols.polynomial import trunc_forms_s
    from ss_engine.protocols.steps import threshold_bits_s
    rng = np.random.default_rng(4)
    x = rng.normal(0, 3, 300)
    y = rng.normal(0, 2, 300)
    values = [5, -3, 0, 7, 2 ** 40, -1]
    thresholds = [-2.0, -0.5, 0.0, 0.5, 2.0]

    def body(ctx, xv, yv):
        steps, _ = yield from threshold_bits_s(ctx, xv, [round(t * 2 ** 16) for t in thresholds])
        (yf,) = yield from trunc_forms_s(ctx, [yv << np.int64(4)], 4, "t")
        return (steps.share(ctx, values), steps.times(ctx, values, yf),
                steps.form(values).share(ctx.rank), form_mul(ctx, yf, steps.form(values)))

    rt = make_runtime()
    (a0, b0, c0, d0), (a1, b1, c1, d1) = rt.run_same(body, rt.share_float(x), rt.share_float(y))
    xq = np.round(x * 2 ** 16) / 2 ** 16
    want = np.array(values)[np.searchsorted(thresholds, xq, side="right")]
    assert np.array_equal(a0 + a1, want) and np.array_equal(c0 + c1, want)
    yq = np.round(y * 2 ** 16).astype(np.int64)
    prod = b0 + b1
    assert np.array_equal(prod, d0 + d1)
    assert np.all(np.abs(prod - want * yq) <= np.abs(want))    # y's truncation: +-1 ulp
