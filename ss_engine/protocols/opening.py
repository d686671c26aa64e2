"""Opening shares: the only way a secret becomes public."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..party import PartyContext
from .rounds import open_ring, reveal_to

__all__ = ["open_many", "reveal_s"]


def open_many(ctx: PartyContext, shares: Sequence[np.ndarray], label: str = "open"):
    """Open several ring arrays in one message (a coroutine).

    Rounds: 1.  Bytes sent per party: 8 per element.
    """
    return (yield from open_ring(ctx, shares, label))


def reveal_s(ctx: PartyContext, share: np.ndarray, to: int | None = None, label: str = "reveal"):
    """Open a secret to both parties (``to=None``) or only to party ``to`` (a coroutine).

    Rounds: 1.  Bytes: 8 per element sent by each party (both) or by the other party (one).
    Returns the ring value, or None on the party that learns nothing.
    """
    if to is None:
        return (yield from open_ring(ctx, [share], label))[0]
    got = yield from reveal_to(ctx, [share], to, label)
    return None if got is None else got[0]
