"""The dealer link's data plane: whole-run blobs sealed with AES-GCM on a plain TCP stream.

Why: the dealer pushes party 1 one blob per training step (7 MB for network-a); through
CurveZMQ that costs both sides' zmq I/O threads about 10-16 ms of CPU per step here
(XSalsa20-Poly1305 after a copy), on top of the step's own ~15-30 ms.  The peer channel
solved the same problem the same way (``sealed``, ``sealed_stream``).

How: the dealer listens on one TCP port (its endpoint's host, a port the kernel picks).
Its answer to ``open`` (inside CurveZMQ, so only the authenticated party reads it) gives
the port, a fresh 16-byte link id and two fresh AES-256 keys (dealer->party,
party->dealer).  The party connects, sends the link id in the clear and then a READY sealed
under its key; a connection whose id is unknown, or whose READY does not open, is closed.
One thread polls the port and every connection not yet proven (``STRANGERS``: each has a
few seconds and may make the dealer read 4 KB; the oldest goes when 64 wait), so a flood of
connections costs neither threads nor the grants of the parties that follow.  Blobs then
go dealer->party as sealed messages on that stream (``wire`` frames inside); control stays
on CurveZMQ.  If the data connection cannot be made or breaks (a restarted dealer has a new
port and new keys), blobs travel on CurveZMQ as before: slower, the same.
"""
from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from collections import OrderedDict
from typing import Callable

from ..comm.channel import ChannelClosed
from .sealed import KEY_BYTES, FrameSealer, SealError
from .sealed_stream import FirstMessage, SealedStream, StrangerPolicy, accept_queued, listen_ephemeral
from .wire import WireCaps, WireError, decode_message, encode_message

__all__ = ["LINK_ID_BYTES", "STRANGERS", "DataListener", "connect_data", "data_grant"]

LINK_ID_BYTES = 16
#: a connection to the data port has 5 s to prove its grant and may make us read 4 KB
STRANGERS = StrangerPolicy(wait=5.0, max_pending=64, max_frames=2, max_bytes=4096)
_MAX_GRANTS = 1024
_POLL_SECONDS = 0.5


def _labels(link_id: bytes) -> tuple[bytes, bytes]:
    """(dealer->party, party->dealer) AAD labels of one link."""
    return (b"ss-engine dealer data v1, to the party, link " + link_id,
            b"ss-engine dealer data v1, to the dealer, link " + link_id)


def data_grant(port: int) -> dict:
    """A fresh link's grant, for the ``keys`` reply: port, link id and both keys."""
    return {"port": int(port), "link": os.urandom(LINK_ID_BYTES),
            "to_party": os.urandom(KEY_BYTES), "to_dealer": os.urandom(KEY_BYTES)}


def _valid_grant(g) -> bool:
    return (isinstance(g, dict) and isinstance(g.get("port"), int) and 0 < g["port"] < 65536
            and all(isinstance(g.get(k), bytes) for k in ("link", "to_party", "to_dealer"))
            and len(g["link"]) == LINK_ID_BYTES and len(g["to_party"]) == len(g["to_dealer"]) == KEY_BYTES)


def connect_data(host: str, grant, timeout: float, plain_buffers: int, caps: WireCaps) -> SealedStream:
    """The party's side: connect to the dealer's data port and prove the grant."""
    if not _valid_grant(grant):
        raise ChannelClosed("the dealer's data grant is malformed")
    to_party, to_dealer = _labels(grant["link"])
    conn = socket.create_connection((host.strip("[]"), grant["port"]), timeout=timeout)
    try:
        conn.sendall(grant["link"])
        stream = SealedStream(conn, FrameSealer(grant["to_dealer"], to_dealer),
                              FrameSealer(grant["to_party"], to_party), plain_buffers=plain_buffers,
                              max_frames=caps.max_arrays + 1,
                              max_bytes=caps.max_total_bytes + caps.max_header_bytes + (caps.max_arrays + 1) * 16)
        stream.send(encode_message({"type": "ready"}))
    except OSError as exc:
        conn.close()
        raise ChannelClosed(f"cannot reach the dealer's data port: {exc}") from None
    return stream


