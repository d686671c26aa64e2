"""Party-side access to correlated randomness: the ``CorrelatedSource`` interface.

Protocols ask for typed material and never make randomness themselves.  ``SeededSource``
expands the party's own stream and merges what the dealer sends it through a
``DealerLink`` (the local runtime's in-process dealer, ``local_dealer``; the dealer
process's link lives with the deployment code and implements the same methods).

Runs.  The scheduler brackets every run with ``begin(key)`` and ``end()``; a run owns the
source's next nonce (``next_seq``, checkpointed).  ``key`` is a public description of the
run's shape (``("train", batch rows, reports the loss)`` for a training step) or None for
one-off work.  The first run of a key fetches its items one at a time (the per-item path:
each expanded from the stream at its address, party 1's corrections asked for one by one)
and records them as the key's ``MaterialPlan``; every later run of the key *replays* it:
both regions of the run are filled with one keystream call each into a reused buffer,
the dealer's part arrives as one blob per run (announced ahead, ``expect``), and each fetch
only checks the request against the plan and hands out views prepared once.  Both paths
give the same bytes (``plan.py``), so a recorded and a replayed run are bit-exact, and a
run that asks for anything else than its plan raises ``PlanDeviation``.  Material is
read-only; a replayed run's stays valid until the run after the next one begins.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import numpy as np

from .expand import expand_own, material_stream
from .plan import C_REGION, R_REGION, MaterialPlan, PlanDeviation, field_blocks, plan_totals, region_counter
from .specs import (AndSpec, Addr, BitSpec, CmpSpec, ItemRef, MaskSpec, MaterialSpec, ProductSpec,
                    TruncSpec, received_fields)

__all__ = ["Material", "SourceStats", "CorrelatedSource", "DealerLink", "SeededSource",
           "PlanDeviation"]

#: plans a source keeps (each holds two buffers of its run's keystream)
MAX_PLANS = 8


class Material:
    """One item: where it lies, what it is, and this party's (read-only) fields."""

    __slots__ = ("addr", "spec", "fields")

    def __init__(self, addr: Addr, spec: MaterialSpec, fields: dict):
        self.addr, self.spec, self.fields = addr, spec, fields

    def __getitem__(self, name: str) -> np.ndarray:
        return self.fields[name]

    def ref(self, name: str) -> ItemRef:
        return ItemRef(self.addr, self.spec, name)

    def __repr__(self) -> str:
        return f"Material({self.spec.kind} at {tuple(self.addr)})"


@dataclass
class SourceStats:
    items: int = 0
    dealer_bytes: int = 0          # bytes actually received from the dealer
    uncompressed_bytes: int = 0    # what both parties would receive without seed compression
    wait_seconds: float = 0.0      # time blocked on the dealer
    replayed_runs: int = 0         # runs served from a plan
    recorded_runs: int = 0         # runs that recorded a plan
    by_kind: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"items": self.items, "dealer_bytes": self.dealer_bytes,
                "uncompressed_bytes": self.uncompressed_bytes, "wait_seconds": self.wait_seconds,
                "replayed_runs": self.replayed_runs, "recorded_runs": self.recorded_runs,
                "by_kind": dict(self.by_kind)}


class DealerLink(ABC):
    """What one party receives from the dealer (in-process dealer or the dealer process)."""

    #: runs the dealer may generate ahead of the party's position
    window: int = 2

    @abstractmethod
    def item(self, addr: Addr, spec: MaterialSpec) -> dict[str, np.ndarray]:
        """The fields this party receives for one item (``specs.received_fields``)."""

    @abstractmethod
    def register(self, plan: MaterialPlan) -> None:
        """Tell the dealer a plan this party will replay."""

    @abstractmethod
    def announce(self, at: int, runs: Sequence[tuple[int, MaterialPlan]]) -> None:
        """This party begins run ``at`` and will replay ``runs``: (nonce, plan)."""

    @abstractmethod
    def blob(self, nonce: int, plan: MaterialPlan) -> np.ndarray:
        """This party's int64 blob of run ``nonce`` (blocking until the dealer has it)."""

    def close(self) -> None:
        pass


