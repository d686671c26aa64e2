"""What one party holds while running SPMD protocol code."""
from __future__ import annotations

from dataclasses import dataclass

from .comm.channel import Channel
from .config import EngineConfig
from .preprocessing.source import CorrelatedSource

__all__ = ["PartyContext"]


@dataclass
class PartyContext:
    rank: int
    channel: Channel
    source: CorrelatedSource
    config: EngineConfig

    @property
    def frac_bits(self) -> int:
        return self.config.fixed.frac_bits

    @property
    def is_first(self) -> bool:
        return self.rank == 0
