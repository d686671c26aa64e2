"""The session front-end both sessions share: handles, lazy ops, batches, reveal.

A :class:`Session` gives out :class:`~ss_engine.session.handle.Secret` handles.  Making a
handle checks its op at once (``dispatch.check_op``: a bad shape or parameter is an error
at the call site) and queues it; nothing runs until a value is revealed (or ``flush()``),
when the queued ops go to both parties as one batch (``dispatch.batch``), where independent
ops share rounds.  A batch is sent early when it would exceed ``SessionLimits.max_ops``,
64 payload arrays, ``MAX_BATCH_BYTES`` of payload or ``MAX_BATCH_OP_BYTES`` of ops (reveals
and frees go ``MAX_BATCH_IDS`` at a time), so both sessions cut the same batches from the
same calls (with the same seeds, the same material in the same order: bit for bit).

Reveal: each party hands the caller its shares of the revealed values, and the caller
adds them (``decode`` at the value's scale: an untruncated product is exact at 2f).
Nothing is opened between the parties by a reveal.

Subclasses implement ``_execute(header, arrays0, arrays1)``: deliver the batch to the
parties and return each one's (share, frac_bits) of every revealed value, raising
``OpError`` if the parties refused the batch (the session goes on) and
``SessionFailed`` if the session ended.
"""
from __future__ import annotations

import queue
import threading
import weakref

import msgpack
import numpy as np

from ..config import EngineConfig
from ..dispatch import MAX_RANK, Env, OpError, SessionLimits, check_op
from ..encoding import EncodingError, decode, encode
from ..prg import PRG, SEED_BYTES, derive_seed
from ..sharing import share
from .handle import Secret

__all__ = ["Session", "SessionFailed", "MAX_BATCH_ARRAYS", "MAX_BATCH_BYTES", "input_prg",
           "check_seed"]

#: payload arrays and bytes of one batch (what one client message to a server carries)
MAX_BATCH_ARRAYS = 64
MAX_BATCH_BYTES = 7 << 20
#: msgpack bytes of a batch's ops, and ids in its reveal and free lists: with them its
#: header stays below the 64 KiB a server takes
MAX_BATCH_OP_BYTES = 24 << 10
MAX_BATCH_IDS = 2048
#: values larger than this are shared in pieces and concatenated by the parties
SHARE_PIECE_ELEMENTS = 1 << 19


class SessionFailed(RuntimeError):
    """The session ended (a party failed, the peer or a server went away, it was closed)."""


def check_seed(seed: bytes | None) -> bytes | None:
    if seed is not None and (not isinstance(seed, bytes) or len(seed) != SEED_BYTES):
        raise ValueError(f"a session seed (tests only) is {SEED_BYTES} bytes")
    return seed


def input_prg(seed: bytes | None) -> PRG:
    """The data owner's sharing PRG: os.urandom-keyed, or (tests) derived from ``seed`` as
    ``LocalRuntime(seed)`` and the deployment's test seeds derive theirs."""
    return PRG(derive_seed(seed, "input")) if seed is not None else PRG.from_os_random()


