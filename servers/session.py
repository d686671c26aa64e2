"""Interactive sessions on a server: the "session" job kind (``sse.RemoteSession``).

Two halves, in the server's two threads:

* :class:`SessionDesk` (the client-facing loop): ``session_start`` (the trainer hands both
  nonce halves; the job is queued like any other), ``session_ops`` (a batch is queued to
  the live session, its reply comes later from the runner), ``session_close``.  Only the
  session's trainer (the client that created it) may drive it.  Replies made by the
  runner come back through an inproc socket the loop forwards (``forward``): zmq sockets
  stay in their own threads.
* :func:`run_session` (the job runner, which opened the peer channel and the dealer link
  for the instance): executes the batches in order.  For each one: parse it in full
  against the values held (``dispatch.PartySession``: op names, handle ids, shapes,
  dtypes, parameter types and ranges, limits), agree with the peer in one round on the
  batch's digest and on whether both accept it, then run it with the protocol code the
  training runs (``dispatch.run_batch``) or refuse it on both servers (the session goes
  on).  A failure while running ends the session on both.

What a server learns in a session: its share of every value (uniformly random on its
own) and the masked openings of the protocols (uniform), as in training; the public op
sequence (op names, shapes, parameters, public operands in the clear) and its timing.
What it sends the trainer: its shares of the values the trainer reveals.  The values
live in memory only, are overwritten when the session ends (``close``, ``idle`` seconds
without a batch, a failure, a server shutdown) and the dealer instance is released; a
restarted server fails the sessions it held (their values are gone).
"""
from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time

import msgpack
import numpy as np
import zmq

from ss_engine.comm import ChannelClosed, ChannelTimeout
from ss_engine.deploy.protocol import (MAX_SESSION_IDLE, NONCE_PART_BYTES, SESSION_IDLE,
                                       SESSION_KIND, session_digest)
from ss_engine.dispatch import OpError, PartySession, SessionLimits
from ss_engine.net.wire import WireError, encode_message, expect_bytes, expect_float, expect_int, expect_list
from ss_engine.party import PartyContext
from ss_engine.preprocessing.source import SeededSource
from ss_engine.prg import SEED_BYTES
from ss_engine.protocols.rounds import run as run_coroutine

from .store import ENDED_STATES, JobRecord, JobStore

__all__ = ["SessionDesk", "LiveSession", "run_session", "CLOSE"]

log = logging.getLogger("ss_engine.server")
MAX_QUEUED_BATCHES = 16
CLOSE = "close"      # the item a session_close queues


class LiveSession:
    """A started session as both threads see it: its queue of batches and its state."""

    def __init__(self, job: str, idle: float):
        self.job, self.idle = job, idle
        self.inbox: queue.Queue = queue.Queue(MAX_QUEUED_BATCHES)
        self.lock = threading.Lock()
        self.running = False        # the runner holds the peer channel for it
        self.ended: str | None = None

    def offer(self, item) -> str | None:
        """Queue a batch (or the close); the reason it cannot be, or None."""
        with self.lock:
            if self.ended is not None:
                return f"session ended: {self.ended}"
            if not self.running:
                return "the session is not open yet (status shows when it runs)"
            try:
                self.inbox.put_nowait(item)
            except queue.Full:
                return f"more than {MAX_QUEUED_BATCHES} batches queued: the trainer lost step with the session"
        return None

    def end(self, reason: str) -> list:
        """Mark the session ended; the queued items no one will run."""
        with self.lock:
            self.ended, self.running = reason, False
            left = []
            while True:
                try:
                    left.append(self.inbox.get_nowait())
                except queue.Empty:
                    return left


