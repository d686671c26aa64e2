"""A compute server: the client-facing request loop, validation, and the job runner.

What a server sees: its share of every uploaded tensor (uniformly random on its own), the
public job description (model, hyper-parameters, row counts), the masked values the
protocols open (uniformly random), its own dealer key, and the authenticated public keys
of the clients.  Never a plaintext pixel, label or weight.

Every request is decoded and validated in full (wire caps, field types and ranges, names,
shapes, ownership, job state) before anything is written; a bad one gets an ``error`` reply
naming the problem and the loop goes on.  No request can make the loop raise.

Tenancy: who may send what is the role table of :mod:`ss_engine.deploy.protocol` (the
trainer who created a job drives it; the data owners it names only upload their parts);
each client holds at most ``max_jobs_per_client`` jobs and ``max_bytes_per_client`` bytes
of shares here, counted from the store, so the limits hold across restarts; a job left
"uploading" for ``upload_expiry`` seconds without a new chunk is deleted.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import numpy as np
import zmq

from ss_engine.net.keys import load_keypair, load_public_key, public_path
from ss_engine.net.wire import (JOB_ID_RE, PROTOCOL_VERSION, StoredFileError, WireCaps, WireError,
                                 decode_message, encode_message, expect_arrays, expect_bytes,
                                 expect_int, expect_list, expect_map, expect_str)
from ss_engine.net.zmq_channel import CurveContext, bind_retrying, user_id
from ss_engine.deploy.config import DeployConfig
from ss_engine.deploy.protocol import (CLIENT_CAPS_KW, JOB_KINDS, MAX_OWNERS, MAX_ROW_ELEMENTS,
                                       MAX_ROWS, NONCE_PART_BYTES, PART_RE, REQUEST_TYPES,
                                       TENSOR_RE, job_digest)
from ss_engine.prg import SEED_BYTES
from ss_engine.job import JobError, TrainJob, UploadShapes, steps_per_epoch, upload_shapes

from .release import DealerReleases
from .runner import JobRunner, Live
from .session import CLOSE, SessionDesk
from .store import JobRecord, JobStore

__all__ = ["Server"]

log = logging.getLogger("ss_engine.server")
CAPS = WireCaps(**CLIENT_CAPS_KW)
MAX_TENSOR_BYTES = 8 << 30
MAX_LOSS_REPLY = 10_000
_EXPIRY_EVERY = 1.0   # s between scans for stale uploads

#: which role a request about an existing job needs (see ss_engine.deploy.protocol);
#: uploads are decided by the tensor's name in :meth:`Server._upload_role`
_NEEDS = {"upload_status": ("trainer", "owner"), "submit": ("trainer",), "status": ("trainer",),
          "fetch": ("trainer",), "delete": ("trainer",), "session_start": ("trainer",),
          "session_ops": ("trainer",), "session_close": ("trainer",)}


_ROLE_NAMES = {"trainer": "the trainer", "owner": "the data owners named"}


def _roles(rec: JobRecord, user: str) -> set:
    return ({"trainer"} if rec.owner == user else set()) | ({"owner"} if user in rec.owners else set())


@dataclass(frozen=True)
class SubmitRequest:
    """A submit's fields, each checked for type and range."""

    kind: str
    job: TrainJob
    shapes: UploadShapes      # what the job's inputs must look like (from its description)
    frac_bits: int
    parts: list
    model_job: str
    nonce_halves: tuple
    test_seed: bytes | None

    @classmethod
    def parse(cls, h: dict, caps) -> "SubmitRequest":
        kind = expect_str(h, "kind", choices=JOB_KINDS)
        train = expect_map(h, "train")
        frac_bits = expect_int(h, "frac_bits", 8, 30)
        parts = expect_list(h, "parts", 64)
        model_job = expect_str(h, "model_job", pattern=JOB_ID_RE, max_len=64, required=False)
        seed = expect_bytes(h, "test_seed", SEED_BYTES) if "test_seed" in h else None
        if not all(isinstance(p, str) and PART_RE.match(p) for p in parts) or len(set(parts)) != len(parts):
            raise WireError("parts must be distinct names of uploaded data parts")
        try:
            tj = TrainJob.from_dict(train)
            # every expected shape comes from the job's own model description, within caps
            shapes = upload_shapes(tj, caps)
        except (JobError, ValueError, TypeError) as exc:
            raise WireError(f"invalid training settings: {exc}") from None
        halves = expect_list(h, "nonce", 2)
        if len(halves) != 2 or not all(isinstance(x, bytes) and len(x) == NONCE_PART_BYTES for x in halves):
            raise WireError(f"field 'nonce' must be the two servers' {NONCE_PART_BYTES}-byte halves "
                            f"from create (server 0's, then server 1's)")
        return cls(kind, tj, shapes, frac_bits, list(parts), model_job, tuple(halves), seed)


