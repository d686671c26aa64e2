"""What one party holds while running SPMD protocol code."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from .comm.channel import Channel
from .config import EngineConfig
from .preprocessing.bilinear import Scratch
from .preprocessing.source import CorrelatedSource

__all__ = ["PartyContext"]


@dataclass
class PartyContext:
    rank: int
    channel: Channel
    source: CorrelatedSource
    config: EngineConfig
    #: the scheduler's round plans of keyed runs (``protocols.rounds``), by key
    round_plans: OrderedDict = field(default_factory=OrderedDict, repr=False)
    #: this party's reused temporaries (kernel operand layouts)
    scratch: Scratch = field(default_factory=Scratch, repr=False)
    #: the running keyed run's buffers for what it sends (``protocols.rounds.outgoing``)
    arena: object = field(default=None, repr=False)

    @property
    def frac_bits(self) -> int:
        return self.config.fixed.frac_bits

    @property
    def is_first(self) -> bool:
        return self.rank == 0
