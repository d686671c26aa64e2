"""The one channel interface the protocols use, with exact byte and round accounting.

A *round* is one communication step of a protocol: both parties send in parallel and then
wait for the other's message (``exchange``), or one party sends and the other waits
(``send``/``recv`` of a one-way opening).  Protocol docstrings state their rounds and bytes;
tests assert the counters below against them.

A *planned* round (a replayed run's, ``protocols.rounds``) was validated once, when its plan
was made: ``plan_round(sends, receives)`` gives the channel's own description of it
(``PlannedRound``), and the round's calls carry it, so a channel that can checks the peer's
message against the planned layout as a whole (its sizes and a digest of its structure)
instead of decoding and validating every array's header.  The base class, and any channel
that does not override the planned hooks, runs planned rounds like any other.
"""
from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Channel", "ChannelStats", "ChannelClosed", "ChannelTimeout", "validate_arrays",
           "ALLOWED_DTYPES", "PlannedRound"]

#: dtypes that may cross a channel; anything else is a programming error or an attack.
ALLOWED_DTYPES = frozenset({"int64", "uint64", "uint32", "int32", "uint8"})
# the same as dtype objects: ``dtype.name`` is computed in Python, ~2 us per array per round
_ALLOWED = frozenset(np.dtype(n) for n in ALLOWED_DTYPES)


class ChannelClosed(ConnectionError):
    """The peer went away."""


class ChannelTimeout(TimeoutError):
    """The peer did not answer within the channel's timeout."""


@dataclass
class ChannelStats:
    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    rounds: int = 0
    wait_seconds: float = 0.0
    by_label: dict = field(default_factory=dict)

    def snapshot(self) -> "ChannelStats":
        return ChannelStats(self.bytes_sent, self.bytes_received, self.messages_sent,
                            self.rounds, self.wait_seconds, dict(self.by_label))

    def minus(self, earlier: "ChannelStats") -> "ChannelStats":
        labels = {k: (v[0] - earlier.by_label.get(k, (0, 0))[0], v[1] - earlier.by_label.get(k, (0, 0))[1])
                  for k, v in self.by_label.items()}
        return ChannelStats(self.bytes_sent - earlier.bytes_sent,
                            self.bytes_received - earlier.bytes_received,
                            self.messages_sent - earlier.messages_sent,
                            self.rounds - earlier.rounds,
                            self.wait_seconds - earlier.wait_seconds,
                            {k: v for k, v in labels.items() if v != (0, 0)})

    def as_dict(self) -> dict:
        return {"bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
                "messages_sent": self.messages_sent, "rounds": self.rounds,
                "wait_seconds": self.wait_seconds}


def validate_arrays(arrays) -> list[np.ndarray]:
    """The arrays, each a C-contiguous ndarray of an allowed dtype (TypeError otherwise)."""
    out = []
    for a in arrays:
        if type(a) is not np.ndarray and not isinstance(a, np.ndarray):
            raise TypeError(f"channel payloads must be numpy arrays, got {type(a).__name__}")
        if a.dtype not in _ALLOWED:
            raise TypeError(f"dtype {a.dtype} may not cross a channel")
        out.append(a if a.flags.c_contiguous else np.ascontiguousarray(a))
    return out


@dataclass(frozen=True)
class PlannedRound:
    """One planned round as a channel sees it: what this party sends and receives, each a
    tuple of (dtype, shape), and a digest of each (equal on both parties exactly when the
    two sides planned the same message)."""

    sends: tuple
    receives: tuple
    send_digest: bytes
    receive_digest: bytes
    receive_nbytes: tuple

    @classmethod
    def of(cls, sends, receives) -> "PlannedRound":
        norm = [tuple((np.dtype(d).str, tuple(int(x) for x in shp)) for d, shp in side)
                for side in (sends, receives)]
        for d, _ in norm[0] + norm[1]:
            if np.dtype(d) not in _ALLOWED:
                raise TypeError(f"dtype {d} may not cross a channel")
        dig = [hashlib.sha256(repr(side).encode()).digest()[:8] for side in norm]
        sizes = tuple(int(np.dtype(d).itemsize) * int(np.prod(shp, dtype=np.int64)) for d, shp in norm[1])
        return cls(tuple(norm[0]), tuple(norm[1]), dig[0], dig[1], sizes)


class Channel(ABC):
    """A bidirectional, ordered, counted link to the peer party."""

    def __init__(self) -> None:
        self.stats = ChannelStats()

    # -- transport hooks implemented by subclasses --------------------------------------
    @abstractmethod
    def _send(self, arrays: list[np.ndarray]) -> None: ...

    @abstractmethod
    def _recv(self) -> list[np.ndarray]: ...

    def close(self) -> None:  # pragma: no cover - trivial default
        pass

    # planned rounds: channels that can do better override these two (module doc)
    def plan_round(self, sends, receives) -> PlannedRound:
        return PlannedRound.of(sends, receives)

    def _send_planned(self, arrays: list[np.ndarray], planned: PlannedRound) -> None:
        self._send(arrays)

    def _recv_planned(self, planned: PlannedRound) -> list[np.ndarray]:
        return self._recv()

    # -- counted API used by protocols ------------------------------------------------------
    def _count(self, label: str, sent: int, received: int) -> None:
        s = self.stats
        s.rounds += 1
        prev = s.by_label.get(label)
        s.by_label[label] = (1, sent) if prev is None else (prev[0] + 1, prev[1] + sent)

    def _send_counted(self, arrays, planned: PlannedRound | None) -> int:
        """Send one message (its arrays validated here unless its round was planned, and
        so validated when the plan was made); returns its bytes."""
        if planned is None:
            arrays = validate_arrays(arrays)
        nbytes = 0
        for a in arrays:
            nbytes += a.nbytes
        if planned is None:
            self._send(arrays)
        else:
            self._send_planned(arrays, planned)
        st = self.stats
        st.bytes_sent += nbytes
        st.messages_sent += 1
        return nbytes

    def _recv_counted(self, planned: PlannedRound | None) -> list[np.ndarray]:
        """Receive one message, counting the time waited for it and its bytes."""
        st = self.stats
        t0 = time.perf_counter()
        got = self._recv() if planned is None else self._recv_planned(planned)
        st.wait_seconds += time.perf_counter() - t0
        for a in got:
            st.bytes_received += a.nbytes
        return got

    def exchange(self, arrays, label: str = "", planned: PlannedRound | None = None) -> list[np.ndarray]:
        """Send ``arrays`` and receive the peer's arrays of the same round (one round);
        ``planned``: the round's plan (its arrays were validated when it was made)."""
        nbytes = self._send_counted(arrays, planned)
        got = self._recv_counted(planned)
        self._count(label, nbytes, 0)
        return got

    def send_only(self, arrays, label: str = "", planned: PlannedRound | None = None) -> None:
        """One-way step (e.g. opening to one party); the receiver calls ``recv_only``."""
        self._count(label, self._send_counted(arrays, planned), 0)

    def recv_only(self, label: str = "", planned: PlannedRound | None = None) -> list[np.ndarray]:
        got = self._recv_counted(planned)
        self._count(label, 0, 0)
        return got
