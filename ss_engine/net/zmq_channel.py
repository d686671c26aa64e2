"""ZeroMQ transport: CurveZMQ contexts, the party<->party channel, and a request client.

Every socket is CurveZMQ-encrypted and authenticated.  A *server* socket (the side that
binds) names a ZAP domain; :class:`CurveContext` runs pyzmq's ``ThreadAuthenticator`` and
accepts a client only if its public key is on that domain's allow-list, so an unknown key
never completes the handshake and receives nothing.  Messages use :mod:`.wire` frames.
Every socket also carries ZMQ_MAXMSGSIZE at its link's frame cap (:func:`frame_limit` of
the link's WireCaps), so not even an unauthenticated handshake can make libzmq buffer more.

:class:`ZmqPeerChannel` is the network twin of ``InMemoryChannel``: party 0 binds a ROUTER,
party 1 connects a DEALER (the ROUTER side always knows which connection is the session's
peer, and a send to a vanished peer fails at once; PAIR sockets do not reconnect reliably
over TCP).  A session handshake (HELLO tokens, repeated until both sides have seen each
other's) makes every new channel a fresh session; a HELLO with a new token
while a session runs means the peer restarted, and raises ``ChannelClosed`` at once instead
of waiting for the timeout.  A side waiting on a silent peer repeats its HELLO every second,
so a restarted peer (which, as party 0, cannot speak first) answers with its new token.  Every wait is bounded and ends in ``ChannelTimeout`` with the
endpoint in the message.  A round may carry more arrays than one message may (a batch of
many concurrent tasks): it goes in consecutive messages of at most ``caps.max_arrays``.

A planned round (a replayed run's: ``comm.channel.PlannedRound``) sends a 17-byte head
(message number, digest of the planned layout) instead of a msgpack header, and the
receiver checks the message's head, frame count and sizes against its own plan of the round
instead of decoding every array's descriptor.

Data plane (``bulk="aes-gcm"``, the default): the HELLOs above travel on the CurveZMQ socket
and carry, besides the tokens, a fresh AES-256 key per direction and (party 0's) the port of
an ephemeral TCP listener; party 1 connects to it and every data message then goes over
that one TCP connection sealed with AES-GCM under those keys (:mod:`.sealed`,
:mod:`.sealed_stream`).  Only the CurveZMQ-authenticated peer knows the keys, so the data
plane is as confidential and authenticated as CurveZMQ itself.  Party 0 accepts
connections until one sends a READY sealed under the peer's key, closes every other one
(counted in ``rejected_messages``), then stops listening; it polls all pending connections
at once and gives each stranger 1 s, so silent connections cannot delay the peer.  On the established connection a
message that fails authentication means tampering: the session ends (the run resumes from
its checkpoint).  ``bulk="curve"`` keeps data on the CurveZMQ socket (about 100 ms slower
per network-a step here).
"""
from __future__ import annotations

import dataclasses
import os
import socket
import struct
import threading
import time

import numpy as np
import zmq
from zmq.auth.thread import ThreadAuthenticator

from ..comm.channel import Channel, ChannelClosed, ChannelTimeout, PlannedRound
from .keys import KeyPair
from .sealed import KEY_BYTES, FrameSealer, SealError, new_key
from .sealed_stream import SealedStream, StrangerPolicy, accept_sealed, listen_ephemeral
from .wire import DEFAULT_CAPS, WireCaps, WireError, decode_message, encode_message

__all__ = ["CurveContext", "ZmqPeerChannel", "RpcClient", "RpcError", "user_id", "bind_retrying",
           "BULK_CIPHERS", "frame_limit", "endpoint_host"]

