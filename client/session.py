"""The client's connection to the two servers: create, upload shares, submit, poll, fetch.

A data owner or trainer holds a CurveZMQ key pair whose public key both servers list in
``clients``.  Each server receives only its own share of every tensor, streamed in chunks
of rows (never the whole data set in one message).

A job is created by its trainer (``create``), who names the data owners that may upload
parts into it; the two servers each return half of the job instance's nonce, and the
trainer's ``submit`` hands both halves to both servers (see ss_engine.deploy.protocol).
"""
from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

from ss_engine.net.keys import load_keypair, load_public_key, public_path
from ss_engine.net.wire import WireCaps
from ss_engine.comm.channel import ChannelTimeout
from ss_engine.net.zmq_channel import CurveContext, RpcClient, RpcError
from ss_engine.deploy.config import DeployConfig
from ss_engine.deploy.protocol import DEFAULT_CHUNK_ROWS, MAX_CHUNK_BYTES
from ss_engine.job import TrainJob

__all__ = ["ClientSession", "new_job_id", "JobFailed"]

_REPLY_CAPS = WireCaps(max_arrays=10_001, max_elements=1 << 26, max_total_bytes=1 << 32,
                       max_header_bytes=4 << 20, max_container=1 << 16)


class JobFailed(RuntimeError):
    """A server reports the job failed."""


def new_job_id(prefix: str = "job") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d%H%M%S')}-{os.urandom(4).hex()}"


