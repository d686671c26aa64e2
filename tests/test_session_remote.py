"""RemoteSession over the three real processes (dealer + two servers on loopback):
the same results as LocalSession bit for bit for the same seed, only the creator drives
a session, every bad batch is refused on both servers in one line and loses nothing,
and a session ends cleanly (close, idle, a dead peer) with nothing left behind."""
from __future__ import annotations

import random
import time

import numpy as np
import pytest

import ss_engine as sse
from client.session import ClientSession
from ss_engine.net.zmq_channel import RpcError

from .test_deploy_helpers import start


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    d = start(tmp_path_factory.mktemp("session"))
    try:
        yield d
    finally:
        d.stop()
        assert not any(h.alive() for h in d.handles.values())


def workload(s) -> list:
    """One handle program touching every op kind; returns the handles to compare."""
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(4, 5))
    img, ker = rng.normal(size=(2, 3, 6, 6)), rng.normal(size=(4, 3, 3, 3))
    x, w = s.share(a), s.share(b)
    y = x @ w
    z = ((y.relu() + 1.0) * y).softmax()
    c = s.share(img).conv2d(s.share(ker), bias=np.ones(4), padding=1)
    out = [y, z, x * x, x / 3.0, x.mean(0), x.max(axis=1), x.argmax(axis=0), (x < 0.3),
           x == x.T.T, sse.where(x > 0, x, -x), (x - 4.0).exp(), (x * x + 1).reciprocal(1, 30),
           sse.concatenate([x, a]).sum(axis=0), x[1:4, ::2].T, c, x @ b, 2.0 * x + a,
           y.sigmoid(), (x * x + 0.5).log(), (x * x + 0.5).rsqrt(), x / (x * x + 0.5),
           2.0 / (x * x + 0.5)]
    s.flush()
    out.append(y * 0.5)                      # a second batch, reusing y's opening
    return out


def test_remote_equals_local_bit_for_bit(dep):
    seed = b"remote-vs-local!"
    with sse.RemoteSession(dep.config, seed=seed) as r:
        remote = r._reveal_ring(workload(r))
    with sse.LocalSession(seed=seed) as s:
        local = s._reveal_ring(workload(s))
    assert len(remote) == len(local)
    for (ra, rf), (la, lf) in zip(remote, local):
        assert rf == lf and ra.shape == la.shape and np.array_equal(ra, la)


def test_readme_example_style_use_and_close_leaves_nothing(dep):
    with sse.RemoteSession(dep.config) as s:
        a = np.random.randn(4, 3)
        x = s.share(a)
        assert np.abs((x.relu() * 2).reveal() - 2 * np.maximum(a, 0)).max() <= 2 ** -15
        job = s.job
        with ClientSession(dep.config) as c:
            assert [h["state"] for h, _ in c.status(job)] == ["running", "running"]
            with pytest.raises(RpcError, match="is a session"):
                c.fetch(job)
    with sse.RemoteSession(dep.config, client="fuzzer") as other:   # the servers go on
        assert other.share(np.ones(2)).reveal().tolist() == [1.0, 1.0]
    with ClientSession(dep.config) as c:
        assert all(j["job"] != job for jobs in c.jobs() for j in jobs)   # deleted on both
    time.sleep(0.5)
    logs = dep.handles["dealer"].tail(200)
    assert logs.count(job) >= 2 and "released" in logs   # the dealer forgot the instance


def raw_batch(s, ops, reveal=(), free=(), arrays=((), ())):
    """Send a hand-made batch to both servers (as the session's next), the replies."""
    header = {"type": "session_ops", "job": s.job, "seq": s._seq, "ops": ops,
              "reveal": list(reveal), "free": list(free)}
    s._seq += 1
    rids = [rpc.send(header, a) for rpc, a in zip(s._rpc, arrays)]
    out = []
    for rpc, rid in zip(s._rpc, rids):
        try:
            out.append(rpc.receive(rid, what="test"))
        except RpcError as exc:
            out.append(str(exc))
    return out


