"""The one expander of seed-compressed material, shared by both parties and the dealer.

Party ``p``'s share of an item comes from its material stream (``material_stream(key_p)``),
at the item's ``Addr`` (``plan.py``): its random fields from the run's random region, and
(party 0 only) its shares of the corrected fields from the corrected region.  The dealer,
holding both keys, re-expands both streams, reconstructs the secrets and computes what each
party receives: party 1's corrections and the fields dealt to either party.  Because the
dealer can regenerate any item from (keys, addr, spec), and any replayed run from (keys,
nonce, plan), it keeps no state that a crash could lose.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict

import numpy as np

from ..prg import SEED_BYTES, CounterStream, derive_seed
from .plan import C_REGION, R_REGION, MaterialPlan, region_counter
from .specs import RELATIVE, RING, Addr, Field, ItemRef, MaterialSpec, received_fields

__all__ = ["material_stream", "expand_own", "DealerCore", "combine_field"]


def material_stream(key: bytes) -> CounterStream:
    """A party's material stream: AES-CTR under a key derived from its job-instance key
    (domain-separated, so no other use of the key can meet these blocks)."""
    return CounterStream(derive_seed(key, "ss-engine material stream v2"))


def _expand(stream: CounterStream, counter: int, fields: tuple[Field, ...], out: dict) -> None:
    sizes = [math.prod(f.shape) for f in fields]
    if not sum(sizes):
        for f in fields:
            out[f.name] = np.zeros(f.shape, np.int64 if f.kind == RING else np.uint64)
        return
    raw = stream.keystream(counter, 8 * sum(sizes)).view(np.int64)
    pos = 0
    for f, n in zip(fields, sizes):
        a = raw[pos:pos + n].reshape(f.shape)
        out[f.name] = a if f.kind == RING else a.view(np.uint64)
        pos += n


def expand_own(stream: CounterStream, rank: int, addr: Addr, spec: MaterialSpec) -> dict[str, np.ndarray]:
    """Everything party ``rank`` derives from its own stream for the item at ``addr``."""
    out: dict[str, np.ndarray] = {}
    _expand(stream, region_counter(addr.nonce, R_REGION, addr.r), spec.random_fields(), out)
    if rank == 0:
        _expand(stream, region_counter(addr.nonce, C_REGION, addr.c), spec.corrected_fields(), out)
    return out


def combine_field(kind: str, a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.add(a, b, out=out) if kind == RING else np.bitwise_xor(a, b, out=out)


def _split_off(kind: str, secret: np.ndarray, share0: np.ndarray,
               out: np.ndarray | None = None) -> np.ndarray:
    return np.subtract(secret, share0, out=out) if kind == RING else np.bitwise_xor(secret, share0, out=out)


class _StepScratch:
    """The dealer's reused buffers for one plan: both parties' expanded regions (party 1's
    random fields become the secrets in place) and each item's views of them."""

    def __init__(self, plan: MaterialPlan):
        self.r_bytes = 16 * plan.r_blocks
        self.buf0 = np.empty(plan.own_bytes(0) + 16, np.uint8)
        self.buf1 = np.empty(plan.own_bytes(1) + 16, np.uint8)
        self.own0 = [it.own_views(0, self.buf0, self.r_bytes) for it in plan.items]
        self.secret = []
        for it in plan.items:
            views = {}
            for name, kind, shape, off in it.random:
                n = math.prod(shape)
                v = self.buf1[off:off + 8 * n].view(np.int64 if kind == RING else np.uint64)
                views[name] = v.reshape(shape)
            self.secret.append(views)


