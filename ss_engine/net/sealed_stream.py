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

Every frame is sealed straight into one reused send buffer (head and ciphertexts in one
piece, one ``sendall``) and opened straight into a reused plaintext buffer after the whole
message was read with one loop of ``recv_into``: no per-frame allocation, which cost more
than the cipher itself (AES-GCM into a buffer: ~0.7 ms per 1.6 MB here; into fresh
``bytes``: ~4 ms).  A received message's frames are views of that buffer, valid until
``plain_buffers`` more messages have arrived (two by default: the peer channel's callers
combine what they receive within the round).
"""
from __future__ import annotations

import queue
import select
import selectors
import socket
import struct
import threading
import time
from typing import Callable, Iterator, Sequence

from ..comm.channel import ChannelClosed, ChannelTimeout
from .sealed import TAG_BYTES, FrameSealer, SealError

__all__ = ["SealedStream", "listen_ephemeral", "accept_sealed", "accept_queued", "StrangerPolicy",
           "FirstMessage"]

_HEAD = struct.Struct("<I")
_SMALL = 1 << 16  # below this a message is sent as one joined buffer (one segment)
_BACKLOG = 1024   # connections the kernel queues before we accept them (a full queue drops
                  # SYNs, and a dropped SYN costs the peer a 1 s retransmission)


def listen_ephemeral(host: str) -> tuple[socket.socket, int]:
    """A listening TCP socket on ``host`` (a zmq-style host: "*" is every interface) at a
    port the kernel picks; returns (socket, port)."""
    host = "" if host in ("*", "0.0.0.0") else host.strip("[]")
    family, kind, proto, _, addr = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.bind(addr)
    sock.listen(_BACKLOG)
    return sock, sock.getsockname()[1]


def _frame_count(head: bytes, max_frames: int) -> int:
    (n,) = _HEAD.unpack(head)
    if not 0 < n <= max_frames:
        raise ChannelClosed(f"peer data message with {n} frames")
    return n


def _frame_lengths(raw: bytes, n: int, max_bytes: int) -> tuple[int, ...]:
    lens = struct.unpack(f"<{n}Q", raw)
    if sum(lens) > max_bytes:
        raise ChannelClosed(f"peer data message of {sum(lens)} bytes exceeds {max_bytes}")
    return lens


class SealedStream:
    """One direction's sealer and the other's opener over a connected TCP socket."""

    def __init__(self, sock: socket.socket, sealer: FrameSealer, opener: FrameSealer, *,
                 max_frames: int = 1024, max_bytes: int = 1 << 30, received: int = 0,
                 plain_buffers: int = 2):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)  # blocking; receive waits are bounded with select()
        self.sock, self._sealer, self._opener = sock, sealer, opener
        self.max_frames, self.max_bytes = int(max_frames), int(max_bytes)
        self._out, self._in = 0, int(received)   # ``received``: messages already opened
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0                   # messages handed to the writer, not yet written
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._writer: threading.Thread | None = None
        self._closed = False
        self._send_bufs = [[bytearray(0), False], [bytearray(0), False]]   # [buffer, held by writer]
        self._head = bytearray(8 * 64)
        self._cipher = bytearray(0)
        self._plain = [bytearray(0) for _ in range(max(2, int(plain_buffers)))]

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- sending --------------------------------------------------------------------------
    def _send_buffer(self, n: int) -> tuple[int, bytearray]:
        """A send buffer of at least n bytes that no queued message still holds."""
        with self._lock:
            for i, (buf, busy) in enumerate(self._send_bufs):
                if not busy and len(buf) >= n:
                    return i, buf
            for i, (buf, busy) in enumerate(self._send_bufs):
                if not busy:
                    self._send_bufs[i] = [bytearray(max(n, 2 * len(buf))), False]
                    return i, self._send_bufs[i][0]
        return -1, bytearray(n)   # both held by the writer: a one-off buffer

    def send(self, frames: Sequence) -> int:
        """Seal and send one message (in order); returns the bytes it takes on the wire."""
        self._check()
        count = len(frames)
        sizes = [(f.nbytes if hasattr(f, "nbytes") else memoryview(f).nbytes) + TAG_BYTES for f in frames]
        head = 4 + 8 * count
        total = head + sum(sizes)
        slot, buf = self._send_buffer(total)
        view = memoryview(buf)
        _HEAD.pack_into(buf, 0, count)
        struct.pack_into(f"<{count}Q", buf, 4, *sizes)
        if self._sealer.seal_into(self._out, frames, view[head:total]) != sizes:
            raise ValueError("a frame changed size while it was sealed")
        self._out += 1   # a counter is never reused under this key
        with self._lock:
            inline = self._pending == 0 and total <= _SMALL
            if not inline:
                self._pending += 1
                if slot >= 0:
                    self._send_bufs[slot][1] = True
        if inline:
            try:
                self.sock.sendall(view[:total])
            except OSError as exc:
                raise ChannelClosed(f"the peer's data connection failed: {exc}") from None
            return total
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="sealed-writer", daemon=True)
            self._writer.start()
        self._queue.put((slot, view[:total]))
        return total

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            slot, data = item
            try:
                self.sock.sendall(data)
            except OSError as exc:  # reported to the caller's next send or receive
                self._error = exc
                return
            finally:
                with self._lock:
                    self._pending -= 1
                    if slot >= 0:
                        self._send_bufs[slot][1] = False

    def _check(self) -> None:
        if self._error is not None:
            raise ChannelClosed(f"the peer's data connection failed: {self._error}")
        if self._closed:
            raise ChannelClosed("the data connection is closed")

    # -- receiving ------------------------------------------------------------------------
    def recv(self, timeout: float) -> tuple[list[memoryview], int]:
        """One message's frames, opened (``SealError`` if any fails authentication), as views
        of a reused buffer (module doc), and the bytes it took on the wire.  Waits at most
        ``timeout`` for the whole message."""
        deadline = time.monotonic() + timeout
        head = self._head
        self._read(memoryview(head)[:4], deadline, wait_first=True)
        n = _frame_count(head[:4], self.max_frames)
        if len(head) < 8 * n:
            self._head = head = bytearray(8 * n)
        self._read(memoryview(head)[:8 * n], deadline)
        lens = _frame_lengths(head[:8 * n], n, self.max_bytes)
        total = sum(lens)
        if len(self._cipher) < total:
            self._cipher = bytearray(total)
        cview = memoryview(self._cipher)
        self._read(cview[:total], deadline)
        frames, pos = [], 0
        for k in lens:
            frames.append(cview[pos:pos + k])
            pos += k
        i = self._in % len(self._plain)
        if len(self._plain[i]) < total + 16 * n:
            self._plain[i] = bytearray(total + 16 * n)
        plain = self._opener.open_into(self._in, frames, memoryview(self._plain[i]))
        self._in += 1
        return plain, 4 + 8 * n + total

    def _read(self, view: memoryview, deadline: float, wait_first: bool = False) -> None:
        """Fill ``view`` from the socket (``wait_first``: a new message, which has usually not
        arrived yet: wait before the first read; the rest of it usually has)."""
        n, got = len(view), 0
        while got < n:
            self._check()
            if wait_first and not got:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                    raise ChannelTimeout("the peer's data message stalled")
            try:
                k = self.sock.recv_into(view[got:], 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                    raise ChannelTimeout("the peer's data message stalled") from None
                continue
            except OSError as exc:
                raise ChannelClosed(f"the peer's data connection failed: {exc}") from None
            if k == 0:
                raise ChannelClosed("the peer closed the data connection")
            got += k

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


# -- accepting the peer among strangers -----------------------------------------------------
class StrangerPolicy:
    """What an unauthenticated connection to the data port may cost us.

    ``wait``: seconds it has, from its accept, to deliver a message that opens under the
    peer's key; ``max_pending``: connections kept waiting at once (the oldest is dropped
    for a newcomer); ``max_frames`` / ``max_bytes``: the most it can make us read."""

    def __init__(self, wait: float = 1.0, max_pending: int = 64, max_frames: int = 2,
                 max_bytes: int = 4096):
        self.wait, self.max_pending = float(wait), int(max_pending)
        self.max_frames, self.max_bytes = int(max_frames), int(max_bytes)


class FirstMessage:
    """Reads one sealed message from a non-blocking socket, never a byte past it (the
    peer may send its next message right behind)."""

    def __init__(self, sock: socket.socket, policy: StrangerPolicy, deadline: float):
        self.sock, self.policy, self.deadline = sock, policy, deadline
        self._buf = bytearray()
        self._need = _HEAD.size
        self._n = 0
        self._lens: tuple[int, ...] | None = None

    def feed(self) -> list[bytes] | None:
        """What has arrived; the message's sealed frames once complete, else None.
        ChannelClosed on end of stream, a socket error or a header beyond the policy."""
        while True:
            if len(self._buf) == self._need and not self._advance():
                return self._frames()
            try:
                chunk = self.sock.recv(self._need - len(self._buf))
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as exc:
                raise ChannelClosed(f"stranger's connection failed: {exc}") from None
            if not chunk:
                raise ChannelClosed("stranger closed its connection")
            self._buf += chunk

    def _advance(self) -> bool:
        """The part read so far is complete: parse it; True if more bytes are due."""
        if not self._n:
            self._n = _frame_count(bytes(self._buf), self.policy.max_frames)
            self._need += 8 * self._n
            return True
        if self._lens is None:
            self._lens = _frame_lengths(bytes(self._buf[_HEAD.size:]), self._n, self.policy.max_bytes)
            self._need += sum(self._lens)
            return len(self._buf) < self._need
        return False

    def _frames(self) -> list[bytes]:
        frames, at = [], _HEAD.size + 8 * self._n
        for k in self._lens:
            frames.append(bytes(self._buf[at:at + k]))
            at += k
        return frames


def accept_sealed(listener: socket.socket, sealer: FrameSealer, opener: FrameSealer,
                  is_peer: Callable[[list[bytes]], bool], deadline: float,
                  policy: StrangerPolicy, on_reject: Callable[[], None]) -> SealedStream:
    """Accept connections on ``listener`` until one sends, as its first message, frames that
    open under ``opener`` (message 0) and satisfy ``is_peer``; that connection becomes the
    stream.  Every other connection is closed and reported to ``on_reject``.

    The listener and every pending connection are polled together, and a new connection is
    read as soon as it is accepted, so however many silent or slow strangers connect, the
    peer's message is taken the moment it arrives; each stranger is dropped after
    ``policy.wait`` seconds, and when more than ``policy.max_pending`` wait at once the
    oldest goes.  ChannelTimeout at ``deadline``."""
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    pending: dict[socket.socket, FirstMessage] = {}   # insertion order: oldest first

    def drop(conn: socket.socket) -> None:
        sel.unregister(conn)
        del pending[conn]
        conn.close()
        on_reject()

    def admit(conn: socket.socket) -> None:
        if len(pending) >= policy.max_pending:
            drop(next(iter(pending)))
        conn.setblocking(False)
        pending[conn] = FirstMessage(conn, policy, time.monotonic() + policy.wait)
        sel.register(conn, selectors.EVENT_READ)

    def proves_peer(conn: socket.socket) -> bool:
        """Read what ``conn`` sent; True if it is the peer, drop it if it cannot be."""
        try:
            frames = pending[conn].feed()
            if frames is None:
                return False
            if is_peer(opener.open(0, frames)):
                return True
        except (ChannelClosed, SealError):
            pass
        drop(conn)
        return False

    def established(conn: socket.socket) -> SealedStream:
        sel.unregister(conn)
        del pending[conn]
        conn.setblocking(True)
        return SealedStream(conn, sealer, opener, received=1)
    try:
        while True:
            now = time.monotonic()
            for conn in [c for c, r in pending.items() if r.deadline <= now]:
                drop(conn)
            if now >= deadline:
                raise ChannelTimeout("the peer never connected to the data port")
            wake = min([deadline] + [r.deadline for r in pending.values()])
            for key, _ in sel.select(max(0.0, wake - now)):
                if key.fileobj is listener:
                    for conn in accept_queued(listener, policy):
                        admit(conn)   # read at once: the peer's READY follows its connect
                        if proves_peer(conn):
                            return established(conn)
                elif key.fileobj in pending and proves_peer(key.fileobj):
                    return established(key.fileobj)
    finally:
        for conn in list(pending):
            drop(conn)
        sel.close()


def accept_queued(listener: socket.socket, policy: StrangerPolicy) -> Iterator[socket.socket]:
    """The connections the kernel has queued, one by one (a full queue would delay the
    peer); at most ``policy.max_pending`` per call, so a flood cannot starve the reads."""
    for _ in range(policy.max_pending):
        try:
            conn, _ = listener.accept()
        except OSError:   # nothing queued (EAGAIN), or out of descriptors: they wait
            return
        yield conn
