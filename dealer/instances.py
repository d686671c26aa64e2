"""The dealer's job instances: fresh keys per (job, nonce), forgotten when the job ends.

A job *instance* is a job id plus the 32-byte nonce its two servers drew when the job was
created (16 random bytes each).  Its keys (key0, key1) come from os.urandom the moment the
instance is born, so two instances never share a seed, whatever their names.  Rules:

* an instance is born only when *both* servers have asked for it (``open``) with the same
  job digest; until then the first request waits.  Each server only ever asks for an
  instance whose nonce holds the half it drew itself, so a client cannot make the dealer
  hand one instance's seeds to another job;
* a live instance is served again (a restarted server, or party, resumes from a
  checkpoint and regenerates the same material from (keys, seq, spec)), but only for the
  digest it was born with;
* ``release`` (a server says the job ended or was deleted) deletes the keys from disk and
  memory and leaves a tombstone: an ended instance is never served again;
* a test seed (``allow_test_seed``, tests only) makes keys deterministic and serves at
  most one instance.

Disk layout under the dealer's ``data_dir`` (every file checksummed, written atomically)::

    instances/<id>.keys   a live instance: {job, nonce, digest} + key0, key1   (mode 0600)
    ended/<id>.bin        an instance that ended: {job, nonce}                 (no secret)
    seeds/<sid>.bin       which instance a test seed made
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ss_engine.net.dealer_link import NONCE_BYTES
from ss_engine.net.wire import WireError, encode_message, read_frames_file, write_frames_atomic
from ss_engine.prg import SEED_BYTES, derive_seed

__all__ = ["InstanceRegistry", "Instance", "InstanceError", "instance_id"]

log = logging.getLogger("ss_engine.dealer")


class InstanceError(WireError):
    """An open/get the dealer refuses; ``waiting`` are the other party's pending opens
    (rank, token) that must hear the refusal too."""

    def __init__(self, message: str, waiting: list | None = None):
        super().__init__(message)
        self.waiting = waiting or []


def instance_id(job: str, nonce: bytes) -> str:
    """32 hex characters naming (job, nonce); unambiguous (the job id is length-prefixed)."""
    raw = job.encode()
    return hashlib.sha256(b"ss-engine job instance v1" + len(raw).to_bytes(4, "little") + raw
                          + bytes(nonce)).hexdigest()[:32]


def _seed_id(seed: bytes) -> str:
    return hashlib.sha256(b"ss-engine test seed v1" + seed).hexdigest()[:32]


@dataclass(frozen=True)
class Instance:
    iid: str
    job: str
    nonce: bytes
    digest: str
    keys: tuple   # (key0, key1), SEED_BYTES each

    def __repr__(self) -> str:  # never print a key
        return f"Instance({self.job!r}, {self.iid})"


class InstanceRegistry:
    def __init__(self, root: Path, max_pending: int = 256):
        root = Path(root)
        self.live_dir, self.ended_dir, self.seed_dir = (root / n for n in ("instances", "ended", "seeds"))
        for d in (root, self.live_dir, self.ended_dir, self.seed_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        legacy = root / "jobs"   # keys of an older version, made per job *name*: never again
        if legacy.is_dir():
            for p in legacy.glob("*.keys"):
                p.unlink()
                log.warning("removed %s: keys of an older dealer version, keyed by job name", p)
        self.lock = threading.RLock()
        self._live: dict[str, Instance] = {}
        self._pending: OrderedDict[str, dict] = OrderedDict()   # iid -> {rank: (digest, seed, token)}
        self._max_pending = max_pending

    # -- lookups --------------------------------------------------------------------------
    def _ended(self, iid: str) -> bool:
        return (self.ended_dir / f"{iid}.bin").exists()

    def _load(self, iid: str) -> Instance | None:
        inst = self._live.get(iid)
        if inst is not None:
            return inst
        path = self.live_dir / f"{iid}.keys"
        if not path.exists():
            return None
        h, arrays = read_frames_file(path)   # StoredFileError if corrupt: refused, not guessed
        if len(arrays) != 2 or any(a.dtype != np.uint8 or a.shape != (SEED_BYTES,) for a in arrays):
            raise WireError(f"{path}: not a dealer key file")
        inst = Instance(iid, h["job"], h["nonce"], h["digest"], tuple(a.tobytes() for a in arrays))
        self._live[iid] = inst
        return inst

    def get(self, job: str, nonce: bytes) -> Instance:
        """The live instance (job, nonce); InstanceError if it was never born or has ended."""
        iid = instance_id(job, nonce)
        with self.lock:
            if self._ended(iid):
                raise InstanceError(f"job {job!r}: this instance has ended; its seeds are never "
                                    f"served again")
            inst = self._load(iid)
            if inst is None:
                raise InstanceError(f"unknown job instance {job!r}: open it first")
            return inst

    # -- open / release -------------------------------------------------------------------
    def open(self, rank: int, job: str, nonce: bytes, digest: str, test_seed: bytes | None,
             token) -> list[tuple[int, object]]:
        """Party ``rank`` asks for (job, nonce).  Returns the pending requests to answer now
        with their party's key, as [(rank, token)]: this one alone if the instance is live,
        both parties' once the second asks for a new one, [] while it waits for the other.
        InstanceError if the instance ended, or the two ask with different digests."""
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise InstanceError(f"a job instance nonce is {NONCE_BYTES} bytes")
        iid = instance_id(job, nonce)
        with self.lock:
            if self._ended(iid):   # (release dropped any open still waiting for it)
                raise InstanceError(f"job {job!r}: this instance has ended; its seeds are never "
                                    f"served again")
            inst = self._load(iid)
            if inst is not None:
                if inst.digest != digest:
                    raise InstanceError(f"job {job!r}: this instance was made for job digest "
                                        f"{inst.digest}, not {digest[:40]}")
                return [(rank, token)]
            pend = self._pending.setdefault(iid, {})
            self._pending.move_to_end(iid)
            pend[rank] = (digest, test_seed, token)
            while len(self._pending) > self._max_pending:
                self._pending.popitem(last=False)
            if 1 - rank not in pend:
                return []
            (d0, s0, t0), (d1, s1, t1) = pend[0], pend[1]
            del self._pending[iid]
            if d0 != d1 or s0 != s1:
                raise InstanceError(f"job {job!r}: the two servers ask for different instances "
                                    f"(job digests or test seeds differ)", [(1 - rank, pend[1 - rank][2])])
            self._create(iid, job, nonce, d0, s0)
            return [(0, t0), (1, t1)]

    def _create(self, iid: str, job: str, nonce: bytes, digest: str, test_seed: bytes | None) -> None:
        if test_seed is not None:
            seed_path = self.seed_dir / f"{_seed_id(test_seed)}.bin"
            if seed_path.exists() and read_frames_file(seed_path)[0].get("instance") != iid:
                raise InstanceError("this test seed already made another job instance; a test "
                                    "seed serves one instance only")
            write_frames_atomic(seed_path, encode_message({"type": "test_seed", "instance": iid}))
            keys = (derive_seed(test_seed, "party0"), derive_seed(test_seed, "party1"))
        else:
            keys = (os.urandom(SEED_BYTES), os.urandom(SEED_BYTES))
        write_frames_atomic(self.live_dir / f"{iid}.keys", encode_message(
            {"type": "dealer_keys", "job": job, "nonce": nonce, "digest": digest},
            [np.frombuffer(k, np.uint8) for k in keys]))
        self._live[iid] = Instance(iid, job, nonce, digest, keys)

    def release(self, job: str, nonce: bytes) -> str:
        """Forget (job, nonce)'s keys and refuse the instance from now on; idempotent."""
        iid = instance_id(job, nonce)
        with self.lock:
            if not self._ended(iid):
                write_frames_atomic(self.ended_dir / f"{iid}.bin",
                                    encode_message({"type": "ended", "job": job, "nonce": nonce}))
            (self.live_dir / f"{iid}.keys").unlink(missing_ok=True)
            self._live.pop(iid, None)
            self._pending.pop(iid, None)
        return iid
