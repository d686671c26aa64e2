"""Secure comparison: MSB / DReLU / ReLU / max / argmax with dealer material.

``msb_xor_s`` (most significant bit in Z_2^m, m = ``ProtocolConfig.cmp_bits``):
  1. Dealer (``CmpSpec``): mask r (seed-expanded); the m bits of r mod 2^m, bit-sliced and
     XOR-shared; the ANDs of every two or more bits of each b-bit block of the m - 1 low
     bits (b = ``cmp_block_bits``); the masks and mask products of the tree's gates.
  2. Open c = x + r mod 2^m (1 round, 8 bytes per element per party).
  3. x = c - r, so msb(x) = c_{m-1} ^ r_{m-1} ^ [c_low < r_low] over the m - 1 low bits, a
     GF(2) circuit (``preprocessing.circuits``): a block's (LT, EQ) is a polynomial in its
     r bits with public coefficients (from NOT c), so the first level is local; then
     ceil(log_g ceil((m-1)/b)) rounds of multi-input gates (g = ``cmp_fan_in``), each
     opening its inputs masked by fresh dealer bits, d = v ^ a, and evaluating
     LT = XOR_j LT_j prod_{k>j} EQ_k (and EQ = prod_j EQ_j where a parent uses it) from the
     public d's and the dealer's shares of the mask products (``binary.circuit_rounds``).
     m = 64, b = g = 4: 16 blocks, then 2 rounds opening 27 and 6 bits per element.
  Exact for every x with |x| < 2^(m-1), i.e. every ring element for m = 64: each level
  computes its boolean function exactly whatever its inputs (no probabilistic step).
``b2a_s``: dealer bit rho shared both ways; open e = b ^ rho (1 round, 1 bit per element);
[b] = e + (1 - 2e)[rho].  ``bit_mul`` multiplies it by a linear form y (the masked opening
of step 2, a truncation result) with the dealer's products [u rho] of y's items, in one
pass (``kernels.bit_select``): the select is fused into the B2A, no further round.
DReLU / ReLU: 1 + 2 + 1 = 4 rounds for m = 64 (7 with b = g = 2, the classic pair tree).
Bytes per element per party: 8 (c) + 8 per fused multiplicand + 33 bits (tree) + 1 bit,
about 8 + 8 + 4.1 + 0.1 (the pair tree: 92 bits, 11.5 bytes).  Dealer bytes per element,
to party 1 only: 64 + 169 + 81 + 15 = 329 bits of tree material (41 bytes; pair tree: 156,
19.5) + 8 (rho) + 8 per select (A rho).
A party sees c (uniform: so is r), the d's (uniform: fresh a's) and e (uniform: rho is).
References: Catrina & de Hoogh (2010) comparison with a masked opening; ABY (Demmler et
al. 2015) bit injection; ABY2.0 (Patra et al. 2021) multi-input AND gates in one round.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import kernels
from ..party import PartyContext
from ..preprocessing.source import Material
from ..preprocessing.specs import CmpSpec
from .beaver import MaskedOperand, mask_and_open, mul_masked
from .binary import and_tree_ss, circuit_rounds, eval_level, open_words
from .forms import FormTerm, LinearForm
from .rounds import open_ring

__all__ = ["cmp_prepare", "cmp_finish", "msb_xor_s", "b2a_s", "bit_mul", "b2a_select_s", "flip_xor",
           "drelu_s", "drelu_form_s", "relu_s", "relu_form_s", "lt_ss", "lt_form_s", "max_s",
           "argmax_s", "pack_bits", "unpack_bits"]

_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """(..., n) 0/1 -> (..., ceil(n/64)) uint64, LSB-first (the bit-slice layout)."""
    return kernels.pack_bits(np.ascontiguousarray(bits))


def unpack_bits(words: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`, as int64 0/1 (ready for arithmetic)."""
    return kernels.unpack_bits(np.ascontiguousarray(words, dtype=np.uint64), n, dtype=np.int64)


def flip_xor(ctx: PartyContext, words: np.ndarray) -> np.ndarray:
    """NOT of a XOR-shared value: party 0 flips its share."""
    return words ^ _ONES if ctx.rank == 0 else words


