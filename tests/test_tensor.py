"""SharedTensor: refuses implicit use, local ops exact, every secure op within tolerance,
scales carried (no eager truncation) and openings reused."""
import numpy as np
import pytest

from ss_engine.protocols.rounds import gather, resolve
from ss_engine.tensor import SharedTensor, ops

from .conftest import make_runtime

U = 2.0 ** -16


def test_bool_and_array_conversion_raise_and_repr_hides_values():
    rt = make_runtime()
    t = SharedTensor(rt.contexts[0], np.array([123456789], np.int64))
    with pytest.raises(TypeError, match="truth value"):
        bool(t)
    with pytest.raises(TypeError, match="reveal"):
        np.asarray(t)
    assert "123456789" not in repr(t) and "shape=(1,)" in repr(t)
    with pytest.raises(TypeError, match="ops.mul"):
        t * t
    with pytest.raises(TypeError, match="ops.matmul"):
        t @ t


def test_rejects_non_ring_shares():
    rt = make_runtime()
    with pytest.raises(TypeError, match="int64"):
        SharedTensor(rt.contexts[0], np.zeros(3))


def test_local_ops_and_every_secure_op():
    rt = make_runtime()
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 6)), rng.normal(size=(6, 3))
    A, B = rt.share_float(a), rt.share_float(b)

    def body(ctx, sa, sb):
        x, y = SharedTensor(ctx, sa), SharedTensor(ctx, sb)
        xy = yield from ops.matmul(x, y)
        xx = yield from ops.mul(x, x)
        relu, bit = yield from ops.relu(x)
        lt = yield from ops.lt(x, SharedTensor(ctx, np.repeat(y.share[:1, :1], 24).reshape(4, 6)))
        vals = {
            "add": x + 1.5 - x * 2, "neg_sum": (-x).sum(axis=0), "reshape_t": x.reshape(6, 4).T,
            "index_cat": SharedTensor.concatenate([x[:2], x[2:]], axis=0), "matmul": xy,
            "mul": xx, "relu": relu, "bit": bit, "lt": lt, "scaled": x * 0.5,
            "trunc": (yield from ops.truncate(xy)),
            "drelu": (yield from ops.drelu(x)),
            "max": (yield from ops.max(x, axis=1)),
            "argmax": (yield from ops.argmax(x, axis=1)),
            "softmax": (yield from ops.softmax(x)),
            "exp": (yield from ops.exp(x - 3.0)),
            "recip": (yield from ops.reciprocal(xx + 1.0, 1.0, 20.0)),
        }
        before = ctx.channel.stats.rounds
        # concurrent reveals share one round
        out = dict(zip(vals, (yield from gather(*(ops.reveal(v) for v in vals.values())))))
        out["reveal_rounds"] = ctx.channel.stats.rounds - before
        out["scales"] = {k: v.frac_bits for k, v in vals.items()}
        out["to_one"] = yield from ops.reveal(x, to=1)
        return out

    r0, r1 = rt.run_same(body, A, B)
    f = 16
    assert r0["reveal_rounds"] == 1
    # products keep their untruncated scale until something needs them at f
    assert r0["scales"]["matmul"] == r0["scales"]["mul"] == r0["scales"]["scaled"] == 2 * f
    assert r0["scales"]["trunc"] == r0["scales"]["relu"] == r0["scales"]["softmax"] == f
    assert r0["scales"]["bit"] == r0["scales"]["lt"] == r0["scales"]["argmax"] == 0
    assert np.abs(r0["add"] - (a + 1.5 - 2 * a)).max() <= 4 * U
    assert np.abs(r0["neg_sum"] + a.sum(0)).max() <= 8 * U
    assert np.abs(r0["reshape_t"] - a.reshape(6, 4).T).max() <= U
    assert np.abs(r0["index_cat"] - a).max() <= U
    assert np.abs(r0["matmul"] - a @ b).max() <= 8 * U
    assert np.abs(r0["trunc"] - a @ b).max() <= 8 * U
    assert np.abs(r0["mul"] - a * a).max() <= 4 * U
    assert np.abs(r0["scaled"] - a * 0.5).max() <= U
    assert np.abs(r0["relu"] - np.maximum(a, 0)).max() <= U
    assert np.array_equal(r0["bit"], r0["drelu"])
    assert np.array_equal(r0["bit"], (a >= 0).astype(float))
    assert np.abs(r0["max"] - a.max(1)).max() <= U
    assert np.array_equal(r0["argmax"].argmax(1), a.argmax(1))
    sm = np.exp(a - a.max(1, keepdims=True))
    assert np.abs(r0["softmax"] - sm / sm.sum(1, keepdims=True)).max() <= 8 * U
    assert np.abs(r0["exp"] - np.exp(a - 3.0)).max() <= 3 * U
    assert np.abs(r0["recip"] - 1 / (a * a + 1)).max() <= 3 * U
    assert np.array_equal(r0["lt"], (a < b[0, 0]).astype(float))
    assert r0["to_one"] is None and np.abs(r1["to_one"] - a).max() <= U


