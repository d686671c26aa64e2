"""The crypto provider: per-instance seeds, the parties' material, whole runs ahead.

What the dealer sees: the two 16-byte seeds of each job instance it made (so it knows
every mask and triple of that instance), the job digest, the material specs and plans
(shapes, op names, item addresses) and nothing else -- no share of data, model or any
opened value; it colludes with neither server.

Seeds belong to a job *instance* (job id + the nonce both servers drew when the job was
created), never to a job name: :mod:`.instances` makes fresh keys with os.urandom when both
servers ask for a new instance, stores them (0600, atomic, checksummed) so that a
restarted dealer, since ``DealerCore`` regenerates any item from (keys, addr, spec) and any
run from (keys, nonce, plan), resumes wherever a party asks, and deletes them when a server
says the job ended -- after which the instance is never served again.  A party registers
the plans it replays and announces its runs; a generator thread per instance computes
each announced run once, in nonce order, at most ``window_steps`` runs beyond the party's
position, and pushes each party its blob (party 1 its corrections; party 0 only the
fields dealt to it, so nothing for today's protocols), on the party's AES-GCM data plane
when it made one (``ss_engine.net.dealer_data``), else on CurveZMQ.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict

import numpy as np
import zmq

from ss_engine.net.dealer_link import (DEALER_CAPS, DEALER_REQUEST_CAPS, NONCE_BYTES, material_frames,
                                       parse_plan, parse_spec)
from ss_engine.net.keys import load_keypair, load_public_key, public_path
from ss_engine.net.wire import (JOB_ID_RE, WireError, decode_message, encode_message,
                                 expect_bool, expect_bytes, expect_int, expect_list, expect_str)
from ss_engine.comm.channel import ChannelClosed
from ss_engine.net.dealer_data import DataListener
from ss_engine.net.zmq_channel import CurveContext, bind_retrying, endpoint_host, user_id
from ss_engine.deploy.config import DeployConfig
from ss_engine.preprocessing.expand import DealerCore
from ss_engine.preprocessing.plan import MaterialPlan
from ss_engine.preprocessing.specs import Addr, received_fields
from ss_engine.prg import SEED_BYTES

from .instances import Instance, InstanceError, InstanceRegistry

__all__ = ["DealerService"]

log = logging.getLogger("ss_engine.dealer")

#: plans one instance keeps, runs one announcement may name, bindings it remembers
MAX_PLANS = 16
MAX_RUNS = 64
_BINDINGS = 4096


class _Job:
    """One job instance's generator: its plans, the runs announced, the thread that
    generates them within the window and pushes each party its blob."""

    def __init__(self, inst: Instance, window_steps: int, ctx: zmq.Context, streams: dict):
        self.name, self.iid = inst.job, inst.iid
        self.streams = streams   # (instance id, rank) -> the party's data plane (shared)
        self.core = DealerCore(*inst.keys, cache_items=256)
        self.window = max(1, int(window_steps))
        self.cond = threading.Condition()
        self.plans: OrderedDict[bytes, MaterialPlan] = OrderedDict()
        self.bound: OrderedDict[int, bytes] = OrderedDict()   # nonce -> plan digest
        self.pending: dict[int, set] = {}                     # nonce -> ranks waiting for it
        self.ident: dict[int, bytes] = {}                      # rank -> ROUTER identity
        self.served: dict[int, set] = {0: set(), 1: set()}     # nonces pushed to each rank
        self.at = {0: -1, 1: -1}
        self.stopped = False
        self.runs_generated = 0
        self.thread: threading.Thread | None = None
        self._ctx = ctx

    def add_plan(self, plan: MaterialPlan) -> None:
        with self.cond:
            self.plans[plan.digest] = plan
            self.plans.move_to_end(plan.digest)
            while len(self.plans) > MAX_PLANS:
                self.plans.popitem(last=False)
            self.cond.notify_all()

    def announce(self, ident: bytes, rank: int, at: int, runs: list, again: bool) -> list:
        """Queue the announced runs; returns the replies owed now (need_plan, refused)."""
        replies = []
        with self.cond:
            if self.ident.get(rank) != ident:   # a new connection: it may have resumed earlier
                self.ident[rank] = ident
                self.at[rank] = at
                self.served[rank].clear()
                for waiting in self.pending.values():
                    waiting.discard(rank)
            self.at[rank] = max(self.at[rank], at)
            for nonce, digest in runs:
                bound = self.bound.get(nonce)
                if bound is not None and bound != digest:
                    replies.append(encode_message({"type": "refused", "job": self.name, "nonce": nonce,
                                                   "message": "the run was announced with another plan"}))
                    continue
                if digest not in self.plans:
                    replies.append(encode_message({"type": "need_plan", "job": self.name,
                                                   "digest": digest}))
                if bound is None:
                    self.bound[nonce] = digest
                    while len(self.bound) > _BINDINGS:
                        self.bound.popitem(last=False)
                if again or nonce not in self.served[rank]:
                    self.pending.setdefault(nonce, set()).add(rank)
            for r in (0, 1):   # what lies behind a party is of no more use to it
                for old in [n for n in self.served[r] if n < self.at[r]]:
                    self.served[r].discard(old)
                for n in [n for n, w in self.pending.items() if r in w and n < self.at[r]]:
                    self.pending[n].discard(r)
            for n in [n for n, w in self.pending.items() if not w]:
                del self.pending[n]
            self.cond.notify_all()
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name=f"dealer-{self.name}", daemon=True)
            self.thread.start()
        return replies

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def _next(self):
        """(nonce, plan, {rank: ident}) of the next run to generate, or None (lock held)."""
        for nonce in sorted(self.pending):
            ranks = {r for r in self.pending[nonce] if nonce <= self.at[r] + self.window}
            plan = self.plans.get(self.bound.get(nonce))
            if ranks and plan is not None:
                self.pending[nonce] -= ranks
                if not self.pending[nonce]:
                    del self.pending[nonce]
                for r in ranks:
                    self.served[r].add(nonce)
                return nonce, plan, {r: self.ident[r] for r in ranks}
        return None

    def _run(self) -> None:
        out = self._ctx.socket(zmq.PUSH)
        out.linger = 0
        out.connect("inproc://dealer-out")
        try:
            while True:
                with self.cond:
                    while not self.stopped and (task := self._next()) is None:
                        self.cond.wait(1.0)
                    if self.stopped:
                        return
                nonce, plan, to = task
                try:
                    blobs = self.core.step(nonce, plan)
                except Exception as exc:  # noqa: BLE001 - a bad plan must not kill the thread
                    log.warning("job %s: cannot generate run %d: %s", self.name, nonce, exc)
                    continue
                self.runs_generated += 1
                for rank, ident in to.items():
                    if rank not in blobs:
                        continue
                    frames = encode_message({"type": "blob", "job": self.name, "nonce": nonce,
                                             "digest": plan.digest}, [blobs[rank]])
                    stream = self.streams.get((self.iid, rank))
                    if stream is not None:
                        try:
                            stream.send(frames)
                            continue
                        except ChannelClosed:   # the party is gone or restarting: CurveZMQ then
                            self.streams.pop((self.iid, rank), None)
                    out.send_multipart([ident, *frames], copy=False)
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
        self.streams: dict = {}   # (instance id, rank) -> SealedStream of the party's data plane
        self.data = DataListener(endpoint_host(cfg.dealer.endpoint), self._attach_data, DEALER_CAPS)
        self.handled = self.errors = 0

    # -- instances ------------------------------------------------------------------------
    def _job(self, name: str, nonce: bytes) -> _Job:
        inst = self.instances.get(name, nonce)
        job = self.jobs.get(inst.iid)
        if job is not None:
            self.jobs.move_to_end(inst.iid)
            return job
        job = _Job(inst, self.cfg.dealer.window_steps, self.curve.ctx, self.streams)
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
        return [(i, encode_message({"type": "keys", "job": name, "rid": r,
                                    "data": self.data.grant((inst.iid, p))},
                                   [np.frombuffer(inst.keys[p], np.uint8).copy()]))
                for p, (i, r) in ready]

    def _attach_data(self, owner: tuple, stream) -> None:
        """A party proved its data grant: its blobs go on this stream from now on."""
        old = self.streams.get(owner)
        self.streams[owner] = stream
        if old is not None:
            old.close()

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
            for rank in (0, 1):
                stream = self.streams.pop((iid, rank), None)
                if stream is not None:
                    stream.close()
            log.info("job %s: instance %s released; its keys are deleted", job, iid)
            return [(ident, encode_message({"type": "released", "job": job, "rid": rid}))]
        if t == "get":
            addr = expect_list(h, "addr", 3)
            spec = parse_spec(h.get("spec"))
            try:
                addr = Addr(*(int(v) for v in addr))
            except (TypeError, ValueError):
                raise WireError("get: an item address is [nonce, r, c]") from None
            if len(addr) != 3 or min(addr) < 0 or max(addr) >= 2**62:
                raise WireError("get: item address out of range")
            if not received_fields(spec, rank):
                raise WireError(f"get: party {rank} receives nothing for {spec.kind} material")
            got = self._job(job, nonce).core.item(rank, addr, spec)
            return [(ident, material_frames("material", job, addr, spec, rank, got, rid=rid))]
        if t == "plan":
            plan = parse_plan(h.get("plan"))
            if not plan.receives(rank):
                raise WireError(f"plan: party {rank} receives nothing in this plan")
            self._job(job, nonce).add_plan(plan)
            return []
        if t == "runs":
            at = expect_int(h, "at", 0, 2**62)
            raw = expect_list(h, "runs", MAX_RUNS)
            runs = []
            for it in raw:
                if not isinstance(it, list) or len(it) != 2 or not isinstance(it[1], bytes) or len(it[1]) != 16:
                    raise WireError("runs are [nonce, plan digest] pairs")
                runs.append((expect_int({"n": it[0]}, "n", at, at + MAX_RUNS), it[1]))
            again = expect_bool(h, "again", required=False)
            replies = self._job(job, nonce).announce(ident, rank, at, runs, again)
            return [(ident, r) for r in replies]
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
        self.data.close()
        for stream in list(self.streams.values()):
            stream.close()
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
