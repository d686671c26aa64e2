"""Truncation fused with ReLU (forward) and with a bit (backward); linear forms."""
import numpy as np
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from ss_engine import protocols as P
from ss_engine.protocols.beaver import mask_and_open

from .conftest import make_runtime

raw = hnp.arrays(np.int64, hnp.array_shapes(max_dims=3, max_side=9),
                 elements=st.integers(-(1 << 62) + 1, (1 << 62) - 1))


@given(raw, st.sampled_from([12, 16, 24]))
def test_trunc_relu_is_relu_of_a_one_ulp_truncation(z, f):
    rt = make_runtime()
    (y0, b0), (y1, b1) = rt.run_same(lambda c, v: P.trunc_relu_s(c, v, f), rt.share_ring(z))
    b = b0 + b1
    assert np.array_equal(b, (z >= 0).astype(np.int64))
    err = (y0 + y1) - np.maximum(z >> f, 0)
    # error in {0, 1} where z >= 0; where z < 0 the result is 0 or (rounded up) 0
    assert np.all((err == 0) | ((err == 1) & (z >= 0)))
    assert rt.contexts[0].channel.stats.rounds == 4


@given(raw, st.data())
def test_untruncated_value_times_a_secret_bit(z, data):
    """z at 2f times a 0/1 secret: the truncation of z and the opening of the bit share one
    message, the product needs no further round, and trunc(z) alone is then free."""
    from ss_engine.tensor import SharedTensor, ops
    bits = data.draw(hnp.arrays(np.int64, z.shape, elements=st.integers(0, 1)))
    rt = make_runtime()

    def body(c, v, bv):
        zt, bt = SharedTensor(c, v, 32), SharedTensor(c, bv, 0)
        prod = yield from ops.mul(zt, bt)
        plain = yield from ops.truncate(zt)
        return prod.share, plain.share, prod.frac_bits

    r0, r1 = rt.run_same(body, rt.share_ring(z), rt.share_ring(bits))
    fused, plain = r0[0] + r1[0], r0[1] + r1[1]
    assert r0[2] == 16
    assert set(np.unique(plain - (z >> 16))) <= {0, 1}
    assert np.array_equal(fused, plain * bits)
    s = rt.contexts[0].channel.stats
    assert (s.rounds, s.bytes_sent) == (1, 16 * z.size)


@given(st.integers(1, 6), st.integers(1, 5), st.data())
def test_form_mul_is_the_exact_ring_product_without_a_round(rows, cols, data):
    """Products of truncation results with each other, with themselves and with a masked
    opening (per-row broadcast) equal the ring product of the opened values, exactly."""
    from ss_engine.protocols.forms import LinearForm, form_mul
    from ss_engine.protocols.truncation import trunc_open_many
    elems = st.integers(-(1 << 40), 1 << 40)
    a = data.draw(hnp.arrays(np.int64, (rows, cols), elements=elems))
    b = data.draw(hnp.arrays(np.int64, (rows, cols), elements=elems))
    v = data.draw(hnp.arrays(np.int64, (rows,), elements=elems))
    rt = make_runtime()

    def body(c, x, y, w):
        ta, tb = yield from trunc_open_many(c, [x, y], 16)
        (wm,) = yield from mask_and_open(c, [w])
        fa, fb, fw = LinearForm.of_trunc(ta), LinearForm.of_trunc(tb), LinearForm.of_masked(wm)
        before = c.channel.stats.rounds
        out = (form_mul(c, fa, fb), form_mul(c, fa, fa), form_mul(c, fa, fw),
               form_mul(c, fa.affine(-3, 5), fb), fa.share(c.rank), fb.share(c.rank))
        return out, c.channel.stats.rounds - before

    (r0, n0), (r1, n1) = rt.run_same(body, rt.share_ring(a), rt.share_ring(b), rt.share_ring(v))
    ab, aa, aw, cb, ta, tb = (x0 + x1 for x0, x1 in zip(r0, r1))
    assert n0 == n1 == 0
    assert set(np.unique(ta - (a >> 16))) <= {0, 1} and set(np.unique(tb - (b >> 16))) <= {0, 1}
    assert np.array_equal(ab, ta * tb)
    assert np.array_equal(aa, ta * ta)
    assert np.array_equal(aw, ta * v[:, None])
    assert np.array_equal(cb, (5 - 3 * ta) * tb)


