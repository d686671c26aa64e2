"""ZmqPeerChannel and RpcClient over loopback: exact counts, CurveZMQ auth, bounded waits."""
from __future__ import annotations

import os
import socket
import struct
import threading
import time

import numpy as np
import pytest
import zmq

from ss_engine.comm import ChannelClosed, ChannelTimeout, memory_channel_pair
from ss_engine.net.keys import (KeyFileError, generate_keypair, keygen, load_keypair,
                                 load_public_key, save_keypair)
from ss_engine.net.wire import DEFAULT_CAPS, decode_message, encode_message
from ss_engine.net.zmq_channel import CurveContext, RpcClient, ZmqPeerChannel, user_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pair():
    k0, k1 = generate_keypair(), generate_keypair()
    c0, c1 = CurveContext(k0), CurveContext(k1)
    ep = f"tcp://127.0.0.1:{free_port()}"
    chans = []

    def make(timeout=10.0, peer1=None, bulk=("aes-gcm", "aes-gcm")):
        a = ZmqPeerChannel(c0, 0, ep, k1.public, timeout=timeout, bulk=bulk[0])
        b = ZmqPeerChannel(c1, 1, ep, (peer1 or k0).public, timeout=timeout, bulk=bulk[1])
        chans.extend([a, b])
        return a, b
    try:
        yield make, (k0, k1), (c0, c1), ep
    finally:
        for ch in chans:
            ch.close()
        c0.close()
        c1.close()


def _run_both(f0, f1):
    out, errs = [None, None], []

    def run(i, f):
        try:
            out[i] = f()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errs.append(exc)
    ts = [threading.Thread(target=run, args=(i, f)) for i, f in enumerate((f0, f1))]
    [t.start() for t in ts]
    [t.join(60) for t in ts]
    assert not any(t.is_alive() for t in ts), "a party hung"
    if errs:
        raise errs[0]
    return out


def _protocol(ch, rank):
    """A little SPMD script touching every counted call."""
    rng = np.random.default_rng(rank)
    got = []
    for n in (0, 1, 1000, 200_000):
        mine = rng.integers(-2**63, 2**63 - 1, size=n, dtype=np.int64)
        theirs = ch.exchange([mine, mine[:3].astype(np.uint8)], label="open")
        got.append(theirs[0].copy())
        if isinstance(ch, ZmqPeerChannel):
            mine[:] = 0  # reusing a sent buffer must not corrupt what the peer got
    # a round of many concurrent tasks: more arrays than one message may carry
    wide = [np.full(i % 5, 1000 * rank + i, np.int64) for i in range(2 * DEFAULT_CAPS.max_arrays + 5)]
    got += [a.copy() for a in ch.exchange(wide, label="wide")]
    if rank == 0:
        ch.send_only([np.arange(5, dtype=np.uint64)], label="one-way")
        ch.send_only(wide, label="one-way")
    else:
        got.append(ch.recv_only(label="one-way")[0].copy())
        got += [a.copy() for a in ch.recv_only(label="one-way")]
    return got


@pytest.mark.parametrize("bulk", ["aes-gcm", "curve"])
def test_exchange_matches_memory_channel(pair, bulk):
    make, *_ = pair
    a, b = make(bulk=(bulk, bulk))
    _run_both(lambda: a.open({"r": 0}), lambda: b.open({"r": 1}))
    assert a.peer_meta == {"r": 1} and b.peer_meta == {"r": 0}
    g0, g1 = _run_both(lambda: _protocol(a, 0), lambda: _protocol(b, 1))
    m0, m1 = memory_channel_pair(10)
    r0, r1 = _run_both(lambda: _protocol(m0, 0), lambda: _protocol(m1, 1))
    assert len(g0 + g1) == len(r0 + r1) == 2 * 4 + 2 * (2 * DEFAULT_CAPS.max_arrays + 5) + 1 + 133
    for x, y in zip(g0 + g1, r0 + r1):
        assert np.array_equal(x, y)
    for z, m in ((a, m0), (b, m1)):
        assert z.stats.as_dict() | {"wait_seconds": 0} == m.stats.as_dict() | {"wait_seconds": 0}
        assert z.stats.by_label == m.stats.by_label
        assert z.wire_bytes_sent > z.stats.bytes_sent  # headers + encryption


