"""Comparison protocols: exact on every edge value, exact byte/round counts, argmax ties."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from ss_engine import protocols as P
from ss_engine.config import EngineConfig, ProtocolConfig
from ss_engine.simulate import LocalRuntime

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


def circuit_runtime(m: int, block: int, fan_in: int) -> LocalRuntime:
    return LocalRuntime(EngineConfig(protocol=ProtocolConfig(cmp_bits=m, cmp_block_bits=block,
                                                             cmp_fan_in=fan_in)),
                        seed=b"circuits", timeout=60.0)


#: (block bits, fan-in): the default, the classic pair tree, one-round levels, uneven groups
CIRCUITS = [(4, 4), (2, 2), (8, 8), (3, 5), (1, 3), (5, 2), (7, 8)]


@pytest.mark.parametrize("m", [64, 40, 32, 17, 8])
@pytest.mark.parametrize("block,fan_in", CIRCUITS)
def test_drelu_exact_on_edge_values(m, block, fan_in):
    rt = circuit_runtime(m, block, fan_in)
    x = edge_values(m)
    b = opened(rt.run_same(P.drelu_s, rt.share_ring(x)))
    assert np.array_equal(b, (x >= 0).astype(np.int64))


@settings(max_examples=40)
@given(st.sampled_from([64, 63, 40, 33, 17, 9]), st.sampled_from(CIRCUITS), st.data())
def test_drelu_exact_for_every_value_in_range_under_every_circuit(m, circuit, data):
    """Random values over the whole range |x| < 2^(m-1) (the full ring at m = 64), spread
    over all magnitudes, for every block size and fan-in: the comparator is exact."""
    n = data.draw(st.integers(1, 150))
    mags = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, m - 1)))
    raw = data.draw(hnp.arrays(np.int64, n, elements=st.integers(I64.min, I64.max)))
    spread = np.where(raw < 0, -1, 1) * ((raw % (1 << 62)) >> (62 - np.minimum(mags, 62)))
    if m < 64:
        x = np.clip(spread, -(1 << (m - 1)), (1 << (m - 1)) - 1)
    else:   # half the values uniform over the whole ring
        x = np.where(raw & 1, raw, spread)
    rt = circuit_runtime(m, *circuit)
    b = opened(rt.run_same(P.drelu_s, rt.share_ring(x)))
    assert np.array_equal(b, (x >= 0).astype(np.int64))


@given(hnp.arrays(np.int64, hnp.array_shapes(max_dims=3, max_side=9),
                  elements=st.integers(I64.min, I64.max)))
def test_relu_exact_for_every_ring_element(x):
    rt = make_runtime()
    (y0, b0), (y1, b1) = rt.run_same(P.relu_s, rt.share_ring(x))
    assert np.array_equal(b0 + b1, (x >= 0).astype(np.int64))
    assert np.array_equal(y0 + y1, np.where(x >= 0, x, 0))


def test_relu_rounds_bytes_and_dealer_bytes_for_64_bit_values():
    """The cost card of the default circuit (blocks of 4 bits, fan-in 4) at m = 64."""
    n = 1000
    rt = make_runtime()
    x = np.random.default_rng(1).integers(I64.min, I64.max, n, dtype=np.int64)
    rt.run_same(P.relu_s, rt.share_ring(x))
    s = rt.contexts[0].channel.stats
    words = -(-n // 64)
    # round 1: c and the masked x (8 + 8 bytes per element); the first level over 63 bits
    # (16 blocks) is local; round 2 combines 4 groups of 4 blocks, opening LT_0..LT_2 and
    # EQ_0..EQ_3 of each (7 words) but no EQ_0 in the lowest group, whose EQ no parent uses
    # (6); round 3 opens LT_0..LT_2 and EQ_1..EQ_3 (6); the B2A opens 1 word
    assert s.rounds == 4
    assert s.by_label == {"cmp_open": (1, 16 * n), "cmp_tree": (2, 8 * words * (27 + 6)),
                          "b2a_open": (1, 8 * words)}
    # party 1's dealer bytes: r's 64 bits, per 4-bit block the 11 products of two or more
    # of its bits (4 for the 3-bit top block), per round-2 group 22 mask products (15 in the
    # lowest), 15 in round 3, all bit-sliced; the B2A bit rho and the select's A*rho as
    # ring elements
    tree_rows = 64 + (15 * 11 + 4) + (3 * 22 + 15) + 15
    assert rt.contexts[1].source.stats.dealer_bytes == 8 * words * tree_rows + 16 * n
    assert rt.contexts[0].source.stats.dealer_bytes == 0


@pytest.mark.parametrize("block,fan_in,rounds,tree_words", [
    (2, 2, 7, 47 + 23 + 11 + 5 + 2),   # the pair tree (92 words before: no EQ nobody uses now)
    (3, 3, 5, 34 + 10 + 4),
    (8, 8, 3, 14),                     # 8 blocks, one fan-in-8 level
])
def test_drelu_rounds_follow_the_circuit_parameters(block, fan_in, rounds, tree_words):
    n = 200
    rt = circuit_runtime(64, block, fan_in)
    x = np.random.default_rng(block).integers(I64.min, I64.max, n, dtype=np.int64)
    b = opened(rt.run_same(P.drelu_s, rt.share_ring(x)))
    assert np.array_equal(b, (x >= 0).astype(np.int64))
    s = rt.contexts[0].channel.stats
    assert s.rounds == rounds
    assert s.by_label["cmp_tree"] == (rounds - 2, 8 * 4 * tree_words)


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
    # all pairs of 4: 1 opening + 2 tree + one fan-in-3 AND round + 1 B2A
    assert rt.contexts[0].channel.stats.rounds == 5


def test_argmax_rows_for_prediction():
    """Argmax of 10: 45 comparisons per row, each candidate's 9 wins ANDed by one fan-in-9
    gate (its cost card: rounds, bytes per round, the gate's dealer rows)."""
    rows = 50
    z = np.random.default_rng(3).normal(size=(rows, 10))
    rt = make_runtime()
    hot = opened(rt.run_same(P.argmax_s, rt.share_float(z)))
    assert np.array_equal(hot.argmax(1), z.argmax(1))
    assert np.array_equal(hot.sum(1), np.ones(rows))
    s = rt.contexts[0].channel.stats
    cmp_words, row_words, hot_words = -(-45 * rows // 64), -(-rows // 64), -(-10 * rows // 64)
    assert s.rounds == 5
    assert s.by_label == {"cmp_open": (1, 8 * (45 * rows + 10 * rows)),
                          "cmp_tree": (2, 8 * cmp_words * (27 + 6)),
                          "max_and": (1, 8 * 9 * 10 * row_words), "b2a_open": (1, 8 * hot_words)}
    tree_rows = 64 + (15 * 11 + 4) + (3 * 22 + 15) + 15
    and_rows = 2 ** 9 - 9 - 1
    assert rt.contexts[1].source.stats.dealer_bytes == (8 * cmp_words * tree_rows
                                                         + 8 * 10 * row_words * and_rows
                                                         + 16 * 10 * rows)


@pytest.mark.parametrize("k,and_fan_in,and_rounds", [(10, 9, 1), (10, 3, 2), (16, 9, 2), (10, 2, 4)])
def test_max_and_tree_rounds(k, and_fan_in, and_rounds):
    x = np.random.default_rng(k).integers(-50, 50, (20, k)).astype(np.int64)
    rt = LocalRuntime(EngineConfig(protocol=ProtocolConfig(and_fan_in=and_fan_in)), seed=b"and")
    mx, hot = rt.run_same(lambda c, v: P.max_s(c, v, axis=1, return_onehot=True), rt.share_ring(x))
    mx, hot = mx[0] + hot[0], mx[1] + hot[1]
    assert np.array_equal(mx, x.max(axis=1))
    assert np.array_equal(hot, np.eye(k, dtype=np.int64)[x.argmax(axis=1)])
    s = rt.contexts[0].channel.stats
    assert s.rounds == 4 + and_rounds and s.by_label["max_and"][0] == and_rounds


@settings(max_examples=30)
@given(st.integers(1, 16), st.integers(2, 9), st.integers(1, 130), st.data())
def test_and_tree_is_the_and_of_its_rows(t, fan_in, n, data):
    """and_tree_ss: the AND over axis 0 of t XOR-shared rows, in ceil(log_g t) rounds."""
    from ss_engine.sharing import share_xor
    words = -(-n // 64)
    ones = data.draw(st.sampled_from([1, 4, 16]))   # OR of this many random words: P(bit) -> 1
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    rows = np.bitwise_or.reduce(rng.integers(0, 2**64 - 1, (ones, t, 3, words), dtype=np.uint64,
                                             endpoint=True), axis=0)
    rt = make_runtime()
    s0, s1 = share_xor(rows, rt._input_prg)
    r0, r1 = rt.run(lambda c, v: P.and_tree_ss(c, v, fan_in=fan_in), (s0,), (s1,))
    assert np.array_equal(r0 ^ r1, np.bitwise_and.reduce(rows, axis=0))
    rounds = 0
    while fan_in ** rounds < t:
        rounds += 1
    assert rt.contexts[0].channel.stats.rounds == rounds


@given(st.integers(1, 12), st.integers(2, 16), st.data())
def test_tournament_max_equals_all_pairs(rows, k, data):
    """The tournament (large inputs) gives the same max and first-maximal one-hot as
    all-pairs, ties included, with ceil(log2 k) levels of 4 rounds."""
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
        assert rounds == 4 * int(np.ceil(np.log2(k)))


def test_large_pools_take_the_tournament():
    """A 2x2 pool over >= TREE_MIN_ELEMENTS values: 2 levels of 4 rounds, 3 comparisons per
    window instead of 6, and exact on values near the comparison bound."""
    from ss_engine.protocols.compare import TREE_MIN_ELEMENTS
    rng = np.random.default_rng(5)
    x = rng.integers(-(1 << 61), 1 << 61, (TREE_MIN_ELEMENTS // 4, 4)).astype(np.int64)
    x[:4] = [[0, 0, 0, 0], [-1, 0, 1, 0], [(1 << 61), -(1 << 61), 0, 1], [5, 5, 7, 7]]
    rt = make_runtime()
    r0, r1 = rt.run_same(lambda c, v: P.max_s(c, v, axis=1, return_onehot=True), rt.share_ring(x))
    assert np.array_equal(r0[0] + r1[0], x.max(axis=1))
    assert np.array_equal(r0[1] + r1[1], np.eye(4, dtype=np.int64)[x.argmax(axis=1)])
    assert rt.contexts[0].channel.stats.rounds == 8


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


def test_a_circuit_level_refuses_arrays_shorter_than_its_tables():
    """The level kernel indexes by its tables without bounds checks: ``eval_level`` checks
    every array against the rows the level needs first."""
    from types import SimpleNamespace
    from ss_engine.preprocessing.circuits import comparator
    from ss_engine.protocols.binary import eval_level
    lv = comparator(64, 4, 4).rounds[0]
    rows = lambda k: np.zeros((k, 3), dtype=np.uint64)  # noqa: E731
    ctx = SimpleNamespace(rank=0)
    ok = [rows(n) for n in lv.min_rows]
    assert eval_level(ctx, lv, *ok).shape == (lv.n_out, 3)
    for i in range(4):
        short = list(ok)
        short[i] = rows(lv.min_rows[i] - 1)
        with pytest.raises(ValueError, match="needs at least"):
            eval_level(ctx, lv, *short)