def test_openings_are_reused_and_untruncated_operands_truncated_once():
    """X @ W, then X^T D and D W: X and W are opened once; a 2f operand used by two
    products is truncated once; relu of a 2f value keeps the truncation, so multiplying it
    by the ReLU bit (both linear forms) costs nothing."""
    rt = make_runtime()
    rng = np.random.default_rng(2)
    x, w, d = rng.normal(size=(5, 4)), rng.normal(size=(3, 4)), rng.normal(size=(5, 3))
    X, W, D = rt.share_float(x), rt.share_float(w), rt.share_float(d)

    def body(ctx, sx, sw, sd):
        tx, tw, td = SharedTensor(ctx, sx), SharedTensor(ctx, sw), SharedTensor(ctx, sd)
        st = ctx.channel.stats
        z = yield from ops.matmul(tx, tw, transpose_right=True)             # 1 round: X, W
        counts = [(st.rounds, st.bytes_sent)]
        raw = td * 4                                       # integer factor: exact, scale f
        dd = yield from ops.mul(raw, td)                    # 2f: an untruncated product
        counts.append((st.rounds, st.bytes_sent))
        gw = yield from ops.matmul(dd, tx, transpose_left=True)    # truncate dd, open it
        gx = yield from ops.matmul(dd, tw)                          # all reused: no round
        counts.append((st.rounds, st.bytes_sent))
        _, bit = yield from ops.relu(z)                     # 2f input: trunc + compare at once
        counts.append((st.rounds, st.bytes_sent))
        back = yield from ops.mul(z, bit)                   # relu's trunc(z) * bit: no round
        counts.append((st.rounds, st.bytes_sent))
        outs = yield from gather(*(ops.reveal(v) for v in (z, gw, gx, back)))
        return counts, outs, [v.frac_bits for v in (z, gw, gx, back)]

    (c, (z, gw, gx, back), scales), _ = rt.run_same(body, X, W, D)
    assert scales == [32, 32, 32, 16]
    assert c[0] == (1, 8 * (x.size + w.size))
    assert c[1][0] == 2 and c[1][1] - c[0][1] == 8 * 2 * d.size     # both operands of dd opened
    assert c[2][0] == 4 and c[2][1] - c[1][1] == 8 * 2 * d.size     # its truncation, its opening
    assert c[3][0] == 8
    assert c[4] == c[3]
    dq = 4 * d * d
    assert np.abs(z - x @ w.T).max() <= 4 * U
    assert np.abs(gw - dq.T @ x).max() <= 64 * U and np.abs(gx - dq @ w).max() <= 64 * U
    assert np.abs(back - np.maximum(x @ w.T, 0)).max() <= 2 * U


def test_im2col_on_shares_is_linear():
    rt = make_runtime()
    x = np.random.default_rng(1).integers(-1000, 1000, (2, 3, 5, 5)).astype(np.int64)
    s = rt.share_ring(x)
    cols = [SharedTensor(rt.contexts[i], s[i]).im2col(3, 3, 1, 1).share for i in (0, 1)]
    from ss_engine import kernels
    assert np.array_equal(cols[0] + cols[1], kernels.im2col_np(x, 3, 3, 1, 1))


def test_nonlinear_ops_at_their_documented_accuracy_from_any_scale():
    """exp, log, sigmoid, reciprocal, rsqrt, div (secret / secret, per row, and / public) on
    values at f and on untruncated products (2f): within their documented error."""
    rt = make_runtime()
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 4)) * 3
    pos = np.exp(rng.normal(size=(5, 4)) * 3)             # from ~1e-4 to ~1e4
    den = np.exp(rng.normal(size=5))
    A, Pz, D = rt.share_float(a), rt.share_float(pos), rt.share_float(den)

    def body(ctx, sa, sp, sd):
        x, p, d = SharedTensor(ctx, sa), SharedTensor(ctx, sp), SharedTensor(ctx, sd)
        p2 = p * 1.0                                       # the same values at 2f
        vals = {"exp": (yield from ops.exp(x)), "log": (yield from ops.log(p)),
                "log2f": (yield from ops.log(p2)), "sigmoid": (yield from ops.sigmoid(x)),
                "sigmoid2f": (yield from ops.sigmoid(x * 1.0)),
                "recip": (yield from ops.reciprocal(p)), "rsqrt": (yield from ops.rsqrt(p2)),
                "div": (yield from ops.div(x, (yield from ops.mul(x, x)) + 1.0)),
                "div_row": (yield from ops.div(x, d)),
                "div_pub": ops.div(x, 4.0)}
        vals["div_pub"] = yield from resolve(vals["div_pub"])
        out = dict(zip(vals, (yield from gather(*(ops.reveal(v) for v in vals.values())))))
        return out, {k: v.frac_bits for k, v in vals.items()}

    (r, scales), _ = rt.run_same(body, A, Pz, D)
    aq, pq, dq = (np.round(v * 2 ** 16) / 2 ** 16 for v in (a, pos, den))
    rel = lambda got, want, k: np.all(np.abs(got - want) <= k * U * (1 + np.abs(want)))  # noqa: E731
    assert rel(r["exp"], np.exp(aq), 2)
    assert rel(r["log"], np.log(pq), 2) and rel(r["log2f"], np.log(pq), 2)
    sig = 0.5 * (1 + np.tanh(aq / 2))
    assert rel(r["sigmoid"], sig, 2) and rel(r["sigmoid2f"], sig, 2)
    assert rel(r["recip"], 1 / pq, 2) and rel(r["rsqrt"], pq ** -0.5, 2)
    assert rel(r["div"], aq / (aq * aq + 1), 6)
    assert rel(r["div_row"], aq / dq[:, None], 6)
    assert rel(r["div_pub"], aq / 4, 1)
    # a division is a product with a reciprocal: untruncated, like every product
    assert scales["div"] == scales["div_pub"] == 32 and scales["recip"] == scales["exp"] == 16


def test_division_by_a_public_value_the_format_cannot_invert_is_an_error():
    rt = make_runtime()
    x = rt.share_float(np.ones(3))
    for bad, msg in ((0.0, "zero"), (float("inf"), "non-finite"), (1e9, "below one unit"),
                     (1e-30, "outside the fixed-point range")):
        with pytest.raises(Exception, match=msg):
            rt.run_same(lambda c, v: resolve(ops.div(SharedTensor(c, v), bad)), x)