def test_only_the_creator_drives_a_session(dep):
    with sse.RemoteSession(dep.config) as s:
        x = s.share(np.arange(3.0))
        s.flush()
        with ClientSession(dep.config, "fuzzer") as intruder:
            for t, extra in (("session_ops", {"seq": 1, "ops": [], "reveal": [x._id], "free": []}),
                             ("session_close", {}), ("status", {"since": 0}), ("delete", {}),
                             ("session_start", {"frac_bits": 16, "nonce": [b"0" * 16] * 2})):
                for rpc in intruder.rpc:
                    with pytest.raises(RpcError, match="belongs to another client"):
                        rpc.request({"type": t, "job": s.job, **extra})
        assert x.reveal().tolist() == [0.0, 1.0, 2.0]


def test_bad_batches_are_refused_on_both_servers_and_lose_nothing(dep):
    with sse.RemoteSession(dep.config) as s:
        x = s.share(np.arange(6.0).reshape(2, 3))
        s.flush()
        good = ["neg", 10**6, [x._id], {}]
        one = np.zeros(3, np.int64)
        cases = [
            ([["relu", 10**6, [999], {}]], "unknown handle 999"),
            ([["launch", 10**6, [x._id], {}]], "unknown op"),
            ([["reshape", 10**6, [x._id], {"shape": [5]}]], "cannot reshape"),
            ([["sum", 10**6, [x._id], {"axis": ["0"]}]], "axis must be an integer"),
            ([["reciprocal", 10**6, [x._id], {"lo": 1.0, "hi": 0.5}]], "0 < lo < hi"),
            ([["matmul", 10**6, [x._id, x._id], {}]], "matmul needs"),
            ([["index", 10**6, [x._id], {"idx": [["i", 7]]}]], "out of bounds"),
            ([["mul_public", 10**6, [x._id], {"v": 1, "s": 3}]], "scale"),
            ([["neg", x._id, [x._id], {}]], "exists already"),
            ([good, good], "exists already"),
            ([["neg", 0, [x._id], {}]], "handle id"),
            ([["neg", 10**6, [x._id], {"junk": 1}]], "unknown parameters"),
            ([[1, 2, 3]], "an op is"),
            ("ops", "ops must be a list"),
        ]
        for ops, needle in cases:
            for reply in raw_batch(s, ops):
                assert isinstance(reply, str) and "session op refused" in reply and needle in reply, \
                    (ops, reply)
        # a payload the batch does not use, a share of the wrong dtype, reveal/free unknown
        for reply in raw_batch(s, [good], arrays=([one], [one])):
            assert "not used by any op" in reply
        for reply in raw_batch(s, [["share", 10**6, [], {"a": 0}]], arrays=([one.view(np.uint64)],
                                                                           [one.view(np.uint64)])):
            assert "int64" in reply
        for reply in raw_batch(s, [], reveal=[424242]):
            assert "unknown handle 424242" in reply
        # the two servers sent different batches: both refuse
        header = {"type": "session_ops", "job": s.job, "seq": s._seq, "reveal": [], "free": []}
        s._seq += 1
        rids = [rpc.send({**header, "ops": [["neg", 10**6 + i, [x._id], {}]]}) for i, rpc in
                enumerate(s._rpc)]
        for rpc, rid in zip(s._rpc, rids):
            with pytest.raises(RpcError, match="different batches"):
                rpc.receive(rid)
        # out of order: refused on both, and the session goes on
        s._seq += 5
        with pytest.raises(sse.OpError, match="out of order"):
            (x + 1).reveal()
        s._seq -= 5                 # the servers consumed one number
        assert np.array_equal((x * 2).reveal(), np.arange(6.0).reshape(2, 3) * 2)


