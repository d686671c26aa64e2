"""The comparison's GF(2) circuits as tables: what the dealer makes, what the parties evaluate.

Two circuits on XOR-shared, bit-sliced words (one bit per element, 64 elements per word):
[c < r] for a public c and the dealer's mask r (``comparator``), and the AND of t secret bits
(``and_tree``).  Both are evaluated level by level, and every level is the same operation:

    out_o = XOR over the entries (T, s, o) of a group  of  P[T] & share_s

where P[T] is the AND of the public words of the group's variables in T (``group_rows``
maps a group's variable to its public row and to its mask row) and share_s is this
party's share of a product of secret bits: the constant 1 (party 0 only), a row of the
level's input, one mask bit, or the dealer's product of several (``SRC_*``).  ``pairs`` is
the dealer's recipe for those products, an AND DAG over the mask rows.

Comparator, m-bit values, b-bit blocks, fan-in at most g:
  level 0 (local): block [i0, i0 + b) of the m - 1 low bits, C_i = NOT c_i public:
      lt_i = C_i r_i,  eq_i = C_i ^ r_i,  LT = XOR_i lt_i prod_{j>i} eq_j,  EQ = prod_i eq_i
  (the XOR is exact: at most one term is 1, the highest differing bit).  Both are
  polynomials in the block's r bits with public coefficients, so with the dealer's XOR
  shares of prod_{i in S} r_i for every S of two or more bits (2^b - b - 1 per block;
  b = 2 is the classic pair trick) the level costs no round.
  rounds 1..L, groups of n <= g nodes, j = 0 the least significant:
      LT = XOR_j LT_j prod_{k>j} EQ_k,  EQ = prod_j EQ_j.
  Each variable v is opened masked, d_v = v ^ a_v, and every monomial expands as
      prod_{v in V} (d_v ^ a_v) = XOR_{S subset of V} (prod_{v in V \\ S} d_v) [prod_{v in S} a_v]
  with public d-products and the dealer's shares of the a-products: a multi-input AND in
  one round whatever its fan-in (as ABY2.0's gates, Patra et al., USENIX Security 2021).
  LT_{n-1} enters linearly and is not opened; a node's EQ is computed (and a group's EQ_0
  opened) only where its parent uses it.
AND tree: groups of at most g inputs, one term (all inputs) per group, ceil(log_g t) rounds.

Level sizes: the fewest rounds the fan-in cap allows, then the smallest fan-in that
reaches them, groups balanced (``fan_in_plan``).  Exactness needs nothing but the algebra
above: every level computes its boolean function exactly for every input.

The tables are pure functions of a few small integers, built once per process
(``functools.lru_cache``: immutable results, no behaviour depends on the cache).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["Level", "Circuit", "comparator", "and_tree", "fan_in_plan", "SRC_CONST", "SRC_INPUT",
           "SRC_MASK", "SRC_PRODUCT", "MAX_BLOCK_BITS", "MAX_FAN_IN"]

SRC_CONST, SRC_INPUT, SRC_MASK, SRC_PRODUCT = 0, 1, 2, 3
#: bounds a spec from the wire must respect (a block or group of n variables has 2^n terms)
MAX_BLOCK_BITS, MAX_FAN_IN = 8, 12


@dataclass(frozen=True, eq=False)
class Level:
    """One level's tables (see module doc).  Rounds open ``open_rows`` of the previous
    level's output, each masked by the mask row of the same index; level 0 of the
    comparator opens nothing (its public rows are NOT c, its masks the bits of r)."""

    group_rows: np.ndarray    # (G, max n) int64: variable -> public row and mask row
    group_sizes: np.ndarray   # (G,) int64
    group_start: np.ndarray   # (G + 1,) int64: the group's entries are [start, next start)
    entries: np.ndarray       # (E, 4) int64: public mask T, source, row, output row
    pairs: np.ndarray         # (P, 2) int64: product k = node[left] & node[right], where
    n_base: int               # node i < n_base is mask row i, node n_base + j product j
    open_rows: np.ndarray     # (n_vars,) int64: rows of the previous output to open
    n_out: int
    #: the fewest rows each array must have: public, input, mask, product (the kernel
    #: indexes them by the tables without bounds checks)
    min_rows: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def n_products(self) -> int:
        return int(self.pairs.shape[0])

    @property
    def n_vars(self) -> int:
        return int(self.open_rows.shape[0])


@dataclass(frozen=True, eq=False)
class Circuit:
    """``local``: the comparator's level 0 (None for an AND tree); ``rounds``: one level per
    communication round.  The result is row 0 of the last level's output."""

    local: Level | None
    rounds: tuple[Level, ...]


