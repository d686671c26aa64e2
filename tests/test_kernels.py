"""Kernel layer: every Numba kernel against its numpy twin, bit for bit, plus properties
the twins cannot vouch for (torch agreement, adjointness, bit layout, thread safety)."""
from __future__ import annotations

import ast
import inspect
import os
import pathlib
import threading

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ss_engine import kernels as K
from ss_engine.kernels import _runtime, bits as kbits, conv as kconv, forms as kforms, gf2 as kgf2
from ss_engine.kernels import matmul as kmatmul, select as kselect, steps as ksteps, trunc as ktrunc
from ss_engine.preprocessing import circuits

I64_MIN, I64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max
SPECIAL = np.array([0, 1, -1, I64_MIN, I64_MAX, I64_MIN + 1, I64_MAX - 1, 1 << 32, -(1 << 32),
                    (1 << 63) - (1 << 31)], dtype=np.int64)
HYP = settings(deadline=None, max_examples=40,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def ring_array(data, shape, label="x") -> np.ndarray:
    """int64 array: full-range random, special values only, or a mix (drawn by hypothesis)."""
    mode = data.draw(st.sampled_from(["random", "special", "mixed", "constant"]), label=f"{label}-mode")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label=f"{label}-seed"))
    rand = rng.integers(I64_MIN, I64_MAX, size=shape, dtype=np.int64, endpoint=True)
    special = SPECIAL[rng.integers(0, SPECIAL.size, size=shape)]
    if mode == "random":
        return rand
    if mode == "special":
        return special
    if mode == "constant":
        return np.full(shape, data.draw(st.sampled_from(list(SPECIAL)), label=f"{label}-c"),
                       dtype=np.int64)
    return np.where(rng.random(shape) < 0.5, rand, special)


def ring_dot(a: np.ndarray, b: np.ndarray) -> np.int64:
    """<a, b> mod 2^64 (numpy int64 array arithmetic wraps)."""
    return np.sum(a.ravel() * b.ravel(), dtype=np.int64)


# ------------------------------------------------------------------------------- matmul

dims = st.integers(1, 70)


@HYP
@given(data=st.data(), m=dims, k=st.integers(1, 130), n=dims)
def test_ring_matmul_matches_numpy(data, m, k, n):
    a, b = ring_array(data, (m, k), "a"), ring_array(data, (k, n), "b")
    got = K.ring_matmul(a, b)
    assert got.dtype == np.int64 and got.shape == (m, n)
    np.testing.assert_array_equal(got, K.ring_matmul_np(a, b))


@pytest.mark.parametrize("driver", [kmatmul._matmul_bt_par, kmatmul._matmul_bt_ser])
@pytest.mark.parametrize("m,k,n,batch", [(1, 1, 1, 1), (5, 3, 7, 2), (4, 4, 4, 1), (9, 131, 6, 3),
                                         (33, 17, 1, 1), (1, 200, 9, 2)])
def test_matmul_drivers_both_paths(driver, m, k, n, batch):
    """Both the parallel kernel and its serial twin, whatever the size threshold picks."""
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a = rng.integers(I64_MIN, I64_MAX, (batch, m, k), dtype=np.int64, endpoint=True)
    b = rng.integers(I64_MIN, I64_MAX, (batch, k, n), dtype=np.int64, endpoint=True)
    c = np.empty((batch, m, n), dtype=np.int64)
    driver(a, np.ascontiguousarray(np.swapaxes(b, 1, 2)), c, np.int64(0))
    np.testing.assert_array_equal(c, a @ b)
    driver(a, np.ascontiguousarray(np.swapaxes(b, 1, 2)), c, np.int64(1))   # c += a @ b
    np.testing.assert_array_equal(c, 2 * (a @ b))


@given(data=st.data(), m=dims, k=st.integers(1, 130), n=dims, accumulate=st.booleans())
def test_ring_matmul_bt_matches_numpy(data, m, k, n, accumulate):
    """The kernel's own layout (right operand transposed), into an output it may add to."""
    a, bt = ring_array(data, (m, k), "a"), ring_array(data, (n, k), "bt")
    base = ring_array(data, (m, n), "out")
    got, want = base.copy(), base.copy()
    K.ring_matmul_bt(a, bt, got, accumulate)
    K.ring_matmul_bt_np(a, bt, want, accumulate)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(K.ring_matmul_bt(a, bt), a @ bt.T)
    with pytest.raises(ValueError):
        K.ring_matmul_bt(a, np.asfortranarray(bt) if n > 1 and k > 1 else bt[:, :0])