class CorrelatedSource(ABC):
    """Typed requests for material; ``fetch`` is the only transport-specific call."""

    stats: SourceStats

    @abstractmethod
    def fetch(self, spec: MaterialSpec) -> Material: ...

    def begin(self, key: Hashable | None = None) -> None:
        """A run starts (``key``: its public shape, or None); see the module doc."""

    def end(self, ok: bool = True) -> None:
        """The run ends (``ok``: it finished; else nothing it did is kept as a plan)."""

    def expect(self, keys: Sequence[Hashable]) -> None:
        """The keys of the runs after the next one, in order (lets the dealer work ahead)."""

    def record(self, log: list | None) -> None:
        """From now on append (addr, spec) of every item fetched to ``log``; None stops.
        (How a run's material plan is observed: ``protocols.rounds.StepPlan``.)"""
        self._log = log

    # -- typed helpers the protocols call ---------------------------------------------------
    # (``_planned`` lets a replaying source hand out a planned item without building its spec)
    def _planned(self, cls, values: tuple) -> Material | None:
        return None

    def mask(self, shape) -> Material:
        shape = tuple(map(int, shape))
        return self._planned(MaskSpec, (shape,)) or self.fetch(MaskSpec(shape))

    def product(self, op: str, left: ItemRef, right: ItemRef, out_shape, *, transpose_left=False,
                transpose_right=False, conv=()) -> Material:
        return self.fetch(ProductSpec(op, left, right, tuple(map(int, out_shape)),
                                      bool(transpose_left), bool(transpose_right), tuple(conv)))

    def trunc(self, shape, frac_bits: int) -> Material:
        values = (tuple(map(int, shape)), int(frac_bits))
        return self._planned(TruncSpec, values) or self.fetch(TruncSpec(*values))

    def cmp(self, n: int, bits: int) -> Material:
        values = (int(n), int(bits))
        return self._planned(CmpSpec, values) or self.fetch(CmpSpec(*values))

    def and_triple(self, shape, fan_out: int = 1) -> Material:
        values = (tuple(map(int, shape)), int(fan_out))
        return self._planned(AndSpec, values) or self.fetch(AndSpec(*values))

    def bits(self, n: int) -> Material:
        return self._planned(BitSpec, (int(n),)) or self.fetch(BitSpec(int(n)))


class _PlanState:
    """A plan as this party replays it: two keystream buffers (alternating runs) and each
    item's field views into them, made once."""

    def __init__(self, plan: MaterialPlan, rank: int):
        self.plan, self.rank = plan, rank
        self.totals = plan_totals(plan, rank)
        self.r_bytes = 16 * plan.r_blocks
        self.bufs = [np.empty(plan.own_bytes(rank) + 16, np.uint8) for _ in range(2)]
        self.views = [[it.own_views(rank, b, self.r_bytes) for it in plan.items] for b in self.bufs]
        self.uses = 0


class _Run:
    __slots__ = ("nonce", "key", "recording", "fetched", "r", "c", "state", "fields", "index")

    def __init__(self, nonce: int, key, recording: bool, state: _PlanState | None = None, fields=None):
        self.nonce, self.key, self.recording, self.state, self.fields = nonce, key, recording, state, fields
        self.fetched: list = []
        self.r = self.c = self.index = 0


def _read_only(d: dict) -> dict:
    for a in d.values():
        a.flags.writeable = False
    return d