def test_random_mutations_of_a_batch_never_break_the_session(dep):
    """200 batches mutated at random (fields replaced, dropped, mistyped; ids and shapes
    off by one): each gets a reply on both servers, both agree on it, and the session's
    values stay intact."""
    rng = random.Random(3)
    values = [None, True, -1, 0, 2**64 - 1, -2**63, 1.5, "x", b"\x00", [], {}, [[1]], {"a": -1}, [1, 2, 3]]
    with sse.RemoteSession(dep.config) as s:
        a = np.arange(12.0).reshape(3, 4)
        x = s.share(a)
        s.flush()
        nid = 10**6
        for i in range(200):
            nid += 1
            op = rng.choice([["relu", nid, [x._id], {}], ["sum", nid, [x._id], {"axis": [1]}],
                             ["index", nid, [x._id], {"idx": [["s", 0, 2, 1]]}],
                             ["mul_public", nid, [x._id], {"v": 3, "s": 0}],
                             ["max", nid, [x._id], {"axis": 0}], ["lt", nid, [x._id, x._id], {}]])
            kind = rng.randrange(4)
            if kind == 0:
                op[rng.randrange(4)] = rng.choice(values)
            elif kind == 1:
                op[3] = {**op[3], rng.choice(["axis", "v", "s", "idx", "lo"]): rng.choice(values)}
            elif kind == 2:
                op[2] = [rng.choice([x._id, x._id + 1, 0, -5, 2**60])]
            replies = raw_batch(s, [op], reveal=[nid] if rng.random() < 0.5 else [],
                                free=[nid] if rng.random() < 0.3 else [])
            ok = [not isinstance(r, str) for r in replies]
            assert ok[0] == ok[1], replies
            assert all(isinstance(r, str) and "session op refused" in r for r in replies) or all(ok)
        assert np.array_equal(x.reveal(), a)


def test_idle_session_ends_and_says_why(dep):
    s = sse.RemoteSession(dep.config, idle=1.0)
    try:
        x = s.share(np.ones(2))
        assert x.reveal().tolist() == [1.0, 1.0]
        time.sleep(2.0)
        with pytest.raises(sse.SessionFailed, match="idle"):
            (x + 1).reveal()
        with pytest.raises(sse.SessionFailed):
            x.reveal()
    finally:
        s.close()


def test_a_dead_peer_ends_the_session_cleanly(tmp_path):
    d = start(tmp_path, peer_timeout=3.0)
    try:
        s = sse.RemoteSession(d.config, timeout=20.0)
        x = s.share(np.ones(4))
        assert x.reveal().sum() == 4
        d.handles["server1"].kill9()
        with pytest.raises(sse.SessionFailed, match="peer went away"):
            (x * x).relu().reveal()
        with pytest.raises(sse.SessionFailed):
            x.reveal()
        with ClientSession(d.config, timeout=10) as c:
            h, _ = c.rpc[0].request({"type": "status", "job": s.job, "since": 0})
            assert h["state"] == "failed" and "peer" in h["message"]
            assert c.rpc[0].request({"type": "ping"})[0]["type"] == "pong"
            d.restart("server1")                    # a restarted server fails what it held
            h, _ = c.rpc[1].request({"type": "status", "job": s.job, "since": 0})
            assert h["state"] == "failed" and "restarted" in h["message"]
        s.close()                                   # and the job goes from both
        with ClientSession(d.config, timeout=10) as c:
            assert all(j["job"] != s.job for jobs in c.jobs() for j in jobs)
    finally:
        d.stop()
        assert not any(h.alive() for h in d.handles.values())


def test_thousands_of_ops_and_reveals_fit_the_servers_message_caps(dep):
    with sse.RemoteSession(dep.config) as s:
        a = np.arange(3000.0)
        x = s.share(a)
        parts = [x[i] * 2 for i in range(3000)]          # 6000 ops: several batches
        got = s.reveal(*parts)                           # 3000 reveals: two batches of ids
        assert np.array_equal(np.array(got), 2 * a)
        del parts, got
        assert (x.sum() + 0).reveal() == a.sum()         # and 6000 frees, in pieces
