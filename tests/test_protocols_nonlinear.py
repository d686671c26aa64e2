"""exp / reciprocal / softmax meet their documented accuracy on their documented range."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from ss_engine import protocols as P
from ss_engine.protocols.nonlinear import recip_steps

from .conftest import FRAC_BITS, make_runtime, opened


@pytest.mark.parametrize("f", FRAC_BITS)
def test_exp_on_its_domain(f):
    rt = make_runtime(frac_bits=f)
    n = rt.config.protocol.exp_iterations
    x = np.concatenate([np.linspace(-2.0 ** n, 0, 2001), [0.0, -2.0 ** -f, -1.0, -2.0]])
    y = opened(rt.run_same(P.exp_s, rt.share_float(x)), f)
    # limit approximation error <= 0.55 / 2^n, squarings < 2^(n+1) ulp (module docstring)
    tol = 0.55 / 2 ** n + 2.0 ** (n + 1 - f)
    assert np.abs(y - np.exp(x)).max() <= tol
    assert rt.contexts[0].channel.stats.rounds == 1 + n


@pytest.mark.parametrize("f", FRAC_BITS)
def test_reciprocal_on_softmax_interval(f):
    rt = make_runtime(frac_bits=f)
    lo, hi = 0.5, 10.5
    x = np.concatenate([np.linspace(lo, hi, 500), [lo, hi, 1.0]])
    y = opened(rt.run_same(lambda c, v: P.reciprocal_s(c, v, lo, hi), rt.share_float(x)), f)
    rel = np.abs(y * x - 1)
    assert rel.max() <= 2.0 ** -(f + 1) + 16 * 2.0 ** -f * hi
    _, _, steps = recip_steps(lo, hi, f + 1, rt.config.protocol.recip_iterations)
    assert rt.contexts[0].channel.stats.rounds == 1 + 2 * steps


def test_reciprocal_rejects_bad_interval():
    rt = make_runtime()
    with pytest.raises(Exception, match="0 < lo < hi"):
        rt.run_same(lambda c, v: P.reciprocal_s(c, v, 0.0, 1.0), rt.share_float(np.ones(2)))


@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(2, 12)),
                  elements=st.floats(-30, 30, allow_nan=False)))
def test_softmax_property(z):
    rt = make_runtime()
    p = opened(rt.run_same(P.softmax_s, rt.share_float(z)), 16)
    ref = np.exp(z - z.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    assert np.abs(p - ref).max() <= 4e-3
    assert np.all(np.abs(p.sum(1) - 1) <= 1e-2)
    assert np.array_equal(p.argmax(1), ref.argmax(1)) or np.abs(p - ref).max() <= 4e-3


def test_softmax_rounds_for_ten_classes():
    rt = make_runtime()
    z = np.random.default_rng(3).normal(0, 4, (16, 10))
    p = opened(rt.run_same(P.softmax_s, rt.share_float(z)), 16)
    ref = np.exp(z - z.max(1, keepdims=True))
    assert np.abs(p - ref / ref.sum(1, keepdims=True)).max() <= 4e-3
    # max 5 + exp 1 + 8 + reciprocal 1 + 2 * 4 + final truncation 1 (module docstring)
    assert rt.contexts[0].channel.stats.rounds == 24


@pytest.mark.parametrize("cmp_bits", [64, 40])
def test_softmax_of_untruncated_logits(cmp_bits):
    """Logits at 2f (a Linear output, not truncated): the max compares in a ring widened by
    f bits and exp's first step truncates by n + f; same accuracy, same 24 rounds.  With a
    40-bit ring, differences up to 240 real units exceed 2^39 raw units at 2f: only the
    widening keeps them exact."""
    rng = np.random.default_rng(cmp_bits)
    z = rng.uniform(-120, 120, (12, 10))
    z[:, 0], z[:, 1] = 120.0, -120.0
    rt = make_runtime(cmp_bits=cmp_bits)
    raw = rt.share_ring(np.rint(z * 2.0 ** 32).astype(np.int64))
    p = opened(rt.run_same(lambda c, v: P.softmax_s(c, v, scale=32), raw), 16)
    ref = np.exp(z - z.max(1, keepdims=True))
    assert np.abs(p - ref / ref.sum(1, keepdims=True)).max() <= 4e-3
    assert rt.contexts[0].channel.stats.rounds == 24