def test_bulk_cipher_mismatch_is_a_clear_error(pair):
    make, *_ = pair
    a, b = make(timeout=5, bulk=("aes-gcm", "curve"))
    errs = []

    def op(ch):
        try:
            ch.open()
        except (ChannelClosed, ChannelTimeout) as exc:
            errs.append(exc)
    _run_both(lambda: op(a), lambda: op(b))
    assert any("configurations differ" in str(e) for e in errs)


def test_stranger_on_the_data_port_is_dropped_not_fatal(pair):
    """Anyone can open a TCP connection to party 0's data port while the session starts;
    what they send fails authentication (or is nothing at all), the connection is closed and
    counted, the real peer is accepted, and afterwards the port is closed."""
    make, *_ = pair
    a, b = make(timeout=15)
    strangers = []
    for payload in (os.urandom(100),                                   # garbage
                    struct.pack("<IQ", 1, 40) + os.urandom(40),         # well framed, forged
                    struct.pack("<IQ", 1, 1 << 40),                     # a 1 TB frame "coming"
                    b""):                                               # silence
        s = socket.create_connection(("127.0.0.1", a._data_port))
        s.sendall(payload)
        strangers.append(s)
    try:
        _run_both(a.open, b.open)
        x = np.arange(10, dtype=np.int64)
        got = _run_both(lambda: a.exchange([x]), lambda: b.exchange([x * 2]))
        assert np.array_equal(got[0][0], x * 2) and np.array_equal(got[1][0], x)
        assert a.rejected_messages == 4 and b.rejected_messages == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", a._data_port), timeout=1).close()
    finally:
        for s in strangers:
            s.close()


def test_fifty_silent_strangers_do_not_delay_the_peer(pair, record_property):
    """A co-tenant who reads the data port from /proc/net/tcp and opens silent connections
    to it must not stall the session: the peer's READY is read the moment it arrives."""
    make, *_ = pair
    seconds = {}
    for n in (0, 50):
        a, b = make(timeout=15)
        strangers = [socket.create_connection(("127.0.0.1", a._data_port)) for _ in range(n)]
        try:
            t0 = time.monotonic()
            _run_both(lambda: a.open(None, 10), lambda: b.open(None, 10))
            seconds[n] = time.monotonic() - t0
            x = np.arange(10, dtype=np.int64)
            got = _run_both(lambda: a.exchange([x]), lambda: b.exchange([x * 2]))
            assert np.array_equal(got[0][0], x * 2) and np.array_equal(got[1][0], x)
            assert a.rejected_messages == n
        finally:
            for s in strangers:
                s.close()
            a.close()
            b.close()
    record_property("handshake_seconds", seconds)
    assert seconds[50] < 2.0, seconds   # each stranger used to hold the port for up to 5 s


def test_tampered_data_ends_the_session_cleanly(pair):
    """A forged message on the authenticated connection (bits flipped in transit) is
    refused with a clear error instead of being used."""
    make, *_ = pair
    a, b = make(timeout=5)
    _run_both(a.open, b.open)
    real = b.data.sock
    frames = encode_message({"type": "data", "s": b.token, "n": 0}, [np.zeros(4, np.int64)])
    sealed = b.data._sealer.seal(b.data._out, frames)
    sealed[1] = bytes([sealed[1][0] ^ 1]) + sealed[1][1:]
    head = struct.pack("<I", len(sealed)) + struct.pack(f"<{len(sealed)}Q", *map(len, sealed))
    real.sendall(head + b"".join(sealed))
    with pytest.raises(ChannelClosed, match="failed authentication"):
        a.recv_only()