class ClientSession:
    def __init__(self, cfg: DeployConfig, name: str = "client", timeout: float = 60.0):
        keys = cfg.path(cfg.keys_dir)
        self.cfg = cfg
        self.curve = CurveContext(load_keypair(keys, name))
        self.rpc = [RpcClient(self.curve, s.client, load_public_key(public_path(keys, s.key)),
                              timeout=timeout, caps=_REPLY_CAPS) for s in cfg.servers]
        self.bytes_uploaded = [0, 0]
        self._nonce: dict[str, list] = {}   # job -> [server 0's half, server 1's half]

    def close(self) -> None:
        for r in self.rpc:
            r.close()
        self.curve.close()

    def __enter__(self) -> "ClientSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def both(self, header: dict, arrays=((), ()), timeout: float | None = None) -> list:
        return [r.request(header, a, timeout) for r, a in zip(self.rpc, arrays)]

    def ping(self) -> list[dict]:
        return [h for h, _ in self.both({"type": "ping"})]

    # -- uploads --------------------------------------------------------------------------
    def upload(self, job: str, name: str, share0: np.ndarray, share1: np.ndarray,
               chunk_rows: int = DEFAULT_CHUNK_ROWS, resume: bool = True) -> None:
        """Stream ``share_p`` (rows of int64) to server p in chunks."""
        shares = [np.ascontiguousarray(share0, np.int64), np.ascontiguousarray(share1, np.int64)]
        if shares[0].shape != shares[1].shape or shares[0].ndim < 1:
            raise ValueError("the two shares must have one shape with a row axis")
        rows, row_shape = shares[0].shape[0], list(shares[0].shape[1:])
        row_bytes = 8 * int(np.prod(row_shape, dtype=np.int64))
        chunk_rows = max(1, min(chunk_rows, MAX_CHUNK_BYTES // max(1, row_bytes)))
        for p, (rpc, sh) in enumerate(zip(self.rpc, shares)):
            start = 0
            if resume:
                try:
                    h, _ = rpc.request({"type": "upload_status", "job": job})
                    start = h.get("tensors", {}).get(name, [0])[0]
                except RpcError:
                    start = 0  # a new job
            for off in range(start, rows, chunk_rows):
                chunk = sh[off:off + chunk_rows]
                rpc.request({"type": "upload", "job": job, "name": name, "offset": off, "rows": rows,
                             "row_shape": row_shape}, [chunk])
                self.bytes_uploaded[p] += chunk.nbytes

    def upload_params(self, job: str, p0: dict, p1: dict) -> None:
        for n in p0:
            self.upload(job, f"param/{n}", p0[n][None], p1[n][None])

    def upload_part(self, job: str, part: str, x: tuple, y: tuple | None = None) -> None:
        self.upload(job, f"data/{part}/x", *x)
        if y is not None:
            self.upload(job, f"data/{part}/y", *y)

    # -- jobs -----------------------------------------------------------------------------
    def create(self, job: str, owners=()) -> None:
        """Create ``job`` on both servers with this client as its trainer; ``owners`` are
        the clients (key names) allowed to upload data parts into it (name yourself to
        upload parts of your own).  On a refusal by either server nothing is left behind."""
        made, halves = [], []
        try:
            for rpc in self.rpc:
                h, _ = rpc.request({"type": "create", "job": job, "owners": list(owners)})
                made.append(rpc)
                halves.append(h["nonce_part"])
        except BaseException:
            for rpc in made:
                try:
                    rpc.request({"type": "delete", "job": job})
                except (RpcError, ChannelTimeout):
                    pass
            raise
        self._nonce[job] = halves

    def _nonce_halves(self, job: str) -> list:
        if len(self._nonce.get(job, ())) != 2:   # created by another session of this trainer
            self._nonce[job] = [h["nonce_part"] for h, _ in self.both({"type": "upload_status",
                                                                       "job": job})]
        return self._nonce[job]

    def submit(self, job: str, kind: str, train: TrainJob, frac_bits: int, parts=(),
               model_job: str = "", test_seed: bytes | None = None) -> int:
        h = {"type": "submit", "job": job, "kind": kind, "train": train.to_dict(),
             "frac_bits": int(frac_bits), "parts": list(parts), "model_job": model_job,
             "nonce": self._nonce_halves(job)}
        if test_seed is not None:
            h["test_seed"] = bytes(test_seed)
        r = self.both(h)
        if r[0][0]["digest"] != r[1][0]["digest"]:
            raise RpcError("the servers hold different inputs for this job")
        return r[0][0]["total_steps"]

    def status(self, job: str, since: int = 0, timeout: float = 10.0) -> list[tuple[dict, list]]:
        return self.both({"type": "status", "job": job, "since": int(since)}, timeout=timeout)

    def wait(self, job: str, on_status: Callable | None = None, poll: float = 0.25,
             timeout: float | None = None) -> list[dict]:
        """Poll both servers until the job is done on both; JobFailed if either failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        since = [0, 0]  # per server: loss shares up to here were already handed over
        while True:
            st = []
            for p, r in enumerate(self.rpc):  # a restarting server shows as "unreachable"
                try:
                    st.append(r.request({"type": "status", "job": job, "since": since[p]}, timeout=10))
                    if st[-1][0]["loss_steps"]:
                        since[p] = max(st[-1][0]["loss_steps"]) + 1
                except ChannelTimeout as exc:
                    st.append(({"state": "unreachable", "message": str(exc), "step": 0, "total": 0,
                                "loss_steps": []}, []))
            if on_status is not None:
                on_status(st)
            states = [h["state"] for h, _ in st]
            if "failed" in states:
                msgs = "; ".join(f"server {i}: {h['message']}" for i, (h, _) in enumerate(st)
                                 if h["state"] == "failed")
                raise JobFailed(f"job {job} failed ({msgs})")
            if states == ["done", "done"]:
                return [h for h, _ in st]
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job} not done within {timeout} s: "
                                   f"{[h['state'] + ' ' + h['message'] for h, _ in st]}")
            time.sleep(poll)

    def fetch(self, job: str) -> tuple[dict, dict]:
        """The two servers' result shares, {name: share}, for the trainer to reconstruct."""
        out = []
        for rpc in self.rpc:
            h, arrays = rpc.request({"type": "fetch", "job": job})
            out.append(dict(zip(h["names"], (np.array(a) for a in arrays))))
        if set(out[0]) != set(out[1]):
            raise RpcError("the servers returned different result sets")
        return out[0], out[1]

    def delete(self, job: str) -> None:
        self.both({"type": "delete", "job": job})
        self._nonce.pop(job, None)

    def jobs(self) -> list[list[dict]]:
        """Per server, the jobs this client trains or is named in as a data owner."""
        return [h["jobs"] for h, _ in self.both({"type": "jobs"})]