def fan_in_plan(count: int, cap: int) -> list[list[int]]:
    """Group sizes per round that reduce ``count`` nodes to one: the fewest rounds with
    groups of at most ``cap``, then the smallest fan-in that needs no more, groups balanced
    (larger first).  E.g. 16 nodes, cap 4: [[4, 4, 4, 4], [4]]; 10, cap 4: [[4, 3, 3], [3]]."""
    if count <= 1:
        return []
    rounds = 1
    while cap ** rounds < count:
        rounds += 1
    fan = 2
    while fan ** rounds < count:
        fan += 1
    plan = []
    while count > 1:
        parts = -(-count // fan)
        q, rem = divmod(count, parts)
        plan.append([q + 1] * rem + [q] * (parts - rem))
        count = parts
    return plan


def _submasks(mask: int):
    s = mask
    while True:
        yield s
        if s == 0:
            return
        s = (s - 1) & mask


class _LevelBuilder:
    """Collects one level; ``n_base`` (mask rows) is the given count for level 0, else the
    number of opened variables, known only at ``build``."""

    def __init__(self, n_base: int | None = None):
        self.n_base = n_base
        self.rows: list[list[int]] = []
        self.entries: list[list[tuple]] = []
        self.pairs: list[tuple[int, int]] = []
        self.product_of: dict[tuple, int] = {}
        self.open_rows: list[int] = []
        self.n_out = 0

    def output(self) -> int:
        self.n_out += 1
        return self.n_out - 1

    def group(self, rows: list[int]) -> int:
        self.rows.append(list(rows))
        self.entries.append([])
        return len(self.rows) - 1

    def variable(self, prev_row: int) -> int:
        """A new opened variable (rounds): its mask and public row index."""
        self.open_rows.append(prev_row)
        return len(self.open_rows) - 1

    def _product(self, rows: tuple) -> int:
        got = self.product_of.get(rows)
        if got is None:
            # a product as left operand is kept as -(1 + index) until n_base is known
            left = rows[0] if len(rows) == 2 else -1 - self._product(rows[:-1])
            self.pairs.append((left, rows[-1]))
            got = self.product_of[rows] = len(self.pairs) - 1
        return got

    def linear(self, g: int, src_row: int, out: int) -> None:
        self.entries[g].append((0, SRC_INPUT, src_row, out))

    def monomial(self, g: int, out: int, free: int, forced: int = 0, public: int = 0) -> None:
        """XOR into ``out``: prod_{v in public} pub_v * prod_{v in forced} a_v *
        prod_{v in free} (pub_v ^ a_v), masks over the group's local variables."""
        rows = self.rows[g]
        for t in _submasks(free):
            s = forced | t
            bits = [i for i in range(len(rows)) if s >> i & 1]
            if not bits:
                src, row = SRC_CONST, 0
            elif len(bits) == 1:
                src, row = SRC_MASK, rows[bits[0]]
            else:
                src, row = SRC_PRODUCT, self._product(tuple(sorted(rows[i] for i in bits)))
            self.entries[g].append((public | (free & ~t), src, row, out))

    def build(self) -> Level:
        n_base = len(self.open_rows) if self.n_base is None else self.n_base
        pairs = [(n_base - 1 - left if left < 0 else left, right) for left, right in self.pairs]
        width = max([len(r) for r in self.rows] + [1])
        group_rows = np.full((len(self.rows), width), -1, dtype=np.int64)
        for g, r in enumerate(self.rows):
            group_rows[g, :len(r)] = r
        flat = [e for es in self.entries for e in es]
        start = np.cumsum([0] + [len(es) for es in self.entries]).astype(np.int64)
        tables = (group_rows, np.array([len(r) for r in self.rows], dtype=np.int64), start,
                  np.array(flat, dtype=np.int64).reshape(-1, 4),
                  np.array(pairs, dtype=np.int64).reshape(-1, 2))
        for a in tables:
            a.setflags(write=False)
        opened = np.array(self.open_rows, dtype=np.int64)
        opened.setflags(write=False)
        entries = tables[3]
        need = [int(group_rows.max()) + 1 if group_rows.size else 0]
        for src in (SRC_INPUT, SRC_MASK, SRC_PRODUCT):
            rows = entries[entries[:, 1] == src, 2]
            need.append(int(rows.max()) + 1 if rows.size else 0)
        return Level(*tables, n_base=n_base, open_rows=opened, n_out=self.n_out,
                     min_rows=tuple(need))


@dataclass
class _Node:
    lt: int = -1      # output row of LT in its level
    eq: int = -1      # output row of EQ (-1: not computed, no parent uses it)
    need_eq: bool = False


def _need_eq(plan: list[list[int]], leaves: int) -> list[list[bool]]:
    """need_eq of every node, per level (level 0 = the leaves): a node's EQ is used by its
    parent's LT unless it is the parent's lowest input, and by the parent's EQ if that is."""
    sizes = [leaves] + [len(p) for p in plan]
    need = [[False] * s for s in sizes]
    for lv in range(len(plan), 0, -1):
        child = 0
        for g, n in enumerate(plan[lv - 1]):
            for j in range(n):
                need[lv - 1][child] = need[lv][g] or j >= 1
                child += 1
    return need


@lru_cache(maxsize=64)
def comparator(bits: int, block: int, fan_in: int) -> Circuit:
    """[c_low < r_low] over the ``bits`` - 1 low bits, in blocks of ``block`` bits and
    groups of at most ``fan_in`` (see module doc)."""
    low = int(bits) - 1
    if low < 1 or not 1 <= block <= MAX_BLOCK_BITS or not 2 <= fan_in <= MAX_FAN_IN:
        raise ValueError(f"comparator needs bits >= 2, block in [1, {MAX_BLOCK_BITS}], fan-in in "
                         f"[2, {MAX_FAN_IN}]; got {bits}, {block}, {fan_in}")
    starts = list(range(0, low, block))
    plan = fan_in_plan(len(starts), fan_in)
    need = _need_eq(plan, len(starts))
    b0 = _LevelBuilder(n_base=int(bits))
    nodes = []
    for k, i0 in enumerate(starts):
        width = min(block, low - i0)
        g = b0.group(list(range(i0, i0 + width)))
        node = _Node(lt=b0.output(), need_eq=need[0][k])
        for i in range(width):   # lt_i prod_{j>i} eq_j = C_i r_i prod_{j>i} (C_j ^ r_j)
            above = ((1 << width) - 1) & ~((2 << i) - 1)
            b0.monomial(g, node.lt, free=above, forced=1 << i, public=1 << i)
        if node.need_eq:         # prod_i (C_i ^ r_i)
            node.eq = b0.output()
            b0.monomial(g, node.eq, free=(1 << width) - 1)
        nodes.append(node)
    levels = []
    for lv, groups in enumerate(plan, start=1):
        bl = _LevelBuilder()
        parents, child = [], 0
        for gi, n in enumerate(groups):
            kids = nodes[child:child + n]
            child += n
            parent = _Node(need_eq=need[lv][gi])
            parent.lt = bl.output()
            if parent.need_eq:
                parent.eq = bl.output()
            if n == 1:
                g = bl.group([])
                bl.linear(g, kids[0].lt, parent.lt)
                if parent.need_eq:
                    bl.linear(g, kids[0].eq, parent.eq)
                parents.append(parent)
                continue
            # local variables: lt_0..lt_{n-2}, then eq_j for the j whose EQ is used
            eq_js = range(0 if parent.need_eq else 1, n)
            g = bl.group([bl.variable(kids[j].lt) for j in range(n - 1)]
                         + [bl.variable(kids[j].eq) for j in eq_js])
            eq_bit = {j: 1 << (n - 1 + t) for t, j in enumerate(eq_js)}
            for j in range(n - 1):   # LT_j prod_{k>j} EQ_k
                bl.monomial(g, parent.lt, free=(1 << j) | sum(eq_bit[k] for k in range(j + 1, n)))
            bl.linear(g, kids[n - 1].lt, parent.lt)
            if parent.need_eq:
                bl.monomial(g, parent.eq, free=sum(eq_bit.values()))
            parents.append(parent)
        levels.append(bl)
        nodes = parents
    return Circuit(local=b0.build(), rounds=tuple(bl.build() for bl in levels))


@lru_cache(maxsize=64)
def and_tree(inputs: int, fan_in: int) -> Circuit:
    """The AND of ``inputs`` XOR-shared rows in rounds of groups of at most ``fan_in``."""
    if inputs < 1 or not 2 <= fan_in <= MAX_FAN_IN:
        raise ValueError(f"an AND tree needs >= 1 input and fan-in in [2, {MAX_FAN_IN}]; got "
                         f"{inputs}, {fan_in}")
    rows = list(range(inputs))
    levels = []
    for groups in fan_in_plan(inputs, fan_in):
        bl = _LevelBuilder()
        out_rows, child = [], 0
        for n in groups:
            kids = rows[child:child + n]
            child += n
            out = bl.output()
            if n == 1:
                bl.linear(bl.group([]), kids[0], out)
            else:
                g = bl.group([bl.variable(k) for k in kids])
                bl.monomial(g, out, free=(1 << n) - 1)
            out_rows.append(out)
        levels.append(bl)
        rows = out_rows
    return Circuit(local=None, rounds=tuple(bl.build() for bl in levels))