def cmp_prepare(ctx: PartyContext, x: np.ndarray, bits: int | None = None
                ) -> tuple[Material, np.ndarray, int]:
    """Fetch comparison material for x; return it with this party's share of x + r."""
    pc = ctx.config.protocol
    m = pc.cmp_bits if bits is None else int(bits)
    flat = np.ascontiguousarray(x, dtype=np.int64).ravel()
    mat = ctx.source.fetch(CmpSpec(flat.size, m, pc.cmp_block_bits, pc.cmp_fan_in))
    return mat, flat + mat["r"], m


def cmp_finish(ctx: PartyContext, mat: Material, c: np.ndarray, m: int):
    """Packed XOR shares of msb(x) from the opened c = x + r (the comparator tree)."""
    if m < 64:
        c = c & np.int64((1 << m) - 1)
    c_bits = kernels.bit_slices(c, m)
    r_bits = mat["r_bits"]
    circuit = mat.spec.circuit()
    # level 0 is local: the public words are NOT c, the masks r's bits and their products
    tree = eval_level(ctx, circuit.local, ~c_bits[: m - 1], None, r_bits, mat["r_mono"])
    borrow = (yield from circuit_rounds(ctx, circuit, tree, mat, "cmp_tree"))[0]
    msb = borrow ^ r_bits[m - 1]
    return msb ^ c_bits[m - 1] if ctx.rank == 0 else msb


def msb_xor_s(ctx: PartyContext, x: np.ndarray, extra: Sequence[np.ndarray] = (),
              bits: int | None = None):
    """Packed XOR shares of msb(x) in Z_2^bits; ``extra`` secrets are masked and opened in
    the same first message (for a fused select later).  See module docstring for cost."""
    mat, z, m = cmp_prepare(ctx, x, bits)
    extras = [np.ascontiguousarray(e, dtype=np.int64) for e in extra]
    masks = [ctx.source.mask(e.shape) for e in extras]
    opened = yield from open_ring(ctx, [z] + [e - mk["a"] for e, mk in zip(extras, masks)], "cmp_open")
    msb = yield from cmp_finish(ctx, mat, opened[0], m)
    return msb, [MaskedOperand(e, o, mk) for e, o, mk in zip(extras, opened[1:], masks)]


def b2a_s(ctx: PartyContext, bit_words: np.ndarray, n: int):
    """n XOR-shared bits as arithmetic 0/1 values, held as the linear form e + (1 - 2e)[rho]
    in the dealer's bit rho (public e = b ^ rho), so a product by them costs no opening.
    Rounds: 1.  Bytes per party: 1 bit per element."""
    rho = ctx.source.bits(n)
    (e_words,) = yield from open_words(ctx, [bit_words ^ rho["x"]], "b2a_open")
    e = unpack_bits(e_words, n)
    return LinearForm(e, (FormTerm(1 - 2 * e, rho, "a", is_bit=True),))


def bit_mul(ctx: PartyContext, bit: LinearForm, y: LinearForm) -> np.ndarray:
    """This party's share of y * b for a B2A bit b = e + (1 - 2e)[rho] (``b2a_s``) and a
    linear form y of at most two terms whose leading axis is b's (the bit broadcasts over
    the trailing ones): the dealer's products [u rho] of y's items, then one pass
    (``kernels.bit_select``).  The same shares, from the same items, as ``form_mul(ctx, y,
    bit)``.  Rounds: 0."""
    e, (term,) = bit.public, bit.terms
    rho = term.material
    shape, n = y.public.shape, e.shape[0]
    if shape[:1] != (n,):
        raise ValueError(f"select operand has {shape[:1]} rows, expected {n}")

    def rows(v):
        v = np.asarray(v, dtype=np.int64)
        v = v.reshape(v.shape + (1,) * (len(shape) - v.ndim)) if 0 < v.ndim < len(shape) else v
        return np.ascontiguousarray(np.broadcast_to(v, shape)).reshape(n, -1)

    terms = []
    for t in y.terms:
        prod = ctx.source.product("mul", t.material.ref(t.field), rho.ref("a"), shape)["c"]
        scalar = np.ndim(t.coeff) == 0
        terms.append((int(t.coeff) if scalar else 1, None if scalar else rows(t.coeff),
                      rows(t.value()), rows(prod)))
    out = kernels.bit_select(e, rho["a"], rows(y.public), terms, ctx.rank == 0)
    return out.reshape(shape)


