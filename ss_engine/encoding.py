"""Fixed-point encoding of reals into the ring Z_2^64 (int64 storage, wrap-around)."""
from __future__ import annotations

import numpy as np

from .config import FixedPointConfig

__all__ = ["EncodingError", "encode", "decode", "as_ring", "ring_to_signed_float"]


class EncodingError(ValueError):
    """A value cannot be represented: non-finite or outside the fixed-point bound."""


def as_ring(x) -> np.ndarray:
    """View integer data as ring elements (int64, C-contiguous). Rejects non-integer dtypes."""
    arr = np.asarray(x)
    if arr.dtype == np.uint64:
        return np.asarray(arr.view(np.int64), order="C")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"ring elements must be integers, got dtype {arr.dtype}")
    return np.asarray(arr, dtype=np.int64, order="C")


def encode(x, fixed: FixedPointConfig | int = 16) -> np.ndarray:
    """round(x * 2^f) as int64.  Raises EncodingError on NaN/inf or |x| >= bound (no silent wrap)."""
    cfg = fixed if isinstance(fixed, FixedPointConfig) else FixedPointConfig(frac_bits=int(fixed))
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise EncodingError("cannot encode NaN or infinity")
    scaled = np.rint(arr * cfg.scale)
    limit = float(2 ** cfg.value_bits)
    if arr.size and float(np.max(np.abs(scaled))) >= limit:
        worst = float(np.max(np.abs(arr)))
        raise EncodingError(
            f"value {worst!r} outside the fixed-point range: |x| must be < 2^{cfg.value_bits - cfg.frac_bits}"
            f" = {cfg.bound!r} with frac_bits={cfg.frac_bits}")
    return scaled.astype(np.int64)


def decode(x, fixed: FixedPointConfig | int = 16) -> np.ndarray:
    """Signed (two's complement) interpretation divided by 2^f, as float64."""
    f = fixed.frac_bits if isinstance(fixed, FixedPointConfig) else int(fixed)
    return as_ring(x).astype(np.float64) / float(1 << f)


def ring_to_signed_float(x) -> np.ndarray:
    return as_ring(x).astype(np.float64)