class SeededSource(CorrelatedSource):
    """Material for party ``rank`` from its key plus what the dealer sends it (``link``:
    required for party 1; party 0 needs one only for kinds dealt to it)."""

    def __init__(self, rank: int, key: bytes, link: DealerLink | None, start_seq: int = 0):
        if rank not in (0, 1):
            raise ValueError("rank must be 0 or 1")
        if rank == 1 and link is None:
            raise ValueError("party 1 needs a link to the dealer")
        self.rank, self._stream, self._link = rank, material_stream(key), link
        self.next_seq = int(start_seq)   # the next run's nonce
        self.stats = SourceStats()
        self._log: list | None = None
        self._plans: OrderedDict[Hashable, _PlanState] = OrderedDict()
        self._run: _Run | None = None
        self._upcoming: tuple[int, tuple] = (0, ())

    # -- runs -------------------------------------------------------------------------------
    def begin(self, key: Hashable | None = None) -> None:
        if self._run is not None:
            raise RuntimeError("runs of one source do not nest")
        nonce = self.next_seq
        self.next_seq += 1
        state = self._plans.get(key) if key is not None else None
        self._announce(nonce, state)
        if state is None:
            self._run = _Run(nonce, key, recording=key is not None)
            return
        self._plans.move_to_end(key)
        plan, rank = state.plan, self.rank
        buf = state.bufs[state.uses % 2]
        fields = state.views[state.uses % 2]
        state.uses += 1
        self._stream.fill(region_counter(nonce, R_REGION, 0), buf, 0, state.r_bytes)
        if rank == 0:
            self._stream.fill(region_counter(nonce, C_REGION, 0), buf, state.r_bytes, plan.own_bytes(0))
        if plan.receives(rank):
            t0 = time.perf_counter()
            blob = self._link.blob(nonce, plan)
            self.stats.wait_seconds += time.perf_counter() - t0
            if blob.dtype != np.int64 or blob.shape != (plan.blob_elements[rank],):
                raise ValueError(f"the dealer's blob for run {nonce} is {blob.dtype}{blob.shape}, "
                                 f"expected int64({plan.blob_elements[rank]},)")
            fields = [{**own, **it.blob_views(rank, blob)} for own, it in zip(fields, plan.items)]
        st, tot = self.stats, state.totals
        st.items += tot.items
        st.dealer_bytes += tot.dealer_bytes
        st.uncompressed_bytes += tot.uncompressed_bytes
        st.replayed_runs += 1
        for kind, n in tot.by_kind:
            st.by_kind[kind] = st.by_kind.get(kind, 0) + n
        self._run = _Run(nonce, key, recording=False, state=state, fields=fields)

    def end(self, ok: bool = True) -> None:
        run, self._run = self._run, None
        if run is None or not ok:
            return
        if run.state is not None and run.index != len(run.state.plan.items):
            raise PlanDeviation(f"run {run.nonce} fetched {run.index} of its plan's "
                                f"{len(run.state.plan.items)} items")
        if run.recording:
            plan = MaterialPlan.record(run.fetched, run.nonce)
            self.stats.recorded_runs += 1
            self._plans[run.key] = _PlanState(plan, self.rank)
            while len(self._plans) > MAX_PLANS:
                self._plans.popitem(last=False)
            if plan.receives(self.rank):
                self._needs_link(plan)
                self._link.register(plan)

    def expect(self, keys: Sequence[Hashable]) -> None:
        self._upcoming = (self.next_seq + 1, tuple(keys))

    def plan_of(self, key: Hashable) -> MaterialPlan | None:
        """The plan recorded for ``key``, if any."""
        state = self._plans.get(key)
        return None if state is None else state.plan

    def _announce(self, nonce: int, state: _PlanState | None) -> None:
        """Tell the dealer which of this and the expected runs it can prepare."""
        runs = [(nonce, state.plan)] if state is not None and state.plan.receives(self.rank) else []
        first, keys = self._upcoming
        if first == nonce + 1:
            for j, k in enumerate(keys[:self._link.window if self._link else 0]):
                st = self._plans.get(k)
                if st is not None and st.plan.receives(self.rank):
                    runs.append((first + j, st.plan))
        self._upcoming = (0, ())
        if runs:
            self._link.announce(nonce, runs)

    # -- items ------------------------------------------------------------------------------
    def _planned(self, cls, values: tuple) -> Material | None:
        """The next planned item if a replayed run is at one of kind ``cls`` with exactly
        these field values (``dataclasses.astuple`` order); else None (``fetch`` decides)."""
        run = self._run
        if run is None or run.state is None:
            return None
        i = run.index
        items = run.state.plan.items
        if i >= len(items):
            return None
        it = items[i]
        sp = it.spec
        if type(sp) is not cls or it.values != values:
            return None
        run.index = i + 1
        m = Material(Addr(run.nonce, it.r, it.c), sp, run.fields[i])
        if self._log is not None:
            self._log.append((m.addr, sp))
        return m

    def fetch(self, spec: MaterialSpec) -> Material:
        run = self._run
        if run is None:   # outside any run: the item is a run of its own
            nonce = self.next_seq
            self.next_seq += 1
            return self._fetch_one(Addr(nonce, 0, 0), spec)
        if run.state is not None:
            i = run.index
            items = run.state.plan.items
            if i >= len(items) or not items[i].matches(spec, run.nonce):
                raise PlanDeviation(f"run {run.nonce}, item {i}: asked for {spec.kind} material the "
                                    f"plan does not have there")
            run.index = i + 1
            it = items[i]
            m = Material(Addr(run.nonce, it.r, it.c), spec, run.fields[i])
            if self._log is not None:
                self._log.append((m.addr, spec))
            return m
        addr = Addr(run.nonce, run.r, run.c)
        rb, cb = field_blocks(spec.random_fields()), field_blocks(spec.corrected_fields())
        run.r += rb if rb + cb else 1
        run.c += cb
        m = self._fetch_one(addr, spec)
        if run.recording:
            run.fetched.append((addr, spec))
        return m

    def _needs_link(self, spec) -> None:
        if self._link is None:
            raise ValueError(f"party {self.rank} has no link to the dealer, and {spec} needs one")

    def _fetch_one(self, addr: Addr, spec: MaterialSpec) -> Material:
        fields = expand_own(self._stream, self.rank, addr, spec)
        st = self.stats
        got = received_fields(spec, self.rank)
        if got:
            self._needs_link(spec)
            t0 = time.perf_counter()
            sent = self._link.item(addr, spec)
            st.wait_seconds += time.perf_counter() - t0
            for f in got:
                a = sent.get(f.name)
                if a is None or a.shape != tuple(f.shape):
                    raise ValueError(f"dealer sent {f.name} as {getattr(a, 'shape', None)}, "
                                     f"expected {f.shape}")
                fields[f.name] = a
                st.dealer_bytes += f.nbytes
        st.items += 1
        # every field is now expanded or received: this party's half of the uncompressed size
        st.uncompressed_bytes += sum(a.nbytes for a in fields.values())
        st.by_kind[spec.kind] = st.by_kind.get(spec.kind, 0) + 1
        if self._log is not None:
            self._log.append((addr, spec))
        return Material(addr, spec, _read_only(fields))