def test_unauthorised_key_learns_nothing(pair):
    make, (k0, k1), (c0, c1), ep = pair
    a = ZmqPeerChannel(c0, 0, ep, k1.public, timeout=1.5)
    intruder = CurveContext(generate_keypair())
    try:
        b = ZmqPeerChannel(intruder, 1, ep, k0.public, timeout=1.5)
        errs = []
        _run_both(lambda: _expect_timeout(a, errs), lambda: _expect_timeout(b, errs))
        assert len(errs) == 2 and all("within" in str(e) for e in errs)
        assert b.wire_bytes_received == 0 and a.wire_bytes_received == 0
        b.close()
    finally:
        a.close()
        intruder.close()


def _expect_timeout(ch, errs):
    try:
        ch.open()
    except ChannelTimeout as exc:
        errs.append(exc)


def test_recv_timeout_is_clear_not_a_hang(pair):
    make, *_ = pair
    a, b = make(timeout=0.5)
    _run_both(a.open, b.open)
    t0 = time.monotonic()
    with pytest.raises(ChannelTimeout, match="no message from the peer"):
        a.recv_only()
    assert time.monotonic() - t0 < 3


@pytest.mark.parametrize("bulk", ["aes-gcm", "curve"])
def test_an_earlier_sessions_bye_does_not_end_the_next(pair, bulk):
    """A closed DEALER lingers, and its reconnect can hand the peer's new ROUTER the BYE
    of the session before: that BYE names the old token and must be ignored (it ended
    a remote session of the next client with "the peer closed the session")."""
    make, *_ = pair
    a, b = make(bulk=(bulk, bulk))
    _run_both(a.open, b.open)
    for stale, to in ((b, a), (a, b)):
        stale._raw_send({"type": "bye", "s": "0" * 16, "reason": "an earlier session"})
        got = _run_both(lambda: to.recv_only(), lambda: stale.send_only([np.arange(3)]))[0]
        assert np.array_equal(got[0], np.arange(3))
    b.close("this session")
    with pytest.raises(ChannelClosed, match="this session"):
        a.recv_only()


def test_peer_close_and_restart_detected(pair):
    make, (k0, k1), (c0, c1), ep = pair
    a, b = make(timeout=20)
    _run_both(a.open, b.open)
    b.close("test over")
    with pytest.raises(ChannelClosed, match="test over"):
        a.recv_only()
    a.close()
    # a restarted peer (new session) is noticed at once, not after the timeout
    a2, b2 = make(timeout=20)
    _run_both(a2.open, b2.open)
    b2.sock.close()  # crash without goodbye
    b3 = ZmqPeerChannel(c1, 1, ep, k0.public, timeout=20)
    t0 = time.monotonic()
    th = threading.Thread(target=b3.open, args=(None, 12))
    th.start()
    with pytest.raises(ChannelClosed, match="restarted"):
        a2.recv_only()
    assert time.monotonic() - t0 < 12  # well before a2's 20 s timeout (usually < 0.5 s)
    a2.close()
    a3 = ZmqPeerChannel(c0, 0, ep, k1.public, timeout=12)
    a3.open()  # the survivor's next session meets the restarted peer
    th.join()
    assert b3.peer_token == a3.token
    a3.close()
    b3.close()


