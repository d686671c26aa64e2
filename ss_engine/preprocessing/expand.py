"""The one expander of seed-compressed material, shared by both parties and the dealer.

Item ``seq`` of party ``p`` is expanded from AES-CTR stream ``seq`` under ``key_p``
(``CounterStream``): random fields first, in declared order, then (party 0 only) the
corrected fields.  The
dealer, holding both keys, re-expands both streams, reconstructs the secrets and computes
party 1's corrections.  Because the dealer can regenerate any item from (keys, seq, spec) it
keeps no state that a crash could lose.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict

import numpy as np

from ..prg import SEED_BYTES, CounterStream
from .specs import RING, Field, ItemRef, MaterialSpec

__all__ = ["expand_own", "DealerCore", "combine_field"]


def expand_own(stream: CounterStream, rank: int, seq: int, spec: MaterialSpec) -> dict[str, np.ndarray]:
    """Everything party ``rank`` derives from its own seed for item ``seq``."""
    fields: tuple[Field, ...] = spec.random_fields()
    if rank == 0:
        fields = fields + spec.corrected_fields()
    sizes = [math.prod(f.shape) for f in fields]
    raw = stream.keystream(int(seq), 8 * sum(sizes)).view(np.int64)
    out, pos = {}, 0
    for f, n in zip(fields, sizes):
        a = raw[pos:pos + n].reshape(f.shape)
        out[f.name] = a if f.kind == RING else a.view(np.uint64)
        pos += n
    return out


def combine_field(kind: str, a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.add(a, b, out=out) if kind == RING else np.bitwise_xor(a, b, out=out)


def _split_off(kind: str, secret: np.ndarray, share0: np.ndarray,
               out: np.ndarray | None = None) -> np.ndarray:
    return np.subtract(secret, share0, out=out) if kind == RING else np.bitwise_xor(secret, share0, out=out)


class DealerCore:
    """Pure generator of all correlated randomness from the two parties' seeds."""

    #: only these kinds are ever operands of a later product (mask reuse, fused truncation)
    REFERENCED_KINDS = frozenset({"mask", "bit", "trunc"})

    def __init__(self, key0: bytes, key1: bytes, cache_items: int = 512):
        if len(key0) != SEED_BYTES or len(key1) != SEED_BYTES:
            raise ValueError("dealer keys must be 16 bytes each")
        self._streams = (CounterStream(key0), CounterStream(key1))
        self._cache: OrderedDict[int, tuple[MaterialSpec, dict]] = OrderedDict()
        self._cache_items = cache_items
        self._lock = threading.Lock()

    def secrets(self, seq: int, spec: MaterialSpec) -> tuple[dict, dict]:
        """(secret values of every field, party 0's expanded shares)."""
        with self._lock:
            hit = self._cache.get(seq)
            if hit is not None and hit[0] == spec:
                self._cache.move_to_end(seq)
                return hit[1]
        own0 = expand_own(self._streams[0], 0, seq, spec)
        own1 = expand_own(self._streams[1], 1, seq, spec)
        # party 1's expansion is the dealer's own scratch: the secrets are summed into it
        values = {f.name: combine_field(f.kind, own0[f.name], own1[f.name], out=own1[f.name])
                  for f in spec.random_fields()}
        values.update(spec.compute(values, self.resolve))
        result = (values, own0)
        if spec.kind not in self.REFERENCED_KINDS:
            return result
        with self._lock:
            self._cache[seq] = (spec, result)
            while len(self._cache) > self._cache_items:
                self._cache.popitem(last=False)
        return result

    def resolve(self, ref: ItemRef) -> np.ndarray:
        return self.secrets(ref.seq, ref.spec)[0][ref.field]

    def corrections(self, seq: int, spec: MaterialSpec) -> dict[str, np.ndarray]:
        """What party 1 receives for item ``seq``: its shares of the corrected fields."""
        fields = spec.corrected_fields()
        if not fields:
            return {}
        values, own0 = self.secrets(seq, spec)
        # secrets of items nobody references again (not cached) are overwritten in place
        scratch = spec.kind not in self.REFERENCED_KINDS
        return {f.name: _split_off(f.kind, values[f.name], own0[f.name],
                                   out=values[f.name] if scratch else None) for f in fields}