def b2a_select_s(ctx: PartyContext, bit_words: np.ndarray, n: int,
                 selects: Sequence[MaskedOperand] = ()):
    """Arithmetic shares (integer 0/1) of n XOR-shared bits, and b * y for each opened y.

    y has shape (n, ...); the bit broadcasts over y's trailing axes.  Rounds: 1.
    """
    form = yield from b2a_s(ctx, bit_words, n)
    return form.share(ctx.rank), [bit_mul(ctx, form, LinearForm.of_masked(y)) for y in selects]


def drelu_form_s(ctx: PartyContext, x: np.ndarray, bits: int | None = None):
    """[x >= 0] (flattened) as a ``LinearForm`` (see ``b2a_s``).  Rounds: 4 (m = 64)."""
    x = np.asarray(x, dtype=np.int64)
    msb, _ = yield from msb_xor_s(ctx, x, bits=bits)
    return (yield from b2a_s(ctx, flip_xor(ctx, msb), x.size))


def drelu_s(ctx: PartyContext, x: np.ndarray):
    """[x >= 0] as integer 0/1 shares, same shape as x.  Rounds: 4 (m = 64)."""
    x = np.asarray(x, dtype=np.int64)
    return (yield from drelu_form_s(ctx, x)).share(ctx.rank).reshape(x.shape)


def relu_form_s(ctx: PartyContext, x: np.ndarray, x_form: LinearForm | None = None,
                bits: int | None = None):
    """(max(x, 0) share, [x >= 0] as a flat ``LinearForm``).  x is masked and opened in the
    comparison's first message (unless ``x_form``, x as a linear form of the same flat
    shape, is given), so the select costs no round.  Rounds: 4 (m = 64)."""
    x = np.asarray(x, dtype=np.int64)
    msb, opened = yield from msb_xor_s(ctx, x, extra=[] if x_form is not None else [x.ravel()],
                                       bits=bits)
    b = yield from b2a_s(ctx, flip_xor(ctx, msb), x.size)
    xf = x_form if x_form is not None else LinearForm.of_masked(opened[0])
    return bit_mul(ctx, b, xf).reshape(x.shape), b


def relu_s(ctx: PartyContext, x: np.ndarray):
    """(max(x, 0), [x >= 0]); the bit is kept for backward.  Rounds: 4 (m = 64)."""
    y, b = yield from relu_form_s(ctx, x)
    return y, b.share(ctx.rank).reshape(y.shape)


def lt_form_s(ctx: PartyContext, x: np.ndarray, y: np.ndarray, bits: int | None = None):
    """[x < y] (flattened) as a ``LinearForm``; exact while |x - y| < 2^(m-1).  Rounds: 4."""
    d = np.asarray(x, dtype=np.int64) - np.asarray(y, dtype=np.int64)
    msb, _ = yield from msb_xor_s(ctx, d, bits=bits)
    return (yield from b2a_s(ctx, msb, d.size))


def lt_ss(ctx: PartyContext, x: np.ndarray, y: np.ndarray):
    """[x < y] as integer 0/1 shares; exact while |x - y| < 2^(m-1).  Rounds: 4 (m = 64)."""
    d = np.broadcast_shapes(np.shape(x), np.shape(y))
    return (yield from lt_form_s(ctx, x, y)).share(ctx.rank).reshape(d)


_BLOCK = 8
#: from this many elements on, max over short rows runs as a tournament (half the
#: comparisons of all-pairs for a 2x2 pool, more rounds): large inputs are bound by compute
TREE_MIN_ELEMENTS = 1 << 14