class Server:
    def __init__(self, rank: int, cfg: DeployConfig):
        if rank not in (0, 1):
            raise ValueError("rank must be 0 or 1")
        self.rank, self.cfg = rank, cfg
        me, peer = cfg.servers[rank], cfg.servers[1 - rank]
        keys = cfg.path(cfg.keys_dir)
        self.curve = CurveContext(load_keypair(keys, me.key))
        client_keys = {c: load_public_key(public_path(keys, c)) for c in cfg.clients}
        self.client_names: dict[bytes, str] = {}   # authenticated key -> its name in `clients`
        for name, key in client_keys.items():
            self.client_names.setdefault(key, name)
        self.curve.allow("clients", client_keys.values())
        self.store = JobStore(cfg.path(me.data_dir))
        self.sock = self.curve.server_socket(zmq.ROUTER, "clients", caps=CAPS)
        self.sock.sndhwm = 10_000
        bind_retrying(self.sock, me.client_endpoint)
        self.live: dict[str, Live] = {}
        self.stop = threading.Event()
        dealer_public = load_public_key(public_path(keys, cfg.dealer.key))
        self.sessions = SessionDesk(rank, self.store, self.curve.ctx)
        self.runner = JobRunner(rank, cfg, self.store, self.curve,
                                load_public_key(public_path(keys, peer.key)), dealer_public,
                                self.live, self.stop, self.sessions)
        self.releases = DealerReleases(self.store, self.curve, cfg.dealer.connect, dealer_public,
                                       self.stop)
        self.handled = self.refused = 0
        self._next_expiry = 0.0

    # -- loop -----------------------------------------------------------------------------
    def serve(self) -> None:
        self.runner.start()
        self.releases.start()
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.sessions.replies, zmq.POLLIN)
        while not self.stop.is_set():
            self._expire_uploads()
            ready = dict(poller.poll(200))
            if self.sessions.replies in ready:
                self.sessions.forward(self.sock)
            if self.sock not in ready:
                continue
            msg = self.sock.recv_multipart(copy=False)
            ident, frames = msg[0].bytes, msg[1:]
            self.handled += 1
            rid = 0
            try:
                user = self.client_names.get(user_id(frames[0])) if frames else None
                if user is None:
                    raise WireError("unauthenticated")
                h, arrays = decode_message(frames, CAPS)
                rid = expect_int(h, "rid", 0, 2**62)
                reply, out = self.handle(user, h, arrays, ident)
                if reply is None:
                    continue      # a session batch: the session's runner answers it
                reply = {**reply, "rid": rid}
            except WireError as exc:
                self.refused += 1
                reply, out = {"type": "error", "rid": rid, "message": str(exc)[:500]}, []
            except Exception as exc:  # noqa: BLE001 - a request must never take the server down
                self.refused += 1
                log.exception("request failed")
                reply, out = {"type": "error", "rid": rid,
                              "message": f"internal error: {type(exc).__name__}: {str(exc)[:300]}"}, []
            try:
                self.sock.send_multipart([ident, *encode_message(reply, out)], copy=False)
            except (zmq.ZMQError, WireError):
                log.exception("reply failed")

    def close(self) -> None:
        self.stop.set()
        self.runner.wake.set()
        self.store.releases_changed.set()
        for th in (self.runner, self.releases):
            if th.is_alive():
                th.join(30)
        self.sessions.close()
        self.sock.close(linger=0)
        self.curve.close()

    def _expire_uploads(self) -> None:
        """Delete jobs left "uploading" longer than ``upload_expiry`` without a new chunk."""
        now = time.monotonic()
        if now < self._next_expiry:
            return
        self._next_expiry = now + _EXPIRY_EVERY
        for job in self.store.stale_uploads(self.cfg.upload_expiry):
            log.info("job %s: no upload for more than %.0f s (upload_expiry); deleted", job,
                     self.cfg.upload_expiry)
            self.store.delete(job)
            self.live.pop(job, None)

    # -- authorisation --------------------------------------------------------------------
    def _authorise(self, user: str, job: str, what: str, needs: tuple) -> JobRecord:
        """The job, if ``user`` holds one of the roles ``needs`` in it; WireError if not."""
        rec = self.store.jobs.get(job)
        if rec is None:
            why = self.store.quarantined.get(job)
            raise WireError(f"job {job!r} is {why}" if why else f"unknown job {job!r}")
        roles = _roles(rec, user)
        if not roles:
            raise WireError(f"{what}: job {job!r} belongs to another client")
        if not roles & set(needs):
            who = " or ".join(_ROLE_NAMES[r] for r in needs)
            raise WireError(f"{what}: only {who} of job {job!r} may do this")
        return rec

    @staticmethod
    def _upload_role(name: str) -> tuple:
        """Parts come from named data owners; parameters and prediction inputs from the trainer."""
        return ("owner",) if name.startswith("data/") else ("trainer",)

    # -- handlers -------------------------------------------------------------------------
    def handle(self, user: str, h: dict, arrays: list, ident: bytes = b"") -> tuple[dict | None, list]:
        """The reply to a request, or (None, []) when a session's runner answers it later."""
        t = h["type"]
        if t not in REQUEST_TYPES:
            raise WireError(f"unknown message type {t!r} (expected one of {', '.join(REQUEST_TYPES)})")
        if t == "ping":
            return {"type": "pong", "rank": self.rank, "version": PROTOCOL_VERSION}, []
        if t == "jobs":
            return self._jobs(user), []
        job = h["job"]
        if not job:
            raise WireError(f"{t}: a job id is required")
        if t == "upload":
            return self._upload(user, job, h, arrays)
        if t.startswith("session_"):
            return self._session(user, job, t, h, arrays, ident)
        if arrays:
            raise WireError(f"{t}: unexpected payload")
        if t == "create":
            return self._create(user, job, h)
        if t == "submit":
            return self._submit(user, job, h)
        if t == "status" and job in self.store.quarantined:
            return self._quarantined_status(job), []
        rec = self._authorise(user, job, t, _NEEDS[t])
        if t == "upload_status":
            infos = self.store.tensors.get(job, {})
            reply = {"type": "ok", "state": rec.state, "tensors": {
                n: [i.received, i.rows] for n, i in infos.items() if i.owner == user}}
            if rec.owner == user:
                reply["nonce_part"] = rec.nonce_part
            return reply, []
        if t == "status":
            return self._status(rec, h)
        if t == "fetch":
            if rec.kind == "session":
                raise WireError(f"job {job!r} is a session: its values are revealed batch by batch")
            if rec.state != "done":
                raise WireError(f"job {job!r} is {rec.state}, not done")
            try:
                names, res = self.store.load_result(job)
            except StoredFileError as exc:
                raise WireError(f"job {job!r}: the stored result fails its checksum on server "
                                f"{self.rank} ({str(exc).rsplit(': ', 1)[-1]})") from None
            return {"type": "result", "names": names, "kind": rec.kind}, list(res)
        if t == "delete":
            if rec.state in ("running",):
                raise WireError(f"job {job!r} is running")
            self.store.delete(job)
            self.live.pop(job, None)
            self.sessions.forget(job)
            return {"type": "ok"}, []
        raise WireError(f"unknown message type {t!r}")

    def _session(self, user: str, job: str, t: str, h: dict, arrays: list, ident: bytes):
        """Start, feed or close an interactive session (``servers.session``)."""
        rec = self._authorise(user, job, t, _NEEDS[t])
        if t != "session_ops" and arrays:
            raise WireError(f"{t}: unexpected payload")
        if t == "session_start":
            reply = self.sessions.start(rec, h)
            self.runner.wake.set()
            return reply, []
        rid = expect_int(h, "rid", 0, 2**62)
        reply = self.sessions.offer(rec, (ident, rid, CLOSE if t == "session_close" else h, arrays))
        return reply, []

    def _create(self, user: str, job: str, h: dict) -> tuple[dict, list]:
        owners = expect_list(h, "owners", MAX_OWNERS)
        if not all(isinstance(o, str) for o in owners) or len(set(owners)) != len(owners):
            raise WireError("owners must be distinct client names")
        unknown = sorted(set(owners) - set(self.cfg.clients))
        if unknown:
            raise WireError(f"owners {[o[:40] for o in unknown]} are not clients of this deployment")
        with self.store.lock:
            mine = len(self.store.jobs_of(user))
            if mine >= self.cfg.max_jobs_per_client:
                raise WireError(f"you hold {mine} jobs on server {self.rank} (max_jobs_per_client); "
                                f"delete finished ones first (ss-engine jobs lists them)")
            if len(self.store.jobs) + len(self.store.quarantined) >= self.cfg.job_limit:
                raise WireError(f"server {self.rank} holds {self.cfg.job_limit} jobs (max_jobs)")
            rec = self.store.create(job, user, owners, os.urandom(NONCE_PART_BYTES))
        return {"type": "ok", "nonce_part": rec.nonce_part}, []

    def _upload(self, user: str, job: str, h: dict, arrays: list) -> tuple[dict, list]:
        name = expect_str(h, "name", pattern=TENSOR_RE, max_len=80)
        rows = expect_int(h, "rows", 1, MAX_ROWS)
        offset = expect_int(h, "offset", 0, MAX_ROWS)
        shape = expect_list(h, "row_shape", 4)
        if not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_ROW_ELEMENTS
                   for s in shape):
            raise WireError("row_shape must be positive integers")
        row = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if row > MAX_ROW_ELEMENTS or rows * row * 8 > MAX_TENSOR_BYTES:
            raise WireError(f"{name}: tensor too large")
        expect_arrays(arrays, [("int64", (None, *shape))], "upload")
        if arrays[0].shape[0] < 1:
            raise WireError("upload: empty chunk")
        with self.store.lock:
            rec = self._authorise(user, job, f"upload {name}", self._upload_role(name))
            if rec.state != "uploading":
                raise WireError(f"job {job!r} was submitted; its inputs are immutable")
            if name not in self.store.tensors[job]:   # a new tensor counts in full from row 0
                held = self.store.bytes_of(user)
                if held + rows * row * 8 > self.cfg.max_bytes_per_client:
                    raise WireError(f"{name}: {rows * row * 8} more bytes would exceed your "
                                    f"max_bytes_per_client on server {self.rank} ({held} held); "
                                    f"delete finished jobs first")
            got = self.store.append_rows(job, name, offset, rows, tuple(shape), arrays[0], user)
        return {"type": "ok", "received": got}, []

    def _submit(self, user: str, job: str, h: dict) -> tuple[dict, list]:
        req = SubmitRequest.parse(h, self.cfg.model_caps)
        if req.test_seed is not None and not self.cfg.dealer.allow_test_seed:
            raise WireError("this deployment does not accept test seeds (dealer.allow_test_seed)")
        with self.store.lock:
            rec = self._authorise(user, job, "submit", _NEEDS["submit"])
            if rec.state != "uploading":
                raise WireError(f"job {job!r} was already submitted")
            if req.nonce_halves[self.rank] != rec.nonce_part:
                raise WireError(f"submit: the nonce does not hold server {self.rank}'s half of "
                                f"this job (as create returned it)")
            infos = self.store.tensors.get(job, {})
            self._check_part_owners(rec, req, infos)
            self._check_model_job(user, req)
            rows = self._input_rows(req, infos)
            n = sum(rows[f"data/{p}/x"] for p in req.parts) if req.kind == "train" else rows["input/x"]
            nonce = req.nonce_halves[0] + req.nonce_halves[1]
            rec.kind, rec.train, rec.frac_bits = req.kind, req.job.to_dict(), req.frac_bits
            rec.parts, rec.model_job, rec.test_seed, rec.nonce = req.parts, req.model_job, req.test_seed, nonce
            rec.total_steps = req.job.epochs * steps_per_epoch(n, req.job.batch_size) \
                if req.kind == "train" else 1
            rec.digest = job_digest(req.kind, rec.train, req.frac_bits, rec.parts, rows,
                                    req.model_job, req.test_seed, nonce)
            rec.state, rec.message = "queued", "queued"
            self.store.save(rec)
        self.runner.wake.set()
        return {"type": "ok", "total_steps": rec.total_steps, "digest": rec.digest}, []

    @staticmethod
    def _check_part_owners(rec: JobRecord, req: SubmitRequest, infos: dict) -> None:
        """Each part comes whole (images and labels) from one data owner the job names."""
        for p in req.parts:
            uploaders = {infos[n].owner for n in (f"data/{p}/x", f"data/{p}/y") if n in infos}
            if len(uploaders) > 1 or not uploaders <= set(rec.owners):
                raise WireError(f"part {p}: its images and labels must come from one data owner "
                                f"the job names")

    def _check_model_job(self, user: str, req: SubmitRequest) -> None:
        if not req.model_job:
            return
        if req.kind == "train":
            raise WireError("model_job is for prediction jobs")
        src = self.store.jobs.get(req.model_job)
        if src is None or src.owner != user or src.kind != "train" or src.state != "done":
            raise WireError(f"model_job {req.model_job!r} is not a finished training job of yours")

    def _input_rows(self, req: SubmitRequest, infos: dict) -> dict[str, int]:
        """The row count of every input the job reads, after checking each tensor's shape."""
        def need(name, row_shape):
            i = infos.get(name)
            if i is None or not i.complete:
                raise WireError(f"{name} is missing or incomplete")
            if i.row_shape != tuple(row_shape):
                raise WireError(f"{name} has rows of shape {i.row_shape}, expected {tuple(row_shape)}")
            return i.rows
        rows: dict[str, int] = {}
        tj, shapes = req.job, req.shapes
        if req.kind == "train":
            if not req.parts:
                raise WireError("a training job needs at least one data part")
            for p in req.parts:
                rows[f"data/{p}/x"] = need(f"data/{p}/x", shapes.x)
                rows[f"data/{p}/y"] = need(f"data/{p}/y", shapes.y)
                if rows[f"data/{p}/x"] != rows[f"data/{p}/y"]:
                    raise WireError(f"part {p}: images and labels differ in count")
        else:
            rows["input/x"] = need("input/x", shapes.x)
        if req.kind == "train" or not req.model_job:
            for n, s in shapes.params.items():
                rows[f"param/{n}"] = need(f"param/{n}", s)
                if rows[f"param/{n}"] != 1:
                    raise WireError(f"param/{n} must be one row")
        else:
            trained = TrainJob.from_dict(self.store.jobs[req.model_job].train)
            if trained.model != tj.model or trained.task != tj.task:
                raise WireError(f"model_job {req.model_job!r} trained another model or task "
                                f"({trained.model.name or 'unnamed'}, {trained.task})")
        return rows

    def _jobs(self, user: str) -> dict:
        """The jobs ``user`` trains or is named in as a data owner (others stay invisible)."""
        with self.store.lock:
            mine = [(r, _roles(r, user)) for r in self.store.jobs.values()]
            return {"type": "jobs", "jobs": [
                {"job": r.job, "role": "+".join(sorted(roles)), "state": r.state, "kind": r.kind,
                 "message": r.message, "created": r.created} for r, roles in mine if roles]}

    def _quarantined_status(self, job: str) -> dict:
        return {"type": "status", "state": "quarantined", "message": self.store.quarantined[job],
                "kind": "", "step": 0, "total": 0, "epoch": 0, "seconds": 0.0, "channel": {},
                "dealer": {}, "steps_run": 0, "warmup_steps": 0, "warmup_end_step": 0,
                "warmup_seconds": None,
                "loss_steps": [], "time": time.time()}

    def _status(self, rec, h: dict) -> tuple[dict, list]:
        since = expect_int(h, "since", 0, 2**62, required=False)
        lv = self.live.get(rec.job, Live())
        losses = [(s, a) for s, a in list(lv.losses) if s >= since][:MAX_LOSS_REPLY]
        step = rec.total_steps if rec.state == "done" else lv.step
        return {"type": "status", "state": rec.state, "message": rec.message, "kind": rec.kind,
                "step": step, "total": rec.total_steps, "epoch": lv.epoch,
                "seconds": lv.seconds, "channel": lv.channel, "dealer": lv.dealer,
                "steps_run": lv.steps_run, "warmup_steps": lv.warmup_steps,
                "warmup_end_step": lv.warmup_end_step, "warmup_seconds": lv.warmup_seconds,
                "loss_steps": [s for s, _ in losses], "time": time.time()}, [a for _, a in losses]
