"""The crypto provider: per-instance seeds, party 1's corrections, pre-generation ahead.

What the dealer sees: the two 16-byte seeds of each job instance it made (so it knows
every mask and triple of that instance), the job digest, the material specs (shapes, op
names, sequence numbers) and nothing else — no share of data, model or any opened value;
it colludes with neither server.

Seeds belong to a job *instance* (job id + the nonce both servers drew when the job was
created), never to a job name: :mod:`.instances` makes fresh keys with os.urandom when both
servers ask for a new instance, stores them (0600, atomic, checksummed) so that a
restarted dealer, since ``DealerCore`` regenerates any item from (keys, seq, spec), resumes
wherever party 1 asks, and deletes them when a server says the job ended — after which
the instance is never served again.  A ``schedule`` from party 1 starts a generator
thread that computes the next steps' corrections into a bounded window and pushes them
to party 1 before they are needed.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque

import numpy as np
import zmq

from ss_engine.net.dealer_link import (DEALER_REQUEST_CAPS, NONCE_BYTES, corrections_frames,
                                       parse_spec, shift_spec, spec_digest)
from ss_engine.net.keys import load_keypair, load_public_key, public_path
from ss_engine.net.wire import (JOB_ID_RE, WireError, decode_message, encode_message,
                                 expect_bytes, expect_int, expect_list, expect_str)
from ss_engine.net.zmq_channel import CurveContext, bind_retrying, user_id
from ss_engine.deploy.config import DeployConfig
from ss_engine.preprocessing.expand import DealerCore
from ss_engine.prg import SEED_BYTES

from .instances import Instance, InstanceError, InstanceRegistry

__all__ = ["DealerService"]

log = logging.getLogger("ss_engine.dealer")

MAX_SCHEDULE_ITEMS = 20_000
MAX_PERIOD = 1 << 24


class _Job:
    """One job instance's generator and pre-generation state."""

    def __init__(self, inst: Instance, window_steps: int, ctx: zmq.Context):
        self.name = inst.job
        self.core = DealerCore(*inst.keys, cache_items=256)
        self.window_steps = window_steps
        self.cond = threading.Condition()
        self.schedule: tuple | None = None      # (base, period, [(offset, spec)])
        self.generation = 0
        self.consumed = 0
        self.ident: bytes | None = None         # party 1's ROUTER identity
        self.stopped = False
        self.pushed_items = 0
        self._pushed_seqs: deque = deque()
        self.thread: threading.Thread | None = None
        self._ctx = ctx

    def _ahead(self, limit: int) -> int:
        """Pushed items party 1 has not reached yet (caller holds the lock)."""
        while self._pushed_seqs and self._pushed_seqs[0] < self.consumed:
            self._pushed_seqs.popleft()
        return len(self._pushed_seqs)

    def set_schedule(self, ident: bytes, base: int, period: int, items: list) -> None:
        with self.cond:
            # a new party-1 connection may have resumed from an older checkpoint: its
            # position is where it says, not the furthest an earlier session reached
            self.consumed = base + period if ident != self.ident else max(self.consumed, base + period)
            self.ident = ident
            self.schedule = (base, period, items)
            self.generation += 1
            self.cond.notify_all()
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name=f"pregen-{self.name}", daemon=True)
            self.thread.start()

    def advance(self, seq: int) -> None:
        with self.cond:
            if seq > self.consumed:
                self.consumed = seq
                self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def _predictions(self, base: int, period: int, items: list, start: int):
        if not items:
            return  # nothing to predict (set_schedule refuses this anyway)
        k = max(1, (start - base) // period)
        while True:
            for off, spec in items:
                seq = base + k * period + off
                if seq >= start:
                    yield seq, shift_spec(spec, k * period, base) if k else spec
            k += 1

    def _run(self) -> None:
        out = self._ctx.socket(zmq.PUSH)
        out.linger = 0
        out.connect("inproc://dealer-out")
        try:
            gen_seen, preds = -1, None
            while True:
                with self.cond:
                    if self.stopped:
                        return
                    if self.generation != gen_seen:
                        gen_seen = self.generation
                        base, period, items = self.schedule
                        preds = self._predictions(base, period, items, self.consumed)
                        window = self.window_steps * period
                        limit = self.window_steps * max(1, len(items))  # items ahead, at most
                        self._pushed_seqs.clear()
                    try:
                        seq, spec = next(preds)
                    except StopIteration:
                        self.cond.wait(1.0)
                        continue
                    while not self.stopped and self.generation == gen_seen and (
                            seq >= self.consumed + window or self._ahead(limit) >= limit):
                        self.cond.wait(1.0)
                    if self.stopped:
                        return
                    if self.generation != gen_seen or seq < self.consumed:
                        continue
                    ident = self.ident
                try:
                    corr = self.core.corrections(seq, spec)
                except Exception as exc:  # noqa: BLE001 - a bad prediction must not kill the thread
                    log.warning("job %s: cannot pre-generate seq %d: %s", self.name, seq, exc)
                    continue
                frames = corrections_frames("push", self.name, seq, spec, corr, t=time.time(),
                                            sd=spec_digest(spec))
                out.send_multipart([ident, *frames], copy=False)
                self.pushed_items += 1
                with self.cond:
                    self._pushed_seqs.append(seq)
        finally:
            out.close()


class DealerService:
    def __init__(self, cfg: DeployConfig):
        self.cfg = cfg
        keys_dir = cfg.path(cfg.keys_dir)
        self.curve = CurveContext(load_keypair(keys_dir, cfg.dealer.key))
        pubs = [load_public_key(public_path(keys_dir, s.key)) for s in cfg.servers]
        self.rank_of = {pubs[0]: 0, pubs[1]: 1}
        self.curve.allow("dealer", pubs)
        self.instances = InstanceRegistry(cfg.path(cfg.dealer.data_dir))
        self.sock = self.curve.server_socket(zmq.ROUTER, "dealer", caps=DEALER_REQUEST_CAPS)
        self.sock.router_mandatory = False
        self.sock.sndhwm = 100_000
        bind_retrying(self.sock, cfg.dealer.endpoint)
        self.inbox = self.curve.ctx.socket(zmq.PULL)
        self.inbox.bind("inproc://dealer-out")
        self.jobs: OrderedDict[str, _Job] = OrderedDict()
        self.handled = self.errors = 0

    # -- instances ------------------------------------------------------------------------
    def _job(self, name: str, nonce: bytes) -> _Job:
        inst = self.instances.get(name, nonce)
        job = self.jobs.get(inst.iid)
        if job is not None:
            self.jobs.move_to_end(inst.iid)
            return job
        job = _Job(inst, self.cfg.dealer.window_steps, self.curve.ctx)
        self.jobs[inst.iid] = job
        while len(self.jobs) > self.cfg.job_limit:
            _, old = self.jobs.popitem(last=False)
            old.stop()
        return job

    def _open(self, ident: bytes, rank: int, name: str, nonce: bytes, h: dict, rid: int) -> list:
        digest = expect_str(h, "digest", max_len=64)
        seed = None
        if "test_seed" in h:
            if not self.cfg.dealer.allow_test_seed:
                raise WireError("this dealer does not accept test seeds")
            seed = expect_bytes(h, "test_seed", SEED_BYTES)
        try:
            ready = self.instances.open(rank, name, nonce, digest, seed, (ident, rid))
        except InstanceError as exc:
            # the other server's pending open hears the refusal too
            return [(i, _error_frames(r, exc)) for _, (i, r) in exc.waiting] + \
                [(ident, _error_frames(rid, exc))]
        if not ready:
            return []
        inst = self.instances.get(name, nonce)
        return [(i, encode_message({"type": "keys", "job": name, "rid": r},
                                   [np.frombuffer(inst.keys[p], np.uint8).copy()]))
                for p, (i, r) in ready]

    # -- requests -------------------------------------------------------------------------
    def handle(self, ident: bytes, frames: list) -> list[tuple[bytes, list]]:
        """The replies a request causes, as [(ROUTER identity, frames)] (an open that
        completes a new instance answers both servers; one-way messages answer nobody)."""
        rank = self.rank_of.get(user_id(frames[0]) if frames else b"")
        if rank is None:
            raise WireError("unknown caller")
        h, _ = decode_message(frames, DEALER_REQUEST_CAPS)   # headers only: no payload gets in
        t, job = h["type"], h["job"]
        if not job or not JOB_ID_RE.match(job):
            raise WireError("a job id is required")
        rid = expect_int(h, "rid", 0, 2**62, required=t in ("open", "get", "release"))
        nonce = expect_bytes(h, "nonce", NONCE_BYTES)
        if t == "open":
            return self._open(ident, rank, job, nonce, h, rid)
        if t == "release":
            iid = self.instances.release(job, nonce)
            old = self.jobs.pop(iid, None)
            if old is not None:
                old.stop()
            log.info("job %s: instance %s released; its keys are deleted", job, iid)
            return [(ident, encode_message({"type": "released", "job": job, "rid": rid}))]
        if rank != 1:
            raise WireError(f"{t}: party 0 receives no corrections")
        if t == "get":
            seq = expect_int(h, "seq", 0, 2**62)
            spec = parse_spec(h.get("spec"))
            j = self._job(job, nonce)
            j.advance(seq)
            corr = j.core.corrections(seq, spec)
            return [(ident, corrections_frames("corr", job, seq, spec, corr, rid=rid))]
        if t == "schedule":
            base = expect_int(h, "base", 0, 2**62)
            period = expect_int(h, "period", 1, MAX_PERIOD)
            raw = expect_list(h, "items", MAX_SCHEDULE_ITEMS)
            if not raw:
                raise WireError("schedule: no items")
            items = []
            for it in raw:
                if not isinstance(it, list) or len(it) != 2:
                    raise WireError("schedule items are [offset, spec] pairs")
                off = expect_int({"o": it[0]}, "o", 0, period - 1)
                items.append((off, parse_spec(it[1])))
            self._job(job, nonce).set_schedule(ident, base, period, items)
            return []
        if t == "consumed":
            self._job(job, nonce).advance(expect_int(h, "seq", 0, 2**62))
            return []
        raise WireError(f"unknown message type {t!r}")

    def serve(self, stop: threading.Event) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.inbox, zmq.POLLIN)
        while not stop.is_set():
            for s, _ in poller.poll(200):
                if s is self.inbox:
                    while self.inbox.poll(0):
                        self.sock.send_multipart(self.inbox.recv_multipart(copy=False), copy=False)
                    continue
                msg = self.sock.recv_multipart(copy=False)
                ident, frames = msg[0].bytes, msg[1:]
                self.handled += 1
                try:
                    replies = self.handle(ident, frames)
                except Exception as exc:  # noqa: BLE001 - every bad request gets an answer
                    self.errors += 1
                    replies = [(ident, _error(frames, exc))]
                for to, reply in replies:
                    self.sock.send_multipart([to, *reply], copy=False)

    def close(self) -> None:
        for j in self.jobs.values():
            j.stop()
        for j in self.jobs.values():
            if j.thread is not None:
                j.thread.join(2)
        self.inbox.close(linger=0)
        self.sock.close(linger=0)
        self.curve.close()


def _error(frames: list, exc: Exception) -> list:
    rid = 0
    try:
        h, _ = decode_message(frames, DEALER_REQUEST_CAPS)
        rid = h.get("rid", 0) if isinstance(h.get("rid"), int) else 0
    except Exception:  # noqa: BLE001 - the error reply must not fail
        pass
    return _error_frames(rid, exc)


def _error_frames(rid: int, exc: Exception) -> list:
    kind = "invalid request" if isinstance(exc, (WireError, ValueError)) else "internal error"
    if kind == "internal error":
        log.exception("dealer: %s", exc)
    return encode_message({"type": "error", "rid": rid, "message": f"{kind}: {str(exc)[:300]}"})