class SessionDesk:
    """The client-facing side of sessions (see the module docstring)."""

    def __init__(self, rank: int, store: JobStore, ctx: zmq.Context):
        self.rank, self.store = rank, store
        self.live: dict[str, LiveSession] = {}
        self.reply_endpoint = f"inproc://session-replies-{id(self)}"
        self.replies = ctx.socket(zmq.PULL)
        self.replies.bind(self.reply_endpoint)
        self._ctx = ctx
        with store.lock:   # a session's values lived in a process that is gone
            for rec in list(store.jobs.values()):
                if rec.kind == SESSION_KIND and rec.state not in ENDED_STATES:
                    rec.state, rec.message = "failed", "the server restarted; a session lives in memory only"
                    store.save(rec)

    def reply_socket(self) -> zmq.Socket:
        """A PUSH socket for the runner thread's replies (it owns and closes it)."""
        s = self._ctx.socket(zmq.PUSH)
        s.linger = 1000
        s.connect(self.reply_endpoint)
        return s

    def forward(self, sock: zmq.Socket) -> None:
        """Send every reply the runner made to its client (in the loop's thread)."""
        while self.replies.poll(0):
            sock.send_multipart(self.replies.recv_multipart(copy=False), copy=False)

    def close(self) -> None:
        self.replies.close(linger=0)

    def forget(self, job: str) -> None:
        live = self.live.pop(job, None)
        if live is not None:
            live.end("deleted")

    # -- requests (the loop's thread; the caller authorised the trainer) ---------------------
    def start(self, rec: JobRecord, h: dict) -> dict:
        frac_bits = expect_int(h, "frac_bits", 8, 30)
        idle = expect_float(h, "idle", 1.0, MAX_SESSION_IDLE, required=False, default=SESSION_IDLE)
        seed = expect_bytes(h, "test_seed", SEED_BYTES) if "test_seed" in h else None
        halves = expect_list(h, "nonce", 2)
        if len(halves) != 2 or not all(isinstance(x, bytes) and len(x) == NONCE_PART_BYTES for x in halves):
            raise WireError(f"field 'nonce' must be the two servers' {NONCE_PART_BYTES}-byte halves "
                            f"from create (server 0's, then server 1's)")
        with self.store.lock:
            if rec.state != "uploading" or rec.kind:
                raise WireError(f"job {rec.job!r} was already started or submitted")
            if self.store.tensors.get(rec.job) or rec.owners:
                raise WireError("a session job takes no uploads and names no data owners")
            if halves[self.rank] != rec.nonce_part:
                raise WireError(f"session_start: the nonce does not hold server {self.rank}'s half "
                                f"of this job (as create returned it)")
            rec.kind, rec.frac_bits, rec.test_seed = SESSION_KIND, frac_bits, seed
            rec.nonce = halves[0] + halves[1]
            rec.train = {"idle": idle}
            rec.digest = session_digest(frac_bits, idle, seed, rec.nonce)
            rec.state, rec.message = "queued", "session queued"
            self.store.save(rec)
            self.live[rec.job] = LiveSession(rec.job, idle)
        return {"type": "ok", "digest": rec.digest}

    def offer(self, rec: JobRecord, item) -> dict | None:
        """Queue a batch or the close for the runner (None: it replies later), or answer now."""
        live = self.live.get(rec.job)
        if rec.kind != SESSION_KIND or live is None:
            raise WireError(f"job {rec.job!r} is not a session of this server's")
        if item[2] is CLOSE and not live.running and live.ended is None:
            live.end("closed")        # never started: nothing to tear down
            with self.store.lock:
                if rec.state not in ENDED_STATES and self.store.jobs.get(rec.job) is rec:
                    rec.state, rec.message = "done", "session closed"
                    self.store.save(rec)
            return {"type": "ok"}
        why = live.offer(item)
        if why is not None:
            raise WireError(why)
        return None


# -- the runner's side ---------------------------------------------------------------------
def batch_digest(h: dict, arrays: list, public: tuple | None) -> list[int]:
    """Two int64 words naming a batch's ops and public operands (what both servers must
    hold equal; the shares differ by design and count by dtype and shape only)."""
    d = hashlib.sha256(msgpack.packb([h.get(k) for k in ("seq", "ops", "reveal", "free")],
                                     use_bin_type=True, default=str))
    for i, a in enumerate(arrays):
        d.update(f"{i}:{a.dtype.str}:{a.shape};".encode())
        if public is not None and i in public:
            d.update(np.ascontiguousarray(a).tobytes())
    return [int(v) for v in np.frombuffer(d.digest()[:16], np.int64)]


