"""LocalSession semantics: handles refuse implicit use, ops are lazy and batched, every
op costs what its docstring says (asserted against the channel counters), bad ops are
refused at the call site and by the parties, values are freed, the surface is small."""
from __future__ import annotations

import copy
import gc
import pickle
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import ss_engine as sse
from ss_engine.dispatch import SessionLimits

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def s():
    with sse.LocalSession(seed=b"session-tests-01") as session:
        yield session


def counters(s) -> tuple[int, int]:
    st = s.stats()["party0"]["channel"]
    return st["rounds"], st["bytes_sent"]


def cost(s, make, *inputs):
    """(rounds, bytes sent by party 0) of ``make`` on freshly shared inputs."""
    xs = [s.share(v) for v in inputs]
    s.flush()
    r0, b0 = counters(s)
    out = make(*xs)
    s.flush()
    r1, b1 = counters(s)
    return (r1 - r0, b1 - b0), out


# -- the surface --------------------------------------------------------------------------
def test_public_surface_version_and_cli():
    assert set(sse.__all__) == {"__version__", "LocalSession", "RemoteSession", "Secret", "where",
                                "concatenate", "SessionFailed", "OpError", "train"}
    assert all(getattr(sse, n) is not None for n in sse.__all__)
    with pytest.raises(AttributeError):
        sse.nonexistent  # noqa: B018
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ss_engine.__version__"}
    out = subprocess.run([sys.executable, "-m", "client.cli", "--version"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"ss-engine {sse.__version__}"


def test_handles_refuse_implicit_use_and_hide_values(s):
    x = s.share(np.array([123456.75, -2.0]))
    y = s.share(np.array([1.0, 1.0]))
    for bad in (lambda: bool(x), lambda: bool(x < y), lambda: float(x[0]), lambda: int(x[0]),
                lambda: np.asarray(x), lambda: pickle.dumps(x), lambda: np.add(np.ones(2), x),
                lambda: {x: 1}):
        with pytest.raises(TypeError):
            bad()
    with pytest.raises(TypeError, match="truth value"):
        if x < y:
            pass
    assert "123456" not in repr(x) and repr(x) == "Secret(shape=(2,), session=LocalSession)"
    assert copy.deepcopy(x) is x and len(x) == 2 and x.ndim == 1 and x.size == 2
    assert [v.shape for v in x] == [(), ()]
    # numpy hands mixed expressions to the handle
    assert np.array_equal((np.array([1.0, 2.0]) + x).reveal(), [123457.75, 0.0])


# -- laziness, batching, reveal -----------------------------------------------------------
def test_ops_are_lazy_and_independent_ops_share_rounds(s):
    a = np.random.default_rng(1).normal(size=(4, 64))
    xs = [s.share(a[i]) for i in range(4)]
    s.flush()
    r0, _ = counters(s)
    ys = [x.relu() for x in xs]                 # queued: nothing runs yet
    assert counters(s)[0] == r0
    got = s.reveal(*ys)                         # four independent ReLUs: one ReLU's rounds
    assert counters(s)[0] - r0 == 4
    assert all(np.array_equal(g, np.maximum(v, 0)) for g, v in zip(got, np.round(a * 2**16) / 2**16))
    (rounds, _), z = cost(s, lambda x: x.relu().relu(), a[0])   # a chain: one after the other
    assert rounds == 8


def test_reveal_opens_nothing_between_the_parties_and_keeps_2f_products_exact(s):
    x, y = s.share(np.array([1.5, -0.25])), s.share(np.array([1 / 3, 3.0]))
    s.flush()
    before = counters(s)
    got = s.reveal(x)
    assert counters(s) == before          # each party sent the caller its shares; no round
    assert np.array_equal(got, [1.5, -0.25])
    z = x * y                             # untruncated: scale 2f, revealed exactly at 2f
    (_, f0), = s._reveal_ring([z])
    assert f0 == 2 * s.frac_bits
    assert z.reveal()[1] == -0.25 * 3.0


# -- every op's cost card, against the counters ------------------------------------------
N = (64, 10)            # 640 elements: bit-packed parts in whole 64-bit words
n = 640


@pytest.mark.parametrize("name, make, rounds, nbytes", [
    ("add", lambda x, y: x + y - 1.0, 0, 0),
    ("shape", lambda x, y: sse.concatenate([x.T.reshape(-1)[3:], y.sum(0), -x[1]]), 0, 0),
    ("mul", lambda x, y: x * y, 1, 16 * n),
    ("mul 2f", lambda x, y: (x * y) * y, 2, 16 * n + 8 * n),
    ("mul public", lambda x, y: x * 0.5 * 3, 0, 0),
    ("mul public 2f", lambda x, y: (x * 0.5) * 0.5, 1, 8 * n),
    ("div public", lambda x, y: x / 7.0, 1, 8 * n),
    ("mean", lambda x, y: x.mean(axis=0), 1, 8 * 10),
    ("matmul", lambda x, y: x @ y.T, 1, 16 * n),
    ("matmul public", lambda x, y: x @ np.ones((10, 3)), 0, 0),
    ("lt", lambda x, y: x < y, 4, 12.25 * n),
    ("gt public", lambda x, y: x > 0.5, 4, 12.25 * n),
    ("eq", lambda x, y: x == y, 4, 2 * 12.25 * n),
    ("relu", lambda x, y: x.relu(), 4, 20.25 * n),
    ("relu 2f", lambda x, y: (x * 0.5).relu(), 4, 20.25 * n),
    ("where", lambda x, y: sse.where(x > y, x, y), 5, 12.25 * n + 8 * n),
    ("max", lambda x, y: x.max(axis=1), 5, 63.8125 * n),
    ("argmax", lambda x, y: x.argmax(axis=1), 5, 63.8125 * n),
    ("max of 2", lambda x, y: x[:, :2].max(axis=1), 4, 14.1875 * 128),
    ("max of 16", lambda x, y: sse.concatenate([x, x[:, :6]], axis=1).max(axis=1), 6, 101.4375 * 1024),
    ("exp", lambda x, y: x.exp(), 6, 553.5 * n),
    ("exp 2f", lambda x, y: (x * 0.5).exp(), 6, 509.5 * n),
    ("sigmoid", lambda x, y: x.sigmoid(), 10, 477.75 * n),
    ("sigmoid 2f", lambda x, y: (x * 0.5).sigmoid(), 10, 447.75 * n),
    ("log", lambda x, y: x.log(), 8, 783 * n),
    ("log 2f", lambda x, y: (x * 0.5).log(), 9, 791 * n),
    ("reciprocal", lambda x, y: x.reciprocal(), 9, 500.75 * n),
    ("reciprocal 2f", lambda x, y: (x * 0.5).reciprocal(), 10, 508.75 * n),
    ("reciprocal [1, 4]", lambda x, y: x.reciprocal(1, 4), 9, 108.75 * n),
    ("rsqrt", lambda x, y: x.rsqrt(), 12, 352.75 * n),
    ("rsqrt 2f", lambda x, y: (x * 0.5).rsqrt(), 13, 360.75 * n),
    ("div", lambda x, y: x / y, 10, 516.75 * n),
    ("softmax", lambda x, y: x.softmax(), 16, 316.4375 * n),
    ("softmax 2f", lambda x, y: (x * 0.5).softmax(), 16, 303.4375 * n),
])
def test_cost_cards(s, name, make, rounds, nbytes):
    rng = np.random.default_rng(7)
    (r, b), _ = cost(s, make, rng.normal(size=N), rng.normal(size=N))
    assert (r, b) == (rounds, nbytes), name


def test_an_opening_is_reused_by_later_products(s):
    rng = np.random.default_rng(9)
    x, w = s.share(rng.normal(size=(8, 5))), s.share(rng.normal(size=(5, 4)))
    z = x @ w
    s.flush()
    before = counters(s)
    zz = (x @ w) * 2 + x.T.T.sum() * 0     # the same operands again: both already opened
    s.flush()
    assert counters(s) == before
    assert np.array_equal(zz.reveal(), 2 * z.reveal())


def test_conv2d_cost_is_the_beaver_bound(s):
    rng = np.random.default_rng(8)
    a, w = rng.normal(size=(2, 3, 8, 8)), rng.normal(size=(4, 3, 3, 3))
    (r, b), _ = cost(s, lambda x, k: x.conv2d(k, stride=1, padding=1), a, w)
    assert (r, b) == (1, 8 * (a.size + w.size))


# -- refusals -----------------------------------------------------------------------------
def test_bad_ops_are_refused_at_the_call_site_and_the_session_goes_on(s):
    x, y = s.share(np.ones((2, 3))), s.share(np.ones((4, 5)))
    bad = {"do not broadcast": lambda: x + y, "matmul needs": lambda: x @ y,
           "axis must be an integer": lambda: x.sum(axis=5), "cannot reshape": lambda: x.reshape(7),
           "0 < lo < hi": lambda: x.reciprocal(2.0, 1.0), "index": lambda: x[5],
           "permutation": lambda: x.transpose(0, 0), "differ off axis": lambda: sse.concatenate([x, y]),
           "conv2d needs": lambda: x.conv2d(y), "outside the fixed-point range": lambda: x + 1e30,
           "cannot encode NaN": lambda: s.share(np.array([np.nan]))}
    for needle, make in bad.items():
        with pytest.raises(ValueError, match=needle):
            make()
    with pytest.raises(ValueError, match="@ takes 1-D or 2-D"):
        s.share(np.ones((2, 2, 2))) @ x
    with sse.LocalSession() as other:
        with pytest.raises(ValueError, match="different sessions"):
            x + other.share(np.ones((2, 3)))
    assert np.array_equal((x + 1).reveal(), np.full((2, 3), 2.0))


def test_the_parties_refuse_what_the_front_end_did_not_check_and_lose_nothing():
    with sse.LocalSession() as s:
        x = s.share(np.arange(6.0).reshape(2, 3))
        s.flush()
        # ops slipped past the front-end: each party parses the batch in full and refuses it
        for op in (["relu", 999, [12345], {}], ["nope", 999, [x._id], {}],
                   ["reshape", 999, [x._id], {"shape": [4]}], ["sum", 999, [x._id], {"axis": "0"}],
                   ["reciprocal", 999, [x._id], {"lo": 1, "hi": float("nan")}],
                   ["index", 999, [x._id], {"idx": [["s", 0, 1, 0]]}], "junk",
                   ["const", 999, [], {"v": 2**70, "s": 16}], ["share", 999, [], {"a": 0}]):
            s._ops.append(op)
            with pytest.raises(sse.OpError):
                s.flush()
        assert np.array_equal(x.reveal(), np.arange(6.0).reshape(2, 3))
        assert [len(p.state.values) for p in s._parties] == [1, 1]


def test_values_beyond_the_session_limits_are_refused():
    limits = SessionLimits(max_value_elements=100, max_live_elements=250)
    with sse.LocalSession(limits=limits) as s:
        with pytest.raises(sse.OpError, match="exceeds the session's 100"):
            s.share(np.ones(101))
        a, b = s.share(np.ones(100)), s.share(np.ones(100))
        s.flush()
        with pytest.raises(sse.OpError, match="would hold 300 elements"):
            s.reveal(a + b)
        assert a.reveal().sum() == 100        # the refused batch lost nothing held before
        del b
        assert (a + 1).reveal().sum() == 200  # b was freed with that batch


def test_unused_handles_are_freed_by_the_parties():
    with sse.LocalSession() as s:
        x = s.share(np.ones(8))
        ys = [x * 2 for _ in range(10)]
        s.flush()
        assert [len(p.state.values) for p in s._parties] == [11, 11]
        del ys
        gc.collect()
        s.flush()
        assert [len(p.state.values) for p in s._parties] == [1, 1]
        assert x.reveal().sum() == 8


def test_large_values_are_shared_in_pieces(s):
    a = np.random.default_rng(3).normal(size=(1100, 1000))   # 8.8 MB of shares per party
    x = s.share(a)
    assert x.shape == a.shape
    got = x[::97, ::89].reveal()
    assert np.array_equal(got, np.round(a[::97, ::89] * 2**16) / 2**16)


def test_closed_session_refuses_everything():
    s = sse.LocalSession()
    x = s.share(np.ones(2))
    s.close()
    s.close()
    for make in (lambda: x + 1, lambda: x.reveal(), lambda: s.share(np.ones(1)), s.flush):
        with pytest.raises(sse.SessionFailed, match="closed"):
            make()
    assert not any(p.is_alive() for p in s._parties)