def _max_rows(ctx: PartyContext, x: np.ndarray, want_onehot: bool, bits: int | None = None):
    """Max over the last axis of x (R, k) with k <= 16 by all-pairs comparison.

    Winner i beats j > i with x_i >= x_j and j < i with x_i > x_j, so exactly one index
    wins (the first maximal one, like torch.argmax); a candidate's k - 1 wins are ANDed by
    ``and_tree_ss`` (one gate of fan-in k - 1 up to ``and_fan_in``).  Rounds: 1 (open) +
    the comparator's tree (2 for m = 64) + ceil(log_a(k - 1)) (a = ``and_fan_in``) + 1
    (B2A with the select): 5 for k = 10 and for a 2x2 pool.
    """
    rows, k = x.shape
    if k == 1:
        return x[:, 0].copy(), (np.full((rows, 1), 1 if ctx.rank == 0 else 0, np.int64))
    ii, jj = np.triu_indices(k, 1)
    diffs = x[:, ii] - x[:, jj]                       # (R, P): msb = [x_i < x_j]
    msb, (xm,) = yield from msb_xor_s(ctx, diffs, extra=[x.ravel()], bits=bits)
    p = ii.size
    less = unpack_bits(msb[None, :], rows * p)[0].reshape(rows, p)
    geq = less ^ 1 if ctx.rank == 0 else less
    pair_id = -np.ones((k, k), dtype=np.int64)
    pair_id[ii, jj] = np.arange(p)
    pair_id[jj, ii] = np.arange(p)
    terms = np.empty((k, k - 1, rows), dtype=np.int64)
    for i in range(k):
        others = [j for j in range(k) if j != i]
        for t, j in enumerate(others):
            terms[i, t] = geq[:, pair_id[i, j]] if j > i else less[:, pair_id[j, i]]
    words = pack_bits(terms)                           # (k, k-1, W)
    win = unpack_bits((yield from and_tree_ss(ctx, np.swapaxes(words, 0, 1), "max_and")), rows)
    win_words = pack_bits(win.T.reshape(1, -1))[0]
    onehot, (sel,) = yield from b2a_select_s(ctx, win_words, rows * k, [xm])
    mx = sel.reshape(rows, k).sum(axis=1)
    return mx, onehot.reshape(rows, k) if want_onehot else None


def _max_tree(ctx: PartyContext, x: np.ndarray, want_onehot: bool, bits: int | None = None):
    """Max over the last axis of x (R, k) by a tournament: ceil(log2 k) levels, each one
    comparison per pair of candidates (k - 1 comparisons per row in all; all-pairs needs
    k (k - 1) / 2).  The left candidate wins ties, so the winner is the first maximal index.

    Each level: open L - R (masked, with the comparison) and the candidates' one-hots over
    their subtrees; b = [L >= R]; max = R + b (L - R), one-hot = (b hot_L, hot_R - b hot_R),
    the products fused into the B2A (``b2a_select_s``).  Rounds per level: 1 + the
    comparator's tree + 1 (4 for m = 64 and for max-pooling's 40 bits): 8 for a 2x2 pool.
    """
    rows, k = x.shape
    cand, hots, first = x, [None] * k, True   # hots[i]: candidate i's one-hot over its subtree
    while cand.shape[1] > 1:
        c = cand.shape[1]
        p = c // 2
        left, right = cand[:, 0:2 * p:2], cand[:, 1:2 * p:2]
        d = np.ascontiguousarray((left - right).reshape(-1))
        extras = [d]
        if want_onehot and not first:
            # a one-hot sums to one, so b times its last entry is b minus b times the others:
            # open all but the last column of each side (zero-padded to a common width; only
            # a carried odd candidate has a smaller subtree)
            widths = [(hots[2 * j].shape[1], hots[2 * j + 1].shape[1]) for j in range(p)]
            wmax = max(max(w) for w in widths) - 1
            extras += [np.ascontiguousarray(np.stack(
                [np.pad(hots[2 * j + side][:, :-1], ((0, 0), (0, wmax - widths[j][side] + 1)))
                 for j in range(p)], axis=1).reshape(rows * p, wmax)) for side in (0, 1)]
        msb, ops = yield from msb_xor_s(ctx, d, extra=extras, bits=bits)
        b, sels = yield from b2a_select_s(ctx, flip_xor(ctx, msb), rows * p, ops)
        new = right + sels[0].reshape(rows, p)
        new_hots = []
        if want_onehot and first:   # subtrees of one element: the one-hot is (b, 1 - b)
            one = 1 if ctx.rank == 0 else 0
            bb = b.reshape(rows, p)
            new_hots = [np.stack([bb[:, j], one - bb[:, j]], axis=1) for j in range(p)]
        elif want_onehot:
            bb = b.reshape(rows, p)
            bl, br = (sel.reshape(rows, p, -1) for sel in sels[1:])
            for j, (wl, wr) in enumerate(widths):
                left = bl[:, j, :wl - 1]
                right_b = br[:, j, :wr - 1]
                b_left = np.concatenate([left, (bb[:, j] - left.sum(axis=1))[:, None]], axis=1)
                b_right = np.concatenate([right_b, (bb[:, j] - right_b.sum(axis=1))[:, None]], axis=1)
                new_hots.append(np.concatenate([b_left, hots[2 * j + 1] - b_right], axis=1))
        if c % 2:
            new = np.concatenate([new, cand[:, c - 1:]], axis=1)
            carried = hots[c - 1]
            new_hots.append(carried if carried is not None or not want_onehot else
                            np.full((rows, 1), 1 if ctx.rank == 0 else 0, np.int64))
        cand, hots, first = new, new_hots, False
    return cand[:, 0], (hots[0] if want_onehot else None)


