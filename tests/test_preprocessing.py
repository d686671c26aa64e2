"""Dealer material: every kind reconstructs to its defining relation; seed compression."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from ss_engine import kernels
from ss_engine.preprocessing import (AndSpec, BitSpec, CmpSpec, DealerCore, LocalDealer, MaskSpec,
                                     ProductSpec, SeededSource, TruncSpec, spec_from_wire)
from ss_engine.preprocessing.specs import AndTreeSpec
from ss_engine.prg import SEED_BYTES

K0, K1 = bytes(range(SEED_BYTES)), bytes(range(1, SEED_BYTES + 1))


def sources():
    dealer = LocalDealer(DealerCore(K0, K1))
    return SeededSource(0, K0, dealer.link(0)), SeededSource(1, K1, dealer.link(1))


def both(s0, s1, spec):
    return s0.fetch(spec), s1.fetch(spec)


def ring(m0, m1, name):
    return m0[name] + m1[name]


def words(m0, m1, name):
    return m0[name] ^ m1[name]


@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9), st.booleans(), st.booleans())
def test_matmul_triple_is_exact(m, k, n, tl, tr):
    s0, s1 = sources()
    a_shape = (k, m) if tl else (m, k)
    b_shape = (n, k) if tr else (k, n)
    a0, a1 = both(s0, s1, MaskSpec(a_shape))
    b0, b1 = both(s0, s1, MaskSpec(b_shape))
    spec = ProductSpec("matmul", a0.ref("a"), b0.ref("a"), (m, n), tl, tr)
    c0, c1 = both(s0, s1, spec)
    a, b = ring(a0, a1, "a"), ring(b0, b1, "a")
    a = a.T if tl else a
    b = b.T if tr else b
    assert np.array_equal(ring(c0, c1, "c"), kernels.ring_matmul_np(a, b))


def test_elementwise_triple_with_leading_broadcast():
    s0, s1 = sources()
    a0, a1 = both(s0, s1, MaskSpec((4, 3)))
    r0, r1 = both(s0, s1, MaskSpec((4,)))
    c0, c1 = both(s0, s1, ProductSpec("mul", a0.ref("a"), r0.ref("a"), (4, 3)))
    assert np.array_equal(ring(c0, c1, "c"), ring(a0, a1, "a") * ring(r0, r1, "a")[:, None])


def test_truncation_material():
    s0, s1 = sources()
    t0, t1 = both(s0, s1, TruncSpec((1000,), 16))
    r = ring(t0, t1, "r").view(np.uint64)
    assert np.array_equal(ring(t0, t1, "r_msb"), (r >> np.uint64(63)).astype(np.int64))
    assert np.array_equal(ring(t0, t1, "r_hi"), ((r << np.uint64(1)) >> np.uint64(17)).astype(np.int64))


@pytest.mark.parametrize("bits", [8, 33, 64])
def test_comparison_material_bits_match_mask(bits):
    s0, s1 = sources()
    c0, c1 = both(s0, s1, CmpSpec(130, bits))
    r = ring(c0, c1, "r")
    sl = words(c0, c1, "r_bits")
    assert sl.shape == (bits, 3)
    back = kernels.from_bit_slices_np(sl, 130)
    mask = -1 if bits == 64 else (1 << bits) - 1
    assert np.array_equal(back, r & mask)


def subset_and(rows: np.ndarray, members) -> np.ndarray:
    return np.bitwise_and.reduce(rows[list(members)], axis=0)


def product_sets(pairs: np.ndarray, n_base: int) -> list[frozenset]:
    """The base rows each product of an AND DAG multiplies."""
    sets: list[frozenset] = []
    for left, right in pairs:
        lhs = frozenset([int(left)]) if left < n_base else sets[left - n_base]
        sets.append(lhs | {int(right)})
    return sets


@pytest.mark.parametrize("bits,block,fan_in", [(64, 4, 4), (40, 4, 4), (64, 2, 2), (17, 8, 8),
                                                (33, 3, 5)])
def test_comparison_material_products(bits, block, fan_in):
    """r_mono holds the AND of every set of two or more bits of each block of r's low bits,
    each set once; each round's p rows are the ANDs of its mask rows its layout names;
    party 0 gets no dealer bytes."""
    s0, s1 = sources()
    spec = CmpSpec(200, bits, block, fan_in)
    c0, c1 = both(s0, s1, spec)
    circuit = spec.circuit()
    r_bits, mono = words(c0, c1, "r_bits"), words(c0, c1, "r_mono")
    sets = product_sets(circuit.local.pairs, bits)
    want = {frozenset(i0 + i for i in range(min(block, bits - 1 - i0)) if m >> i & 1)
            for i0 in range(0, bits - 1, block) for m in range(1 << min(block, bits - 1 - i0))}
    assert sorted(map(sorted, sets)) == sorted(sorted(w) for w in want if len(w) >= 2)
    for row, members in zip(mono, sets):
        assert np.array_equal(row, subset_and(r_bits, members))
    for i, lv in enumerate(circuit.rounds, 1):
        a, p = words(c0, c1, f"a{i}"), words(c0, c1, f"p{i}")
        assert a.shape[0] == lv.n_vars and np.any(a != c0[f"a{i}"])   # shared, not in the clear
        for row, members in zip(p, product_sets(lv.pairs, lv.n_base)):
            assert len(members) >= 2 and np.array_equal(row, subset_and(a, members))
    assert s0.stats.dealer_bytes == 0
    assert s1.stats.dealer_bytes == sum(f.nbytes for f in spec.corrected_fields())


def test_and_tree_material():
    s0, s1 = sources()
    spec = AndTreeSpec(words=3, inputs=5, fan_in=5)
    t0, t1 = both(s0, s1, spec)
    a, p = words(t0, t1, "a1"), words(t0, t1, "p1")
    sets = product_sets(spec.circuit().rounds[0].pairs, 5)
    assert p.shape == (26, 3) and sorted(map(sorted, sets)) == sorted(
        [v for v in range(5) if m >> v & 1] for m in range(32) if bin(m).count("1") >= 2)
    for row, members in zip(p, sets):
        assert np.array_equal(row, subset_and(a, members))


@pytest.mark.parametrize("bad", [dict(bits=64, block=9, fan_in=4), dict(bits=64, block=4, fan_in=1),
                                 dict(bits=65, block=4, fan_in=4), dict(bits=1, block=4, fan_in=4),
                                 dict(bits=64, block=4, fan_in=13)])
def test_comparison_specs_refuse_circuits_out_of_range(bad):
    """Checked before the circuit is built (its size grows as 2^block, 2^fan_in)."""
    with pytest.raises(ValueError):
        CmpSpec(10, **bad)
    with pytest.raises(ValueError):
        CmpSpec(10, 64, True, 4)
    with pytest.raises(ValueError):
        spec_from_wire({"kind": "cmp", "n": 10, **bad})
    with pytest.raises(ValueError):
        spec_from_wire({"kind": "and_tree", "words": 1, "inputs": 4, "fan_in": bad["fan_in"] + 20})


def test_and_triples_fan_out():
    s0, s1 = sources()
    t0, t1 = both(s0, s1, AndSpec((5, 2), fan_out=3))
    a = words(t0, t1, "a")
    for i in range(3):
        assert np.array_equal(words(t0, t1, f"c{i}"), a & words(t0, t1, f"b{i}"))


def test_random_bits_agree_across_domains():
    s0, s1 = sources()
    b0, b1 = both(s0, s1, BitSpec(200))
    x = kernels.unpack_bits_np(words(b0, b1, "x")[None, :], 200)[0]
    assert np.array_equal(ring(b0, b1, "a"), x)
    assert 60 < x.sum() < 140  # random, not constant


def test_seed_compression_bytes():
    """Party 0 receives nothing; party 1 receives only corrections."""
    s0, s1 = sources()
    x0, _ = both(s0, s1, MaskSpec((128, 784)))
    w0, _ = both(s0, s1, MaskSpec((784, 128)))
    both(s0, s1, ProductSpec("matmul", x0.ref("a"), w0.ref("a"), (128, 128)))
    both(s0, s1, TruncSpec((128, 128), 16))
    assert s0.stats.dealer_bytes == 0
    assert s1.stats.dealer_bytes == 8 * 128 * 128 * 3          # C, r_msb, r_hi
    # without seeds both parties would receive every field
    assert s0.stats.uncompressed_bytes + s1.stats.uncompressed_bytes == \
        2 * 8 * (2 * 128 * 784 + 128 * 128 + 3 * 128 * 128)


def test_dealer_is_stateless_and_reproducible():
    """A fresh DealerCore with the same keys regenerates any item (crash recovery)."""
    s0, s1 = sources()
    a0, _ = both(s0, s1, MaskSpec((3, 3)))
    spec = ProductSpec("mul", a0.ref("a"), a0.ref("a"), (3, 3))
    c0, c1 = both(s0, s1, spec)
    again = DealerCore(K0, K1).corrections(c1.addr, spec)
    assert np.array_equal(again["c"], c1["c"])


@pytest.mark.parametrize("spec", [
    MaskSpec((2, 3)), TruncSpec((4,), 16), CmpSpec(10, 64), CmpSpec(10, 40, 8, 3), AndSpec((3,), 2),
    AndTreeSpec(2, 9, 9), BitSpec(7),
])
def test_spec_wire_roundtrip(spec):
    assert spec_from_wire(spec.to_wire()) == spec


def test_product_spec_wire_roundtrip():
    s0, s1 = sources()
    a0, _ = both(s0, s1, MaskSpec((2, 2)))
    spec = ProductSpec("conv", a0.ref("a"), a0.ref("a"), (2, 2), conv=(1, 1, 1, 0))
    assert spec_from_wire(spec.to_wire()) == spec


@pytest.mark.parametrize("bad", [None, {}, {"kind": "nope"}, {"kind": "mask"},
                                 {"kind": "mask", "shape": [-1]}, {"kind": "mask", "shape": "ab"},
                                 {"kind": "product", "op": "evil", "left": {}, "right": {}}])
def test_malformed_spec_raises_value_error(bad):
    with pytest.raises(ValueError):
        spec_from_wire(bad)


def test_party1_without_dealer_is_refused():
    with pytest.raises(ValueError, match="dealer"):
        SeededSource(1, K1, None)


def test_dealer_parses_comparison_specs_and_refuses_oversized_ones():
    """What the dealer process accepts from the wire (``parse_spec``): the comparison kinds
    round-trip; a circuit out of range or a field above the item cap is a one-line error."""
    from ss_engine.net.dealer_link import MAX_ITEM_ELEMENTS, parse_spec
    from ss_engine.net.wire import WireError
    for spec in (CmpSpec(1000, 64, 4, 4), AndTreeSpec(20, 9, 9)):
        assert parse_spec(spec.to_wire()) == spec
    words = MAX_ITEM_ELEMENTS // 64           # one row of r_bits at the cap: 64 rows exceed it
    for bad in ({"kind": "cmp", "n": 64 * words, "bits": 64, "block": 4, "fan_in": 4},
                {"kind": "and_tree", "words": words, "inputs": 9, "fan_in": 9},
                {"kind": "cmp", "n": 10, "bits": 64, "block": 12, "fan_in": 4},
                {"kind": "and_tree", "words": 1, "inputs": 10**6, "fan_in": 4},
                {"kind": "cmp", "n": 10, "bits": 64}):
        with pytest.raises(WireError, match="bad material spec"):
            parse_spec(bad)