_POLL_SLICE_MS = 100
_HELLO_EVERY = 0.2
BULK_CIPHERS = ("aes-gcm", "curve")
#: a connection to the data port has 1 s to prove it is the peer and may make us read 4 KB;
#: 64 wait at once at most (the peer's READY follows its connect within one round trip)
_STRANGERS = StrangerPolicy(wait=1.0, max_pending=64, max_frames=2, max_bytes=4096)
_BYE_GRACE_MS = 500       # how long a lost data connection waits for the peer's BYE
_CURVE_FRAME_SLACK = 4096  # CURVE MESSAGE command name, nonce and MAC around a frame
_ANNOUNCE_EVERY = 1.0     # s of silence from the peer after which we repeat our HELLO
_MAX_ROUND_ARRAYS = 1 << 16   # arrays of one round, over all its messages
# a planned round's head frame: 0 (no msgpack header starts so), message number, layout digest
_PLANNED = 0
_PLANNED_HEAD = struct.Struct("<BQ8s")


def endpoint_host(endpoint: str) -> str:
    """"tcp://HOST:PORT" -> HOST (brackets of an IPv6 literal kept)."""
    if not endpoint.startswith("tcp://") or ":" not in endpoint[6:]:
        raise ValueError(f"peer endpoint must be tcp://HOST:PORT, got {endpoint!r}")
    return endpoint[6:].rsplit(":", 1)[0]


def _data_label(sender: int) -> bytes:
    return b"ss-engine peer data v1, sent by party %d" % sender


class CurveContext:
    """A zmq context whose server sockets authenticate clients by CurveZMQ public key."""

    def __init__(self, own: KeyPair):
        self.own = own
        self.ctx = zmq.Context()
        self._allow: dict[str, frozenset] = {}
        self._lock = threading.Lock()
        self._auth = ThreadAuthenticator(self.ctx)
        self._auth.start()

    # ThreadAuthenticator calls this (from its thread) for every CURVE handshake.
    def callback(self, domain: str, key: bytes) -> bool:
        return key in self._allow.get(domain, frozenset())

    def allow(self, domain: str, public_keys) -> None:
        """Replace ``domain``'s allow-list with these Z85 public keys."""
        with self._lock:
            self._allow[domain] = frozenset(bytes(k) for k in public_keys)
            self._auth.configure_curve_callback(domain, self)

    def server_socket(self, kind: int, domain: str, *, caps: WireCaps) -> zmq.Socket:
        """A CURVE server socket; no frame larger than ``caps`` allows is ever buffered."""
        s = self.ctx.socket(kind)
        s.curve_server = True
        s.curve_publickey, s.curve_secretkey = self.own.public, self.own.secret
        s.zap_domain = domain.encode()
        _common(s, caps)
        return s

    def client_socket(self, kind: int, server_public: bytes, *, caps: WireCaps) -> zmq.Socket:
        s = self.ctx.socket(kind)
        s.curve_serverkey = server_public
        s.curve_publickey, s.curve_secretkey = self.own.public, self.own.secret
        _common(s, caps)
        return s

    def close(self) -> None:
        try:
            self._auth.stop()
        finally:
            self.ctx.destroy(linger=0)


def frame_limit(caps: WireCaps) -> int:
    """The largest ZMTP frame a message within ``caps`` can need on the wire: its header
    or its largest array, plus the CURVE box around it.  Set as ZMQ_MAXMSGSIZE, libzmq
    drops a connection whose frame (a CURVE handshake command included, before any
    authentication) declares more, instead of allocating and buffering what it declares."""
    itemsize = max(np.dtype(d).itemsize for d in caps.dtypes)
    return max(caps.max_header_bytes, min(caps.max_total_bytes, caps.max_elements * itemsize)) \
        + _CURVE_FRAME_SLACK


def _common(s: zmq.Socket, caps: WireCaps) -> None:
    s.maxmsgsize = frame_limit(caps)
    s.linger = 0
    s.reconnect_ivl = 100
    s.reconnect_ivl_max = 1000
    # No ZMTP heartbeats: with libzmq 4.3.x they can abort the process
    # ("Assertion failed: !_io_error", zeromq/libzmq#4364); every wait here is bounded anyway.