def test_ring_matmul_wraps_mod_2_64():
    a = np.array([[I64_MAX, 2]], dtype=np.int64)
    b = np.array([[2], [I64_MAX]], dtype=np.int64)
    # 2*(2^63-1) + 2*(2^63-1) = 2^65 - 4 = -4 mod 2^64
    assert K.ring_matmul(a, b)[0, 0] == -4
    assert K.ring_matmul(np.array([[I64_MIN]]), np.array([[-1]]))[0, 0] == I64_MIN


@HYP
@given(data=st.data(), batch=st.integers(1, 4), m=st.integers(1, 9), k=st.integers(1, 40),
       n=st.integers(1, 9), shared=st.sampled_from(["none", "left", "right"]))
def test_ring_matmul_batched_matches_numpy(data, batch, m, k, n, shared):
    a = ring_array(data, (m, k) if shared == "left" else (batch, m, k), "a")
    b = ring_array(data, (k, n) if shared == "right" else (batch, k, n), "b")
    got = K.ring_matmul_batched(a, b)
    assert got.shape == (batch, m, n)
    np.testing.assert_array_equal(got, K.ring_matmul_batched_np(a, b))


@HYP
@given(data=st.data(), shapes=st.sampled_from([
    ((2, 3, 4, 5), (5, 6)), ((4, 5), (2, 3, 5, 6)), ((5,), (2, 5, 6)), ((2, 3, 4, 5), (5,)),
    ((5,), (5,)), ((1, 4, 5), (3, 5, 2)), ((2, 1, 4, 5), (3, 5, 2)), ((3, 0, 5), (5, 2)),
    ((4, 0), (0, 3))]), transpose=st.booleans())
def test_ring_matmul_any_matches_numpy(data, shapes, transpose):
    sa, sb = shapes
    a = ring_array(data, sa, "a")
    b = ring_array(data, sb, "b")
    if transpose and b.ndim >= 2:   # non-contiguous right operand, as backprop passes it
        b = np.ascontiguousarray(np.swapaxes(b, -1, -2)).swapaxes(-1, -2)
    got = K.ring_matmul_any(a, b)
    want = K.ring_matmul_any_np(a, b)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_ring_matmul_rejects_bad_input():
    a = np.ones((2, 3), dtype=np.int64)
    with pytest.raises(TypeError):
        K.ring_matmul(a.astype(np.float64), a.T)
    with pytest.raises(TypeError):
        K.ring_matmul(a, a.T.astype(np.int32))
    with pytest.raises(ValueError):
        K.ring_matmul(a, a)
    with pytest.raises(ValueError):
        K.ring_matmul_batched(np.ones((2, 2, 3), np.int64), np.ones((3, 3, 2), np.int64))


# ------------------------------------------------------------------------------- im2col


@st.composite
def conv_case(draw):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    kh, kw = draw(st.integers(1, h + 2 * ph)), draw(st.integers(1, w + 2 * pw))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    square = draw(st.booleans())
    if square:  # also exercise the int forms of stride/padding
        sw, pw = sh, ph
        kw = min(kw, w + 2 * pw)
        stride, padding = sh, ph
    else:
        stride, padding = (sh, sw), (ph, pw)
    return (n, c, h, w), kh, kw, stride, padding


@HYP
@given(data=st.data(), case=conv_case())
def test_im2col_col2im_match_numpy(data, case):
    shape, kh, kw, stride, padding = case
    x = ring_array(data, shape, "x")
    cols = K.im2col(x, kh, kw, stride, padding)
    np.testing.assert_array_equal(cols, K.im2col_np(x, kh, kw, stride, padding))
    cols_t = K.im2col_t(x, kh, kw, stride, padding)
    assert cols_t.flags.c_contiguous
    np.testing.assert_array_equal(cols_t, K.im2col_t_np(x, kh, kw, stride, padding))
    np.testing.assert_array_equal(cols_t, cols.T)
    y = ring_array(data, cols.shape, "y")
    back = K.col2im(y, shape, kh, kw, stride, padding)
    assert back.dtype == np.int64 and back.shape == shape
    np.testing.assert_array_equal(back, K.col2im_np(y, shape, kh, kw, stride, padding))
    # col2im is the adjoint of im2col in the ring: <im2col(x), y> == <x, col2im(y)>
    assert ring_dot(cols, y) == ring_dot(x, back)


