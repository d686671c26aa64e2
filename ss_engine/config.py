"""Frozen configuration objects passed explicitly to every layer (no module globals)."""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FixedPointConfig", "ProtocolConfig", "EngineConfig", "RING_BITS"]

#: Every share lives in Z_2^64, stored as numpy int64 (wrap-around arithmetic).
RING_BITS = 64


@dataclass(frozen=True)
class FixedPointConfig:
    """Fixed-point encoding: a real x is stored as round(x * 2**frac_bits) mod 2**64.

    ``frac_bits`` between 12 and 24 is supported and tested.  Encoded magnitudes must stay
    below ``2**value_bits`` (raw units), which is what truncation needs to be exact up to
    one unit in the last place (see :mod:`ss_engine.protocols.truncation`).
    """

    frac_bits: int = 16
    value_bits: int = 62

    def __post_init__(self) -> None:
        if not 1 <= self.frac_bits <= 30:
            raise ValueError(f"frac_bits must be in [1, 30], got {self.frac_bits}")
        if not self.frac_bits < self.value_bits <= 62:
            raise ValueError(f"value_bits must be in ({self.frac_bits}, 62], got {self.value_bits}")

    @property
    def scale(self) -> int:
        return 1 << self.frac_bits

    @property
    def bound(self) -> float:
        """Largest real magnitude that encodes (exclusive): 2**(value_bits - frac_bits)."""
        return float(2.0 ** (self.value_bits - self.frac_bits))


@dataclass(frozen=True)
class ProtocolConfig:
    """Knobs of the nonlinear protocols.

    cmp_bits: comparisons work in Z_2^cmp_bits; exact for every |x| < 2**(cmp_bits-1) raw
        units.  64 covers every ring element (two's complement sign).
    pool_cmp_bits: the ring of max-pooling's comparisons, which compare differences of two
        activations: exact while |x_i - x_j| < 2**(pool_cmp_bits-1) raw units, 2**23 (8.4
        million) in real units at f = 16 for the default 40.  Max-pooling dominates a CNN's
        comparisons, and their cost grows with the width.
    cmp_block_bits, cmp_fan_in: the comparator circuit (``preprocessing.circuits``): its local
        first level works on blocks of this many bits (the dealer supplies 2^b - b - 1
        products of mask bits per block), and every further level is one round of gates of
        at most ``cmp_fan_in`` inputs.  A comparison costs 2 + ceil(log_g ceil((m-1)/b))
        rounds (with its bit-to-arithmetic conversion): 4 at m = 64 for the defaults.
    and_fan_in: the widest AND gate of one round (max's AND over a candidate's k - 1
        comparisons: one round for k <= 10 at the default 9; 2^g - g - 1 dealer rows).
    """

    cmp_bits: int = 64
    pool_cmp_bits: int = 40
    cmp_block_bits: int = 4
    cmp_fan_in: int = 4
    and_fan_in: int = 9

    def __post_init__(self) -> None:
        if not 8 <= self.cmp_bits <= 64 or not 8 <= self.pool_cmp_bits <= 64:
            raise ValueError(f"cmp_bits and pool_cmp_bits must be in [8, 64], got "
                             f"{self.cmp_bits}, {self.pool_cmp_bits}")
        if not 1 <= self.cmp_block_bits <= 8 or not 2 <= self.cmp_fan_in <= 8:
            raise ValueError(f"cmp_block_bits must be in [1, 8] and cmp_fan_in in [2, 8], got "
                             f"{self.cmp_block_bits}, {self.cmp_fan_in}")
        if not 2 <= self.and_fan_in <= 12:
            raise ValueError(f"and_fan_in must be in [2, 12], got {self.and_fan_in}")


@dataclass(frozen=True)
class EngineConfig:
    fixed: FixedPointConfig = field(default_factory=FixedPointConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)

    @property
    def frac_bits(self) -> int:
        return self.fixed.frac_bits
