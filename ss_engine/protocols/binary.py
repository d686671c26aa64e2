"""AND gates on XOR-shared, bit-packed uint64 words with binary Beaver triples.

x & y for x = d ^ a, y = e ^ b:  z_p = c_p ^ (d & b_p) ^ (e & a_p) ^ [p=0](d & e).
``and_fanout_ss`` ANDs one left operand with several right operands under one left mask
(dealer triples c_i = a & b_i), so the left operand is opened once.

Rounds: 1.  Bytes per party: 8 * words * (1 + fan_out).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..party import PartyContext
from .rounds import open_xor

__all__ = ["and_fanout_ss", "and_ss", "open_words"]


def open_words(ctx: PartyContext, words: Sequence[np.ndarray], label: str):
    """Open XOR-shared words in one message (a coroutine).  Rounds: 1."""
    return (yield from open_xor(ctx, words, label))


def and_fanout_ss(ctx: PartyContext, left: np.ndarray, rights: Sequence[np.ndarray],
                  label: str = "and"):
    left = np.ascontiguousarray(left, dtype=np.uint64)
    rights = [np.ascontiguousarray(r, dtype=np.uint64) for r in rights]
    if any(r.shape != left.shape for r in rights):
        raise ValueError("AND operands must have the same shape")
    t = ctx.source.and_triple(left.shape, fan_out=len(rights))
    a = t["a"]
    opened = yield from open_xor(ctx, [left ^ a] + [r ^ t[f"b{i}"] for i, r in enumerate(rights)], label)
    d, es = opened[0], opened[1:]
    out = []
    for i, e in enumerate(es):
        z = t[f"c{i}"] ^ (d & t[f"b{i}"]) ^ (e & a)
        if ctx.rank == 0:
            z ^= d & e
        out.append(z)
    return out


def and_ss(ctx: PartyContext, x: np.ndarray, y: np.ndarray, label: str = "and"):
    return (yield from and_fanout_ss(ctx, x, [y], label))[0]
