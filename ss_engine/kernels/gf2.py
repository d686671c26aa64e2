"""Kernels of the comparison's GF(2) circuits on bit-sliced words, and their numpy twins.

Words are uint64, one bit per element (the layout of :mod:`.bits`); an array (rows, W)
holds ``rows`` bits of 64 W elements.  The tables these kernels take are built by
``ss_engine.preprocessing.circuits`` (read its module doc for the algebra):

* :func:`and_nodes` (the dealer): products of mask rows along an AND DAG,
  ``node[base rows + k] = node[left_k] & node[right_k]``.
* :func:`xor_terms` (both parties, one call per circuit level): for each group g of public
  rows, the table P[T] of the ANDs of every subset T of the group's public words, then for
  each entry (T, source, row, out) ``out[out] ^= P[T] & source[row]`` with the sources
  0: the constant 1 (party 0 only), 1: the level's input shares, 2: single mask bits,
  3: the dealer's products.  Words are processed in chunks (``chunk_words``) so that the
  group tables stay in cache; chunks run in parallel for large calls.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._runtime import parallel_slot

__all__ = ["and_nodes", "and_nodes_np", "xor_terms", "xor_terms_np", "chunk_words"]


# --------------------------------------------------------------------------- kernels


@njit(cache=True, nogil=True)
def _and_nodes(base, pairs, out):
    nb = base.shape[0]
    for k in range(pairs.shape[0]):
        left, right = pairs[k, 0], pairs[k, 1]
        for w in range(base.shape[1]):
            lv = base[left, w] if left < nb else out[left - nb, w]
            out[k, w] = lv & base[right, w]


@njit(cache=True, nogil=True)
def _terms_chunk(pub, x_in, singles, prods, group_rows, group_sizes, group_start, entries, rank0,
                 out, w0, w1, table):
    # 1-D row views keep the inner loops simple enough to vectorise (4x faster than 2-D
    # indexing here)
    nw = w1 - w0
    for g in range(group_rows.shape[0]):
        n = group_sizes[g]
        top = table[0]
        for w in range(nw):
            top[w] = -1
        for mask in range(1, 1 << n):
            low = 0
            while (mask >> low) & 1 == 0:
                low += 1
            prev, cur = table[mask & (mask - 1)], table[mask]
            p = pub[group_rows[g, low], w0:w1]
            for w in range(nw):
                cur[w] = prev[w] & p[w]
        for e in range(group_start[g], group_start[g + 1]):
            t, src, row, o = entries[e, 0], entries[e, 1], entries[e, 2], entries[e, 3]
            coef, dst = table[t], out[o, w0:w1]
            if src == 0:
                if rank0:
                    for w in range(nw):
                        dst[w] ^= coef[w]
                continue
            if src == 1:
                s = x_in[row, w0:w1]
            elif src == 2:
                s = singles[row, w0:w1]
            else:
                s = prods[row, w0:w1]
            for w in range(nw):
                dst[w] ^= coef[w] & s[w]


@njit(cache=True, nogil=True)
def _xor_terms_ser(pub, x_in, singles, prods, group_rows, group_sizes, group_start, entries,
                   rank0, out, width, chunk):
    words = out.shape[1]
    table = np.empty((1 << width, chunk), dtype=np.int64)
    for w0 in range(0, words, chunk):
        _terms_chunk(pub, x_in, singles, prods, group_rows, group_sizes, group_start, entries,
                     rank0, out, w0, min(words, w0 + chunk), table)


@njit(parallel=True, nogil=True, cache=True)
def _xor_terms_par(pub, x_in, singles, prods, group_rows, group_sizes, group_start, entries,
                   rank0, out, width, chunk):
    words = out.shape[1]
    for c in prange((words + chunk - 1) // chunk):
        table = np.empty((1 << width, chunk), dtype=np.int64)
        w0 = c * chunk
        _terms_chunk(pub, x_in, singles, prods, group_rows, group_sizes, group_start, entries,
                     rank0, out, w0, min(words, w0 + chunk), table)


def chunk_words(width: int) -> int:
    """Words per chunk for groups of up to ``width`` variables: the subset table (2^width
    rows) stays near 64 KB; 256 words measured best for the comparator's 4-bit blocks
    (0.4-0.5 ns per entry and word, 64 words: 0.6-0.9, 16 words: 1.1-5)."""
    return int(min(256, max(32, 8192 >> width)))


# --------------------------------------------------------------------------- wrappers


def _words(a: np.ndarray, what: str, words: int | None = None) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.dtype != np.uint64 or a.ndim != 2:
        raise TypeError(f"{what} must be a 2-D uint64 array, got "
                        f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
    if words is not None and a.shape[1] != words and a.shape[0]:
        raise ValueError(f"{what} has {a.shape[1]} words per row, expected {words}")
    return np.ascontiguousarray(a).view(np.int64)


def _table(a: np.ndarray, cols: int, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.int64 or (cols and (a.ndim != 2 or a.shape[1] != cols)):
        raise TypeError(f"{what} must be an int64 table with {cols} columns")
    return np.ascontiguousarray(a)


def _rows_or_empty(a, what: str, words: int) -> np.ndarray:
    if a is None:
        return np.zeros((0, words), dtype=np.int64)
    return _words(a, what, words)


def and_nodes(base: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(P, W) uint64: product k = node[pairs[k, 0]] & node[pairs[k, 1]], where node i is
    ``base`` row i for i < len(base), else product i - len(base) (defined earlier)."""
    b = _words(base, "and_nodes base")
    p = _table(pairs, 2, "and_nodes pairs")
    nb = b.shape[0]
    if p.size and (p.min() < 0 or np.any(p[:, 1] >= nb)
                   or np.any(p[:, 0] >= nb + np.arange(p.shape[0]))):
        raise ValueError("and_nodes pairs must refer to base rows or earlier products")
    out = np.empty((p.shape[0], b.shape[1]), dtype=np.int64)
    _and_nodes(b, p, out)
    return out.view(np.uint64)


