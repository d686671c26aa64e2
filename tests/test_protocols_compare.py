"""Comparison protocols: exact on every edge value, exact byte/round counts, argmax ties."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from ss_engine import protocols as P

from .conftest import make_runtime, opened

I64 = np.iinfo(np.int64)


def edge_values(m: int) -> np.ndarray:
    """0, +-1 ulp, the documented bound and its neighbours, powers of two, for Z_2^m."""
    hi = (1 << (m - 1)) - 1 if m < 64 else I64.max
    lo = -(1 << (m - 1)) if m < 64 else I64.min
    pows = [1 << k for k in range(0, m - 1)]
    vals = [0, 1, -1, 2, -2, hi, lo, hi - 1, lo + 1] + pows + [-p for p in pows] + \
           [p - 1 for p in pows] + [-p + 1 for p in pows]
    return np.array(vals, dtype=np.int64)


@pytest.mark.parametrize("m", [64, 40, 32, 17])
def test_drelu_exact_on_edge_values(m):
    rt = make_runtime(cmp_bits=m)
    x = edge_values(m)
    b = opened(rt.run_same(P.drelu_s, rt.share_ring(x)))
    assert np.array_equal(b, (x >= 0).astype(np.int64))


@given(hnp.arrays(np.int64, hnp.array_shapes(max_dims=3, max_side=9),
                  elements=st.integers(I64.min, I64.max)))
def test_relu_exact_for_every_ring_element(x):
    rt = make_runtime()
    (y0, b0), (y1, b1) = rt.run_same(P.relu_s, rt.share_ring(x))
    assert np.array_equal(b0 + b1, (x >= 0).astype(np.int64))
    assert np.array_equal(y0 + y1, np.where(x >= 0, x, 0))


def test_drelu_rounds_and_bytes_for_64_bit_values():
    n = 1000
    rt = make_runtime()
    x = np.random.default_rng(1).integers(I64.min, I64.max, n, dtype=np.int64)
    rt.run_same(P.relu_s, rt.share_ring(x))
    s = rt.contexts[0].channel.stats
    words = -(-n // 64)
    # round 1: c and the masked x (8 + 8 bytes per element); the first level over 63 bits is
    # local (dealer pairs), then 5 levels over 32 rows, 3 words per AND pair (left opened
    # once for two ANDs), 2 at the last level; B2A: 1 word
    tree_words = 3 * (16 + 8 + 4 + 2) + 2
    assert s.rounds == 7
    assert s.bytes_sent == 16 * n + 8 * words * (tree_words + 1)


@given(st.lists(st.integers(-(1 << 61), 1 << 61), min_size=1, max_size=40), st.data())
def test_lt_exact(xs, data):
    ys = data.draw(st.lists(st.integers(-(1 << 61), 1 << 61), min_size=len(xs), max_size=len(xs)))
    x, y = np.array(xs, np.int64), np.array(ys, np.int64)
    rt = make_runtime()
    b = opened(rt.run_same(P.lt_ss, rt.share_ring(x), rt.share_ring(y)))
    assert np.array_equal(b, (x < y).astype(np.int64))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 10, 16, 17, 40])
def test_max_and_argmax_with_ties(k):
    rng = np.random.default_rng(k)
    x = rng.integers(-5, 5, (30, k)).astype(np.int64) << 16  # many ties
    rt = make_runtime()
    mx, hot = rt.run_same(lambda c, v: P.max_s(c, v, axis=1, return_onehot=True), rt.share_ring(x))
    mx, hot = mx[0] + hot[0], mx[1] + hot[1]
    assert np.array_equal(mx, x.max(axis=1))
    # exactly one winner, the first maximal index (torch.argmax's choice)
    assert np.array_equal(hot, np.eye(k, dtype=np.int64)[x.argmax(axis=1)])


def test_max_along_other_axis_and_rounds():
    x = np.random.default_rng(0).integers(-1000, 1000, (10, 4, 3)).astype(np.int64)
    rt = make_runtime()
    mx = opened(rt.run_same(lambda c, v: P.max_s(c, v, axis=1), rt.share_ring(x)))
    assert np.array_equal(mx, x.max(axis=1))
    # all pairs of 4: 1 opening + 5 tree + ceil(log2 3) = 2 AND rounds + 1 B2A
    assert rt.contexts[0].channel.stats.rounds == 9


def test_argmax_rows_for_prediction():
    z = np.random.default_rng(3).normal(size=(50, 10))
    rt = make_runtime()
    hot = opened(rt.run_same(P.argmax_s, rt.share_float(z)))
    assert np.array_equal(hot.argmax(1), z.argmax(1))
    assert np.array_equal(hot.sum(1), np.ones(50))
    assert rt.contexts[0].channel.stats.rounds == 11


@given(st.integers(1, 12), st.integers(2, 16), st.data())
def test_tournament_max_equals_all_pairs(rows, k, data):
    """The tournament (large inputs) gives the same max and first-maximal one-hot as
    all-pairs, ties included, with ceil(log2 k) levels of 7 rounds."""
    from ss_engine.protocols import compare
    x = data.draw(hnp.arrays(np.int64, (rows, k), elements=st.integers(-4, 4))) << 16
    old = compare.TREE_MIN_ELEMENTS
    compare.TREE_MIN_ELEMENTS = 0
    try:
        rt = make_runtime()
        r0, r1 = rt.run_same(lambda c, v: P.max_s(c, v, axis=1, return_onehot=True), rt.share_ring(x))
        rounds = rt.contexts[0].channel.stats.rounds
    finally:
        compare.TREE_MIN_ELEMENTS = old
    assert np.array_equal(r0[0] + r1[0], x.max(axis=1))
    assert np.array_equal(r0[1] + r1[1], np.eye(k, dtype=np.int64)[x.argmax(axis=1)])
    if k > 2:
        assert rounds == 7 * int(np.ceil(np.log2(k)))


def test_large_pools_take_the_tournament():
    """A 2x2 pool over >= TREE_MIN_ELEMENTS values: 2 levels of 7 rounds, 3 comparisons per
    window instead of 6, and exact on values near the comparison bound."""
    from ss_engine.protocols.compare import TREE_MIN_ELEMENTS
    rng = np.random.default_rng(5)
    x = rng.integers(-(1 << 61), 1 << 61, (TREE_MIN_ELEMENTS // 4, 4)).astype(np.int64)
    x[:4] = [[0, 0, 0, 0], [-1, 0, 1, 0], [(1 << 61), -(1 << 61), 0, 1], [5, 5, 7, 7]]
    rt = make_runtime()
    r0, r1 = rt.run_same(lambda c, v: P.max_s(c, v, axis=1, return_onehot=True), rt.share_ring(x))
    assert np.array_equal(r0[0] + r1[0], x.max(axis=1))
    assert np.array_equal(r0[1] + r1[1], np.eye(4, dtype=np.int64)[x.argmax(axis=1)])
    assert rt.contexts[0].channel.stats.rounds == 14


@pytest.mark.parametrize("bits", [40, 64])
def test_max_in_a_narrower_ring_is_exact_within_its_bound(bits):
    """max_s(bits=m) (max-pooling's ring) is exact while every difference is below
    2^(m-1): values spread over [-2^(m-2), 2^(m-2)) with ties, both algorithms."""
    from ss_engine.protocols import compare
    rng = np.random.default_rng(bits)
    x = rng.integers(-(1 << (bits - 2)), 1 << (bits - 2), (700, 4)).astype(np.int64)
    x[:3] = [[(1 << (bits - 2)) - 1, -(1 << (bits - 2)), 0, 0], [3, 3, 3, 3], [-1, 0, -1, 0]]
    for tree_from in (0, 1 << 60):
        old = compare.TREE_MIN_ELEMENTS
        compare.TREE_MIN_ELEMENTS = tree_from
        try:
            rt = make_runtime()
            r0, r1 = rt.run_same(lambda c, v: P.max_s(c, v, axis=1, return_onehot=True, bits=bits),
                                 rt.share_ring(x))
        finally:
            compare.TREE_MIN_ELEMENTS = old
        assert np.array_equal(r0[0] + r1[0], x.max(axis=1))
        assert np.array_equal(r0[1] + r1[1], np.eye(4, dtype=np.int64)[x.argmax(axis=1)])