@pytest.mark.parametrize("bulk", ["aes-gcm", "curve"])
def test_restart_of_party_0_detected_by_the_waiting_party_1(pair, bulk):
    """Party 0 crashes (no BYE, its data connection, if any, left open) and a new party 0
    binds the endpoint: party 1, waiting for a message, must learn of the new session within
    seconds although party 0 can never speak first (issue 10: it waited out its timeout)."""
    make, (k0, k1), (c0, c1), ep = pair
    a, b = make(timeout=30, bulk=(bulk, bulk))
    _run_both(a.open, b.open)
    a.sock.close()   # the crash, as the peer's zmq socket sees it
    a._closed = True
    a2 = ZmqPeerChannel(c0, 0, ep, k1.public, timeout=30, bulk=bulk)
    th = threading.Thread(target=a2.open, args=(None, 10))
    th.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(ChannelClosed, match="restarted"):
            b.recv_only()
        assert time.monotonic() - t0 < 5   # ~1 s: one repeated HELLO; it was 30 s
        b2 = ZmqPeerChannel(c1, 1, ep, k0.public, timeout=30, bulk=bulk)
        b2.open(None, 10)   # and the two rejoin in a new session
        th.join()
        assert b2.peer_token == a2.token and a2.peer_token == b2.token
        x = np.arange(3, dtype=np.int64)
        assert np.array_equal(_run_both(lambda: a2.exchange([x]), lambda: b2.exchange([x]))[0][0], x)
        b2.close()
    finally:
        th.join()
        a2.close()


def test_rpc_client_and_user_id(tmp_path):
    ks, kc, kx = generate_keypair(), generate_keypair(), generate_keypair()
    cs, cc, cx = CurveContext(ks), CurveContext(kc), CurveContext(kx)
    cs.allow("clients", [kc.public])
    srv = cs.server_socket(zmq.ROUTER, "clients", caps=DEFAULT_CAPS)
    port = srv.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            if srv.poll(50):
                ident, *frames = srv.recv_multipart(copy=False)
                h, arrays = decode_message(frames)
                reply = {"type": "ok", "rid": h["rid"], "who": user_id(frames[0]).decode()}
                srv.send_multipart([ident, *encode_message(reply, [arrays[0] * 2])])
    th = threading.Thread(target=serve)
    th.start()
    try:
        rc = RpcClient(cc, f"tcp://127.0.0.1:{port}", ks.public, timeout=5)
        h, (x,) = rc.request({"type": "double"}, [np.arange(4, dtype=np.int64)])
        assert h["who"] == kc.public.decode() and list(x) == [0, 2, 4, 6]
        rx = RpcClient(cx, f"tcp://127.0.0.1:{port}", ks.public, timeout=1)
        with pytest.raises(ChannelTimeout, match="not authorised"):
            rx.request({"type": "double"}, [np.arange(4, dtype=np.int64)])
        rc.close()
        rx.close()
    finally:
        stop.set()
        th.join()
        srv.close()
        for c in (cs, cc, cx):
            c.close()


