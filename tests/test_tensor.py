"""SharedTensor: refuses implicit use, local ops exact, protocol ops within tolerance."""
import numpy as np
import pytest

from ss_engine.tensor import SharedTensor

from .conftest import make_runtime


def test_bool_and_array_conversion_raise_and_repr_hides_values():
    rt = make_runtime()
    t = SharedTensor(rt.contexts[0], np.array([123456789], np.int64))
    with pytest.raises(TypeError, match="truth value"):
        bool(t)
    with pytest.raises(TypeError, match="reveal"):
        np.asarray(t)
    assert "123456789" not in repr(t) and "shape=(1,)" in repr(t)


def test_rejects_non_ring_shares():
    rt = make_runtime()
    with pytest.raises(TypeError, match="int64"):
        SharedTensor(rt.contexts[0], np.zeros(3))


def test_local_ops_and_protocol_ops():
    rt = make_runtime()
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 6)), rng.normal(size=(6, 3))
    A, B = rt.share_float(a), rt.share_float(b)

    def body(ctx, sa, sb):
        x, y = SharedTensor(ctx, sa), SharedTensor(ctx, sb)
        out = {
            "add": (x + 1.5 - x * 2).reveal(),
            "neg_sum": (-x).sum(axis=0).reveal(),
            "reshape_t": x.reshape(6, 4).T.reveal(),
            "index_cat": SharedTensor.concatenate([x[:2], x[2:]], axis=0).reveal(),
            "matmul": (x @ y).reveal(),
            "mul": (x * x).reveal(),
            "relu": x.relu()[0].reveal(),
            "max": x.max(axis=1).reveal(),
            "argmax": x.argmax(axis=1).reveal(),
            "softmax": x.softmax().reveal(),
            "lt": (x < y.T[:, :1].reshape(1, 3)[:, [0, 0, 0, 0, 0, 0]]).reveal(),
            "to_one": x.reveal(to=1),
        }
        return out

    r0, r1 = rt.run_same(body, A, B)
    u = 2.0 ** -16
    assert np.abs(r0["add"] - (a + 1.5 - 2 * a)).max() <= 4 * u
    assert np.abs(r0["neg_sum"] + a.sum(0)).max() <= 8 * u
    assert np.abs(r0["reshape_t"] - a.reshape(6, 4).T).max() <= u
    assert np.abs(r0["index_cat"] - a).max() <= u
    assert np.abs(r0["matmul"] - a @ b).max() <= 8 * u
    assert np.abs(r0["mul"] - a * a).max() <= 4 * u
    assert np.abs(r0["relu"] - np.maximum(a, 0)).max() <= u
    assert np.abs(r0["max"] - a.max(1)).max() <= u
    assert np.array_equal(r0["argmax"].argmax(1), a.argmax(1))
    sm = np.exp(a - a.max(1, keepdims=True))
    assert np.abs(r0["softmax"] - sm / sm.sum(1, keepdims=True)).max() <= 4e-3
    assert np.array_equal(r0["lt"], (a < b[0, 0]).astype(float))
    assert r0["to_one"] is None and np.abs(r1["to_one"] - a).max() <= u


def test_im2col_on_shares_is_linear():
    rt = make_runtime()
    x = np.random.default_rng(1).integers(-1000, 1000, (2, 3, 5, 5)).astype(np.int64)
    s = rt.share_ring(x)
    cols = [SharedTensor(rt.contexts[i], s[i]).im2col(3, 3, 1, 1).share for i in (0, 1)]
    from ss_engine import kernels
    assert np.array_equal(cols[0] + cols[1], kernels.im2col_np(x, 3, 3, 1, 1))