def xor_terms(pub: np.ndarray, x_in: np.ndarray | None, singles: np.ndarray,
              prods: np.ndarray, group_rows: np.ndarray, group_sizes: np.ndarray,
              group_start: np.ndarray, entries: np.ndarray, n_out: int, rank0: bool) -> np.ndarray:
    """(n_out, W) uint64: this party's shares of one circuit level (see module doc).
    Tables come from a trusted layout (``preprocessing.circuits``); only array types and
    word counts are checked here."""
    words = pub.shape[1] if pub.ndim == 2 else -1
    args = (_words(pub, "public words", words), _rows_or_empty(x_in, "input shares", words),
            _rows_or_empty(singles, "mask shares", words), _rows_or_empty(prods, "product shares", words),
            _table(group_rows, 0, "group rows"), _table(group_sizes, 0, "group sizes"),
            _table(group_start, 0, "group starts"), _table(entries, 4, "entries"))
    width = int(group_sizes.max()) if group_sizes.size else 0
    out = np.zeros((int(n_out), words), dtype=np.int64)
    chunk = chunk_words(width)
    if words:
        # a single chunk gains nothing from a thread team
        with parallel_slot(4 * entries.shape[0] * words if words > chunk else 0) as par:
            (_xor_terms_par if par else _xor_terms_ser)(*args, bool(rank0), out, width, chunk)
    return out.view(np.uint64)


# --------------------------------------------------------------------------- numpy twins


def and_nodes_np(base: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Oracle for :func:`and_nodes`: each product expanded to the AND of its base rows."""
    nb = base.shape[0]

    def rows_of(i):
        if i < nb:
            return [i]
        left, right = pairs[i - nb]
        return rows_of(int(left)) + rows_of(int(right))

    out = np.empty((pairs.shape[0], base.shape[1]), dtype=np.uint64)
    for k in range(pairs.shape[0]):
        out[k] = np.bitwise_and.reduce(base[rows_of(nb + k)], axis=0)
    return out


def xor_terms_np(pub, x_in, singles, prods, group_rows, group_sizes, group_start, entries,
                 n_out, rank0):
    """Oracle for :func:`xor_terms`: every entry's public coefficient ANDed from its rows
    directly (no subset table), whole rows at a time."""
    words = pub.shape[1]
    ones = np.full(words, np.uint64(0xFFFFFFFFFFFFFFFF))
    sources = {1: x_in, 2: singles, 3: prods}
    out = np.zeros((int(n_out), words), dtype=np.uint64)
    for g in range(group_rows.shape[0]):
        for t, src, row, o in entries[group_start[g]:group_start[g + 1]]:
            coef = ones.copy()
            for i in range(int(group_sizes[g])):
                if t >> i & 1:
                    coef &= pub[group_rows[g, i]]
            if src == 0:
                if rank0:
                    out[o] ^= coef
            else:
                out[o] ^= coef & sources[int(src)][row]
    return out