def _max_any(ctx: PartyContext, x: np.ndarray, want_onehot: bool, bits: int | None = None):
    rows, k = x.shape
    if 2 < k <= 2 * _BLOCK and rows * k >= TREE_MIN_ELEMENTS:
        return (yield from _max_tree(ctx, x, want_onehot, bits))
    if k <= 2 * _BLOCK:
        return (yield from _max_rows(ctx, x, want_onehot, bits))
    blocks = -(-k // _BLOCK)
    pad = blocks * _BLOCK - k
    if pad:
        # padding with a large negative public constant keeps every difference in range
        m = ctx.config.protocol.cmp_bits if bits is None else int(bits)
        fill = -(1 << (m - 3)) if ctx.rank == 0 else 0
        x = np.concatenate([x, np.full((rows, pad), fill, np.int64)], axis=1)
    bmax, bhot = yield from _max_rows(ctx, x.reshape(rows * blocks, _BLOCK), want_onehot, bits)
    mx, top = yield from _max_any(ctx, bmax.reshape(rows, blocks), want_onehot, bits)
    if not want_onehot:
        return mx, None
    top_b = np.ascontiguousarray(np.repeat(top.reshape(rows * blocks, 1), _BLOCK, axis=1))
    hm, tm = yield from mask_and_open(ctx, [bhot, top_b], "argmax_combine")
    hot = mul_masked(ctx, hm, tm).reshape(rows, blocks * _BLOCK)[:, :k]
    return mx, hot


def max_s(ctx: PartyContext, x: np.ndarray, axis: int = -1, return_onehot: bool = False,
          bits: int | None = None):
    """Maximum along ``axis``; with ``return_onehot`` also the integer one-hot argmax.

    Exact while all pairwise differences satisfy |x_i - x_j| < 2^(m-1), m = ``bits``
    (default ``ProtocolConfig.cmp_bits``).
    """
    x = np.asarray(x, dtype=np.int64)
    moved = np.moveaxis(x, axis, -1)
    lead = moved.shape[:-1]
    flat = np.ascontiguousarray(moved.reshape(-1, moved.shape[-1]))
    mx, hot = yield from _max_any(ctx, flat, return_onehot, bits)
    mx = mx.reshape(lead)
    if not return_onehot:
        return mx
    hot = np.moveaxis(hot.reshape(lead + (moved.shape[-1],)), -1, axis)
    return mx, np.ascontiguousarray(hot)


def argmax_s(ctx: PartyContext, x: np.ndarray, axis: int = -1, bits: int | None = None):
    """Integer one-hot shares of the (first) argmax along ``axis``."""
    return (yield from max_s(ctx, x, axis, return_onehot=True, bits=bits))[1]