@HYP
@given(data=st.data(), case=conv_case(), out_ch=st.integers(1, 4))
def test_conv_via_im2col_matches_torch(data, case, out_ch):
    import torch   # the test extra installs it: a missing torch fails here, it does not skip
    shape, kh, kw, stride, padding = case
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.integers(-8, 9, shape).astype(np.float64)           # integer-valued: exact sums
    wgt = rng.integers(-8, 9, (out_ch, shape[1], kh, kw)).astype(np.float64)
    cols = K.im2col(x, kh, kw, stride, padding)
    assert cols.dtype == np.float64
    oh, ow = K.conv_output_hw(shape[2], shape[3], kh, kw, stride, padding)
    ours = (cols @ wgt.reshape(out_ch, -1).T).reshape(shape[0], oh, ow, out_ch).transpose(0, 3, 1, 2)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(wgt),
                                     stride=stride, padding=padding).numpy()
    np.testing.assert_array_equal(ours, ref)
    # The same convolution over the ring (int64 im2col + ring matmul) agrees too.
    ring = K.ring_matmul(K.im2col(x.astype(np.int64), kh, kw, stride, padding),
                         wgt.astype(np.int64).reshape(out_ch, -1).T)
    np.testing.assert_array_equal(ring.reshape(shape[0], oh, ow, out_ch).transpose(0, 3, 1, 2),
                                  ref.astype(np.int64))


@pytest.mark.parametrize("shape,kh,kw,stride,padding", [
    ((64, 1, 28, 28), 5, 5, 1, 0), ((64, 16, 12, 12), 5, 5, 1, 0), ((4, 3, 11, 10), 3, 3, 2, 1)])
def test_im2col_col2im_lenet_shapes_both_paths(shape, kh, kw, stride, padding):
    rng = np.random.default_rng(7)
    x = rng.integers(I64_MIN, I64_MAX, shape, dtype=np.int64, endpoint=True)
    oh, ow = K.conv_output_hw(shape[2], shape[3], kh, kw, stride, padding)
    sh, sw = (stride, stride)
    ph, pw = (padding, padding)
    want = K.im2col_np(x, kh, kw, stride, padding)
    for driver in (kconv._im2col_par, kconv._im2col_ser):
        out = np.empty_like(want)
        driver(x, out, kh, kw, sh, sw, ph, pw, oh, ow)
        np.testing.assert_array_equal(out, want)
    for driver in (kconv._im2col_t_par, kconv._im2col_t_ser):
        out = np.empty(want.shape[::-1], dtype=np.int64)
        driver(x, out, kh, kw, sh, sw, ph, pw, oh, ow)
        np.testing.assert_array_equal(out, want.T)
    y = rng.integers(I64_MIN, I64_MAX, want.shape, dtype=np.int64, endpoint=True)
    want_back = K.col2im_np(y, shape, kh, kw, stride, padding)
    for driver in (kconv._col2im_par, kconv._col2im_ser):
        back = np.zeros(shape, dtype=np.int64)
        driver(y, back, kh, kw, sh, sw, ph, pw, oh, ow)
        np.testing.assert_array_equal(back, want_back)
    np.testing.assert_array_equal(K.im2col(x, kh, kw, stride, padding), want)


def test_im2col_rejects_bad_input():
    with pytest.raises(ValueError):
        K.im2col(np.zeros((1, 1, 3, 3), np.int64), 5, 5)          # empty output
    with pytest.raises(TypeError):
        K.im2col(np.zeros((1, 1, 3, 3), np.int32), 2, 2)
    with pytest.raises(ValueError):
        K.col2im(np.zeros((3, 4), np.int64), (1, 1, 3, 3), 2, 2)  # wrong cols shape


# ------------------------------------------------------------------------------- bits