@given(st.integers(1, 40), st.integers(1, 4), st.data())
def test_bit_mul_gives_form_mul_shares_from_the_same_items(n, w, data):
    """The B2A select kernel (``compare.bit_mul``) and the generic ``form_mul``: the same
    material requests and the same shares, bit for bit, for a truncation result (two terms,
    one with a per-element coefficient), a masked opening and a per-row bit over (n, w)."""
    from ss_engine.protocols.compare import b2a_s, bit_mul, flip_xor, msb_xor_s
    from ss_engine.protocols.forms import LinearForm, form_mul
    from ss_engine.protocols.truncation import trunc_open_many
    elems = st.integers(-(1 << 50), 1 << 50)
    z = data.draw(hnp.arrays(np.int64, n, elements=elems))
    y = data.draw(hnp.arrays(np.int64, (n, w), elements=elems))

    def body(c, zv, yv, use_kernel):
        msb, (ym,) = yield from msb_xor_s(c, zv, extra=[yv])
        bit = yield from b2a_s(c, flip_xor(c, msb), n)
        (t,) = yield from trunc_open_many(c, [zv], 16)
        mul = (lambda f: bit_mul(c, bit, f)) if use_kernel else (lambda f: form_mul(c, f, bit))
        return mul(LinearForm.of_trunc(t)), mul(LinearForm.of_masked(ym)), c.source.next_seq

    runs = []
    for use_kernel in (True, False):
        rt = make_runtime(seed=b"bit-mul")
        runs.append(rt.run_same(lambda c, a, b: body(c, a, b, use_kernel), rt.share_ring(z),
                                rt.share_ring(y)))
    for party in (0, 1):
        for got, want in zip(runs[0][party], runs[1][party]):
            assert np.array_equal(got, want)
    (t0, y0, _), (t1, y1, _) = runs[0]
    b = (z >= 0).astype(np.int64)
    assert np.array_equal(y0 + y1, y * b[:, None])
    assert set(np.unique((t0 + t1) - (z >> 16) * b)) <= {0, 1}


def test_fused_truncation_products_equal_the_generic_form_mul():
    """form_mul of a truncation form and a one-term form runs as one kernel; it equals the
    generic rule applied to the same forms' public parts and terms, on both parties, and asks
    the dealer for the same products in the same order."""
    from ss_engine.protocols.forms import LinearForm, TruncForm, form_mul
    from ss_engine.protocols.truncation import trunc_open_many

    rng = np.random.default_rng(3)
    x = rng.integers(-(1 << 40), 1 << 40, 60)
    bit = rng.integers(0, 2, 60)

    def body(ctx, xs, bs):
        (t,) = yield from trunc_open_many(ctx, [xs], 16)
        (mo,) = yield from P.mask_and_open(ctx, [bs])
        trunc, masked = LinearForm.of_trunc(t), LinearForm.of_masked(mo)
        assert isinstance(trunc, TruncForm)
        generic = LinearForm(trunc.public, trunc.terms)   # the same form, without the kernel
        log = []
        ctx.source.record(log)
        fused = [form_mul(ctx, trunc, masked), form_mul(ctx, masked, trunc)]
        fused_specs = [s for _, s in log]
        del log[:]
        plain = [form_mul(ctx, generic, masked), form_mul(ctx, masked, generic)]
        assert [type(s) for s in fused_specs] == [type(s) for _, s in log]
        assert [(s.left.field, s.right.field) for s in fused_specs] == [(s.left.field, s.right.field)
                                                                         for _, s in log]
        ctx.source.record(None)
        return fused, plain, trunc.share(ctx.rank), generic.share(ctx.rank)

    rt = make_runtime()
    (f0, p0, s0, g0), (f1, p1, s1, g1) = rt.run_same(body, rt.share_ring(x), rt.share_ring(bit))
    assert np.array_equal(s0, g0) and np.array_equal(s1, g1)
    for a, b in ((f0[0] + f1[0], p0[0] + p1[0]), (f0[1] + f1[1], p0[1] + p1[1])):
        # the two rules used different dealer products (fresh items) of the same values
        assert np.array_equal(a, b)
    t = (s0 + s1)
    assert set(np.unique(t - (x >> 16))) <= {0, 1}
    assert np.array_equal(f0[0] + f1[0], t * bit)
