"""Opening shares: the only way a secret becomes public."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..party import PartyContext

__all__ = ["open_many", "reveal_s"]


def open_many(ctx: PartyContext, shares: Sequence[np.ndarray], label: str = "open") -> list[np.ndarray]:
    """Open several ring arrays in one message.

    Rounds: 1.  Bytes sent per party: 8 per element.
    """
    arrays = [np.ascontiguousarray(s, dtype=np.int64) for s in shares]
    theirs = ctx.channel.exchange(arrays, label)
    if len(theirs) != len(arrays) or any(t.shape != a.shape for t, a in zip(theirs, arrays)):
        raise ValueError("peer opened arrays of a different structure")
    return [a + t for a, t in zip(arrays, theirs)]


def reveal_s(ctx: PartyContext, share: np.ndarray, to: int | None = None, label: str = "reveal"):
    """Open a secret to both parties (``to=None``) or only to party ``to``.

    Rounds: 1.  Bytes: 8 per element sent by each party (both) or by the other party (one).
    Returns the ring value, or None on the party that learns nothing.
    """
    share = np.ascontiguousarray(share, dtype=np.int64)
    if to is None:
        return open_many(ctx, [share], label)[0]
    if to not in (0, 1):
        raise ValueError("reveal target must be party 0 or 1")
    if ctx.rank == to:
        (theirs,) = ctx.channel.recv_only(label)
        if theirs.shape != share.shape:
            raise ValueError("peer revealed an array of a different shape")
        return share + theirs
    ctx.channel.send_only([share], label)
    return None