class DealerCore:
    """Pure generator of all correlated randomness from the two parties' keys."""

    def __init__(self, key0: bytes, key1: bytes, cache_items: int = 512):
        if len(key0) != SEED_BYTES or len(key1) != SEED_BYTES:
            raise ValueError("dealer keys must be 16 bytes each")
        self._streams = (material_stream(key0), material_stream(key1))
        self._cache: OrderedDict[Addr, tuple[MaterialSpec, tuple]] = OrderedDict()
        self._cache_items = cache_items
        self._lock = threading.Lock()
        self._scratch: OrderedDict[bytes, _StepScratch] = OrderedDict()

    # -- one item at a time -----------------------------------------------------------------
    def secrets(self, addr: Addr, spec: MaterialSpec) -> tuple[dict, dict]:
        """(secret values of every field, party 0's expanded shares) of one item."""
        with self._lock:
            hit = self._cache.get(addr)
            if hit is not None and hit[0] == spec:
                self._cache.move_to_end(addr)
                return hit[1]
        own0 = expand_own(self._streams[0], 0, addr, spec)
        own1 = expand_own(self._streams[1], 1, addr, spec)
        # party 1's expansion is the dealer's own scratch: the secrets are summed into it
        values = {f.name: combine_field(f.kind, own0[f.name], own1[f.name], out=own1[f.name])
                  for f in spec.random_fields()}
        values.update(spec.compute(values, self.resolve))
        result = (values, own0)
        if spec.random_fields():   # only items with random fields are ever referenced
            with self._lock:
                self._cache[addr] = (spec, result)
                while len(self._cache) > self._cache_items:
                    self._cache.popitem(last=False)
        return result

    def resolve(self, ref: ItemRef) -> np.ndarray:
        if ref.addr.nonce == RELATIVE:
            raise ValueError("a relative item reference outside its plan")
        return self.secrets(ref.addr, ref.spec)[0][ref.field]

    def item(self, rank: int, addr: Addr, spec: MaterialSpec) -> dict[str, np.ndarray]:
        """What party ``rank`` receives for the item at ``addr`` (``received_fields``)."""
        fields = received_fields(spec, rank)
        if not fields:
            return {}
        values, own0 = self.secrets(addr, spec)
        corrected = {f.name for f in spec.corrected_fields()} if rank == 1 else set()
        return {f.name: _split_off(f.kind, values[f.name], own0[f.name]) if f.name in corrected
                else values[f.name].copy() for f in fields}

    def corrections(self, addr: Addr, spec: MaterialSpec) -> dict[str, np.ndarray]:
        """Party 1's corrections for one item (``item(1, ...)``)."""
        return self.item(1, addr, spec)

    # -- a replayed run at once -------------------------------------------------------------
    def _scratch_for(self, plan: MaterialPlan) -> _StepScratch:
        sc = self._scratch.get(plan.digest)
        if sc is None:
            sc = self._scratch[plan.digest] = _StepScratch(plan)
            while len(self._scratch) > 8:
                self._scratch.popitem(last=False)
        else:
            self._scratch.move_to_end(plan.digest)
        return sc

    def step(self, nonce: int, plan: MaterialPlan, out: dict[int, np.ndarray] | None = None
             ) -> dict[int, np.ndarray]:
        """Every party's blob for run ``nonce`` of ``plan`` ({rank: int64 array}, only for the
        parties that receive something), written into ``out``'s arrays if given.  One
        keystream fill per region and party; not thread-safe across calls of one plan."""
        sc = self._scratch_for(plan)
        s0, s1 = self._streams
        rb = sc.r_bytes
        s0.fill(region_counter(nonce, R_REGION, 0), sc.buf0, 0, rb)
        s0.fill(region_counter(nonce, C_REGION, 0), sc.buf0, rb, plan.own_bytes(0))
        s1.fill(region_counter(nonce, R_REGION, 0), sc.buf1, 0, rb)
        blobs = {}
        for rank in (0, 1):
            n = plan.blob_elements[rank]
            if n:
                given = (out or {}).get(rank)
                blobs[rank] = given if given is not None and given.size == n else np.empty(n, np.int64)
        kept: dict[int, dict] = {}

        def resolve(ref: ItemRef) -> np.ndarray:
            if ref.addr.nonce == RELATIVE:
                return kept[plan.index_of[(ref.addr.r, ref.addr.c)]][ref.field]
            return self.resolve(ref)

        for i, it in enumerate(plan.items):
            own0 = sc.own0[i]
            values = sc.secret[i]
            for name, kind, _, _ in it.random:
                combine_field(kind, own0[name], values[name], out=values[name])
            computed = it.spec.compute(values, resolve) if it.received[0] or it.received[1] \
                or i in plan.referenced else {}
            for rank, blob in blobs.items():
                for name, kind, shape, off, is_correction in it.received[rank]:
                    dst = blob[off:off + math.prod(shape)].reshape(shape)
                    if kind != RING:
                        dst = dst.view(np.uint64)
                    if is_correction:
                        _split_off(kind, computed[name], own0[name], out=dst)
                    else:
                        np.copyto(dst, computed[name])
            if i in plan.referenced:
                kept[i] = {**values, **computed}
        return blobs
