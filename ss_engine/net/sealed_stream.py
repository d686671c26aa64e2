"""Sealed messages over one plain TCP connection: the peer channel's data plane.

A message is ``u32 n | n x u64 frame lengths | n frames`` (little endian), every frame
sealed by :class:`.sealed.FrameSealer` under the message's counter (0, 1, 2, ... per
direction), so the receiver authenticates each message against the counter it expects.

Why a bare TCP socket and not a ZeroMQ one: a zmq message crosses the sender's and the
receiver's I/O threads; on this 2-core machine a small round trip between two processes
costs ~13 us on a TCP socket and ~140 us on a plain zmq pair (~240 us with CurveZMQ), and
more when the I/O threads wait for a core.  The peer channel has one fixed peer, so zmq's
routing and reconnection buy nothing there; CurveZMQ still authenticates the peer and
carries the keys (``zmq_channel``).

Both parties send before they receive (an exchange), so a message larger than the socket
buffers would block both senders forever; such messages go through a writer thread while
the caller goes on to receive.  Small ones (<= 64 KB) are written inline when the writer is
idle: they fit in the buffers, and a thread hop would cost what zmq's I/O thread costs.
"""
from __future__ import annotations

import queue
import select
import socket
import struct
import threading
import time
from typing import Sequence

from ..comm.channel import ChannelClosed, ChannelTimeout
from .sealed import FrameSealer

__all__ = ["SealedStream", "listen_ephemeral"]

_HEAD = struct.Struct("<I")
_SMALL = 1 << 16  # below this a message is sent as one joined buffer (one segment)


def listen_ephemeral(host: str) -> tuple[socket.socket, int]:
    """A listening TCP socket on ``host`` (a zmq-style host: "*" is every interface) at a
    port the kernel picks; returns (socket, port)."""
    host = "" if host in ("*", "0.0.0.0") else host.strip("[]")
    family, kind, proto, _, addr = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.bind(addr)
    sock.listen(8)
    return sock, sock.getsockname()[1]


class SealedStream:
    """One direction's sealer and the other's opener over a connected TCP socket."""

    def __init__(self, sock: socket.socket, sealer: FrameSealer, opener: FrameSealer, *,
                 max_frames: int = 1024, max_bytes: int = 1 << 30):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)  # blocking; receive waits are bounded with select()
        self.sock, self._sealer, self._opener = sock, sealer, opener
        self.max_frames, self.max_bytes = int(max_frames), int(max_bytes)
        self._out = self._in = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0                   # messages handed to the writer, not yet written
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._writer: threading.Thread | None = None
        self._closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- sending --------------------------------------------------------------------------
    def send(self, frames: Sequence) -> int:
        """Seal and send one message (in order); returns the bytes it takes on the wire."""
        self._check()
        sealed = self._sealer.seal(self._out, frames)
        self._out += 1   # a counter is never reused under this key
        head = _HEAD.pack(len(sealed)) + struct.pack(f"<{len(sealed)}Q", *(len(f) for f in sealed))
        total = len(head) + sum(len(f) for f in sealed)
        with self._lock:
            inline = self._pending == 0 and total <= _SMALL
            if not inline:
                self._pending += 1
        if inline:
            try:
                self.sock.sendall(b"".join([head, *sealed]))
            except OSError as exc:
                raise ChannelClosed(f"the peer's data connection failed: {exc}") from None
            return total
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="sealed-writer", daemon=True)
            self._writer.start()
        self._queue.put([head, *sealed])
        return total

    def _write_loop(self) -> None:
        while True:
            parts = self._queue.get()
            if parts is None:
                return
            try:
                for part in parts:
                    self.sock.sendall(part)
            except OSError as exc:  # reported to the caller's next send or receive
                self._error = exc
                return
            finally:
                with self._lock:
                    self._pending -= 1

    def _check(self) -> None:
        if self._error is not None:
            raise ChannelClosed(f"the peer's data connection failed: {self._error}")
        if self._closed:
            raise ChannelClosed("the data connection is closed")

    # -- receiving ------------------------------------------------------------------------
    def recv(self, timeout: float) -> tuple[list[bytes], int]:
        """One message's frames, opened (``SealError`` if any fails authentication), and the
        bytes it took on the wire.  Waits at most ``timeout`` for the whole message."""
        deadline = time.monotonic() + timeout
        (n,) = _HEAD.unpack(self._read(_HEAD.size, deadline))
        if not 0 < n <= self.max_frames:
            raise ChannelClosed(f"peer data message with {n} frames")
        lens = struct.unpack(f"<{n}Q", self._read(8 * n, deadline))
        if sum(lens) > self.max_bytes:
            raise ChannelClosed(f"peer data message of {sum(lens)} bytes exceeds {self.max_bytes}")
        frames = [self._read(k, deadline) for k in lens]
        plain = self._opener.open(self._in, frames)
        self._in += 1
        return plain, _HEAD.size + 8 * n + sum(lens)

    def _read(self, n: int, deadline: float) -> bytearray:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            self._check()
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise ChannelTimeout("the peer's data message stalled")
            try:
                k = self.sock.recv_into(view[got:])
            except OSError as exc:
                raise ChannelClosed(f"the peer's data connection failed: {exc}") from None
            if k == 0:
                raise ChannelClosed("the peer closed the data connection")
            got += k
        return buf

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)   # unblocks a writer stuck in sendall
        except OSError:
            pass
        self.sock.close()
