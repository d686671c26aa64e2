"""A server's disk: uploaded shares, job records, checkpoints, results.

Layout under ``data_dir/jobs/<job>/``::

    job.bin                 the job record (a wire-format frame file, header only)
    t/<name>.bin, .meta     a streamed tensor: raw int64 rows + {rows, row_shape, received, owner}
    ckpt-<step>.bin         PartyState at ``step`` (params, velocity, counters); last 3 kept
    result.bin              the job's output shares (model parameters or prediction one-hots)

Every record is written to a temporary file, fsynced and renamed, so a kill -9 at any
moment leaves either the old or the new version, never a torn one.  Everything on this
disk is a share (uniformly random on its own) or public job metadata.
"""
from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ss_engine.net.wire import (WireCaps, WireError, encode_message, read_frames_file,
                                 write_frames_atomic)
from ss_engine.training import PartyState

__all__ = ["JobStore", "JobRecord", "TensorInfo"]

KEEP_CHECKPOINTS = 3
_STATE_CAPS = WireCaps(max_arrays=256, max_elements=1 << 26, max_total_bytes=1 << 32)


@dataclass
class TensorInfo:
    name: str
    rows: int
    row_shape: tuple
    received: int
    owner: str

    @property
    def complete(self) -> bool:
        return self.received == self.rows


@dataclass
class JobRecord:
    job: str
    state: str = "uploading"
    kind: str = ""
    owner: str = ""
    train: dict = field(default_factory=dict)
    frac_bits: int = 16
    parts: list = field(default_factory=list)
    model_job: str = ""
    test_seed: bytes | None = None
    digest: str = ""
    total_steps: int = 0
    message: str = ""

    def header(self) -> dict:
        h = {"type": "job_record", "job": self.job, "state": self.state, "kind": self.kind,
             "owner": self.owner, "train": self.train, "frac_bits": self.frac_bits,
             "parts": self.parts, "model_job": self.model_job, "digest": self.digest,
             "total_steps": self.total_steps, "message": self.message}
        if self.test_seed is not None:
            h["test_seed"] = self.test_seed
        return h

    @classmethod
    def from_header(cls, h: dict) -> "JobRecord":
        return cls(h["job"], h["state"], h["kind"], h["owner"], h["train"], h["frac_bits"],
                   h["parts"], h["model_job"], h.get("test_seed"), h["digest"], h["total_steps"],
                   h["message"])


def _fname(name: str) -> str:
    return name.replace("/", "__")