@HYP
@given(data=st.data(), n=st.integers(0, 300), w=st.integers(1, 64))
def test_bit_slices_match_numpy_and_layout(data, n, w):
    v = ring_array(data, (n,), "v")
    s = K.bit_slices(v, w)
    assert s.dtype == np.uint64 and s.shape == (w, (n + 63) // 64)
    np.testing.assert_array_equal(s, K.bit_slices_np(v, w))
    # Layout, checked directly: bit t of word j in row i is bit i of v[64 j + t].
    if n:
        e = data.draw(st.integers(0, n - 1))
        i = data.draw(st.integers(0, w - 1))
        assert (int(s[i, e // 64]) >> (e % 64)) & 1 == (int(v[e]) >> i) & 1
        if n % 64:  # padding bits of the last word are zero
            assert int(s[:, -1].max()) >> (n % 64) == 0
    back = K.from_bit_slices(s, n)
    mask = np.int64(-1) if w == 64 else np.int64((1 << w) - 1)
    np.testing.assert_array_equal(back, v & mask)
    np.testing.assert_array_equal(back, K.from_bit_slices_np(s, n))


@HYP
@given(data=st.data(), lead=st.sampled_from([(), (1,), (3,), (2, 2)]), n=st.integers(1, 200),
       nonbinary=st.booleans())
def test_pack_unpack_match_numpy(data, lead, n, nonbinary):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    hi = 256 if nonbinary else 2
    bits = rng.integers(0, hi, lead + (n,)).astype(np.uint8)
    words = K.pack_bits(bits)
    assert words.dtype == np.uint64 and words.shape == lead + ((n + 63) // 64,)
    np.testing.assert_array_equal(words, K.pack_bits_np(bits))
    np.testing.assert_array_equal(K.pack_bits(bits.astype(np.int64)), words)
    unpacked = K.unpack_bits(words, n)
    assert unpacked.dtype == np.uint8
    np.testing.assert_array_equal(unpacked, (bits != 0).astype(np.uint8))
    np.testing.assert_array_equal(unpacked, K.unpack_bits_np(words, n))
    np.testing.assert_array_equal(K.unpack_bits(words, n, dtype=np.int64), unpacked)


def test_bits_large_n_both_paths():
    n = 100_003
    rng = np.random.default_rng(3)
    v = rng.integers(I64_MIN, I64_MAX, n, dtype=np.int64, endpoint=True)
    want = K.bit_slices_np(v, 64)
    for driver in (kbits._bit_slices_par, kbits._bit_slices_ser):
        out = np.empty(want.shape, dtype=np.uint64)
        driver(v, out.view(np.int64), 64)
        np.testing.assert_array_equal(out, want)
    for driver in (kbits._from_bit_slices_par, kbits._from_bit_slices_ser):
        back = np.empty(n, dtype=np.int64)
        driver(want.view(np.int64), back)
        np.testing.assert_array_equal(back, v)
    bits = K.unpack_bits(want[:5], n)
    np.testing.assert_array_equal(K.pack_bits(bits), want[:5])
    np.testing.assert_array_equal(K.bit_slices(v, 13), want[:13])


def test_bits_reject_bad_input():
    with pytest.raises(ValueError):
        K.bit_slices(np.zeros(3, np.int64), 65)
    with pytest.raises(TypeError):
        K.bit_slices(np.zeros(3, np.uint64), 8)
    with pytest.raises(ValueError):
        K.from_bit_slices(np.zeros((4, 2), np.uint64), 200)       # needs 4 words
    with pytest.raises(TypeError):
        K.unpack_bits(np.zeros((1, 1), np.int64), 10)


# ------------------------------------------------------------------------------- GF(2) circuits


def words_array(rng, rows, words) -> np.ndarray:
    return rng.integers(0, 2**64 - 1, (rows, words), dtype=np.uint64, endpoint=True)


@HYP
@given(data=st.data(), nb=st.integers(1, 12), n_pairs=st.integers(0, 40), words=st.integers(0, 9))
def test_and_nodes_match_numpy(data, nb, n_pairs, words):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    pairs = np.array([[rng.integers(0, nb + k), rng.integers(0, nb)] for k in range(n_pairs)],
                     dtype=np.int64).reshape(-1, 2)
    base = words_array(rng, nb, words)
    got = K.and_nodes(base, pairs)
    assert got.dtype == np.uint64 and got.shape == (n_pairs, words)
    np.testing.assert_array_equal(got, K.and_nodes_np(base, pairs))
    with pytest.raises(ValueError):
        K.and_nodes(base, np.array([[nb + n_pairs, 0]], dtype=np.int64))
    with pytest.raises(TypeError):
        K.and_nodes(base.view(np.int64), pairs)


@st.composite
def gf2_level(draw):
    """A random level: groups of 0..6 public rows, entries over all four sources."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_pub, n_out = draw(st.integers(1, 10)), draw(st.integers(1, 6))
    counts = {1: draw(st.integers(1, 5)), 2: draw(st.integers(1, 8)), 3: draw(st.integers(1, 12))}
    sizes = [draw(st.integers(0, 6)) for _ in range(draw(st.integers(1, 5)))]
    rows = np.full((len(sizes), max(sizes + [1])), -1, dtype=np.int64)
    entries, start = [], [0]
    for g, n in enumerate(sizes):
        rows[g, :n] = rng.integers(0, n_pub, n)
        for _ in range(draw(st.integers(0, 12))):
            src = int(rng.integers(0, 4))
            entries.append((int(rng.integers(0, 1 << n)), src,
                            int(rng.integers(0, counts[src])) if src else 0, int(rng.integers(0, n_out))))
        start.append(len(entries))
    return (n_pub, counts, rows, np.array(sizes, dtype=np.int64), np.array(start, dtype=np.int64),
            np.array(entries, dtype=np.int64).reshape(-1, 4), n_out, rng)


@HYP
@given(level=gf2_level(), words=st.integers(0, 300), rank0=st.booleans())
def test_xor_terms_match_numpy(level, words, rank0):
    n_pub, counts, rows, sizes, start, entries, n_out, rng = level
    pub = words_array(rng, n_pub, words)
    srcs = [words_array(rng, counts[i], words) for i in (1, 2, 3)]
    args = (pub, *srcs, rows, sizes, start, entries, n_out, rank0)
    got = K.xor_terms(*args)
    assert got.dtype == np.uint64 and got.shape == (n_out, words)
    np.testing.assert_array_equal(got, K.xor_terms_np(*args))


@pytest.mark.parametrize("driver", [kgf2._xor_terms_par, kgf2._xor_terms_ser])
@pytest.mark.parametrize("circuit", [circuits.comparator(64, 4, 4), circuits.comparator(40, 8, 8),
                                     circuits.comparator(64, 2, 2), circuits.and_tree(9, 9)])
@pytest.mark.parametrize("words", [1, 255, 700])
def test_xor_terms_drivers_on_circuit_levels(driver, circuit, words):
    """Both drivers, whatever the size threshold picks, on every level of real circuits."""
    rng = np.random.default_rng(words)
    levels = ([circuit.local] if circuit.local is not None else []) + list(circuit.rounds)
    for lv in levels:
        n_pub = int(lv.group_rows.max()) + 1 if lv.group_rows.size else 1
        pub, x_in = words_array(rng, n_pub, words), words_array(rng, 80, words)
        singles, prods = words_array(rng, lv.n_base, words), words_array(rng, lv.n_products, words)
        args = (pub, x_in, singles, prods, lv.group_rows, lv.group_sizes, lv.group_start, lv.entries)
        width = int(lv.group_sizes.max())
        for rank0 in (True, False):
            out = np.zeros((lv.n_out, words), dtype=np.int64)
            driver(*(a.view(np.int64) if a.dtype == np.uint64 else a for a in args), rank0, out,
                   width, kgf2.chunk_words(width))
            np.testing.assert_array_equal(out.view(np.uint64), K.xor_terms_np(*args, lv.n_out, rank0))


def test_xor_terms_rejects_bad_input():
    lv = circuits.and_tree(3, 3).rounds[0]
    ok = np.zeros((3, 2), dtype=np.uint64)
    tables = (lv.group_rows, lv.group_sizes, lv.group_start, lv.entries, lv.n_out, True)
    with pytest.raises(TypeError):
        K.xor_terms(ok.view(np.int64), None, ok, ok, *tables)
    with pytest.raises(ValueError):
        K.xor_terms(ok, None, np.zeros((3, 5), dtype=np.uint64), ok, *tables)
    with pytest.raises(TypeError):
        K.xor_terms(ok, None, ok, ok, lv.group_rows, lv.group_sizes, lv.group_start,
                    lv.entries[:, :3], lv.n_out, True)


@HYP
@given(data=st.data(), n=st.integers(0, 70), w=st.integers(1, 5), two=st.booleans(),
       rank0=st.booleans())
def test_bit_select_matches_numpy(data, n, w, two, rank0):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shape = (n, w)
    e = rng.integers(0, 2, n).astype(np.int64)
    terms = []
    for i in range(2 if two else 1):
        k = data.draw(st.sampled_from([1, -1, 3, I64_MAX, I64_MIN]), label=f"k{i}")
        c = ring_array(data, shape, f"c{i}") if data.draw(st.booleans(), label=f"array{i}") else None
        terms.append((k, c, ring_array(data, shape, f"u{i}"), ring_array(data, shape, f"w{i}")))
    args = (e, ring_array(data, (n,), "rho"), ring_array(data, shape, "pub"), terms, rank0)
    got = K.bit_select(*args)
    assert got.dtype == np.int64 and got.shape == shape
    np.testing.assert_array_equal(got, K.bit_select_np(*args))


def test_bit_select_is_the_product_by_the_bit():
    """Shares of y b reconstruct to y * (e XOR rho) for 0/1 rho, both coefficient kinds."""
    rng = np.random.default_rng(7)
    n, w = 300, 3
    e, rho = rng.integers(0, 2, n), rng.integers(0, 2, n)
    u1, u2, k = (rng.integers(I64_MIN, I64_MAX, (n, w)) for _ in range(3))
    pub = rng.integers(I64_MIN, I64_MAX, (n, w))
    y = pub + k * u1 - u2
    split = lambda v: (lambda a: (a, v - a))(rng.integers(I64_MIN, I64_MAX, v.shape))  # noqa: E731
    sh = [split(v) for v in (rho, u1, u2, u1 * rho[:, None], u2 * rho[:, None])]
    out = [K.bit_select(e, sh[0][p], pub, [(1, k, sh[1][p], sh[3][p]), (-1, None, sh[2][p], sh[4][p])],
                        p == 0) for p in (0, 1)]
    np.testing.assert_array_equal(out[0] + out[1], y * (e ^ rho)[:, None])
    with pytest.raises(ValueError):
        K.bit_select(e, rho, pub, [], True)
    with pytest.raises(TypeError):
        K.bit_select(e, rho, pub, [(1, None, u1[:, :1], u1)], True)


# ------------------------------------------------------------------------------- threading


def test_threading_layer_is_thread_safe():
    if "NUMBA_THREADING_LAYER" in os.environ:
        pytest.skip("threading layer chosen by the user")
    info = K.runtime_info()
    assert info.requested_layer in ("tbb", "omp")
    K.ring_matmul(np.ones((64, 64), np.int64), np.ones((64, 64), np.int64))
    if info.parallel_enabled:
        assert K.runtime_info().active_layer == info.requested_layer


def test_ring_matmul_from_two_threads_concurrently():
    rng = np.random.default_rng(11)
    cases = []
    for shape in [(128, 128, 128), (64, 300, 96), (3, 5, 7), (128, 784, 32)]:
        m, k, n = shape
        a = rng.integers(I64_MIN, I64_MAX, (m, k), dtype=np.int64, endpoint=True)
        b = rng.integers(I64_MIN, I64_MAX, (k, n), dtype=np.int64, endpoint=True)
        cases.append((a, b, a @ b))
    barrier = threading.Barrier(2)
    failures: list[str] = []
    done = [0, 0]

    def party(rank: int) -> None:
        try:
            barrier.wait()
            for it in range(40):
                a, b, want = cases[(it + rank) % len(cases)]
                if not np.array_equal(K.ring_matmul(a, b), want):
                    failures.append(f"rank {rank} iteration {it}")
                done[rank] += 1
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(repr(exc))

    threads = [threading.Thread(target=party, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures
    assert done == [40, 40]


def test_scheduler_runs_one_parallel_region_at_a_time():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 threads in Numba's pool")
    sched = _runtime._Scheduler(max_threads=2, min_work=100)
    with sched.slot(10) as small:
        assert small is False                    # below the threshold
    seen = []

    def overlapping() -> None:
        with sched.slot(1000) as par:
            seen.append(par)

    with sched.slot(1000) as first:
        t = threading.Thread(target=overlapping)
        t.start()
        t.join()
    assert first is True and seen == [False]     # the overlapping call ran serially
    with sched.slot(1000) as again:
        assert again is True
    assert _runtime._Scheduler(max_threads=1, min_work=0).parallel_enabled is False
    sched._launched = True
    sched.after_fork_in_child()
    assert sched.parallel_enabled is False


def test_forked_child_can_run_kernels():
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    rng = np.random.default_rng(5)
    a = rng.integers(I64_MIN, I64_MAX, (128, 200), dtype=np.int64, endpoint=True)
    b = a.T.copy()
    want = a @ b
    np.testing.assert_array_equal(K.ring_matmul(a, b), want)    # parent used the pool
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not be killed by the OpenMP fork check
        try:
            ok = np.array_equal(K.ring_matmul(a, b), want)
            os.write(w, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    msg = os.read(r, 16)
    os.close(r)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert msg == b"ok"


def test_num_threads_env(monkeypatch):
    monkeypatch.setenv(K.NUM_THREADS_ENV, "1")
    assert _runtime._configured_threads() == 1
    monkeypatch.setenv(K.NUM_THREADS_ENV, "999")
    assert _runtime._configured_threads() == numba.config.NUMBA_NUM_THREADS
    monkeypatch.setenv(K.NUM_THREADS_ENV, "zero")
    with pytest.raises(ValueError):
        _runtime._configured_threads()
    monkeypatch.setenv(K.NUM_THREADS_ENV, "0")
    with pytest.raises(ValueError):
        _runtime._configured_threads()


# ------------------------------------------------------------------------------- structure

KERNEL_DIR = pathlib.Path(kmatmul.__file__).parent


def test_every_kernel_has_a_numpy_twin_with_the_same_signature():
    public = [name for name in K.__all__ if callable(getattr(K, name))]
    kernels = [name for name in public if not name.endswith("_np")
               and name + "_np" in K.__all__]
    assert {"ring_matmul", "ring_matmul_batched", "ring_matmul_bt", "im2col", "im2col_t", "col2im",
            "pack_bits", "unpack_bits", "bit_slices", "from_bit_slices", "and_nodes", "xor_terms",
            "bit_select", "step_share", "step_product", "trunc_split", "trunc_public", "trunc_coeff",
            "trunc_share", "trunc_form_mul"} <= set(kernels)
    for name in kernels:
        sig, twin = inspect.signature(getattr(K, name)), inspect.signature(getattr(K, name + "_np"))
        assert list(sig.parameters) == list(twin.parameters), name
    for name in K.__all__:
        assert hasattr(K, name), name


def test_numba_functions_are_cached_and_entry_points_release_the_gil():
    found = 0
    for mod in (kmatmul, kconv, kbits, kgf2, kselect, ktrunc, ksteps, kforms):
        for name, obj in vars(mod).items():
            if isinstance(obj, numba.core.registry.CPUDispatcher):
                found += 1
                assert type(obj._cache).__name__ == "FunctionCache", f"{mod.__name__}.{name}"
                if name.endswith(("_par", "_ser")) or mod in (ktrunc, ksteps, kforms):
                    assert obj.targetoptions.get("nogil") is True, name
                    assert bool(obj.targetoptions.get("parallel")) == name.endswith("_par"), name
    assert found >= 20


def test_kernels_import_only_numpy_and_numba():
    allowed = {"numpy", "numba", "__future__", "typing", "os", "sys", "threading", "ctypes",
               "contextlib", "dataclasses"}
    for path in KERNEL_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: must stay inside kernels/
                    assert node.level == 1, f"{path.name}: from {'.' * node.level}{node.module}"
                    continue
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{path.name} imports {roots - allowed}"


@HYP
@given(st.data(), st.integers(0, 300), st.integers(1, 61))
def test_truncation_kernels_match_numpy(data, n, f):
    edge = np.array([2**62, -2**62, 2**62 - 1, 1 << f, -(1 << f)], np.int64)
    v = np.concatenate([ring_array(data, (n,)), SPECIAL, edge]).reshape(-1, 1 + (n % 2))
    got, want = K.trunc_split(v, f), K.trunc_split_np(v, f)
    for g, w in zip(got, want):
        assert g.shape == v.shape and g.dtype == np.int64
        np.testing.assert_array_equal(g, w)
    with pytest.raises(TypeError):
        K.trunc_split(v.astype(np.float64), f)
    with pytest.raises(ValueError):
        K.trunc_split(v, 62)


@HYP
@given(st.data(), st.integers(0, 200), st.integers(1, 12), st.integers(0, 4))
def test_step_kernels_match_numpy(data, n, j, t):
    """Step functions of B2A bits and their products with a form: the kernel and its numpy
    twin agree bit for bit, on any ring values (they wrap mod 2^64 alike)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    e = rng.integers(0, 2, (j, n)).astype(np.int64)
    d, v0 = ring_array(data, (j,), "d"), int(data.draw(st.sampled_from(list(SPECIAL))))
    rho, pub = ring_array(data, (j, n), "rho"), ring_array(data, (n,), "pub")
    coeffs, items = ring_array(data, (t, n), "c"), ring_array(data, (t, n), "u")
    prods = ring_array(data, (j, t, n), "pi")
    for rank0 in (True, False):
        np.testing.assert_array_equal(K.step_share(e, d, rho, v0, rank0), K.step_share_np(e, d, rho, v0, rank0))
        np.testing.assert_array_equal(K.step_product(e, d, rho, v0, pub, coeffs, items, prods, rank0),
                                      K.step_product_np(e, d, rho, v0, pub, coeffs, items, prods, rank0))
    with pytest.raises(ValueError, match="do not agree"):
        K.step_share(e, d[:0], rho, v0, True)
    with pytest.raises(TypeError):
        K.step_share(e.astype(np.int32), d, rho, v0, True)


@HYP
@given(st.data(), st.integers(0, 300), st.integers(1, 61), st.booleans(), st.booleans())
def test_truncation_form_kernels_match_numpy(data, n, f, with_public, scalar_g):
    """public, coeff, share and the product with a one-term form: kernels equal their twins
    bit for bit on full-range values, the ring's special values and the bound's edges."""
    edge = np.array([2**62, -2**62, 2**62 - 1, 1 << f, -(1 << f)], np.int64)
    c = np.concatenate([ring_array(data, (n,), "c"), SPECIAL, edge])
    m, h, q, v, wm, wh = (ring_array(data, c.shape, lab) for lab in "mhqvwu")
    g = ring_array(data, (1,) if scalar_g else c.shape, "g")
    for fast, slow in ((K.trunc_public, K.trunc_public_np), (K.trunc_coeff, K.trunc_coeff_np)):
        np.testing.assert_array_equal(fast(c, f), slow(c, f))
    np.testing.assert_array_equal(K.trunc_share(c, f, m, h, with_public), K.trunc_share_np(c, f, m, h, with_public))
    np.testing.assert_array_equal(K.trunc_form_mul(c, f, m, h, q, g, v, wm, wh, with_public),
                                  K.trunc_form_mul_np(c, f, m, h, q, g, v, wm, wh, with_public))
    # the twins agree with the module doc's formulas in Python integers (mod 2^64)
    for ci, pi, ki in zip(c.tolist(), K.trunc_public_np(c, f).tolist(), K.trunc_coeff_np(c, f).tolist()):
        u = ci % 2**64
        msb = u >> 63
        assert pi % 2**64 == (((u % 2**63) >> f) + (msb << (63 - f)) - (1 << (62 - f))) % 2**64
        assert ki % 2**64 == ((1 - 2 * msb) << (63 - f)) % 2**64
    with pytest.raises(ValueError):
        K.trunc_public(c, 62)
    with pytest.raises(ValueError):
        K.trunc_share(c, f, m[:-1], h, True)
    with pytest.raises(TypeError):
        K.trunc_public(c.astype(np.float64), f)
