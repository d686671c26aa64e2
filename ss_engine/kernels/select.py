"""The select of a bit-to-arithmetic conversion in one pass, and its numpy twin.

A comparison bit b reaches the arithmetic domain as b = e XOR rho for a public e and the
dealer's bit rho (``protocols.compare.b2a_s``), and the value y it selects is a linear form
y = P + sum_t k_t c_t [u_t] (public P, scalar k_t times optional public array c_t, dealer
items u_t), with the dealer's products [u_t rho].  Then

    y b = e ? y - y rho : y rho,    y rho = P rho + sum_t k_t c_t [u_t rho],

and a party's share of y is r0 P + sum_t k_t c_t [u_t] (r0 = 1 for party 0, else 0).

* :func:`bit_select` (e, rho, public, terms, rank0): (n, w) int64 shares of y b, with e and
  rho per row (n,) and y's arrays (n, w); ``terms`` up to two (k, c or None, u, u rho).
  ReLU (y = the masked input or a truncation result), max-pooling's and argmax's selects.
All arithmetic wraps mod 2^64 (int64).
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["bit_select", "bit_select_np"]

_EMPTY = np.zeros((0, 0), dtype=np.int64)


@njit(cache=True, nogil=True)
def _bit_select(e, rho, pub, k1, c1, u1, w1, k2, c2, u2, w2, rank0, out):
    # e is random, so "e ? a : b" as a branch mispredicts half the time (14 ns per element
    # measured at LeNet's 590k values); the arithmetic select b + e (a - b) runs at ~2 ns
    n, w = pub.shape
    r0 = np.int64(1) if rank0 else np.int64(0)
    full1, full2, two = c1.shape[0] > 0, c2.shape[0] > 0, k2 != 0
    for i in range(n):
        ri, ei = rho[i], e[i]
        for j in range(w):
            p = pub[i, j]
            a1 = k1 * c1[i, j] if full1 else k1
            share = r0 * p + a1 * u1[i, j]
            times_rho = p * ri + a1 * w1[i, j]
            if two:
                a2 = k2 * c2[i, j] if full2 else k2
                share += a2 * u2[i, j]
                times_rho += a2 * w2[i, j]
            out[i, j] = times_rho + ei * (share - times_rho - times_rho)


def _i64(a, shape, what: str) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.dtype != np.int64 or a.shape != shape:
        raise TypeError(f"{what} must be an int64 array of shape {shape}, got "
                        f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
    return np.ascontiguousarray(a)


def _checked(e, rho, public, terms):
    if not isinstance(public, np.ndarray) or public.ndim != 2:
        raise TypeError("public must be a 2-D int64 array (rows, width)")
    n, shape = public.shape[0], public.shape
    if not 1 <= len(terms) <= 2:
        raise ValueError(f"bit_select takes one or two terms, got {len(terms)}")
    out = []
    for k, c, u, uw in terms:
        out.append((np.int64(k), _EMPTY if c is None else _i64(c, shape, "coefficient"),
                    _i64(u, shape, "term share"), _i64(uw, shape, "product share")))
    return _i64(e, (n,), "e"), _i64(rho, (n,), "rho"), _i64(public, shape, "public"), out


def bit_select(e: np.ndarray, rho: np.ndarray, public: np.ndarray, terms, rank0: bool) -> np.ndarray:
    """(n, w) int64: this party's share of y * (e XOR rho) (see module doc)."""
    e, rho, public, ts = _checked(e, rho, public, terms)
    (k1, c1, u1, w1), (k2, c2, u2, w2) = ts[0], ts[1] if len(ts) == 2 else (np.int64(0), _EMPTY,
                                                                           _EMPTY, _EMPTY)
    out = np.empty_like(public)
    _bit_select(e, rho, public, k1, c1, u1, w1, k2, c2, u2, w2, bool(rank0), out)
    return out


def bit_select_np(e: np.ndarray, rho: np.ndarray, public: np.ndarray, terms, rank0: bool) -> np.ndarray:
    """Oracle for :func:`bit_select`, as the linear-form product it is:
    y b = e y + (1 - 2e)(y rho)."""
    e, rho, public, ts = _checked(e, rho, public, terms)
    share = public.copy() if rank0 else np.zeros_like(public)
    times_rho = public * rho[:, None]
    for k, c, u, uw in ts:
        coef = k if c.size == 0 else k * c
        share += coef * u
        times_rho += coef * uw
    return e[:, None] * share + (1 - 2 * e[:, None]) * times_rho