class JobStore:
    def __init__(self, root: Path):
        self.root = Path(root) / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.lock = threading.RLock()
        self.jobs: dict[str, JobRecord] = {}
        self.tensors: dict[str, dict[str, TensorInfo]] = {}
        for d in sorted(self.root.iterdir()):
            if (d / "job.bin").exists():
                self._load(d.name)

    # -- records --------------------------------------------------------------------------
    def _dir(self, job: str) -> Path:
        return self.root / job

    def _load(self, job: str) -> None:
        h, _ = read_frames_file(self._dir(job) / "job.bin")
        rec = JobRecord.from_header(h)
        if rec.state in ("running", "waiting"):
            rec.state, rec.message = "queued", "server restarted; resuming"
        self.jobs[job] = rec
        infos = {}
        tdir = self._dir(job) / "t"
        if tdir.exists():
            for m in tdir.glob("*.meta"):
                th, _ = read_frames_file(m)
                infos[th["name"]] = TensorInfo(th["name"], th["rows"], tuple(th["row_shape"]),
                                               th["received"], th["owner"])
        self.tensors[job] = infos

    def save(self, rec: JobRecord) -> None:
        with self.lock:
            d = self._dir(rec.job)
            d.mkdir(exist_ok=True)
            write_frames_atomic(d / "job.bin", encode_message(rec.header()))
            self.jobs[rec.job] = rec

    def create(self, job: str) -> JobRecord:
        with self.lock:
            rec = self.jobs.get(job)
            if rec is None:
                rec = JobRecord(job)
                self.save(rec)
                self.tensors[job] = {}
            return rec

    def delete(self, job: str) -> None:
        with self.lock:
            self.jobs.pop(job, None)
            self.tensors.pop(job, None)
            shutil.rmtree(self._dir(job), ignore_errors=True)

    # -- streamed tensors -----------------------------------------------------------------
    def append_rows(self, job: str, name: str, offset: int, rows: int, row_shape: tuple,
                    chunk: np.ndarray, owner: str) -> int:
        """Write ``chunk`` at row ``offset`` of tensor ``name``; returns rows received."""
        with self.lock:
            infos = self.tensors[job]
            info = infos.get(name)
            if info is None:
                if offset != 0:
                    raise WireError(f"{name}: first chunk must start at row 0")
                info = TensorInfo(name, rows, tuple(row_shape), 0, owner)
            elif info.owner != owner:
                raise WireError(f"{name} belongs to another client")
            elif (info.rows, info.row_shape) != (rows, tuple(row_shape)):
                raise WireError(f"{name}: rows/row_shape differ from the first chunk "
                                f"({info.rows}, {info.row_shape})")
            if offset != info.received:
                raise WireError(f"{name}: expected offset {info.received}, got {offset}")
            if offset + chunk.shape[0] > info.rows:
                raise WireError(f"{name}: chunk runs past row {info.rows}")
            tdir = self._dir(job) / "t"
            tdir.mkdir(exist_ok=True)
            path = tdir / (_fname(name) + ".bin")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                data = np.ascontiguousarray(chunk, dtype=np.int64).tobytes()
                os.pwrite(fd, data, offset * int(np.prod(info.row_shape, dtype=np.int64)) * 8)
                os.fsync(fd)
            finally:
                os.close(fd)
            info.received = offset + chunk.shape[0]
            write_frames_atomic(tdir / (_fname(name) + ".meta"), encode_message(
                {"type": "tensor_meta", "job": job, "name": name, "rows": info.rows,
                 "row_shape": list(info.row_shape), "received": info.received, "owner": owner}))
            infos[name] = info
            return info.received

    def load_tensor(self, job: str, name: str) -> np.ndarray:
        info = self.tensors[job][name]
        if not info.complete:
            raise WireError(f"{name} is incomplete ({info.received}/{info.rows} rows)")
        n = info.rows * int(np.prod(info.row_shape, dtype=np.int64))
        path = self._dir(job) / "t" / (_fname(name) + ".bin")
        a = np.fromfile(path, dtype=np.int64, count=n) if n else np.zeros(0, np.int64)
        if a.size != n:
            raise WireError(f"{name}: stored data is short")
        return a.reshape((info.rows,) + info.row_shape)

    # -- checkpoints and results ----------------------------------------------------------
    def checkpoint_steps(self, job: str) -> list[int]:
        d = self._dir(job)
        return sorted(int(p.stem[5:]) for p in d.glob("ckpt-*.bin") if p.stem[5:].isdigit())

    def save_checkpoint(self, job: str, state: PartyState) -> None:
        names = sorted(state.params)
        vnames = sorted(state.velocity)
        write_frames_atomic(self._dir(job) / f"ckpt-{state.step:09d}.bin", encode_message(
            {"type": "checkpoint", "job": job, "step": state.step, "prev_lr": state.prev_lr,
             "source_seq": state.source_seq, "params": names, "velocity": vnames},
            [state.params[n] for n in names] + [state.velocity[n] for n in vnames]))
        for old in self.checkpoint_steps(job)[:-KEEP_CHECKPOINTS]:
            (self._dir(job) / f"ckpt-{old:09d}.bin").unlink(missing_ok=True)

    def load_checkpoint(self, job: str, step: int) -> PartyState:
        h, arrays = read_frames_file(self._dir(job) / f"ckpt-{step:09d}.bin", _STATE_CAPS)
        names, vnames = h["params"], h["velocity"]
        arrays = [np.array(a) for a in arrays]  # writable copies for training
        return PartyState(dict(zip(names, arrays[:len(names)])), dict(zip(vnames, arrays[len(names):])),
                          h["step"], h["prev_lr"], h["source_seq"])

    def save_result(self, job: str, arrays: dict[str, np.ndarray]) -> None:
        names = sorted(arrays)
        write_frames_atomic(self._dir(job) / "result.bin", encode_message(
            {"type": "result", "job": job, "names": names}, [arrays[n] for n in names]))

    def load_result(self, job: str) -> tuple[list, list]:
        h, arrays = read_frames_file(self._dir(job) / "result.bin", _STATE_CAPS)
        return h["names"], arrays

