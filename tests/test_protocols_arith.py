"""Beaver products (exact mod 2^64), truncation (<= 1 ulp), openings: values, bytes, rounds."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from ss_engine import kernels
from ss_engine import protocols as P
from ss_engine.encoding import decode, encode
from ss_engine.protocols.beaver import mask_and_open, matmul_masked

from .conftest import FRAC_BITS, make_runtime, opened

int64s = st.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max)
EDGE = np.array([0, 1, -1, 2, -2, np.iinfo(np.int64).max, np.iinfo(np.int64).min], np.int64)


def counts(rt):
    s = rt.contexts[0].channel.stats
    return s.rounds, s.bytes_sent


@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 12), st.data())
def test_beaver_matmul_is_exact_mod_2_64(m, k, n, data):
    rt = make_runtime()
    x = data.draw(hnp.arrays(np.int64, (m, k), elements=int64s))
    y = data.draw(hnp.arrays(np.int64, (k, n), elements=int64s))
    x[0, 0] = EDGE[data.draw(st.integers(0, len(EDGE) - 1))]
    z = rt.run_same(lambda c, a, b: P.matmul_ss(c, a, b, truncate=False), rt.share_ring(x), rt.share_ring(y))
    assert np.array_equal(opened(z), kernels.ring_matmul_np(x, y))
    # one opening of both masked operands: 1 round, 8 bytes per element
    assert counts(rt) == (1, 8 * (m * k + k * n))


@given(hnp.arrays(np.int64, hnp.array_shapes(max_dims=3, max_side=8), elements=int64s), st.data())
def test_beaver_mul_is_exact_mod_2_64(x, data):
    rt = make_runtime()
    y = data.draw(hnp.arrays(np.int64, x.shape, elements=int64s))
    z = rt.run_same(lambda c, a, b: P.mul_ss(c, a, b, truncate=False), rt.share_ring(x), rt.share_ring(y))
    assert np.array_equal(opened(z), x * y)
    assert counts(rt) == (1, 16 * x.size)


def test_batched_matmul_and_transposed_products_reuse_masks():
    rt = make_runtime()
    rng = np.random.default_rng(0)
    x = rng.integers(-2 ** 40, 2 ** 40, (3, 4, 5))
    y = rng.integers(-2 ** 40, 2 ** 40, (3, 5, 2))
    z = rt.run_same(lambda c, a, b: P.matmul_ss(c, a, b, truncate=False), rt.share_ring(x), rt.share_ring(y))
    assert np.array_equal(opened(z), x @ y)

    rt = make_runtime()
    a = rng.integers(-2 ** 40, 2 ** 40, (6, 4))
    d = rng.integers(-2 ** 40, 2 ** 40, (6, 3))

    def forward_then_backward(c, xa, xd):
        ao, do = yield from mask_and_open(c, [xa, xd])
        # X^T D and D^T X reuse the same two openings: no further communication
        return matmul_masked(c, ao, do, transpose_left=True), matmul_masked(c, do, ao, transpose_left=True)

    r0, r1 = rt.run_same(forward_then_backward, rt.share_ring(a), rt.share_ring(d))
    assert np.array_equal(r0[0] + r1[0], a.T @ d)
    assert np.array_equal(r0[1] + r1[1], d.T @ a)
    assert counts(rt) == (1, 8 * (a.size + d.size))


@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 0), (2, 2)])
def test_conv2d_matches_torch(stride, padding):
    rt = make_runtime()
    rng = np.random.default_rng(stride * 10 + padding)
    x = rng.normal(size=(2, 3, 9, 8))
    w = rng.normal(size=(4, 3, 3, 3)) * 0.3
    z = rt.run_same(lambda c, a, b: P.conv2d_ss(c, a, b, stride, padding), rt.share_float(x), rt.share_float(w))
    ref = torch.nn.functional.conv2d(torch.tensor(decode(encode(x, 16), 16)), torch.tensor(decode(encode(w, 16), 16)),
                                     stride=stride, padding=padding).numpy()
    assert np.abs(opened(z, 16) - ref).max() <= 2 * 2.0 ** -16
    rounds, nbytes = counts(rt)
    assert rounds == 2 and nbytes == 8 * (x.size + w.size + ref.size)


@pytest.mark.parametrize("f", FRAC_BITS)
def test_mul_and_matmul_within_fixed_point_tolerance(f):
    rt = make_runtime(frac_bits=f)
    rng = np.random.default_rng(f)
    x, y = rng.normal(size=(7, 9)) * 4, rng.normal(size=(9, 5)) * 4
    z = rt.run_same(P.matmul_ss, rt.share_float(x), rt.share_float(y))
    xq, yq = decode(encode(x, f), f), decode(encode(y, f), f)
    # one truncation: at most 1 ulp off floor(x*y), i.e. |err| <= 1 ulp
    assert np.abs(opened(z, f) - xq @ yq).max() <= 2.0 ** -f
    rt = make_runtime(frac_bits=f)
    z = rt.run_same(P.mul_ss, rt.share_float(x[:, :5]), rt.share_float(y[:7].reshape(7, 5)))
    assert np.abs(opened(z, f) - xq[:, :5] * yq[:7].reshape(7, 5)).max() <= 2.0 ** -f


def _check_trunc(rt, x, f):
    y = opened(rt.run_same(lambda c, v: P.trunc_s(c, v, f), rt.share_ring(x)))
    err = y - (x >> f)
    assert np.all((err == 0) | (err == 1)), np.unique(err)
    return err


@pytest.mark.parametrize("f", [1, 12, 16, 24, 40])
def test_truncation_error_at_most_one_ulp_on_a_million_values(f):
    rt = make_runtime()
    rng = np.random.default_rng(f)
    bound = 1 << 62
    x = np.concatenate([
        rng.integers(-bound + 1, bound, 1_000_000),
        [0, 1, -1, bound - 1, -bound + 1, bound - 2, -bound + 2, (1 << f), -(1 << f),
         (1 << f) - 1, -(1 << f) + 1, (1 << f) + 1],
    ]).astype(np.int64)
    err = _check_trunc(rt, x, f)
    # the rounding is stochastic and unbiased: P(err = 1) = frac(x / 2^f)
    frac = (x & ((1 << f) - 1)) / float(1 << f)
    assert abs(err.mean() - frac.mean()) < 0.005
    assert counts(rt) == (1, 8 * x.size)


@given(hnp.arrays(np.int64, hnp.array_shapes(max_dims=2, max_side=20),
                  elements=st.integers(-(1 << 62) + 1, (1 << 62) - 1)), st.integers(1, 30))
def test_truncation_property(x, f):
    _check_trunc(make_runtime(), x, f)


def test_truncation_rejects_bad_shift():
    rt = make_runtime()
    with pytest.raises(Exception, match="shift"):
        rt.run_same(lambda c, v: P.trunc_s(c, v, 0), rt.share_ring(np.zeros(3, np.int64)))


def test_reveal_to_one_party_only():
    rt = make_runtime()
    x = np.arange(6, dtype=np.int64)
    r0, r1 = rt.run_same(lambda c, v: P.reveal_s(c, v, to=1), rt.share_ring(x))
    assert r0 is None and np.array_equal(r1, x)
    s0, s1 = rt.contexts[0].channel.stats, rt.contexts[1].channel.stats
    assert (s0.bytes_sent, s1.bytes_sent, s0.rounds) == (48, 0, 1)


def test_shape_mismatch_is_a_clear_error():
    rt = make_runtime()
    with pytest.raises(Exception, match="shapes"):
        rt.run_same(P.matmul_ss, rt.share_ring(np.zeros((2, 3), np.int64)), rt.share_ring(np.zeros((2, 3), np.int64)))
    rt = make_runtime()
    with pytest.raises(Exception, match="shapes differ"):
        rt.run_same(P.mul_ss, rt.share_ring(np.zeros((2, 3), np.int64)), rt.share_ring(np.zeros(3, np.int64)))


def test_wrong_dtype_cannot_cross_a_channel():
    rt = make_runtime()
    with pytest.raises(Exception, match="dtype"):
        rt.run(lambda c: c.channel.exchange([np.zeros(2, np.float64)]))