def test_key_files(tmp_path):
    paths = keygen(tmp_path, ["server0", "client"])
    pub, sec = paths["server0"]
    assert os.stat(sec).st_mode & 0o777 == 0o600
    kp = load_keypair(tmp_path, "server0")
    assert load_public_key(pub) == kp.public and "secret" not in repr(kp).lower().replace("keypair", "")
    assert keygen(tmp_path, ["server0"])["server0"] == paths["server0"]
    assert load_keypair(tmp_path, "server0") == kp  # kept, not regenerated
    os.chmod(sec, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_keypair(tmp_path, "server0")
    with pytest.raises(KeyFileError, match="not found"):
        load_keypair(tmp_path, "nobody")
    save_keypair(generate_keypair(), tmp_path, "x")
    (tmp_path / "x.key").write_text("garbage")
    with pytest.raises(KeyFileError, match="Z85"):
        load_keypair(tmp_path, "x")
    with pytest.raises(KeyFileError, match="invalid key name"):
        keygen(tmp_path, ["../evil"])


def test_every_socket_is_capped_at_its_links_largest_frame():
    """ZMQ_MAXMSGSIZE on every socket (issue 10: a CURVE greeting declaring a 4 GiB command
    was buffered before authentication).  The peer socket carries only headers when the
    data travels AES-GCM sealed; the client link's cap is one upload chunk."""
    from ss_engine.deploy.protocol import CLIENT_CAPS_KW, MAX_CHUNK_BYTES
    from ss_engine.net.dealer_link import DEALER_REQUEST_CAPS
    from ss_engine.net.wire import WireCaps
    from ss_engine.net.zmq_channel import frame_limit
    assert frame_limit(WireCaps(**CLIENT_CAPS_KW)) - MAX_CHUNK_BYTES <= 4096
    assert frame_limit(DEALER_REQUEST_CAPS) <= (4 << 20) + 4096
    k0, k1 = generate_keypair(), generate_keypair()
    c0, c1 = CurveContext(k0), CurveContext(k1)
    ep = f"tcp://127.0.0.1:{free_port()}"
    try:
        for bulk, want in (("aes-gcm", DEFAULT_CAPS.max_header_bytes), ("curve", 8 << 24)):
            a = ZmqPeerChannel(c0, 0, ep, k1.public, bulk=bulk)
            b = ZmqPeerChannel(c1, 1, ep, k0.public, bulk=bulk)
            assert a.sock.maxmsgsize == b.sock.maxmsgsize == want + 4096, bulk
            a.close()
            b.close()
        rpc = RpcClient(c1, ep, k0.public)
        assert rpc.sock.maxmsgsize == frame_limit(DEFAULT_CAPS)
        rpc.close()
    finally:
        c0.close()
        c1.close()


def test_planned_rounds_check_the_message_against_the_plan(pair):
    """A planned round sends a short head instead of a msgpack header; the receiver checks
    it against its own plan of the round, and refuses a message of another layout."""
    make, *_ = pair
    a, b = make(timeout=5)
    _run_both(a.open, b.open)
    x, y = np.arange(6, dtype=np.int64).reshape(2, 3), np.arange(4, dtype=np.uint64)
    pa = a.plan_round([("<i8", (2, 3))], [("<u8", (4,))])
    pb = b.plan_round([("<u8", (4,))], [("<i8", (2, 3))])
    got = _run_both(lambda: a.exchange([x], "r", pa), lambda: b.exchange([y], "r", pb))
    assert np.array_equal(got[0][0], y) and np.array_equal(got[1][0], x)
    assert got[1][0].dtype == np.int64 and not got[1][0].flags.writeable
    sent = a.wire_bytes_sent
    _run_both(lambda: a.exchange([x], "r", pa), lambda: b.exchange([y], "r", pb))
    assert a.wire_bytes_sent - sent < x.nbytes + 100     # a 17-byte head, two tags, lengths
    # a planned round of more arrays than one message may carry goes as any round, both
    # sides deciding so from the plan
    k = 2 * DEFAULT_CAPS.max_arrays + 3
    wide = [np.full(3, i, np.int64) for i in range(k)]
    pw = [ch.plan_round([("<i8", (3,))] * k, [("<i8", (3,))] * k) for ch in (a, b)]
    got = _run_both(lambda: a.exchange(wide, "w", pw[0]), lambda: b.exchange(wide, "w", pw[1]))
    assert all(np.array_equal(g, w) for side in got for g, w in zip(side, wide)) and len(got[0]) == k
    # the peer planned another layout for the round: refused, not misread
    wrong = b.plan_round([("<u8", (4,))], [("<i8", (3, 2))])
    with pytest.raises(ChannelClosed, match="plan"):
        _run_both(lambda: a.send_only([x], "r", pa), lambda: b.recv_only("r", wrong))


def test_a_round_in_several_messages_keeps_every_part(pair):
    """A round of more arrays than one message carries arrives in several messages, each
    opened into the data stream's reused buffers: the earlier parts must not be overwritten
    by the later ones before the round is returned."""
    make, *_ = pair
    a, b = make(timeout=10)
    _run_both(a.open, b.open)
    k = 3 * DEFAULT_CAPS.max_arrays + 1
    mine = [[np.full(1000, 1_000_000 * r + i, np.int64) for i in range(k)] for r in (0, 1)]
    got = _run_both(lambda: a.exchange(mine[0], "wide"), lambda: b.exchange(mine[1], "wide"))
    for r in (0, 1):
        assert len(got[r]) == k
        assert all(np.array_equal(g, w) for g, w in zip(got[r], mine[1 - r]))
