"""A compute server: the client-facing request loop, validation, and the job runner.

What a server sees: its share of every uploaded tensor (uniformly random on its own), the
public job description (model, hyper-parameters, row counts), the masked values the
protocols open (uniformly random), its own dealer key, and the authenticated public keys
of the clients.  Never a plaintext pixel, label or weight.

Every request is decoded and validated in full (wire caps, field types and ranges, names,
shapes, ownership, job state) before anything is written; a bad one gets an ``error`` reply
naming the problem and the loop goes on.  No request can make the loop raise.
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import zmq

from ss_engine.net.keys import load_keypair, load_public_key, public_path
from ss_engine.net.wire import (JOB_ID_RE, PROTOCOL_VERSION, WireCaps, WireError, decode_message,
                                 encode_message, expect_arrays, expect_bytes, expect_int,
                                 expect_list, expect_map, expect_str)
from ss_engine.net.zmq_channel import CurveContext, bind_retrying, user_id
from ss_engine.deploy.config import DeployConfig
from ss_engine.deploy.protocol import (CLIENT_CAPS_KW, JOB_KINDS, MAX_ROW_ELEMENTS, MAX_ROWS,
                                       PART_RE, TENSOR_RE, job_digest)
from ss_engine.prg import SEED_BYTES
from ss_engine.job import JobError, TrainJob, steps_per_epoch, upload_shapes

from .runner import JobRunner, Live
from .store import JobStore

__all__ = ["Server"]

log = logging.getLogger("ss_engine.server")
CAPS = WireCaps(**CLIENT_CAPS_KW)
MAX_TENSOR_BYTES = 8 << 30
MAX_LOSS_REPLY = 10_000
_TYPES = ("ping", "upload", "upload_status", "submit", "status", "fetch", "delete")


class Server:
    def __init__(self, rank: int, cfg: DeployConfig):
        if rank not in (0, 1):
            raise ValueError("rank must be 0 or 1")
        self.rank, self.cfg = rank, cfg
        me, peer = cfg.servers[rank], cfg.servers[1 - rank]
        keys = cfg.path(cfg.keys_dir)
        self.curve = CurveContext(load_keypair(keys, me.key))
        self.curve.allow("clients", [load_public_key(public_path(keys, c)) for c in cfg.clients])
        self.store = JobStore(cfg.path(me.data_dir))
        self.sock = self.curve.server_socket(zmq.ROUTER, "clients")
        self.sock.sndhwm = 10_000
        bind_retrying(self.sock, me.client_endpoint)
        self.live: dict[str, Live] = {}
        self.stop = threading.Event()
        self.runner = JobRunner(rank, cfg, self.store, self.curve,
                                load_public_key(public_path(keys, peer.key)),
                                load_public_key(public_path(keys, cfg.dealer.key)), self.live, self.stop)
        self.handled = self.refused = 0

    # -- loop -----------------------------------------------------------------------------
    def serve(self) -> None:
        self.runner.start()
        while not self.stop.is_set():
            if not self.sock.poll(200):
                continue
            msg = self.sock.recv_multipart(copy=False)
            ident, frames = msg[0].bytes, msg[1:]
            self.handled += 1
            rid = 0
            try:
                user = user_id(frames[0]) if frames else b""
                if not user:
                    raise WireError("unauthenticated")
                h, arrays = decode_message(frames, CAPS)
                rid = expect_int(h, "rid", 0, 2**62)
                reply, out = self.handle(user.decode(), h, arrays)
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
        if self.runner.is_alive():
            self.runner.join(30)
        self.sock.close(linger=0)
        self.curve.close()

    # -- handlers -------------------------------------------------------------------------
    def handle(self, user: str, h: dict, arrays: list) -> tuple[dict, list]:
        t = h["type"]
        if t not in _TYPES:
            raise WireError(f"unknown message type {t!r} (expected one of {', '.join(_TYPES)})")
        if t == "ping":
            return {"type": "pong", "rank": self.rank, "version": PROTOCOL_VERSION}, []
        job = h["job"]
        if not job:
            raise WireError(f"{t}: a job id is required")
        if t == "upload":
            return self._upload(user, job, h, arrays)
        if arrays:
            raise WireError(f"{t}: unexpected payload")
        if t == "submit":
            return self._submit(user, job, h)
        rec = self.store.jobs.get(job)
        if rec is None:
            raise WireError(f"unknown job {job!r}")
        if t == "upload_status":
            infos = self.store.tensors.get(job, {})
            return {"type": "ok", "state": rec.state, "tensors": {
                n: [i.received, i.rows] for n, i in infos.items() if i.owner == user}}, []
        if rec.owner != user:
            raise WireError(f"{t}: job {job!r} belongs to another client")
        if t == "status":
            return self._status(rec, h)
        if t == "fetch":
            if rec.state != "done":
                raise WireError(f"job {job!r} is {rec.state}, not done")
            names, res = self.store.load_result(job)
            return {"type": "result", "names": names, "kind": rec.kind}, list(res)
        if t == "delete":
            if rec.state in ("running",):
                raise WireError(f"job {job!r} is running")
            self.store.delete(job)
            self.live.pop(job, None)
            return {"type": "ok"}, []
        raise WireError(f"unknown message type {t!r}")

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
            rec = self.store.jobs.get(job)
            if rec is None:
                if len(self.store.jobs) >= self.cfg.max_jobs:
                    raise WireError(f"server holds {self.cfg.max_jobs} jobs; delete some first")
                rec = self.store.create(job)
            if rec.state != "uploading":
                raise WireError(f"job {job!r} was submitted; its inputs are immutable")
            got = self.store.append_rows(job, name, offset, rows, tuple(shape), arrays[0], user)
        return {"type": "ok", "received": got}, []

    def _submit(self, user: str, job: str, h: dict) -> tuple[dict, list]:
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
            shapes = upload_shapes(tj, self.cfg.model_caps)
        except (JobError, ValueError, TypeError) as exc:
            raise WireError(f"invalid training settings: {exc}") from None
        with self.store.lock:
            rec = self.store.jobs.get(job)
            if rec is None:
                raise WireError(f"unknown job {job!r}: upload its inputs first")
            if rec.state != "uploading":
                raise WireError(f"job {job!r} was already submitted")
            infos = self.store.tensors.get(job, {})

            def need(name, row_shape):
                i = infos.get(name)
                if i is None or not i.complete:
                    raise WireError(f"{name} is missing or incomplete")
                if i.row_shape != tuple(row_shape):
                    raise WireError(f"{name} has rows of shape {i.row_shape}, expected {tuple(row_shape)}")
                return i.rows
            rows: dict[str, int] = {}
            if kind == "train":
                if not parts:
                    raise WireError("a training job needs at least one data part")
                for p in parts:
                    rows[f"data/{p}/x"] = need(f"data/{p}/x", shapes.x)
                    rows[f"data/{p}/y"] = need(f"data/{p}/y", shapes.y)
                    if rows[f"data/{p}/x"] != rows[f"data/{p}/y"]:
                        raise WireError(f"part {p}: images and labels differ in count")
                if model_job:
                    raise WireError("model_job is for prediction jobs")
            else:
                rows["input/x"] = need("input/x", shapes.x)
            if kind == "train" or not model_job:
                for n, s in shapes.params.items():
                    rows[f"param/{n}"] = need(f"param/{n}", s)
                    if rows[f"param/{n}"] != 1:
                        raise WireError(f"param/{n} must be one row")
            else:
                src = self.store.jobs.get(model_job)
                if src is None or src.owner != user or src.kind != "train" or src.state != "done":
                    raise WireError(f"model_job {model_job!r} is not a finished training job of yours")
                trained = TrainJob.from_dict(src.train)
                if trained.model != tj.model or trained.task != tj.task:
                    raise WireError(f"model_job {model_job!r} trained another model or task "
                                    f"({trained.model.name or 'unnamed'}, {trained.task})")
            n = sum(rows[f"data/{p}/x"] for p in parts) if kind == "train" else rows["input/x"]
            rec.kind, rec.owner, rec.train, rec.frac_bits = kind, user, tj.to_dict(), frac_bits
            rec.parts, rec.model_job, rec.test_seed = list(parts), model_job, seed
            rec.total_steps = tj.epochs * steps_per_epoch(n, tj.batch_size) if kind == "train" else 1
            rec.digest = job_digest(kind, rec.train, frac_bits, rec.parts, rows, model_job, seed)
            rec.state, rec.message = "queued", "queued"
            self.store.save(rec)
        self.runner.wake.set()
        return {"type": "ok", "total_steps": rec.total_steps, "digest": rec.digest}, []

    def _status(self, rec, h: dict) -> tuple[dict, list]:
        since = expect_int(h, "since", 0, 2**62, required=False)
        lv = self.live.get(rec.job, Live())
        losses = [(s, a) for s, a in list(lv.losses) if s >= since][:MAX_LOSS_REPLY]
        step = rec.total_steps if rec.state == "done" else lv.step
        return {"type": "status", "state": rec.state, "message": rec.message, "kind": rec.kind,
                "step": step, "total": rec.total_steps, "epoch": lv.epoch,
                "seconds": lv.seconds, "channel": lv.channel, "dealer": lv.dealer,
                "warmup_end_step": lv.warmup_end_step, "warmup_seconds": lv.warmup_seconds,
                "start_step": lv.start_step,
                "loss_steps": [s for s, _ in losses], "time": time.time()}, [a for _, a in losses]