def _error(ident: bytes, rid: int, message: str) -> list:
    return [ident, *encode_message({"type": "error", "rid": rid, "message": message[:500]})]


def _one_batch(party: PartySession, ch, item) -> list:
    """Parse, agree, run or refuse one batch; the reply frames for its client."""
    ident, rid, h, arrays = item
    rank = party.ctx.rank
    try:
        batch, why = party.parse(h, arrays), ""
    except OpError as exc:
        batch, why = None, str(exc)
    mine = np.array(batch_digest(h, arrays, batch.public_arrays if batch else None)
                    + [int(batch is not None)], np.int64)
    theirs = ch.exchange([mine], label="session_agree")[0]
    if batch is None:
        return _error(ident, rid, f"session op refused: {why}")
    if theirs.shape != mine.shape or not np.array_equal(theirs[:2], mine[:2]):
        return _error(ident, rid, "session op refused: the two servers received different batches")
    if not theirs[2]:
        return _error(ident, rid, f"session op refused by server {1 - rank} (it says why)")
    shown = run_coroutine(party.ctx, party.run(batch, arrays))
    meta = [[f, list(a.shape)] for a, f in shown]
    return [ident, *encode_message({"type": "session_result", "rid": rid, "seq": batch.seq,
                                    "reveal": meta}, [a for a, _ in shown])]


def run_session(runner, rec: JobRecord, ch, link, key: bytes, config, lv) -> None:
    """The runner's loop for one session instance (peer channel and dealer link open)."""
    desk: SessionDesk = runner.desk
    live = desk.live.get(rec.job)
    if live is None or live.ended is not None:
        runner._set(rec, "done" if live is not None else "failed",
                    "session closed" if live is not None else "the session's state is gone")
        return
    rank = runner.rank
    source = SeededSource(rank, key, link)   # a batch is an unkeyed run: item by item
    party = PartySession(PartyContext(rank, ch, source, config), SessionLimits())
    out = desk.reply_socket()
    with live.lock:
        live.running = True
    runner._set(rec, "running", "session open")
    state, reason, last = "done", "session closed", time.monotonic()
    closer = current = None
    try:
        while True:
            try:
                item = live.inbox.get(timeout=0.2)
            except queue.Empty:
                if runner.stop_event.is_set():
                    state, reason = "failed", "the server shut down"
                    break
                if time.monotonic() - last > live.idle:
                    reason = f"no batch for {live.idle:.0f} s (idle): closed"
                    break
                continue
            if item[2] is CLOSE:
                closer = item
                break
            current = item
            out.send_multipart(_one_batch(party, ch, item), copy=False)
            current, last = None, time.monotonic()
            lv.step += 1
            lv.channel = ch.stats.as_dict()
    except (ChannelClosed, ChannelTimeout) as exc:
        state, reason = "failed", f"the peer went away ({str(exc)[:160]})"
    except Exception as exc:  # noqa: BLE001 - a bug ends the session, never the server
        log.exception("session %s", rec.job)
        state, reason = "failed", f"internal error: {type(exc).__name__}: {str(exc)[:200]}"
        ch.close(f"session failed on server {rank}")
    finally:
        if state == "done":     # ended here (closed, idle): the peer's clients learn why
            ch.close(f"server {rank}: {reason}")
        unanswered = ([current] if current is not None else []) + live.end(reason)
        party.clear()
        closers = [closer] if closer is not None else []
        for ident, rid, h, arrays in unanswered:
            if h is CLOSE:
                closers.append((ident, rid, h, arrays))
            else:
                out.send_multipart(_error(ident, rid, f"session ended: {reason}"), copy=False)
        with runner.store.lock:
            if runner.store.jobs.get(rec.job) is rec:
                runner._set(rec, state, reason)
        for ident, rid, _, _ in closers:   # a close is answered once the values are gone
            out.send_multipart([ident, *encode_message({"type": "ok", "rid": rid})], copy=False)
        out.close()
        log.info("job %s: session ended (%s)", rec.job, reason)
