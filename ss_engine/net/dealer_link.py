"""The parties' side of the dealer process, and the messages both sides share.

Messages (party: DEALER socket -> dealer: ROUTER socket; every link CurveZMQ; the dealer
knows which party is calling from its authenticated public key, so a party can only ever
obtain its *own* key).  Every message names a job *instance*: the job id plus its 32-byte
nonce (each server drew half of it, from os.urandom, when the job was created), so two
jobs that share a name never share seeds:

    open      {job, nonce, digest, test_seed?} -> keys   + [uint8 (16,)]  key_p of the instance
              (a new instance is made only once *both* servers have asked for it with the
              same job digest; the first one's answer waits for the second)
    get       {job, nonce, seq, spec}     -> corr   {seq, names} + corrections (party 1 only)
    schedule  {job, nonce, base, period, items}  (no reply) the corrections one step needed,
              as [[seq - base, spec], ...]; the dealer predicts step k+1 = step k shifted by
              ``period`` seqs and pushes those corrections ahead ("push" messages, same
              layout as corr), at most ``window`` seqs beyond the party's position
    consumed  {job, nonce, seq}           (no reply) party 1 has used every item below seq
    release   {job, nonce}                -> released   the job ended or was deleted: the
              dealer forgets the instance's keys and never serves the instance again

Prediction is only an optimisation: ``corrections(seq, spec)`` uses a pushed item only if
its spec equals the requested one exactly, and otherwise asks with ``get``.  Because the
dealer regenerates any item from (keys, seq, spec), nothing here needs to survive a crash:
a restarted party just asks for the seq it is at.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import deque
from dataclasses import dataclass, field

import msgpack
import numpy as np
import zmq

from ..preprocessing.circuits import MAX_BLOCK_BITS, MAX_FAN_IN
from ..preprocessing.source import CorrectionLink
from ..preprocessing.specs import RING, ItemRef, MaterialSpec, shift_spec, spec_from_wire
from ..prg import SEED_BYTES
from ..comm.channel import ChannelClosed, ChannelTimeout
from .wire import WireCaps, WireError, decode_message, encode_message
from .zmq_channel import CurveContext

__all__ = ["RemoteDealerLink", "DealerLinkStats", "shift_spec", "check_spec", "spec_wire", "spec_digest",
           "parse_spec", "corrections_frames", "DEALER_CAPS", "DEALER_REQUEST_CAPS", "MAX_ITEM_ELEMENTS",
           "corrections_from_message", "NONCE_BYTES", "NONCE_PART_BYTES"]

#: largest single field the dealer will generate (elements); 2**24 int64 = 128 MiB
MAX_ITEM_ELEMENTS = 1 << 24
_RESEND_AFTER = 3.0
DEALER_CAPS = WireCaps(max_header_bytes=4 << 20, max_container=1 << 16, max_elements=MAX_ITEM_ELEMENTS)
#: what the dealer accepts from a party: headers only (a schedule is the largest)
DEALER_REQUEST_CAPS = dataclasses.replace(DEALER_CAPS, max_arrays=0, max_elements=0, max_total_bytes=0)
#: a job instance's nonce: server 0's 16 random bytes, then server 1's
NONCE_PART_BYTES = 16
NONCE_BYTES = 2 * NONCE_PART_BYTES


# -- specs on the wire ------------------------------------------------------------------------
def check_spec(spec: MaterialSpec, max_elements: int = MAX_ITEM_ELEMENTS, depth: int = 0) -> None:
    """Refuse specs whose generation would be absurdly large or ill-formed (ValueError)."""
    if depth > 4:
        raise ValueError("material spec nested too deeply")
    for f in spec.random_fields() + spec.corrected_fields():
        n = 1
        for s in f.shape:
            if s < 0:
                raise ValueError(f"negative dimension in field {f.name}")
            n *= s
        if n > max_elements:
            raise ValueError(f"field {f.name} of {n} elements exceeds the cap {max_elements}")
    for name, lo, hi in (("bits", 1, 64), ("frac_bits", 0, 62), ("fan_out", 1, 64), ("n", 0, max_elements),
                         ("block", 1, MAX_BLOCK_BITS), ("fan_in", 2, MAX_FAN_IN), ("inputs", 1, 1 << 12),
                         ("words", 0, max_elements)):
        v = getattr(spec, name, None)
        if v is not None and not lo <= v <= hi:
            raise ValueError(f"{spec.kind} spec: {name}={v} outside [{lo}, {hi}]")
    for f in dataclasses.fields(spec):
        v = getattr(spec, f.name)
        if isinstance(v, ItemRef):
            if not 0 <= v.seq < 2**62:
                raise ValueError("item reference out of range")
            check_spec(v.spec, max_elements, depth + 1)
            if v.field not in {x.name for x in v.spec.random_fields() + v.spec.corrected_fields()}:
                raise ValueError(f"reference to unknown field {v.field!r}")
    conv = getattr(spec, "conv", ())
    if conv and (len(conv) != 4 or not all(0 <= c <= 64 for c in conv) or conv[2] < 1):
        raise ValueError(f"invalid conv parameters {conv}")


def spec_wire(spec: MaterialSpec) -> dict:
    return spec.to_wire()


def spec_digest(spec: MaterialSpec) -> bytes:
    """16 bytes naming a spec exactly; a pushed item is used only if its digest matches."""
    return hashlib.sha256(msgpack.packb(spec.to_wire(), use_bin_type=True)).digest()[:16]


def parse_spec(d) -> MaterialSpec:
    """spec_from_wire plus size checks; raises WireError on anything malformed."""
    try:
        spec = spec_from_wire(d)
        check_spec(spec)
    except (ValueError, TypeError, KeyError, OverflowError, AttributeError, RecursionError) as exc:
        raise WireError(f"bad material spec: {exc}") from None
    return spec


def corrections_frames(kind: str, job: str, seq: int, spec: MaterialSpec, corr: dict, **extra) -> list:
    names = [f.name for f in spec.corrected_fields()]
    return encode_message({"type": kind, "job": job, "seq": seq, "names": names, **extra},
                          [corr[n] for n in names])


def corrections_from_message(h: dict, arrays: list, spec: MaterialSpec) -> dict:
    """Check a corr/push message against the spec the party expects; WireError if it differs."""
    fields = spec.corrected_fields()
    if h.get("names") != [f.name for f in fields] or len(arrays) != len(fields):
        raise WireError("dealer corrections do not match the requested spec")
    out = {}
    for f, a in zip(fields, arrays):
        want = "int64" if f.kind == RING else "uint64"
        if a.dtype.name != want or a.shape != tuple(f.shape):
            raise WireError(f"dealer sent {f.name} as {a.dtype}{a.shape}, expected {want}{tuple(f.shape)}")
        out[f.name] = a
    return out


# -- the party side ---------------------------------------------------------------------------
@dataclass
class DealerLinkStats:
    requests: int = 0           # corrections asked for on demand (a round trip each)
    pushed_hits: int = 0        # corrections already here, pushed ahead by the dealer
    pushed_wasted: int = 0      # pushed items whose prediction was wrong
    wait_seconds: float = 0.0   # time blocked on the dealer
    lead_seconds: list = field(default_factory=list)  # arrival -> use, for pushed hits
    bytes_received: int = 0
    schedules: int = 0

    def as_dict(self) -> dict:
        lead = np.asarray(self.lead_seconds or [0.0])
        return {"requests": self.requests, "pushed_hits": self.pushed_hits,
                "pushed_wasted": self.pushed_wasted, "wait_seconds": self.wait_seconds,
                "lead_seconds_median": float(np.median(lead)), "lead_seconds_min": float(lead.min()),
                "bytes_received": self.bytes_received, "schedules": self.schedules}


class RemoteDealerLink(CorrectionLink):
    """A party's connection to the dealer process for one job instance (``job``, ``nonce``):
    key hand-off, party 1's corrections, and the instance's release."""

    def __init__(self, curve: CurveContext, endpoint: str, dealer_public: bytes, job: str,
                 nonce: bytes, *, timeout: float = 60.0):
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise ValueError(f"a job instance nonce is {NONCE_BYTES} bytes")
        self.endpoint, self.job, self.nonce, self.timeout = endpoint, job, nonce, float(timeout)
        self.sock = curve.client_socket(zmq.DEALER, dealer_public, caps=DEALER_CAPS)
        self.sock.connect(endpoint)
        self.stats = DealerLinkStats()
        self._rid = 0
        self._pushed: dict[int, tuple] = {}       # seq -> (spec wire dict, arrays, arrival time)
        self._step: list[tuple[int, MaterialSpec]] = []
        self._step_base: int | None = None
        self._predicted: dict[int, MaterialSpec] = {}
        self._hist: deque = deque(maxlen=4)
        self._resend = False
        self._closed = False

    # -- requests -----------------------------------------------------------------------
    def _send(self, header: dict, arrays=()) -> None:
        if self._closed:
            raise ChannelClosed("dealer link is closed")
        self.sock.send_multipart(encode_message({**header, "job": self.job, "nonce": self.nonce},
                                                arrays), copy=False)

    def _receive_until(self, rid: int, frames: list) -> tuple[dict, list]:
        """Read messages (buffering pushes) until the reply to ``rid``; bounded wait.

        Requests are idempotent, so one whose answer is overdue is sent again: a dealer
        that restarted meanwhile answers it from its stored keys."""
        deadline = time.monotonic() + self.timeout
        resend = time.monotonic() + _RESEND_AFTER
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise ChannelTimeout(f"no answer from the dealer at {self.endpoint} within "
                                     f"{self.timeout:.0f} s (is it running, is our key authorised?)")
            if now >= resend:
                self.sock.send_multipart(frames, copy=False)
                resend = now + _RESEND_AFTER
            if not self.sock.poll(max(1, int(1000 * min(deadline, resend) - 1000 * now))):
                continue
            h, arrays = self._read()
            if h["type"] == "push":
                continue
            if h.get("rid") != rid:
                continue  # a late answer to an earlier, timed-out request
            if h["type"] == "error":
                raise ChannelClosed(f"dealer refused: {h.get('message', '')}")
            return h, arrays

    def _read(self) -> tuple[dict, list]:
        frames = self.sock.recv_multipart(copy=False)
        self.stats.bytes_received += sum(len(f) for f in frames)
        try:
            h, arrays = decode_message(frames, DEALER_CAPS)
        except WireError as exc:
            raise ChannelClosed(f"malformed message from the dealer: {exc}") from None
        if h["type"] == "push" and isinstance(h.get("seq"), int):
            self._pushed[h["seq"]] = (h, arrays, time.monotonic())
        return h, arrays

    def _await_push(self, seq: int, wait: float = 2.0) -> bool:
        """Wait for a predicted item the dealer is generating; False: ask for it instead."""
        deadline = time.monotonic() + min(wait, self.timeout)
        while seq not in self._pushed:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(max(1, int(left * 1000))):
                return False
            self._read()
        return True

    def _drain(self) -> None:
        while self.sock.poll(0):
            self._read()

    def _request(self, header: dict, arrays=()) -> tuple[dict, list]:
        if self._closed:
            raise ChannelClosed("dealer link is closed")
        self._rid += 1
        frames = encode_message({**header, "job": self.job, "nonce": self.nonce, "rid": self._rid},
                                arrays)
        self.sock.send_multipart(frames, copy=False)
        return self._receive_until(self._rid, frames)

    def open(self, digest: str, test_seed: bytes | None = None) -> bytes:
        """This party's 16-byte key for the instance.  ``digest`` is the job digest both
        servers agreed on; the dealer makes a new instance only when both ask with it."""
        hdr = {"type": "open", "digest": digest}
        if test_seed is not None:
            hdr["test_seed"] = bytes(test_seed)
        h, arrays = self._request(hdr)
        if h["type"] != "keys" or len(arrays) != 1 or arrays[0].dtype != np.uint8 \
                or arrays[0].shape != (SEED_BYTES,):
            raise ChannelClosed("dealer answered open with a malformed key")
        return arrays[0].tobytes()

    def release(self) -> None:
        """The job ended or was deleted: the dealer forgets the instance's keys for good."""
        h, _ = self._request({"type": "release"})
        if h["type"] != "released":
            raise ChannelClosed("dealer answered release with something else")

    # -- CorrectionLink -----------------------------------------------------------------
    def corrections(self, seq: int, spec: MaterialSpec) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        self._step.append((seq, spec))
        self._drain()
        if seq not in self._pushed and self._predicted.get(seq) == spec and not self._await_push(seq):
            self._predicted, self._resend = {}, True  # the dealer lost the schedule (restart?)
        got = self._pushed.pop(seq, None)
        for old in [s for s in self._pushed if s < seq]:
            del self._pushed[old]
            self.stats.pushed_wasted += 1
        out = None
        if got is not None and got[0].get("sd") == spec_digest(spec):
            try:
                out = corrections_from_message(got[0], got[1], spec)
                self.stats.pushed_hits += 1
                self.stats.lead_seconds.append(time.monotonic() - got[2])
            except WireError:
                out = None
        elif got is not None:
            self.stats.pushed_wasted += 1
        if out is None:
            self.stats.requests += 1
            h, arrays = self._request({"type": "get", "seq": int(seq), "spec": spec.to_wire()})
            if h["type"] != "corr" or h.get("seq") != seq:
                raise ChannelClosed("dealer answered with the wrong item")
            try:
                out = corrections_from_message(h, arrays, spec)
            except WireError as exc:
                raise ChannelClosed(str(exc)) from None
        self.stats.wait_seconds += time.perf_counter() - t0
        return out

    def begin(self, seq: int) -> None:
        """Training starts (or resumes) at source seq ``seq``: the first step is recorded."""
        self._step, self._step_base, self._predicted = [], int(seq), {}
        self._hist.clear()

    def step_done(self, next_seq: int) -> None:
        """Call at every training-step boundary (``next_seq`` = the source's next seq).

        Steps are kept as patterns (specs relative to the step's first seq).  The next steps
        are predicted by the shortest cycle of recent steps that repeats (one step usually;
        two when every other step also reports the loss); whenever the prediction changes
        the new cycle is announced to the dealer, which pre-generates from it.
        """
        base, items = self._step_base, self._step
        self._step, self._step_base = [], int(next_seq)
        if self._closed:
            return
        if base is None or next_seq <= base:
            self._send({"type": "consumed", "seq": int(next_seq)})
            return
        pattern = (next_seq - base, tuple((s - base, shift_spec(sp, -base, base)) for s, sp in items))
        self._hist.append((base, items, pattern))
        m = next((m for m in range(1, len(self._hist)) if self._hist[-1 - m][2] == pattern), 1)
        cycle = list(self._hist)[-m:]
        cbase = cycle[0][0]
        period = int(next_seq) - cbase
        predicted, self._predicted = self._predicted, {
            s + period: shift_spec(sp, period, cbase) for _, its, _ in cycle for s, sp in its}
        matched = bool(predicted) and all(predicted.get(s) == sp for s, sp in items) and \
            len(items) == sum(1 for s in predicted if base <= s < next_seq)
        if not matched or self._resend:
            self._resend = False
            self._send({"type": "schedule", "base": cbase, "period": period,
                        "items": [[s - cbase, sp.to_wire()] for _, its, _ in cycle for s, sp in its]})
            self.stats.schedules += 1
        else:
            self._send({"type": "consumed", "seq": int(next_seq)})

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.sock.close(linger=0)