def bind_retrying(sock: zmq.Socket, endpoint: str, wait: float = 5.0) -> None:
    """Bind, retrying while a just-closed socket of ours still holds the port (zmq closes
    sockets asynchronously)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            sock.bind(endpoint)
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                sock.close(linger=0)
                raise OSError(f"cannot bind {endpoint}: {exc}") from None
            time.sleep(0.05)


def user_id(frame: zmq.Frame) -> bytes:
    """The authenticated Z85 public key a message arrived with (set by the ZAP handler)."""
    try:
        return frame.get("User-Id").encode()
    except (zmq.ZMQError, AttributeError):
        return b""


class ZmqPeerChannel(Channel):
    """Counted, encrypted channel to the other party.

    rank 0 binds ``endpoint`` and accepts only ``peer_public``; rank 1 connects to it.
    Call :meth:`open` (the session handshake) before the first round.
    """

    def __init__(self, curve: CurveContext, rank: int, endpoint: str, peer_public: bytes, *,
                 timeout: float = 60.0, caps: WireCaps = DEFAULT_CAPS, domain: str = "peer",
                 bulk: str = "aes-gcm"):
        super().__init__()
        if rank not in (0, 1):
            raise ValueError("rank must be 0 or 1")
        if bulk not in BULK_CIPHERS:
            raise ValueError(f"bulk cipher must be one of {BULK_CIPHERS}, got {bulk!r}")
        self.bulk = bulk
        self.rejected_messages = 0   # data-plane messages dropped: failed authentication
        self._peer_hello: dict = {}
        self.rank, self.endpoint, self.timeout, self.caps = rank, endpoint, float(timeout), caps
        self.token = os.urandom(8).hex()
        self.peer_token: str | None = None
        self.peer_meta: dict = {}
        self._meta: dict = {}
        self.wire_bytes_sent = self.wire_bytes_received = 0
        self._out_seq = self._in_seq = 0
        self._closed = False
        self._peer_ident: bytes | None = None   # rank 0: the ROUTER id of the session's peer
        self._last_ident: bytes | None = None
        # with the AES-GCM data plane the CurveZMQ socket carries headers only (HELLO, BYE)
        sock_caps = caps if bulk == "curve" else dataclasses.replace(
            caps, max_arrays=0, max_elements=0, max_total_bytes=0)
        if rank == 0:
            curve.allow(domain, [peer_public])
            self.sock = curve.server_socket(zmq.ROUTER, domain, caps=sock_caps)
            self.sock.router_mandatory = True     # a vanished peer fails the send at once
            bind_retrying(self.sock, endpoint)
        else:
            self.sock = curve.client_socket(zmq.DEALER, peer_public, caps=sock_caps)
            self.sock.connect(endpoint)
        self.sock.sndtimeo = int(self.timeout * 1000)
        self._poller = zmq.Poller()
        self._poller.register(self.sock, zmq.POLLIN)
        self.data: SealedStream | None = None        # the data plane, once open() made it
        self._listener: socket.socket | None = None
        if bulk == "aes-gcm":
            self._send_key = new_key()
            if rank == 0:
                self._listener, self._data_port = listen_ephemeral(endpoint_host(endpoint))

    def _hello(self, meta: dict) -> dict:
        h = {"type": "hello", "s": self.token, "seen": self.peer_token or "", "meta": meta,
             "bulk": self.bulk}
        if self.bulk == "aes-gcm":
            h["dk"] = self._send_key
            if self.rank == 0:
                h["dp"] = self._data_port
        return h

    # -- session --------------------------------------------------------------------------
    def open(self, meta: dict | None = None, timeout: float | None = None) -> dict:
        """Handshake a fresh session; returns the peer's ``meta`` (e.g. its checkpoints)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else float(timeout))
        self._meta = dict(meta or {})
        peer_meta = self._handshake(self._meta, deadline)
        if self.bulk == "aes-gcm":
            self._start_data_plane(deadline)
        return peer_meta

    def _handshake(self, meta: dict, deadline: float) -> dict:
        seen_me = False
        last_hello = 0.0
        while True:
            now = time.monotonic()
            if now - last_hello >= _HELLO_EVERY:
                self._raw_send(self._hello(meta), handshake=True)
                last_hello = now
                if seen_me and self.peer_token:
                    return self.peer_meta
            if now > deadline:
                raise ChannelTimeout(f"party {self.rank}: no session with the peer at {self.endpoint} "
                                     f"within {self.timeout:.0f} s (is it running, are the keys right?)")
            if not self.sock.poll(min(_POLL_SLICE_MS, int(1000 * _HELLO_EVERY))):
                continue
            h, _ = self._raw_recv()
            if h["type"] == "hello":
                tok = h.get("s")
                if not isinstance(tok, str) or not isinstance(h.get("meta", {}), dict):
                    continue
                if tok != self.peer_token:
                    self.peer_token, seen_me = tok, False
                    self.peer_meta = h.get("meta", {})
                    last_hello = 0.0  # answer at once
                self._peer_hello = h
                self._peer_ident = self._last_ident
                if h.get("seen") == self.token:
                    seen_me = True
                    if self.peer_token:  # send one HELLO that names the peer, then go
                        self._raw_send(self._hello(meta), handshake=True)
                        return self.peer_meta
            elif h["type"] == "data" and h.get("s") == self.peer_token:
                raise ChannelClosed("peer sent data before the handshake finished")
            # anything else (stale data of an earlier session, bye) is ignored here

    def _start_data_plane(self, deadline: float) -> None:
        """Adopt the peer's key from its HELLO and open the sealed TCP stream: rank 1
        connects and sends a sealed READY; rank 0 accepts connections until one proves, by
        a READY sealed under the peer's key, that it is the peer (anything else is closed
        and counted in ``rejected_messages``), then stops listening."""
        h = self._peer_hello
        if h.get("bulk", "curve") != self.bulk:
            raise ChannelClosed(f"the peer sends data with {h.get('bulk', 'curve')!r}, we with "
                                f"{self.bulk!r}: the two servers' configurations differ")
        key = h.get("dk")
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise ChannelClosed("the peer's HELLO carries no valid data key")
        sealer = FrameSealer(self._send_key, _data_label(self.rank))
        opener = FrameSealer(key, _data_label(1 - self.rank))
        if self.rank == 1:
            port = h.get("dp")
            if not isinstance(port, int) or not 0 < port < 65536:
                raise ChannelClosed("the peer's HELLO carries no valid data port")
            host = endpoint_host(self.endpoint).strip("[]")
            try:
                conn = socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic()))
            except OSError as exc:
                raise ChannelClosed(f"party 1: cannot reach the peer's data port {port}: {exc}") from None
            self.data = SealedStream(conn, sealer, opener)
            self._seal_send({"type": "ready", "s": self.token})
        else:
            self.data = self._accept_peer(sealer, opener, deadline)
        # the peer is authenticated now: its messages may be as large as the wire caps allow
        self.data.max_frames = self.caps.max_arrays + 1
        self.data.max_bytes = self.caps.max_total_bytes + self.caps.max_header_bytes + \
            (self.caps.max_arrays + 1) * 16
        self._poller.register(self.data.fileno(), zmq.POLLIN)

    def _accept_peer(self, sealer: FrameSealer, opener: FrameSealer, deadline: float) -> SealedStream:
        def is_peer(plain: list[bytes]) -> bool:
            try:
                hdr, _ = decode_message(plain, self.caps)
            except WireError:
                return False
            return hdr["type"] == "ready" and hdr.get("s") == self.peer_token

        def reject() -> None:
            self.rejected_messages += 1
        try:
            stream = accept_sealed(self._listener, sealer, opener, is_peer, deadline, _STRANGERS, reject)
        except ChannelTimeout:
            raise ChannelTimeout(f"party 0: the peer never connected to the data port "
                                 f"{self._data_port} (is it reachable from server 1?)") from None
        self._listener.close()   # the session has its one connection: nobody else may connect
        self._listener = None
        return stream

    def _seal_send(self, header: dict, arrays=()) -> None:
        if self._closed:
            raise ChannelClosed("channel is closed")
        self.wire_bytes_sent += self.data.send(encode_message(header, arrays))

    def _data_frames(self) -> list:
        """The next message of the (authenticated) data stream, opened.  A message that fails
        authentication there means tampering on the wire: the session ends."""
        try:
            plain, nbytes = self.data.recv(self.timeout)
        except SealError as exc:
            raise ChannelClosed(f"peer data failed authentication ({exc}): session closed") from None
        self.wire_bytes_received += nbytes
        return plain

    def _planned_arrays(self, frames: list, planned: PlannedRound) -> list[np.ndarray]:
        """A planned round's message, checked against its plan as a whole: the head names
        the next message and the digest of the planned layout, the frames have its sizes."""
        head = frames[0]
        if len(head) != _PLANNED_HEAD.size or head[0] != _PLANNED:
            raise ChannelClosed("the peer sent an unplanned message in a planned round")
        _, seq, digest = _PLANNED_HEAD.unpack(head)
        if seq != self._in_seq:
            raise ChannelClosed(f"peer message {seq} out of order (expected {self._in_seq})")
        if digest != planned.receive_digest or len(frames) - 1 != len(planned.receives) or \
                any(len(f) != n for f, n in zip(frames[1:], planned.receive_nbytes)):
            raise ChannelClosed("the peer's message does not match the round's plan")
        self._in_seq += 1
        out = []
        for f, (dt, shape) in zip(frames[1:], planned.receives):
            a = np.frombuffer(f, dtype=dt).reshape(shape)
            a.flags.writeable = False
            out.append(a)
        return out

    # -- transport hooks ------------------------------------------------------------------
    def _raw_send(self, header: dict, arrays=(), *, handshake: bool = False) -> None:
        if self._closed:
            raise ChannelClosed("channel is closed")
        frames = encode_message(header, arrays)
        if self.rank == 0:
            if self._peer_ident is None:
                if handshake:
                    return  # rank 0 answers the connecting peer's HELLO
                raise ChannelClosed("no peer in this session")
            frames = [self._peer_ident, *frames]
        self._send_frames(self.sock, frames, handshake)

    def _send_frames(self, sock: zmq.Socket, frames: list, handshake: bool) -> None:
        try:
            # The caller may reuse its arrays as soon as we return: copied (~0.1 ms per MB),
            # which is cheaper than waiting on a zmq send tracker (~0.2 ms per message).
            sock.send_multipart(frames, copy=True, flags=zmq.NOBLOCK if handshake else 0)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                if handshake:
                    return
                raise ChannelClosed(f"party {self.rank}: the peer disconnected") from None
            if exc.errno != zmq.EAGAIN:
                raise ChannelClosed(f"send to {self.endpoint} failed: {exc}") from None
            if handshake:
                return  # no peer connected yet; the HELLO is repeated
            raise ChannelTimeout(f"party {self.rank}: the peer at {self.endpoint} took no message "
                                 f"within {self.timeout:.0f} s") from None
        self.wire_bytes_sent += sum(memoryview(f).nbytes for f in frames)

    def _raw_recv(self) -> tuple[dict, list[np.ndarray]]:
        frames = self.sock.recv_multipart(copy=False)
        if self.rank == 0:
            self._last_ident, frames = frames[0].bytes, frames[1:]
        self.wire_bytes_received += sum(len(f) for f in frames)
        try:
            return decode_message(frames, self.caps)
        except WireError as exc:
            raise ChannelClosed(f"malformed message from the peer: {exc}") from None

    def _send(self, arrays: list[np.ndarray]) -> None:
        """One round's arrays, in messages of at most ``caps.max_arrays`` each (a round
        of many concurrent tasks may carry more; "more" says another part follows)."""
        if self.peer_token is None or (self.bulk == "aes-gcm" and self.data is None):
            raise ChannelClosed("call open() before the first round")
        step = max(self.caps.max_arrays, 1)
        starts = range(0, len(arrays), step) if arrays else [0]
        for i in starts:
            header = {"type": "data", "s": self.token, "n": self._out_seq}
            if i + step < len(arrays):
                header["more"] = True
            part = arrays[i:i + step]
            if self.data is not None:
                self._seal_send(header, part)
            else:
                self._raw_send(header, part)
            self._out_seq += 1

    def _one_planned_message(self, arrays) -> bool:
        """A planned round goes as one planned message on the data plane, unless it carries
        more arrays than one message may (then as any round: both sides decide alike, from
        the same plan)."""
        return self.data is not None and len(arrays) <= self.caps.max_arrays

    def _send_planned(self, arrays: list[np.ndarray], planned: PlannedRound) -> None:
        """A planned round's message: a 17-byte head (message number, the plan's digest of
        the layout) instead of a msgpack header describing every array."""
        if not self._one_planned_message(planned.sends):
            return self._send(arrays)
        if self._closed:
            raise ChannelClosed("channel is closed")
        head = _PLANNED_HEAD.pack(_PLANNED, self._out_seq, planned.send_digest)
        self.wire_bytes_sent += self.data.send([head, *arrays])
        self._out_seq += 1

    def _recv_planned(self, planned: PlannedRound) -> list[np.ndarray]:
        if not self._one_planned_message(planned.receives):
            return self._recv()
        return self._recv_message(planned)[1]

    def _recv(self) -> list[np.ndarray]:
        """One round's arrays: the peer's messages up to one without "more"."""
        arrays, more = [], True
        while more:
            h, part = self._recv_message(None)
            more = h.get("more", False) is True
            if more or arrays:   # a round in several messages outlives the stream's buffers
                part = [a.copy() for a in part]
            arrays += part
            if len(arrays) > _MAX_ROUND_ARRAYS:
                raise ChannelClosed(f"the peer sent a round of over {_MAX_ROUND_ARRAYS} arrays")
        return arrays

    def _recv_message(self, planned: PlannedRound | None) -> tuple[dict | None, list[np.ndarray]]:
        """The peer's next data message: (header, arrays), or for a planned round (None,
        arrays) checked against its plan."""
        if self._closed:
            raise ChannelClosed("channel is closed")
        deadline = time.monotonic() + self.timeout
        quiet_since = time.monotonic()
        while True:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                raise ChannelTimeout(f"party {self.rank}: no message from the peer at {self.endpoint} "
                                     f"within {self.timeout:.0f} s")
            ready = dict(self._poller.poll(int(min(left * 1000, _POLL_SLICE_MS)) + 1))
            if not ready:
                if now - quiet_since >= _ANNOUNCE_EVERY:
                    self._announce()
                    quiet_since = now
                continue
            if self.sock in ready:   # the CurveZMQ socket: handshake echoes, BYE (and data
                h, arrays = self._raw_recv()  # when bulk="curve")
            else:
                try:
                    frames = self._data_frames()
                    if planned is not None:
                        return None, self._planned_arrays(frames, planned)
                    h, arrays = decode_message(frames, self.caps)
                except (ChannelClosed, WireError) as exc:
                    # a peer that leaves says why on the CurveZMQ socket; prefer its words
                    if self.sock.poll(_BYE_GRACE_MS):
                        self._raise_for_control(self._raw_recv()[0])
                    if isinstance(exc, WireError):
                        raise ChannelClosed(f"malformed message from the peer: {exc}") from None
                    raise
            t, tok = h["type"], h.get("s")
            if (t == "hello" and tok == self.peer_token) or (t == "bye" and tok != self.peer_token):
                # a late copy of the handshake, or the BYE of an earlier session (the peer's
                # closed socket lingers and its reconnect delivers it to our new one)
                continue
            self._raise_for_control(h)
            if t != "data" or tok != self.peer_token or (self.data is not None and self.sock in ready):
                raise ChannelClosed(f"unexpected {t!r} message on the peer channel")
            if self.data is None:
                self._peer_ident = self._last_ident  # the peer may have reconnected
            if h.get("n") != self._in_seq:
                raise ChannelClosed(f"peer message {h.get('n')} out of order (expected {self._in_seq})")
            self._in_seq += 1
            return h, arrays

    def _announce(self) -> None:
        """Repeat this session's HELLO while the peer is silent.  A peer that restarted is
        waiting in its handshake for a HELLO, and a restarted party 0 cannot speak first (its
        ROUTER learns party 1's address from party 1's message): it answers with its new
        session's HELLO, which ends this session at once (:meth:`_raise_for_control`) instead
        of after ``timeout``.  A ROUTER whose peer has gone learns it here (EHOSTUNREACH)."""
        frames = encode_message(self._hello(self._meta))
        if self.rank == 0:
            frames = [self._peer_ident, *frames]
        try:
            self.sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                raise ChannelClosed("party 0: the peer disconnected") from None
            return   # EAGAIN: the peer is not reading; nothing to learn from that
        self.wire_bytes_sent += sum(len(f) for f in frames)

    def _raise_for_control(self, h: dict) -> None:
        """A peer's HELLO of a new session or its BYE ends this session: say which."""
        if h["type"] == "hello" and h.get("s") != self.peer_token:
            raise ChannelClosed("the peer restarted (new session); the run must resume")
        if h["type"] == "bye" and h.get("s") == self.peer_token:
            raise ChannelClosed(f"the peer closed the session: {str(h.get('reason', ''))[:200]}")

    def close(self, reason: str = "") -> None:
        if self._closed:
            return
        if self.peer_token is not None and (self.rank == 1 or self._peer_ident is not None):
            try:
                self.sock.linger = 200
                head = [self._peer_ident] if self.rank == 0 else []
                self.sock.send_multipart(head + encode_message(
                    {"type": "bye", "s": self.token, "reason": reason[:200]}), flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        self._closed = True
        self.sock.close()
        if self.data is not None:
            self.data.close()
        if self._listener is not None:
            self._listener.close()


class RpcError(RuntimeError):
    """The server answered a request with an error reply."""


class RpcClient:
    """Request/reply over a DEALER socket with per-request ids and a bounded wait."""

    def __init__(self, curve: CurveContext, endpoint: str, server_public: bytes, *,
                 timeout: float = 30.0, caps: WireCaps = DEFAULT_CAPS):
        self.endpoint, self.timeout, self.caps = endpoint, float(timeout), caps
        self._curve, self._server_public = curve, server_public
        self.sock = self._connect()
        self._rid = 0
        self.bytes_sent = self.bytes_received = 0

    def _connect(self) -> zmq.Socket:
        sock = self._curve.client_socket(zmq.DEALER, self._server_public, caps=self.caps)
        sock.connect(self.endpoint)
        return sock

    def request(self, header: dict, arrays=(), timeout: float | None = None
                ) -> tuple[dict, list[np.ndarray]]:
        return self.receive(self.send(header, arrays), timeout, header.get("type"))

    def send(self, header: dict, arrays=()) -> int:
        """Send a request without waiting; returns its id for :meth:`receive` (a client
        that talks to both servers sends to both before waiting for either)."""
        self._rid += 1
        frames = encode_message({**header, "rid": self._rid}, arrays)
        self.sock.send_multipart(frames, copy=False)
        self.bytes_sent += sum(memoryview(f).nbytes for f in frames)
        return self._rid

    def receive(self, rid: int, timeout: float | None = None, what: str | None = None
                ) -> tuple[dict, list[np.ndarray]]:
        """The reply to request ``rid``; RpcError for an error reply, ChannelTimeout if
        none comes in time."""
        wait = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(max(1, int(left * 1000))):
                # start the next request on a fresh connection (the server may have restarted)
                self.sock.close(linger=0)
                self.sock = self._connect()
                raise ChannelTimeout(f"no reply from {self.endpoint} within {wait:.0f} s to "
                                     f"{what!r} (server down, or our key not authorised)")
            got = self.sock.recv_multipart(copy=False)
            self.bytes_received += sum(len(f) for f in got)
            h, arrays = decode_message(got, self.caps)
            if h.get("rid") != rid:
                continue  # a late reply to a request that already timed out
            if h["type"] == "error":
                raise RpcError(f"{self.endpoint}: {h.get('message', 'error')}")
            return h, arrays

    def close(self) -> None:
        self.sock.close(linger=0)
