"""The crypto provider: per-job seeds, party 1's corrections, pre-generation ahead.

What the dealer sees: the two 16-byte seeds of each job it made (so it knows every mask
and triple), the material specs (shapes, op names, sequence numbers) and nothing else —
no share of data, model or any opened value; it colludes with neither server.

Per job the dealer makes key0/key1 with os.urandom on the first ``open`` and stores them
(0600, atomic) under ``data_dir/jobs``; a restarted dealer reloads them and, since
``DealerCore`` regenerates any item from (keys, seq, spec), resumes wherever party 1 asks.
A ``schedule`` from party 1 starts a generator thread that computes the next steps'
corrections into a bounded window and pushes them to party 1 before they are needed.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict, deque

import numpy as np
import zmq

from ss_engine.net.dealer_link import (DEALER_CAPS, corrections_frames, parse_spec, shift_spec,
                                       spec_digest)
from ss_engine.net.keys import load_keypair, load_public_key, public_path
from ss_engine.net.wire import (JOB_ID_RE, WireError, decode_message, encode_message,
                                 expect_bytes, expect_int, expect_list, read_frames_file,
                                 write_frames_atomic)
from ss_engine.net.zmq_channel import CurveContext, bind_retrying, user_id
from ss_engine.deploy.config import DeployConfig
from ss_engine.preprocessing.expand import DealerCore
from ss_engine.prg import SEED_BYTES, derive_seed

__all__ = ["DealerService"]

log = logging.getLogger("ss_engine.dealer")

MAX_SCHEDULE_ITEMS = 20_000
MAX_PERIOD = 1 << 24


class _Job:
    """One job's keys, generator and pre-generation state."""

    def __init__(self, name: str, keys: tuple[bytes, bytes], window_steps: int, ctx: zmq.Context):
        self.name, self.keys = name, keys
        self.core = DealerCore(*keys, cache_items=256)
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
            self.ident = ident
            self.schedule = (base, period, items)
            self.generation += 1
            self.consumed = max(self.consumed, base + period)
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
        self.data = cfg.path(cfg.dealer.data_dir) / "jobs"
        self.data.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data, 0o700)
        self.sock = self.curve.server_socket(zmq.ROUTER, "dealer")
        self.sock.router_mandatory = False
        self.sock.sndhwm = 100_000
        bind_retrying(self.sock, cfg.dealer.endpoint)
        self.inbox = self.curve.ctx.socket(zmq.PULL)
        self.inbox.bind("inproc://dealer-out")
        self.jobs: OrderedDict[str, _Job] = OrderedDict()
        self.handled = self.errors = 0

    # -- keys -----------------------------------------------------------------------------
    def _job(self, name: str, test_seed: bytes | None = None, create: bool = False) -> _Job:
        job = self.jobs.get(name)
        if job is not None:
            self.jobs.move_to_end(name)
            return job
        path = self.data / f"{name}.keys"
        if path.exists():
            h, arrays = read_frames_file(path)
            keys = (arrays[0].tobytes(), arrays[1].tobytes())
        elif not create:
            raise WireError(f"unknown job {name!r}: open it first")
        else:
            if test_seed is not None:
                keys = (derive_seed(test_seed, "party0"), derive_seed(test_seed, "party1"))
            else:
                keys = (os.urandom(SEED_BYTES), os.urandom(SEED_BYTES))
            write_frames_atomic(path, encode_message(
                {"type": "dealer_keys", "job": name},
                [np.frombuffer(k, np.uint8) for k in keys]))
        job = _Job(name, keys, self.cfg.dealer.window_steps, self.curve.ctx)
        self.jobs[name] = job
        while len(self.jobs) > self.cfg.max_jobs:
            _, old = self.jobs.popitem(last=False)
            old.stop()
        return job

    # -- requests -------------------------------------------------------------------------
    def handle(self, ident: bytes, frames: list) -> list | None:
        rank = self.rank_of.get(user_id(frames[0]) if frames else b"")
        if rank is None:
            raise WireError("unknown caller")
        h, arrays = decode_message(frames, DEALER_CAPS)
        t, job = h["type"], h["job"]
        if not job or not JOB_ID_RE.match(job):
            raise WireError("a job id is required")
        rid = expect_int(h, "rid", 0, 2**62, required=t in ("open", "get"))
        if arrays:
            raise WireError(f"{t}: unexpected payload")
        if t == "open":
            seed = None
            if "test_seed" in h:
                if not self.cfg.dealer.allow_test_seed:
                    raise WireError("this dealer does not accept test seeds")
                seed = expect_bytes(h, "test_seed", SEED_BYTES)
            j = self._job(job, seed, create=True)
            return encode_message({"type": "keys", "job": job, "rid": rid},
                                  [np.frombuffer(j.keys[rank], np.uint8).copy()])
        if rank != 1:
            raise WireError(f"{t}: party 0 receives no corrections")
        if t == "get":
            seq = expect_int(h, "seq", 0, 2**62)
            spec = parse_spec(h.get("spec"))
            j = self._job(job)
            j.advance(seq)
            corr = j.core.corrections(seq, spec)
            return corrections_frames("corr", job, seq, spec, corr, rid=rid)
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
            self._job(job).set_schedule(ident, base, period, items)
            return None
        if t == "consumed":
            self._job(job).advance(expect_int(h, "seq", 0, 2**62))
            return None
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
                    reply = self.handle(ident, frames)
                except Exception as exc:  # noqa: BLE001 - every bad request gets an answer
                    self.errors += 1
                    reply = _error(frames, exc)
                if reply is not None:
                    self.sock.send_multipart([ident, *reply], copy=False)

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
        h, _ = decode_message(frames, DEALER_CAPS)
        rid = h.get("rid", 0) if isinstance(h.get("rid"), int) else 0
    except Exception:  # noqa: BLE001 - the error reply must not fail
        pass
    kind = "invalid request" if isinstance(exc, (WireError, ValueError)) else "internal error"
    if kind == "internal error":
        log.exception("dealer: %s", exc)
    return encode_message({"type": "error", "rid": rid, "message": f"{kind}: {str(exc)[:300]}"})
