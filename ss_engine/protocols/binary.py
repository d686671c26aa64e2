"""Boolean circuits on XOR-shared, bit-packed uint64 words.

``circuit_rounds`` drives the rounds of a GF(2) circuit (``preprocessing.circuits``): each
round opens its variables masked by the dealer's bits, d_v = v ^ a_v, and evaluates every
gate locally from the public d's and the dealer's shares of the products of the a's
(``kernels.xor_terms``), a multi-input AND costing one round whatever its fan-in.
  Rounds: one per level.  Bytes per party: 8 per opened row and word (``Level.n_vars``).
``and_tree_ss``: the AND of t rows in ceil(log_g t) rounds, g = ``ProtocolConfig.and_fan_in``;
  one round opens every input of its gates once (t words per word of output for one round).
  Dealer: 2^n - n - 1 product rows per gate of n inputs.
``and_ss``: x & y, the two-input gate (a binary Beaver triple: one product row).
  Rounds: 1.  Bytes per party: 16 per word.

Reference: the multi-input AND gates of Patra, Schneider, Suresh, Yalame, "ABY2.0: improved
mixed-protocol secure two-party computation" (USENIX Security 2021), whose preprocessing
shares the products of the inputs' masks; here on Beaver-style openings.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import kernels
from ..party import PartyContext
from ..preprocessing.circuits import Circuit, Level
from ..preprocessing.source import Material
from ..preprocessing.specs import AndTreeSpec
from .rounds import open_xor

__all__ = ["and_ss", "and_tree_ss", "circuit_rounds", "eval_level", "open_words"]


def open_words(ctx: PartyContext, words: Sequence[np.ndarray], label: str):
    """Open XOR-shared words in one message (a coroutine).  Rounds: 1."""
    return (yield from open_xor(ctx, words, label))


def eval_level(ctx: PartyContext, level: Level, public: np.ndarray, inputs: np.ndarray | None,
               masks: np.ndarray, products: np.ndarray) -> np.ndarray:
    """This party's shares of one level's outputs, (level.n_out, words); no round."""
    have = [0 if a is None else a.shape[0] for a in (public, inputs, masks, products)]
    if any(h < n for h, n in zip(have, level.min_rows)):
        raise ValueError(f"circuit level needs at least {level.min_rows} rows, got {tuple(have)}")
    return kernels.xor_terms(public, inputs, masks, products, level.group_rows, level.group_sizes,
                             level.group_start, level.entries, level.n_out, ctx.rank == 0)


def circuit_rounds(ctx: PartyContext, circuit: Circuit, x: np.ndarray, mat: Material, label: str):
    """Run ``circuit``'s rounds on the XOR-shared rows x (rows, words) with its material
    (fields a1, p1, a2, p2, ...); returns the last level's output rows."""
    for i, lv in enumerate(circuit.rounds, 1):
        a = mat[f"a{i}"]
        (d,) = yield from open_xor(ctx, [x[lv.open_rows] ^ a], label)
        x = eval_level(ctx, lv, d, x, a, mat[f"p{i}"])
    return x


def and_tree_ss(ctx: PartyContext, rows: np.ndarray, label: str = "and", fan_in: int | None = None):
    """AND over axis 0 of XOR-shared words (t, ...) -> (...) (see module doc)."""
    rows = np.ascontiguousarray(rows, dtype=np.uint64)
    t, trail = rows.shape[0], rows.shape[1:]
    if t == 1:
        return rows[0].copy()
    flat = rows.reshape(t, -1)
    spec = AndTreeSpec(flat.shape[1], t, int(fan_in or ctx.config.protocol.and_fan_in))
    out = yield from circuit_rounds(ctx, spec.circuit(), flat, ctx.source.fetch(spec), label)
    return out[0].reshape(trail)


def and_ss(ctx: PartyContext, x: np.ndarray, y: np.ndarray, label: str = "and"):
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        raise ValueError("AND operands must have the same shape")
    return (yield from and_tree_ss(ctx, np.stack([x, y]), label))
