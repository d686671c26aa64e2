"""A server's disk: uploaded shares, job records, checkpoints, results.

Layout under ``data_dir``::

    jobs/<job>/job.bin           the job record (a frame file, header only)
    jobs/<job>/t/<name>.bin      a streamed tensor's raw int64 rows ...
    jobs/<job>/t/<name>.meta     ... and {rows, row_shape, received, owner, crc32 of the rows}
    jobs/<job>/ckpt-<step>.bin   PartyState at ``step`` (params, velocity, counters); last 3 kept
    jobs/<job>/result.bin        the job's output shares (model parameters or prediction one-hots)
    releases.bin                 ended job instances the dealer has not yet been told about

Every record is written to a temporary file, fsynced and renamed, so a kill -9 at any
moment leaves either the old or the new version, never a torn one.  Every file carries a
checksum that is verified on load (frame files a SHA-256 trailer; tensor rows a running
CRC-32 in their meta, which survives a resumed upload), so a storage fault is never read
as data: a checkpoint that fails it is set aside (``ckpt-<step>.bin.corrupt``) and not
offered to the peer, so the run resumes from the newest checkpoint both servers hold
intact; a job whose record or tensor metas fail it is *quarantined* (reported by
``status``, kept on disk for the operator) and the server starts anyway.  Everything on
this disk is a share (uniformly random on its own) or public job metadata.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from ss_engine.net.wire import (StoredFileError, WireCaps, WireError, encode_message,
                                 read_frames_file, write_frames_atomic)
from ss_engine.training import PartyState

__all__ = ["JobStore", "JobRecord", "TensorInfo", "CheckpointCorrupt", "ENDED_STATES"]

log = logging.getLogger("ss_engine.server")
KEEP_CHECKPOINTS = 3
_STATE_CAPS = WireCaps(max_arrays=256, max_elements=1 << 26, max_total_bytes=1 << 32)
#: a job in one of these states needs the dealer no more
ENDED_STATES = ("done", "failed")


class CheckpointCorrupt(StoredFileError):
    """A checkpoint failed its checksum at load; it was set aside, an older one is next."""


@dataclass
class TensorInfo:
    name: str
    rows: int
    row_shape: tuple
    received: int
    owner: str          # the client (key name) that uploads it
    crc: int = 0        # CRC-32 of the rows received so far, in order

    @property
    def complete(self) -> bool:
        return self.received == self.rows

    @property
    def nbytes(self) -> int:
        """What the whole tensor takes on disk (counted against its owner from row 0)."""
        return self.rows * int(np.prod(self.row_shape, dtype=np.int64)) * 8


@dataclass
class JobRecord:
    job: str
    owner: str = ""                  # the trainer (key name): created it, alone drives it
    owners: list = field(default_factory=list)   # data owners the trainer lets upload parts
    nonce_part: bytes = b""          # this server's half of the instance nonce (os.urandom)
    created: float = 0.0             # wall-clock time of the create request
    state: str = "uploading"
    kind: str = ""
    train: dict = field(default_factory=dict)
    frac_bits: int = 16
    parts: list = field(default_factory=list)
    model_job: str = ""
    nonce: bytes = b""               # the instance nonce (both halves), set at submit
    test_seed: bytes | None = None
    digest: str = ""
    total_steps: int = 0
    message: str = ""

    def header(self) -> dict:
        return {**asdict(self), "type": "job_record"}

    @classmethod
    def from_header(cls, h: dict) -> "JobRecord":
        return cls(**{f.name: h[f.name] for f in fields(cls)})


def _fname(name: str) -> str:
    return name.replace("/", "__")


class JobStore:
    def __init__(self, root: Path):
        self.base = Path(root)
        self.root = self.base / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.lock = threading.RLock()
        self.jobs: dict[str, JobRecord] = {}
        self.tensors: dict[str, dict[str, TensorInfo]] = {}
        self.quarantined: dict[str, str] = {}       # job -> why it cannot be loaded
        self.activity: dict[str, float] = {}        # job -> time of its last upload
        self._intact: dict[Path, tuple] = {}        # checkpoint -> stat it was verified at
        self.releases_changed = threading.Event()
        releases = self._load_releases()
        for d in sorted(self.root.iterdir()):
            if (d / "job.bin").exists():
                self._load(d.name)
        if releases is None:   # the queue was corrupt: announce every ended job again
            releases = {(r.job, r.nonce) for r in self.jobs.values()
                        if r.state in ENDED_STATES and r.nonce}
        self._releases = releases
        self._write_releases()

    # -- records --------------------------------------------------------------------------
    def _dir(self, job: str) -> Path:
        return self.root / job

    def _load(self, job: str) -> None:
        try:
            h, _ = read_frames_file(self._dir(job) / "job.bin")
            rec = JobRecord.from_header(h)
            infos, newest = {}, rec.created
            tdir = self._dir(job) / "t"
            if tdir.exists():
                for m in tdir.glob("*.meta"):
                    th, _ = read_frames_file(m)
                    infos[th["name"]] = TensorInfo(th["name"], th["rows"], tuple(th["row_shape"]),
                                                   th["received"], th["owner"], th["crc"])
                    newest = max(newest, m.stat().st_mtime)
        except (WireError, KeyError, TypeError, ValueError, OSError) as exc:
            why = str(exc).replace(f"{self._dir(job)}/", "")   # no server paths to clients
            self.quarantined[job] = f"quarantined: its stored record cannot be trusted ({why})"[:400]
            log.warning("job %s %s", job, self.quarantined[job])
            return
        if rec.state in ("running", "waiting"):
            rec.state, rec.message = "queued", "server restarted; resuming"
        self.jobs[job] = rec
        self.tensors[job] = infos
        self.activity[job] = newest

    def save(self, rec: JobRecord) -> None:
        with self.lock:
            d = self._dir(rec.job)
            d.mkdir(exist_ok=True)
            write_frames_atomic(d / "job.bin", encode_message(rec.header()))
            self.jobs[rec.job] = rec
            if rec.state in ENDED_STATES:
                self._queue_release(rec)

    def create(self, job: str, owner: str, owners: list, nonce_part: bytes) -> JobRecord:
        with self.lock:
            if job in self.quarantined:
                raise WireError(f"job {job!r} is {self.quarantined[job]}")
            if job in self.jobs:
                raise WireError(f"job {job!r} exists; pick another job id")
            rec = JobRecord(job, owner=owner, owners=list(owners), nonce_part=nonce_part,
                            created=time.time())
            self.save(rec)
            self.tensors[job] = {}
            self.activity[job] = rec.created
            return rec

    def delete(self, job: str) -> None:
        with self.lock:
            rec = self.jobs.pop(job, None)
            if rec is not None and rec.state not in ENDED_STATES:  # an ended one is queued already
                self._queue_release(rec)
            self.tensors.pop(job, None)
            self.activity.pop(job, None)
            shutil.rmtree(self._dir(job), ignore_errors=True)

    # -- quotas and expiry ----------------------------------------------------------------
    def jobs_of(self, client: str) -> list[JobRecord]:
        with self.lock:
            return [r for r in self.jobs.values() if r.owner == client]

    def bytes_of(self, client: str) -> int:
        """Bytes of shares ``client`` has uploaded (or begun to) into any job here."""
        with self.lock:
            return sum(i.nbytes for infos in self.tensors.values() for i in infos.values()
                       if i.owner == client)

    def stale_uploads(self, limit: float, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        with self.lock:
            return [j for j, r in self.jobs.items()
                    if r.state == "uploading" and now - self.activity.get(j, r.created) > limit]

    # -- dealer releases (see servers.release) --------------------------------------------
    def _releases_path(self) -> Path:
        return self.base / "releases.bin"

    def _load_releases(self) -> set | None:
        path = self._releases_path()
        if not path.exists():
            return set()
        try:
            h, _ = read_frames_file(path)
            return {(j, bytes(n)) for j, n in h["pending"]}
        except (WireError, KeyError, TypeError, ValueError) as exc:
            log.warning("the queue of dealer releases is corrupt (%s): every ended job is "
                        "announced again; deleted ones are lost (the dealer keeps those keys)", exc)
            return None

    def _queue_release(self, rec: JobRecord) -> None:
        if rec.nonce and (rec.job, rec.nonce) not in self._releases:
            self._releases.add((rec.job, rec.nonce))
            self._write_releases()

    def _write_releases(self) -> None:
        write_frames_atomic(self._releases_path(), encode_message(
            {"type": "releases", "pending": [[j, n] for j, n in sorted(self._releases)]}))
        self.releases_changed.set()

    def pending_releases(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return sorted(self._releases)

    def release_done(self, job: str, nonce: bytes) -> None:
        with self.lock:
            if (job, nonce) in self._releases:
                self._releases.discard((job, nonce))
                self._write_releases()

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
            data = np.ascontiguousarray(chunk, dtype=np.int64)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.pwrite(fd, data, offset * int(np.prod(info.row_shape, dtype=np.int64)) * 8)
                os.fsync(fd)
            finally:
                os.close(fd)
            info.received, info.crc = offset + chunk.shape[0], zlib.crc32(data, info.crc)
            write_frames_atomic(tdir / (_fname(name) + ".meta"), encode_message(
                {"type": "tensor_meta", "job": job, "name": name, "rows": info.rows,
                 "row_shape": list(info.row_shape), "received": info.received, "owner": owner,
                 "crc": info.crc}))
            infos[name] = info
            self.activity[job] = time.time()
            return info.received

    def load_tensor(self, job: str, name: str) -> np.ndarray:
        info = self.tensors[job][name]
        if not info.complete:
            raise WireError(f"{name} is incomplete ({info.received}/{info.rows} rows)")
        n = info.rows * int(np.prod(info.row_shape, dtype=np.int64))
        path = self._dir(job) / "t" / (_fname(name) + ".bin")
        a = np.fromfile(path, dtype=np.int64, count=n) if n else np.zeros(0, np.int64)
        if a.size != n:
            raise StoredFileError(f"{name}: stored data is short (truncated on disk)")
        if zlib.crc32(a) != info.crc:
            raise StoredFileError(f"{name}: stored data fails its checksum (corrupt on disk)")
        return a.reshape((info.rows,) + info.row_shape)

    # -- checkpoints and results ----------------------------------------------------------
    def _ckpt(self, job: str, step: int) -> Path:
        return self._dir(job) / f"ckpt-{step:09d}.bin"

    def _all_checkpoint_steps(self, job: str) -> list[int]:
        d = self._dir(job)
        return sorted(int(p.stem[5:]) for p in d.glob("ckpt-*.bin") if p.stem[5:].isdigit())

    def checkpoint_steps(self, job: str) -> list[int]:
        """Steps of the checkpoints here that pass their checksum (each verified once per
        version of the file); one that fails is set aside, so the peers agree on the newest
        checkpoint both hold intact."""
        out = []
        for step in self._all_checkpoint_steps(job):
            path = self._ckpt(job, step)
            try:
                st = path.stat()
                stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
                with self.lock:
                    known = self._intact.get(path) == stamp
                if not known:
                    read_frames_file(path, _STATE_CAPS)
                    with self.lock:
                        self._intact[path] = stamp
                out.append(step)
            except FileNotFoundError:
                continue   # pruned meanwhile
            except WireError as exc:
                self._set_aside(path, exc)
        return out

    def _set_aside(self, path: Path, exc: Exception) -> None:
        log.warning("checkpoint set aside: %s", exc)
        with self.lock:
            self._intact.pop(path, None)
        try:
            os.replace(path, path.with_name(path.name + ".corrupt"))
        except FileNotFoundError:
            pass

    def save_checkpoint(self, job: str, state: PartyState) -> None:
        names = sorted(state.params)
        vnames = sorted(state.velocity)
        write_frames_atomic(self._ckpt(job, state.step), encode_message(
            {"type": "checkpoint", "job": job, "step": state.step, "prev_lr": state.prev_lr,
             "source_seq": state.source_seq, "params": names, "velocity": vnames},
            [state.params[n] for n in names] + [state.velocity[n] for n in vnames]))
        for old in self._all_checkpoint_steps(job)[:-KEEP_CHECKPOINTS]:
            self._ckpt(job, old).unlink(missing_ok=True)
            with self.lock:
                self._intact.pop(self._ckpt(job, old), None)

    def load_checkpoint(self, job: str, step: int) -> PartyState:
        path = self._ckpt(job, step)
        try:
            h, arrays = read_frames_file(path, _STATE_CAPS)
        except StoredFileError as exc:
            self._set_aside(path, exc)
            raise CheckpointCorrupt(str(exc)) from None
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
