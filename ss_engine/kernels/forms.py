"""One-pass kernels of the exact truncation's results and their products, and numpy twins.

A truncation opened at c (``protocols.truncation``) is the linear form
    public + coeff [r_msb] - [r_hi],  public = (c mod 2^63) >> f + 2^(63-f) c_msb - 2^(62-f),
                                      coeff = (1 - 2 c_msb) 2^(63-f),
and its most frequent uses are its share and its product with a one-term form Q + g [v]
(a B2A bit: ReLU forward and backward; a masked opening), which ``protocols.forms`` writes as
    a * b = P Q + P g [v] + Q (K [m] - [h]) + g (K [m v] - [h v])
with the dealer's products [m v], [h v].  The numpy forms of these make five to ten
temporaries the size of the tensor (public, coeff, each product, each sum); these loops read
c and the items once and write one result, and release the GIL.

* :func:`trunc_public`, :func:`trunc_coeff`: the form's public part and coefficient.
* :func:`trunc_share`: a party's share, public part included for party 0.
* :func:`trunc_form_mul`: a party's share of (truncation form) * (one-term form), flat,
  equal sizes; ``g`` a scalar (one-element array) or per element.

All int64 ring elements (arithmetic wraps mod 2^64); 1 <= f <= 61.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["trunc_public", "trunc_public_np", "trunc_coeff", "trunc_coeff_np", "trunc_share",
           "trunc_share_np", "trunc_form_mul", "trunc_form_mul_np"]

_LOW63 = (1 << 63) - 1


@njit(cache=True, nogil=True)
def _parts(c_i, f):
    """(public, coeff) of one opened element (module doc); the kernels below inline it."""
    u = np.uint64(c_i)
    msb = np.int64(u >> np.uint64(63))
    up = np.int64(63 - f)
    public = np.int64((u & np.uint64(_LOW63)) >> np.uint64(f)) + (msb << up) - (np.int64(1) << np.int64(62 - f))
    return public, (np.int64(1) - np.int64(2) * msb) << up


@njit(cache=True, nogil=True)
def _public(c, f, out):
    for i in range(c.size):
        out[i] = _parts(c[i], f)[0]


@njit(cache=True, nogil=True)
def _coeff(c, f, out):
    for i in range(c.size):
        out[i] = _parts(c[i], f)[1]


@njit(cache=True, nogil=True)
def _share(c, f, r_msb, r_hi, with_public, out):
    for i in range(c.size):
        p, k = _parts(c[i], f)
        y = k * r_msb[i] - r_hi[i]
        if with_public:
            y += p
        out[i] = y


@njit(cache=True, nogil=True)
def _form_mul(c, f, m, h, q, g, v, w_mv, w_hv, with_public, out):
    scalar = g.size == 1
    g0 = g[0]
    for i in range(c.size):
        p, k = _parts(c[i], f)
        gi = g0 if scalar else g[i]
        qi = q[i]
        y = p * (gi * v[i]) + qi * (k * m[i] - h[i]) + gi * (k * w_mv[i] - w_hv[i])
        if with_public:
            y += p * qi
        out[i] = y


def _flat(x: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.int64:
        raise TypeError(f"{what}: form kernels take int64 arrays, got {getattr(x, 'dtype', type(x))}")
    return x.reshape(-1) if x.flags.c_contiguous else np.ascontiguousarray(x).reshape(-1)


def _shift(f: int) -> int:
    if not 1 <= int(f) <= 61:
        raise ValueError(f"shift must be in [1, 61], got {f}")
    return int(f)


def _per_element(kernel, c: np.ndarray, f: int) -> np.ndarray:
    cf = _flat(c, "c")
    out = np.empty(cf.size, np.int64)
    kernel(cf, _shift(f), out)
    return out.reshape(c.shape)


def trunc_public(c: np.ndarray, f: int) -> np.ndarray:
    return _per_element(_public, c, f)


def trunc_public_np(c: np.ndarray, f: int) -> np.ndarray:
    cu = c.view(np.uint64)
    msb = (cu >> np.uint64(63)).astype(np.int64)
    return ((cu & np.uint64(_LOW63)) >> np.uint64(f)).astype(np.int64) + (msb << np.int64(63 - f)) \
        - np.int64(1 << (62 - f))


def trunc_coeff(c: np.ndarray, f: int) -> np.ndarray:
    return _per_element(_coeff, c, f)


def trunc_coeff_np(c: np.ndarray, f: int) -> np.ndarray:
    return (1 - 2 * (c.view(np.uint64) >> np.uint64(63)).astype(np.int64)) << np.int64(63 - f)


def _same_size(c: np.ndarray, *xs: np.ndarray) -> None:
    for x in xs:
        if x.size != c.size:
            raise ValueError(f"form kernel operands differ in size: {x.size} vs {c.size}")


def trunc_share(c: np.ndarray, f: int, r_msb: np.ndarray, r_hi: np.ndarray, with_public: bool) -> np.ndarray:
    """public (if ``with_public``) + coeff r_msb - r_hi, in c's shape."""
    cf, m, h = _flat(c, "c"), _flat(r_msb, "r_msb"), _flat(r_hi, "r_hi")
    _same_size(cf, m, h)
    out = np.empty(cf.size, np.int64)
    _share(cf, _shift(f), m, h, bool(with_public), out)
    return out.reshape(c.shape)


def trunc_share_np(c: np.ndarray, f: int, r_msb: np.ndarray, r_hi: np.ndarray, with_public: bool) -> np.ndarray:
    y = trunc_coeff_np(c, f) * r_msb.reshape(c.shape) - r_hi.reshape(c.shape)
    return y + trunc_public_np(c, f) if with_public else y


def trunc_form_mul(c: np.ndarray, f: int, r_msb: np.ndarray, r_hi: np.ndarray, q: np.ndarray,
                   g: np.ndarray, v: np.ndarray, w_mv: np.ndarray, w_hv: np.ndarray,
                   with_public: bool) -> np.ndarray:
    """A party's share of (P + K [m] - [h]) * (q + g [v]) (module doc), flat: every operand
    has c's size, except ``g``, which may also be a single element."""
    cf = _flat(c, "c")
    ops = [_flat(x, n) for x, n in ((r_msb, "r_msb"), (r_hi, "r_hi"), (q, "q"), (v, "v"), (w_mv, "w_mv"),
                                   (w_hv, "w_hv"))]
    _same_size(cf, *ops)
    gf = _flat(np.asarray(g, np.int64), "g")
    if gf.size not in (1, cf.size):
        raise ValueError(f"g has {gf.size} elements, expected 1 or {cf.size}")
    out = np.empty(cf.size, np.int64)
    m, h, qf, vf, wm, wh = ops
    _form_mul(cf, _shift(f), m, h, qf, gf, vf, wm, wh, bool(with_public), out)
    return out


def trunc_form_mul_np(c: np.ndarray, f: int, r_msb: np.ndarray, r_hi: np.ndarray, q: np.ndarray,
                      g: np.ndarray, v: np.ndarray, w_mv: np.ndarray, w_hv: np.ndarray,
                      with_public: bool) -> np.ndarray:
    c = c.reshape(-1)
    p, k = trunc_public_np(c, f), trunc_coeff_np(c, f)
    g = np.asarray(g, np.int64).reshape(-1)
    g = g[0] if g.size == 1 else g
    q, v = q.reshape(-1), v.reshape(-1)
    y = p * (g * v) + q * (k * r_msb.reshape(-1) - r_hi.reshape(-1)) + g * (k * w_mv.reshape(-1) - w_hv.reshape(-1))
    return y + p * q if with_public else y
