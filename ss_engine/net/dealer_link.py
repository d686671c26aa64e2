"""The parties' side of the dealer process, and the messages both sides share.

Messages (party: DEALER socket -> dealer: ROUTER socket; every link CurveZMQ; the dealer
knows which party is calling from its authenticated public key, so a party can only ever
obtain its *own* key and its own material).  Every message names a job *instance*: the job
id plus its 32-byte nonce (each server drew half of it, from os.urandom, when the job was
created), so two jobs that share a name never share seeds:

    open      {job, nonce, digest, test_seed?} -> keys  + [uint8 (16,)]  key_p of the instance
              (a new instance is made only once *both* servers have asked for it with the
              same job digest; the first one's answer waits for the second)
    get       {addr, spec}          -> material {addr, names} + the fields this party
              receives for one item (a recorded or one-off run; ``received_fields``)
    plan      {plan: {items, digest}}   (no reply) a plan this party will replay: its
              items' specs relative to the run (``preprocessing.plan``)
    runs      {at, runs: [[nonce, digest], ...], again?}   (no reply) the party begins run
              ``at`` and will replay these runs; the dealer generates each once, in nonce
              order, at most ``window`` runs beyond ``at``, and pushes
    blob      {nonce, digest} + [int64 (n,)]   the party's part of one run, in the plan's
              blob layout (party 1: its corrections and dealt fields; party 0: its dealt
              fields -- none for today's protocols, so party 0 gets no blob at all); on the
              data plane when the party holds one, else on CurveZMQ
    need_plan {digest}              (dealer -> party) announced with a plan it does not hold
    refused   {nonce, message}      (dealer -> party) a run it will not generate
    release   {job, nonce}          -> released   the job ended or was deleted: the dealer
              forgets the instance's keys and never serves the instance again

A run's nonce, once announced with a plan, is bound to it: the dealer refuses another plan
for it (its items would share keystream with the first plan's).  Nothing here needs to
survive a crash: the dealer regenerates any item from (keys, addr, spec) and any run from
(keys, nonce, plan), and a party waiting for a blob sends its plan and runs again
(``again``) until the blob comes, so a restarted dealer or party carries on.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import zmq

from ..comm.channel import ChannelClosed, ChannelTimeout
from ..preprocessing.circuits import MAX_BLOCK_BITS, MAX_FAN_IN
from ..preprocessing.plan import MaterialPlan, PlanDeviation
from ..preprocessing.source import DealerLink
from ..preprocessing.specs import RING, Addr, ItemRef, MaterialSpec, received_fields, spec_from_wire
from ..prg import SEED_BYTES
from .wire import WireCaps, WireError, decode_message, encode_message
from .dealer_data import connect_data
from .zmq_channel import CurveContext, endpoint_host

__all__ = ["RemoteDealerLink", "DealerLinkStats", "check_spec", "parse_spec", "parse_plan",
           "material_frames", "DEALER_CAPS", "DEALER_REQUEST_CAPS", "MAX_ITEM_ELEMENTS",
           "MAX_PLAN_ITEMS", "material_from_message", "NONCE_BYTES", "NONCE_PART_BYTES"]

#: largest single field the dealer will generate (elements); 2**24 int64 = 128 MiB
MAX_ITEM_ELEMENTS = 1 << 24
#: most items a plan may hold, and most elements of one run's blob
MAX_PLAN_ITEMS = 20_000
_RESEND_AFTER = 3.0
_TAKEN_KEPT = 64   # recent runs whose late duplicates a link drops
DEALER_CAPS = WireCaps(max_header_bytes=4 << 20, max_container=1 << 16, max_elements=MAX_ITEM_ELEMENTS)
#: what the dealer accepts from a party: headers only (a plan is the largest)
DEALER_REQUEST_CAPS = dataclasses.replace(DEALER_CAPS, max_arrays=0, max_elements=0, max_total_bytes=0)
#: a job instance's nonce: server 0's 16 random bytes, then server 1's
NONCE_PART_BYTES = 16
NONCE_BYTES = 2 * NONCE_PART_BYTES


# -- specs and plans on the wire --------------------------------------------------------------
def _check_addr(a: Addr, relative_ok: bool) -> None:
    lo = -1 if relative_ok else 0
    if not lo <= a.nonce < 2**62 or not 0 <= a.r < 2**62 or not 0 <= a.c < 2**62:
        raise ValueError("item address out of range")


def check_spec(spec: MaterialSpec, max_elements: int = MAX_ITEM_ELEMENTS, depth: int = 0,
               relative_ok: bool = False) -> None:
    """Refuse specs whose generation would be absurdly large or ill-formed (ValueError)."""
    if depth > 4:
        raise ValueError("material spec nested too deeply")
    for f in spec.random_fields() + spec.corrected_fields() + spec.dealt_fields(0) + spec.dealt_fields(1):
        n = 1
        for s in f.shape:
            if s < 0:
                raise ValueError(f"negative dimension in field {f.name}")
            n *= s
        if n > max_elements:
            raise ValueError(f"field {f.name} of {n} elements exceeds the cap {max_elements}")
    for name, lo, hi in (("bits", 1, 64), ("frac_bits", 0, 62), ("fan_out", 1, 64), ("n", 0, max_elements),
                         ("block", 1, MAX_BLOCK_BITS), ("fan_in", 2, MAX_FAN_IN), ("inputs", 1, 1 << 12),
                         ("words", 0, max_elements), ("owner", 0, 1)):
        v = getattr(spec, name, None)
        if v is not None and not lo <= v <= hi:
            raise ValueError(f"{spec.kind} spec: {name}={v} outside [{lo}, {hi}]")
    for f in dataclasses.fields(spec):
        v = getattr(spec, f.name)
        if isinstance(v, ItemRef):
            _check_addr(v.addr, relative_ok)
            check_spec(v.spec, max_elements, depth + 1, relative_ok)
            if v.field not in {x.name for x in v.spec.random_fields() + v.spec.corrected_fields()}:
                raise ValueError(f"reference to unknown field {v.field!r}")
    conv = getattr(spec, "conv", ())
    if conv and (len(conv) != 4 or not all(0 <= c <= 64 for c in conv) or conv[2] < 1):
        raise ValueError(f"invalid conv parameters {conv}")


_BAD = (ValueError, TypeError, KeyError, OverflowError, AttributeError, RecursionError)


def parse_spec(d) -> MaterialSpec:
    """spec_from_wire plus size checks; raises WireError on anything malformed."""
    try:
        spec = spec_from_wire(d)
        check_spec(spec)
    except _BAD as exc:
        raise WireError(f"bad material spec: {exc}") from None
    return spec


def parse_plan(d) -> MaterialPlan:
    """A plan from the wire, every spec checked, its blobs within the caps; WireError else."""
    try:
        if not isinstance(d, dict) or not isinstance(d.get("items"), list) or \
                not 0 < len(d["items"]) <= MAX_PLAN_ITEMS:
            raise ValueError(f"a plan holds 1 to {MAX_PLAN_ITEMS} items")
        plan = MaterialPlan.from_wire(d, check=lambda s: check_spec(s, relative_ok=True))
    except _BAD as exc:
        raise WireError(f"bad plan: {exc}") from None
    if max(plan.blob_elements) > MAX_ITEM_ELEMENTS:
        raise WireError(f"a run of this plan would send {max(plan.blob_elements)} elements, "
                        f"more than the cap {MAX_ITEM_ELEMENTS}")
    return plan


def material_frames(kind: str, job: str, addr: Addr, spec: MaterialSpec, rank: int, got: dict,
                    **extra) -> list:
    names = [f.name for f in received_fields(spec, rank)]
    return encode_message({"type": kind, "job": job, "addr": addr.to_wire(), "rank": rank, "names": names,
                           **extra}, [got[n] for n in names])


def material_from_message(h: dict, arrays: list, spec: MaterialSpec, rank: int) -> dict:
    """Check a material reply against the spec the party asked for; WireError if it differs."""
    if rank not in (0, 1):
        raise WireError("dealer material names no party")
    fields = received_fields(spec, rank)
    if h.get("names") != [f.name for f in fields] or len(arrays) != len(fields):
        raise WireError("dealer material does not match the requested spec")
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
    requests: int = 0           # items asked for one at a time (a round trip each)
    blobs: int = 0              # replayed runs' blobs received
    plans: int = 0              # plans registered
    resends: int = 0            # plans/runs sent again while waiting for a blob
    data_plane: bool = False    # blobs arrive on the AES-GCM data plane (else CurveZMQ)
    wait_seconds: float = 0.0   # time blocked on the dealer
    bytes_received: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class RemoteDealerLink(DealerLink):
    """A party's connection to the dealer process for one job instance (``job``, ``nonce``):
    key hand-off, the party's material (per item and per replayed run) and the instance's
    release."""

    def __init__(self, curve: CurveContext, endpoint: str, dealer_public: bytes, job: str,
                 nonce: bytes, *, timeout: float = 60.0, window: int = 2):
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise ValueError(f"a job instance nonce is {NONCE_BYTES} bytes")
        self.endpoint, self.job, self.nonce, self.timeout = endpoint, job, nonce, float(timeout)
        self.window = int(window)
        self.sock = curve.client_socket(zmq.DEALER, dealer_public, caps=DEALER_CAPS)
        self.sock.connect(endpoint)
        self.stats = DealerLinkStats()
        self._rid = 0
        self._plans: dict[bytes, MaterialPlan] = {}
        self._blobs: dict[int, tuple[bytes, np.ndarray]] = {}
        # runs already taken: a blob pushed again for one (after a resend) is dropped, never
        # mistaken for the answer to a later announcement of the same nonce
        self._taken: dict[int, None] = {}
        self._last_runs: tuple[int, list] = (0, [])
        self._closed = False
        self._data = None   # the data plane's SealedStream, once ``open`` made it
        self._poller = zmq.Poller()
        self._poller.register(self.sock, zmq.POLLIN)

    # -- messages -----------------------------------------------------------------------
    def _send(self, header: dict, arrays=()) -> list:
        if self._closed:
            raise ChannelClosed("dealer link is closed")
        frames = encode_message({**header, "job": self.job, "nonce": self.nonce}, arrays)
        self.sock.send_multipart(frames, copy=False)
        return frames

    def _read(self) -> tuple[dict, list]:
        frames = self.sock.recv_multipart(copy=False)
        self.stats.bytes_received += sum(len(f) for f in frames)
        return self._take(frames)

    def _read_data(self) -> None:
        """One message of the data plane (a blob); a broken data plane falls back to zmq."""
        try:
            frames, nbytes = self._data.recv(self.timeout)
        except (ChannelClosed, ChannelTimeout, WireError, ValueError) as exc:
            self._drop_data(exc)
            return
        self.stats.bytes_received += nbytes
        self._take(frames)

    def _drop_data(self, why) -> None:
        if self._data is not None:
            self._poller.unregister(self._data.fileno())
            self._data.close()
            self._data = None
            self.stats.data_plane = False
            self._resend_all()

    def _wait(self, ms: int) -> None:
        """Read whatever arrives within ``ms`` on the control socket and the data plane."""
        for s, _ in self._poller.poll(max(1, ms)):
            if s is self.sock:
                while self.sock.poll(0):
                    self._read()
            elif self._data is not None:
                self._read_data()

    def _take(self, frames) -> tuple[dict, list]:
        try:
            h, arrays = decode_message(frames, DEALER_CAPS)
        except WireError as exc:
            raise ChannelClosed(f"malformed message from the dealer: {exc}") from None
        t = h["type"]
        if t == "blob" and isinstance(h.get("nonce"), int) and len(arrays) == 1:
            if h["nonce"] in self._taken:
                return h, arrays
            self._blobs[h["nonce"]] = (h.get("digest"), arrays[0])
        elif t == "need_plan" and h.get("digest") in self._plans:
            self._send({"type": "plan", "plan": self._plans[h["digest"]].to_wire()})
        elif t == "refused":
            raise ChannelClosed(f"dealer refused run {h.get('nonce')}: {str(h.get('message', ''))[:200]}")
        return h, arrays

    def _request(self, header: dict) -> tuple[dict, list]:
        """Send a request and read (keeping pushes) until its reply; bounded wait.  Requests
        are idempotent, so one whose answer is overdue is sent again: a dealer that
        restarted meanwhile answers it from its stored keys."""
        self._rid += 1
        rid = self._rid
        frames = self._send({**header, "rid": rid})
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
            if h.get("rid") != rid or h["type"] in ("blob", "need_plan"):
                continue  # a push, or a late answer to an earlier, timed-out request
            if h["type"] == "error":
                raise ChannelClosed(f"dealer refused: {h.get('message', '')}")
            return h, arrays

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
        key = arrays[0].tobytes()
        if "data" in h and self._data is None:
            try:
                self._data = connect_data(endpoint_host(self.endpoint), h["data"], min(5.0, self.timeout),
                                          self.window + 4, DEALER_CAPS)
                self._poller.register(self._data.fileno(), zmq.POLLIN)
                self.stats.data_plane = True
            except (ChannelClosed, OSError, ValueError):
                self._data = None   # blobs come on CurveZMQ
        return key

    def release(self) -> None:
        """The job ended or was deleted: the dealer forgets the instance's keys for good."""
        h, _ = self._request({"type": "release"})
        if h["type"] != "released":
            raise ChannelClosed("dealer answered release with something else")

    # -- DealerLink -----------------------------------------------------------------------
    def item(self, addr: Addr, spec: MaterialSpec) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        self.stats.requests += 1
        h, arrays = self._request({"type": "get", "addr": addr.to_wire(), "spec": spec.to_wire()})
        if h["type"] != "material" or h.get("addr") != addr.to_wire():
            raise ChannelClosed("dealer answered with the wrong item")
        try:
            out = material_from_message(h, arrays, spec, h.get("rank"))
        except WireError as exc:
            raise ChannelClosed(str(exc)) from None
        self.stats.wait_seconds += time.perf_counter() - t0
        return out

    def register(self, plan: MaterialPlan) -> None:
        self._plans[plan.digest] = plan
        self._send({"type": "plan", "plan": plan.to_wire()})
        self.stats.plans += 1

    def announce(self, at: int, runs) -> None:
        self._plans.update((p.digest, p) for _, p in runs)
        wire = [[int(n), p.digest] for n, p in runs]
        self._last_runs = (int(at), wire)
        self._send({"type": "runs", "at": int(at), "runs": wire})
        for old in [n for n in self._blobs if n < at]:
            del self._blobs[old]

    def blob(self, nonce: int, plan: MaterialPlan) -> np.ndarray:
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.timeout
        resend = time.monotonic() + _RESEND_AFTER
        while nonce not in self._blobs:
            now = time.monotonic()
            if now >= deadline:
                raise ChannelTimeout(f"no material for run {nonce} from the dealer at {self.endpoint} "
                                     f"within {self.timeout:.0f} s")
            if now >= resend:   # the dealer restarted, or a push was lost: say it all again
                self._resend_all(nonce, plan)
                resend = now + _RESEND_AFTER
            self._wait(int(1000 * (min(resend, deadline) - now)))
        digest, blob = self._blobs.pop(nonce)
        self._taken[nonce] = None
        while len(self._taken) > _TAKEN_KEPT:
            del self._taken[next(iter(self._taken))]
        if digest != plan.digest:
            raise PlanDeviation(f"the dealer generated run {nonce} with another plan")
        self.stats.blobs += 1
        self.stats.wait_seconds += time.perf_counter() - t0
        return blob

    def _resend_all(self, nonce: int | None = None, plan: MaterialPlan | None = None) -> None:
        """Say every plan and the runs waited for again (idempotent: after a dealer restart, a
        lost push, or a broken data plane)."""
        self.stats.resends += 1
        for p in ([plan] if plan is not None else self._plans.values()):
            self._send({"type": "plan", "plan": p.to_wire()})
        at, runs = self._last_runs if nonce is None else (int(nonce), [[int(nonce), plan.digest]])
        if runs:
            self._send({"type": "runs", "at": at, "runs": runs, "again": True})

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._data is not None:
                self._data.close()
            self.sock.close(linger=0)