class Session:
    """Front-end of a session (see the module docstring); use ``LocalSession`` or
    ``RemoteSession``."""

    def __init__(self, config: EngineConfig, prg: PRG, limits: SessionLimits):
        self.config, self.limits = config, limits
        self._prg = prg
        self._lock = threading.RLock()
        self._next_id = 1
        self._seq = 0
        self._shapes: dict[int, tuple] = {}     # values the parties hold or a queued op makes
        self._lost: dict[int, str] = {}         # values of a refused batch: why
        self._ops: list = []
        self._arrays: tuple[list, list] = ([], [])
        self._bytes = self._op_bytes = 0
        self._frees: list[int] = []
        # ids of handles garbage-collected (finalizers may run in any thread, during any
        # call: they only post here, which never blocks; ``_flush`` turns them into frees)
        self._dropped: queue.SimpleQueue = queue.SimpleQueue()
        self._ended: str | None = None

    # -- what subclasses provide ----------------------------------------------------------
    def _execute(self, header: dict, arrays0: list, arrays1: list) -> tuple[list, list]:
        raise NotImplementedError

    def _shutdown(self) -> None:
        """Release the parties (called once, by ``close``)."""

    # -- life -----------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """End the session: the parties forget every value (nothing secret is left)."""
        with self._lock:
            if self._ended == "closed":
                return
            self._ended = "closed"
            self._ops, self._arrays, self._frees = [], ([], []), []
        self._shutdown()

    @property
    def frac_bits(self) -> int:
        return self.config.frac_bits

    def _alive(self) -> None:
        if self._ended is not None:
            raise SessionFailed(f"the session is {self._ended}" if self._ended == "closed"
                                else f"the session failed: {self._ended}")

    # -- making values --------------------------------------------------------------------
    def share(self, value) -> Secret:
        """Encode ``value`` (any real array or number) at f fractional bits and split it
        into two additive shares with the AES PRG (the data owner's side); each party
        receives one.  Rounds 0; bytes: 8 per element to each party, from the caller."""
        ring = encode(np.asarray(value, dtype=np.float64), self.config.fixed)
        if ring.ndim > MAX_RANK:
            raise OpError(f"a value has at most {MAX_RANK} dimensions, got {ring.ndim}")
        if ring.size > self.limits.max_value_elements:
            raise OpError(f"a value of {ring.size} elements exceeds the session's "
                          f"{self.limits.max_value_elements} per value")
        if ring.size <= SHARE_PIECE_ELEMENTS:
            return self._share_ring(ring)
        flat = ring.reshape(-1)
        pieces = [self._share_ring(flat[i:i + SHARE_PIECE_ELEMENTS])
                  for i in range(0, flat.size, SHARE_PIECE_ELEMENTS)]
        return self.concatenate(pieces).reshape(ring.shape)

    def _share_ring(self, ring: np.ndarray) -> Secret:
        s0, s1 = share(ring, self._prg)
        return self._op("share", [], {}, shares=(np.asarray(s0), np.asarray(s1)))

    def public(self, value) -> tuple[dict, list]:
        """A public operand as op parameters: ring values at scale 0 (integers) or f
        (reals), a scalar inline, an array as payload."""
        a = np.asarray(value)
        if a.dtype == bool or np.issubdtype(a.dtype, np.integer):
            if a.size and (int(a.max()) >= 1 << 62 or int(a.min()) <= -(1 << 62)):
                raise EncodingError("a public integer must be below 2^62 in magnitude")
            raw, scale = a.astype(np.int64), 0
        elif np.issubdtype(a.dtype, np.floating):
            raw, scale = encode(a, self.config.fixed), self.frac_bits
        else:
            raise TypeError(f"a public operand must be a number or a numeric array, got {a.dtype}")
        if raw.ndim == 0:
            return {"v": int(raw), "s": scale}, []
        return {"s": scale}, [np.ascontiguousarray(raw)]

    def public_reciprocal(self, divisor) -> tuple[dict, list]:
        """1/divisor as ``div_public`` parameters: at scale f + k with 2^k >= max |divisor|
        (k <= f), so that it keeps f significant bits."""
        c = np.asarray(divisor, dtype=np.float64)
        if not np.all(np.isfinite(c)) or np.any(c == 0):
            raise EncodingError("a public divisor must be finite and non-zero")
        top = float(np.abs(c).max()) if c.size else 1.0
        k = int(min(self.frac_bits, max(0, np.ceil(np.log2(top)))))
        scaled = np.rint(2.0 ** (self.frac_bits + k) / c)
        if scaled.size and float(np.abs(scaled).max()) >= 2.0 ** 62:
            raise EncodingError("a public divisor this small makes 1/c leave the fixed-point range")
        raw = scaled.astype(np.int64)
        if raw.ndim == 0:
            return {"v": int(raw), "k": k}, []
        return {"k": k}, [np.ascontiguousarray(raw)]

    def constant(self, value) -> Secret:
        """A public value as a handle (a trivial sharing: party 0 holds it).  Rounds 0."""
        params, arrays = self.public(value)
        return self._op("const", [], params, arrays)

    def lift(self, v) -> Secret:
        """``v`` as a handle of this session: itself, or a public value made a constant."""
        if isinstance(v, Secret):
            if v._session is not self:
                raise ValueError("values of different sessions cannot be combined")
            return v
        return self.constant(v)

    def concatenate(self, values, axis: int = 0) -> Secret:
        """Join values (secret or public) along ``axis``.  Rounds 0."""
        return self._op("concat", [self.lift(v) for v in values], {"axis": int(axis)})

    def _op(self, name: str, inputs: list, params: dict, public=(), shares=None) -> Secret:
        """Queue one op: ``public`` arrays go to both parties, ``shares`` (s0, s1) one each."""
        with self._lock:
            self._alive()
            for x in inputs:
                if x._id in self._lost:
                    raise OpError(f"this value was never made: {self._lost[x._id]}")
            new = list(public) if shares is None else [shares]
            nbytes = sum((a[0] if shares is not None else a).nbytes for a in new)
            op_bytes = len(msgpack.packb([name, self._next_id, [x._id for x in inputs], params],
                                         use_bin_type=True))
            if self._ops and (len(self._ops) >= self.limits.max_ops or
                              len(self._arrays[0]) + len(new) > MAX_BATCH_ARRAYS or
                              self._bytes + nbytes > MAX_BATCH_BYTES or
                              self._op_bytes + op_bytes > MAX_BATCH_OP_BYTES):
                self._flush()
            if new:
                params = {**params, "a": len(self._arrays[0])}
            env = Env(self._arrays[0] + [a[0] if shares is not None else a for a in new],
                      self.frac_bits, self.limits.max_macs)
            params, shape = check_op(name, params, [self._shapes[x._id] for x in inputs], env,
                                     self.limits)
            for p, arrs in enumerate(self._arrays):
                arrs.extend(a[p] if shares is not None else a for a in new)
            self._bytes += nbytes
            self._op_bytes += op_bytes
            hid = self._next_id
            self._next_id += 1
            self._ops.append([name, hid, [x._id for x in inputs], params])
            self._shapes[hid] = shape
        handle = Secret(self, hid, shape)
        fin = weakref.finalize(handle, self._dropped.put, hid)
        fin.atexit = False
        return handle

    def _collect_dropped(self) -> None:
        while True:
            try:
                hid = self._dropped.get_nowait()
            except queue.Empty:
                return
            if self._shapes.pop(hid, None) is not None:
                self._frees.append(hid)
            self._lost.pop(hid, None)

    # -- running ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Run every queued op now (they run concurrently where independent)."""
        with self._lock:
            self._alive()
            self._flush()

    def _flush(self, reveal: list | None = None) -> tuple[list, list]:
        self._collect_dropped()
        ops, arrays = self._ops, self._arrays
        frees, self._frees = self._frees[:MAX_BATCH_IDS], self._frees[MAX_BATCH_IDS:]
        if not ops and not reveal and not frees:
            return [], []
        self._ops, self._arrays, self._bytes, self._op_bytes = [], ([], []), 0, 0
        header = {"seq": self._seq, "ops": ops, "reveal": list(reveal or []), "free": frees}
        self._seq += 1
        try:
            return self._execute(header, *arrays)
        except OpError as exc:
            # the parties refused the batch and hold nothing of it: its values are lost,
            # the frees of older values are asked again with the next batch
            made = {op[1] for op in ops}
            for hid in made:
                if self._shapes.pop(hid, None) is not None:
                    self._lost[hid] = str(exc)
            self._frees.extend(h for h in frees if h not in made)
            raise
        except SessionFailed as exc:
            self._ended = str(exc)
            raise

    def reveal(self, *values: Secret) -> np.ndarray | list[np.ndarray]:
        """The values as float arrays, to the caller only: each party sends the caller its
        shares, the caller adds them.  Runs every queued op first."""
        rings = self._reveal_ring(values)
        out = [decode(r, s) for r, s in rings]
        return out[0] if len(values) == 1 else out

    def _reveal_ring(self, values) -> list[tuple[np.ndarray, int]]:
        """(ring value, scale) of each value (tests compare sessions on these)."""
        with self._lock:
            self._alive()
            ids = []
            for v in values:
                if not isinstance(v, Secret) or v._session is not self:
                    raise ValueError("reveal takes handles of this session")
                if v._id in self._lost:
                    raise OpError(f"this value was never made: {self._lost[v._id]}")
                ids.append(v._id)
            uniq = list(dict.fromkeys(ids))
            got0, got1 = [], []
            for i in range(0, max(len(uniq), 1), MAX_BATCH_IDS):
                g0, g1 = self._flush(uniq[i:i + MAX_BATCH_IDS])
                got0 += g0
                got1 += g1
        by_id = {}
        for hid, (s0, f0), (s1, f1) in zip(uniq, got0, got1):
            if f0 != f1 or s0.shape != s1.shape:
                raise SessionFailed("the two parties returned different values")
            by_id[hid] = (s0 + s1, f0)
        return [by_id[h] for h in ids]