class _Pending:
    """A connection that has not proven a grant yet: its link id, then its READY."""

    __slots__ = ("conn", "deadline", "link", "grant", "first")

    def __init__(self, conn: socket.socket, deadline: float):
        self.conn, self.deadline = conn, deadline
        self.link, self.grant, self.first = b"", None, None


class DataListener:
    """The dealer's side: a listening port; ``grant(owner)`` makes a link id expected, and a
    connection that proves it is handed to ``attach(owner, stream)``."""

    def __init__(self, host: str, attach: Callable, caps: WireCaps, policy: StrangerPolicy = STRANGERS):
        self.sock, self.port = listen_ephemeral(host)
        self.sock.setblocking(False)
        self._attach, self._caps, self._policy = attach, caps, policy
        self._grants: OrderedDict[bytes, tuple] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False
        self.rejected = 0
        self._thread = threading.Thread(target=self._serve, name="dealer-data", daemon=True)
        self._thread.start()

    def grant(self, owner) -> dict:
        g = data_grant(self.port)
        with self._lock:
            self._grants[g["link"]] = (owner, g)
            while len(self._grants) > _MAX_GRANTS:
                self._grants.popitem(last=False)
        return g

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        pending: dict[socket.socket, _Pending] = {}   # insertion order: oldest first

        def drop(conn: socket.socket) -> None:
            sel.unregister(conn)
            del pending[conn]
            conn.close()
            self.rejected += 1
        try:
            while not self._closed:
                now = time.monotonic()
                for conn in [c for c, p in pending.items() if p.deadline <= now]:
                    drop(conn)
                for key, _ in sel.select(_POLL_SECONDS):
                    if key.fileobj is self.sock:
                        for conn in accept_queued(self.sock, self._policy):
                            if len(pending) >= self._policy.max_pending:
                                drop(next(iter(pending)))
                            conn.setblocking(False)
                            pending[conn] = _Pending(conn, time.monotonic() + self._policy.wait)
                            sel.register(conn, selectors.EVENT_READ)
                        continue
                    p = pending.get(key.fileobj)
                    if p is None:
                        continue
                    try:
                        stream = self._advance(p)
                    except (OSError, SealError, WireError, ChannelClosed):
                        drop(p.conn)
                        continue
                    if stream is not None:
                        sel.unregister(p.conn)
                        del pending[p.conn]
                        self._attach(p.grant[0], stream)
        except OSError:   # the listener was closed
            pass
        finally:
            for conn in list(pending):
                conn.close()
            sel.close()

    def _advance(self, p: _Pending) -> SealedStream | None:
        """Read what ``p`` sent; its stream once its READY opened, else None (more to come).
        Raises if it cannot be a party holding a grant."""
        if p.grant is None:
            try:
                chunk = p.conn.recv(LINK_ID_BYTES - len(p.link))
            except (BlockingIOError, InterruptedError):
                return None
            if not chunk:
                raise ChannelClosed("closed before its link id")
            p.link += chunk
            if len(p.link) < LINK_ID_BYTES:
                return None
            with self._lock:   # kept until proven: a forged READY does not use it up
                p.grant = self._grants.get(p.link)
            if p.grant is None:
                raise SealError("unknown link")
            p.first = FirstMessage(p.conn, self._policy, p.deadline)
        frames = p.first.feed()
        if frames is None:
            return None
        g = p.grant[1]
        to_party, to_dealer = _labels(p.link)
        opener = FrameSealer(g["to_dealer"], to_dealer)
        h, _ = decode_message(opener.open(0, frames), self._caps)
        if h.get("type") != "ready":
            raise SealError("not a READY")
        with self._lock:
            if self._grants.pop(p.link, None) is None:
                raise SealError("grant already used")
        p.conn.setblocking(True)
        return SealedStream(p.conn, FrameSealer(g["to_party"], to_party), opener, received=1)

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        self._thread.join(2 * _POLL_SECONDS + 1)
