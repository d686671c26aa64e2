"""Party-side access to correlated randomness: the ``CorrelatedSource`` interface.

Protocols ask for typed material and never make randomness themselves.  ``SeededSource``
expands the party's own seed and, for party 1, merges the dealer's corrections fetched
through a ``CorrectionLink`` (in-process twin here; the dealer process's link lives with the
deployment code and implements the same two methods).
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from ..prg import CounterStream
from .expand import DealerCore, expand_own
from .specs import (AndSpec, BitSpec, CmpSpec, ItemRef, MaskSpec, MaterialSpec, ProductSpec,
                    TruncSpec)

__all__ = ["Material", "SourceStats", "CorrelatedSource", "CorrectionLink", "SeededSource",
           "InProcessDealerLink"]


@dataclass(frozen=True)
class Material:
    seq: int
    spec: MaterialSpec
    fields: dict

    def __getitem__(self, name: str) -> np.ndarray:
        return self.fields[name]

    def ref(self, name: str) -> ItemRef:
        return ItemRef(self.seq, self.spec, name)


@dataclass
class SourceStats:
    items: int = 0
    dealer_bytes: int = 0          # correction bytes actually received from the dealer
    uncompressed_bytes: int = 0    # what both parties would receive without seed compression
    wait_seconds: float = 0.0      # time blocked on the dealer
    by_kind: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"items": self.items, "dealer_bytes": self.dealer_bytes,
                "uncompressed_bytes": self.uncompressed_bytes, "wait_seconds": self.wait_seconds,
                "by_kind": dict(self.by_kind)}


class CorrectionLink(ABC):
    """Where party 1's corrections come from (in-process dealer or the dealer process)."""

    @abstractmethod
    def corrections(self, seq: int, spec: MaterialSpec) -> dict[str, np.ndarray]: ...

    def step_done(self, next_seq: int) -> None:
        """A training step ended; the next one starts at ``next_seq`` (a hint for dealers
        that generate ahead)."""

    def close(self) -> None:
        pass


class InProcessDealerLink(CorrectionLink):
    def __init__(self, core: DealerCore):
        self.core = core

    def corrections(self, seq, spec):
        return self.core.corrections(seq, spec)


class CorrelatedSource(ABC):
    """Typed requests for material; ``fetch`` is the only transport-specific call."""

    stats: SourceStats

    @abstractmethod
    def fetch(self, spec: MaterialSpec) -> Material: ...

    def step_done(self) -> None:
        """Mark a training-step boundary (called by the training loop on both parties)."""

    def record(self, log: list | None) -> None:
        """From now on append (seq, spec) of every item fetched to ``log``; None stops.
        (How a run's material plan is observed: ``protocols.rounds.StepPlan``.)"""
        self._log = log

    # -- typed helpers the protocols call ---------------------------------------------------
    def mask(self, shape) -> Material:
        return self.fetch(MaskSpec(tuple(int(s) for s in shape)))

    def product(self, op: str, left: ItemRef, right: ItemRef, out_shape, *, transpose_left=False,
                transpose_right=False, conv=()) -> Material:
        return self.fetch(ProductSpec(op, left, right, tuple(int(s) for s in out_shape),
                                      bool(transpose_left), bool(transpose_right), tuple(conv)))

    def trunc(self, shape, frac_bits: int) -> Material:
        return self.fetch(TruncSpec(tuple(int(s) for s in shape), int(frac_bits)))

    def cmp(self, n: int, bits: int) -> Material:
        return self.fetch(CmpSpec(int(n), int(bits)))

    def and_triple(self, shape, fan_out: int = 1) -> Material:
        return self.fetch(AndSpec(tuple(int(s) for s in shape), int(fan_out)))

    def bits(self, n: int) -> Material:
        return self.fetch(BitSpec(int(n)))


class SeededSource(CorrelatedSource):
    """Material for party ``rank`` from its seed ``key`` plus (party 1) dealer corrections."""

    def __init__(self, rank: int, key: bytes, link: CorrectionLink | None, start_seq: int = 0):
        if rank not in (0, 1):
            raise ValueError("rank must be 0 or 1")
        if rank == 1 and link is None:
            raise ValueError("party 1 needs a link to the dealer")
        self.rank, self._stream, self._link = rank, CounterStream(key), link
        self.next_seq = int(start_seq)
        self.stats = SourceStats()
        self._log: list | None = None

    def step_done(self) -> None:
        if self._link is not None:
            self._link.step_done(self.next_seq)

    def fetch(self, spec: MaterialSpec) -> Material:
        seq = self.next_seq
        self.next_seq += 1
        fields = expand_own(self._stream, self.rank, seq, spec)
        st = self.stats
        # (a spec's field tuples are rebuilt on every call, so each is asked for once here)
        corrected = spec.corrected_fields() if self.rank == 1 else ()
        if corrected:
            t0 = time.perf_counter()
            corr = self._link.corrections(seq, spec)
            st.wait_seconds += time.perf_counter() - t0
            for f in corrected:
                got = corr[f.name]
                if got.shape != tuple(f.shape):
                    raise ValueError(f"dealer sent {f.name} with shape {got.shape}, expected {f.shape}")
                fields[f.name] = got
                st.dealer_bytes += f.nbytes
        st.items += 1
        # every field is now expanded or received: this party's half of the uncompressed size
        st.uncompressed_bytes += sum(a.nbytes for a in fields.values())
        st.by_kind[spec.kind] = st.by_kind.get(spec.kind, 0) + 1
        if self._log is not None:
            self._log.append((seq, spec))
        return Material(seq, spec, fields)
