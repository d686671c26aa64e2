"""One-pass kernels for step functions of B2A bits (``protocols.steps``), and numpy twins.

A step function of J bits b_j = e_j + (1 - 2 e_j) rho_j (public e_j in {0, 1}, rho_j this
party's share of a dealer bit) with increments d_j is S = v0 + sum_j d_j b_j.  Its product
with a linear form F = P + sum_t c_t u_t (dealer items u_t) is, with pi_jt this party's
share of the dealer's rho_j u_t,

    S F = [p0] S_pub P + S_pub sum_t c_t u_t + P sum_j k_j rho_j + sum_jt k_j c_t pi_jt,
    S_pub = v0 + sum_j d_j e_j,   k_j = d_j (1 - 2 e_j).

numpy evaluates that with about 3 J T temporaries of n elements (``forms.form_mul``);
these loops read every array once.  A nonlinear protocol's normalisation multiplies by
11 to 50 such bits per element (Adam over every parameter: ~100k elements).

* :func:`step_share` (e, d, rho, v0, rank0) -> S
* :func:`step_product` (e, d, rho, v0, public, coeffs, items, products, rank0) -> S F
  (``coeffs`` (T, n): each item's public coefficient, broadcast by the caller)

All int64 ring arithmetic (wrapping mod 2^64); e is 0/1.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["step_share", "step_share_np", "step_product", "step_product_np"]


@njit(cache=True, nogil=True)
def _step_share(e, d, rho, v0, rank0, out):
    j_count, n = e.shape
    for i in range(n):
        out[i] = v0 if rank0 else np.int64(0)
    for j in range(j_count):
        dj, ej, rj = d[j], e[j], rho[j]
        if rank0:
            for i in range(n):
                out[i] += dj * ej[i] + (dj - 2 * dj * ej[i]) * rj[i]
        else:
            for i in range(n):
                out[i] += (dj - 2 * dj * ej[i]) * rj[i]


@njit(cache=True, nogil=True)
def _step_product(e, d, rho, v0, public, coeffs, items, products, rank0, out):
    # row by row (every array streamed once, in order), accumulating into out
    j_count, n = e.shape
    t_count = items.shape[0]
    s_pub = np.full(n, v0, dtype=np.int64)
    for j in range(j_count):
        dj, ej = d[j], e[j]
        for i in range(n):
            s_pub[i] += dj * ej[i]
    for i in range(n):
        out[i] = s_pub[i] * public[i] if rank0 else np.int64(0)
    for t in range(t_count):
        ct, ut = coeffs[t], items[t]
        for i in range(n):
            out[i] += s_pub[i] * ct[i] * ut[i]
    part = np.empty(n, dtype=np.int64)
    for j in range(j_count):
        dj = d[j]
        ej, rj = e[j], rho[j]
        for i in range(n):
            part[i] = public[i] * rj[i]
        for t in range(t_count):
            ct, pjt = coeffs[t], products[j, t]
            for i in range(n):
                part[i] += ct[i] * pjt[i]
        for i in range(n):
            out[i] += (dj - 2 * dj * ej[i]) * part[i]      # k = d (1 - 2 e)


def _rows(a, dtype=np.int64) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != dtype:
        raise TypeError(f"step kernels take {np.dtype(dtype).name} arrays, got {a.dtype}")
    return np.ascontiguousarray(a)


def step_share(e: np.ndarray, d: np.ndarray, rho: np.ndarray, v0: int, rank0: bool) -> np.ndarray:
    e, d, rho = _rows(e), _rows(d), _rows(rho)
    if e.shape != rho.shape or d.shape != e.shape[:1]:
        raise ValueError(f"step_share: e {e.shape}, d {d.shape}, rho {rho.shape} do not agree")
    out = np.empty(e.shape[1], np.int64)
    _step_share(e, d, rho, np.int64(v0), bool(rank0), out)
    return out


def step_share_np(e, d, rho, v0, rank0):
    e, d, rho = (np.asarray(a, np.int64) for a in (e, d, rho))
    out = (d[:, None] * (1 - 2 * e) * rho).sum(axis=0)
    if rank0:
        out += np.int64(v0) + (d[:, None] * e).sum(axis=0)
    return out


def step_product(e, d, rho, v0, public, coeffs, items, products, rank0) -> np.ndarray:
    e, d, rho, public = _rows(e), _rows(d), _rows(rho), _rows(public)
    coeffs, items, products = _rows(coeffs), _rows(items), _rows(products)
    j_count, n = e.shape
    t_count = items.shape[0]
    if (rho.shape != e.shape or d.shape != (j_count,) or public.shape != (n,)
            or coeffs.shape != (t_count, n) or items.shape != (t_count, n)
            or products.shape != (j_count, t_count, n)):
        raise ValueError("step_product: operand shapes do not agree")
    out = np.empty(n, np.int64)
    _step_product(e, d, rho, np.int64(v0), public, coeffs, items, products, bool(rank0), out)
    return out


def step_product_np(e, d, rho, v0, public, coeffs, items, products, rank0):
    e, d, rho, public, coeffs, items, products = (
        np.asarray(a, np.int64) for a in (e, d, rho, public, coeffs, items, products))
    s_pub = np.int64(v0) + (d[:, None] * e).sum(axis=0)
    k = d[:, None] * (1 - 2 * e)                                   # (J, n)
    out = s_pub * (coeffs * items).sum(axis=0)
    out += (k * (public[None, :] * rho + (coeffs[None] * products).sum(axis=1))).sum(axis=0)
    if rank0:
        out += s_pub * public
    return out
