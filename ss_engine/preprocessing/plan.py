"""Where a run's material lies in the keystream, and the plan a repeated run replays.

Every party's material for a job instance is one AES-128-CTR stream under its key
(``prg.CounterStream``).  A *run* (one scheduler run: a training step, an inference batch,
one op) owns one nonce, the source's run counter, checkpointed and never reused; its
items are consecutive slices of two regions of that nonce's counter space:

    random fields      counter = nonce << 64 | r            (both parties)
    corrected shares   counter = nonce << 64 | 2^63 | c     (party 0's shares only)

An item's ``Addr`` is (nonce, r, c): the first block of its random fields and of party 0's
shares of its corrected fields, each field after the other in declared order, 8 bytes per
element, every item starting on a block boundary.  So one item's bytes are the same
whether it was fetched alone (the per-item path: a first step, a one-off op) or as a slice
of its run's regions filled in one call each (a replayed plan), and the dealer derives the
same slices from (keys, nonce, plan) alone.  Runs never share a nonce and items of a run
never share a block, so no keystream block serves two items; a resumed run recomputes the
interrupted run's items exactly (same nonce, same specs).

A ``MaterialPlan`` is a run's items in order, its specs relative to the run
(``specs.relative_spec``), laid out in the regions above, plus the layout of what the
dealer sends each party per run (its *blob*: party 1's corrections and each party's dealt
fields, one after the other).  It is the same for every run of the same public shape (a
training step's, for example), names itself by a digest of its content, and checks that a
replayed run asks for exactly the planned items.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

import msgpack
import numpy as np

from .specs import (RELATIVE, RING, Addr, Field, ItemRef, MaterialSpec, received_fields,
                    relative_spec, spec_from_wire)

__all__ = ["R_REGION", "C_REGION", "region_counter", "field_blocks", "ItemLayout",
           "MaterialPlan", "PlanDeviation", "plan_totals"]

R_REGION = 0
C_REGION = 1 << 63


def region_counter(nonce: int, region: int, block: int) -> int:
    """The 128-bit CTR counter of ``block`` in ``region`` of run ``nonce``."""
    return (int(nonce) << 64) | region | int(block)


def field_blocks(fields: Sequence[Field]) -> int:
    """AES blocks the fields take, one after the other, 8 bytes per element."""
    return (8 * sum(math.prod(f.shape) for f in fields) + 15) // 16


class PlanDeviation(RuntimeError):
    """A replayed run asked for other material than its plan recorded: the plan's key does
    not capture something the run depends on (a bug of the caller, never a secret)."""


def _slots(fields: Sequence[Field], start: int) -> tuple:
    """(name, kind, shape, byte offset) of consecutive fields from byte ``start``."""
    out, pos = [], start
    for f in fields:
        out.append((f.name, f.kind, tuple(f.shape), pos))
        pos += 8 * math.prod(f.shape)
    return tuple(out)


def _view(buf: np.ndarray, kind: str, shape: tuple, offset: int, itemsize: int = 1) -> np.ndarray:
    """A read-only typed view of ``shape`` at ``offset`` (in units of ``itemsize``) of buf."""
    n = math.prod(shape)
    start = offset // itemsize
    v = buf[start:start + n * (8 // itemsize)].view(np.int64 if kind == RING else np.uint64)
    v = v.reshape(shape)
    v.flags.writeable = False
    return v


class ItemLayout:
    """One item of a plan: its (relative) spec, its blocks and its fields' places."""

    __slots__ = ("spec", "r", "c", "random", "corrected", "received", "refs", "plain", "values")

    def __init__(self, spec: MaterialSpec, r: int, c: int, blob_pos: list[int]):
        self.spec, self.r, self.c = spec, r, c
        self.random = _slots(spec.random_fields(), 16 * r)
        self.corrected = _slots(spec.corrected_fields(), 16 * c)
        received = []
        corrected = {f.name for f in spec.corrected_fields()}
        for rank in (0, 1):
            fields = received_fields(spec, rank)
            # (name, kind, shape, element offset in the blob, whether it is a correction)
            received.append(tuple((name, kind, shape, off // 8, rank == 1 and name in corrected)
                                  for name, kind, shape, off in _slots(fields, 8 * blob_pos[rank])))
            blob_pos[rank] += sum(math.prod(f.shape) for f in fields)
        self.received = tuple(received)
        # how a replayed request is checked: every attribute equal, item references by place
        refs, plain = [], []
        for f in dataclasses.fields(spec):
            v = getattr(spec, f.name)
            (refs if isinstance(v, ItemRef) else plain).append((f.name, v))
        self.refs = tuple(refs)
        self.plain = tuple(plain)
        # a reference-free spec's field values, for the sources' quick check
        self.values = None if refs else tuple(v for _, v in plain)

    def own_views(self, rank: int, buf: np.ndarray, r_bytes: int) -> dict[str, np.ndarray]:
        """This item's fields expanded by party ``rank`` as views of its filled regions
        (``buf``: the random region, then party 0's corrected region from ``r_bytes``)."""
        out = {name: _view(buf, kind, shape, off) for name, kind, shape, off in self.random}
        if rank == 0:
            out.update((name, _view(buf, kind, shape, r_bytes + off))
                       for name, kind, shape, off in self.corrected)
        return out

    def blob_views(self, rank: int, blob: np.ndarray) -> dict[str, np.ndarray]:
        """The fields party ``rank`` receives, as views of its int64 blob."""
        return {name: _view(blob, kind, shape, 8 * off, 8) for name, kind, shape, off, _
                in self.received[rank]}

    def matches(self, spec: MaterialSpec, nonce: int) -> bool:
        """Whether ``spec``, requested in run ``nonce``, is this planned item."""
        if not self.refs:
            return spec == self.spec
        if type(spec) is not type(self.spec):
            return False
        for name, v in self.plain:
            if getattr(spec, name) != v:
                return False
        for name, planned in self.refs:
            v = getattr(spec, name)
            if not isinstance(v, ItemRef) or v.field != planned.field:
                return False
            a = planned.addr
            if (v.addr != (nonce, a.r, a.c)) if a.nonce == RELATIVE else (v.addr != a or v.spec != planned.spec):
                return False
        return True


@dataclass(frozen=True)
class PlanTotals:
    """What one replay of a plan adds to a party's ``SourceStats``."""

    items: int
    dealer_bytes: int
    uncompressed_bytes: int
    by_kind: tuple


def plan_totals(plan: "MaterialPlan", rank: int) -> PlanTotals:
    kinds: dict[str, int] = {}
    dealer = held = 0
    for it in plan.items:
        kinds[it.spec.kind] = kinds.get(it.spec.kind, 0) + 1
        dealer += sum(f.nbytes for f in received_fields(it.spec, rank))
        held += sum(f.nbytes for f in it.spec.random_fields() + it.spec.corrected_fields()
                    + it.spec.dealt_fields(rank))
    return PlanTotals(len(plan.items), dealer, held, tuple(sorted(kinds.items())))


class MaterialPlan:
    """A run's material: its items (specs relative to the run) laid out as the module doc
    says.  Build it from what a run fetched (``record``) or from the wire (``from_wire``)."""

    def __init__(self, specs: Sequence[MaterialSpec]):
        items, index = [], {}
        r = c = 0
        blob = [0, 0]
        for spec in specs:
            rb, cb = field_blocks(spec.random_fields()), field_blocks(spec.corrected_fields())
            if rb + cb == 0:
                rb = 1   # every item owns a block, so an address names one item
            items.append(ItemLayout(spec, r, c, blob))
            index[(r, c)] = len(items) - 1
            r, c = r + rb, c + cb
        self.items: tuple[ItemLayout, ...] = tuple(items)
        self.index_of = index
        self.r_blocks, self.c_blocks = r, c
        self.blob_elements = tuple(blob)
        refs = set()
        for it in items:
            for _, ref in it.refs:
                if ref.addr.nonce == RELATIVE:
                    j = index.get((ref.addr.r, ref.addr.c))
                    if j is None or j >= index[(it.r, it.c)]:
                        raise ValueError("a plan's item refers to no earlier item of its run")
                    refs.add(j)
        self.referenced = frozenset(refs)
        self.digest = hashlib.sha256(msgpack.packb(self._wire_items(), use_bin_type=True)).digest()[:16]

    @classmethod
    def record(cls, fetched: Sequence[tuple[Addr, MaterialSpec]], nonce: int) -> "MaterialPlan":
        """The plan of run ``nonce`` from its fetched (addr, spec), checked against the layout."""
        plan = cls([relative_spec(spec, nonce) for _, spec in fetched])
        for (addr, _), it in zip(fetched, plan.items):
            if addr != (nonce, it.r, it.c):
                raise ValueError("a recorded item lies off its plan's layout")
        return plan

    def own_bytes(self, rank: int) -> int:
        """Keystream bytes party ``rank`` expands per run (party 1: random fields only)."""
        return 16 * (self.r_blocks + (self.c_blocks if rank == 0 else 0))

    def receives(self, rank: int) -> bool:
        """Whether party ``rank`` hears from the dealer in a run of this plan."""
        return self.blob_elements[rank] > 0

    def _wire_items(self) -> list:
        return [it.spec.to_wire() for it in self.items]

    def to_wire(self) -> dict:
        return {"items": self._wire_items(), "digest": self.digest}

    @classmethod
    def from_wire(cls, d, check=None) -> "MaterialPlan":
        """A plan from its msgpack form; ``check(spec)`` vets each spec (sizes); ValueError on
        anything malformed, including a digest that does not name the items."""
        if not isinstance(d, dict) or not isinstance(d.get("items"), list):
            raise ValueError("a plan is a mapping with a list of items")
        specs = [spec_from_wire(x) for x in d["items"]]
        if check is not None:
            for spec in specs:
                check(spec)
        plan = cls(specs)
        if d.get("digest") != plan.digest:
            raise ValueError("the plan's digest does not match its items")
        return plan

    def __repr__(self) -> str:
        return (f"MaterialPlan({len(self.items)} items, {self.own_bytes(0)} B keystream, "
                f"blobs {self.blob_elements}, {self.digest.hex()[:8]})")
