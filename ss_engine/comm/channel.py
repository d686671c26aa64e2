"""The one channel interface the protocols use, with exact byte and round accounting.

A *round* is one communication step of a protocol: both parties send in parallel and then
wait for the other's message (``exchange``), or one party sends and the other waits
(``send``/``recv`` of a one-way opening).  Protocol docstrings state their rounds and bytes;
tests assert the counters below against them.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Channel", "ChannelStats", "ChannelClosed", "ChannelTimeout", "validate_arrays",
           "ALLOWED_DTYPES"]

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

    # -- counted API used by protocols ------------------------------------------------------
    def _count(self, label: str, sent: int, received: int) -> None:
        s = self.stats
        s.rounds += 1
        prev = s.by_label.get(label)
        s.by_label[label] = (1, sent) if prev is None else (prev[0] + 1, prev[1] + sent)

    def exchange(self, arrays, label: str = "") -> list[np.ndarray]:
        """Send ``arrays`` and receive the peer's arrays of the same round (one round)."""
        arrays = validate_arrays(arrays)
        nbytes = 0
        for a in arrays:
            nbytes += a.nbytes
        self._send(arrays)
        st = self.stats
        st.bytes_sent += nbytes
        st.messages_sent += 1
        t0 = time.perf_counter()
        got = self._recv()
        st.wait_seconds += time.perf_counter() - t0
        for a in got:
            st.bytes_received += a.nbytes
        self._count(label, nbytes, 0)
        return got

    def send_only(self, arrays, label: str = "") -> None:
        """One-way step (e.g. opening to one party); the receiver calls ``recv_only``."""
        arrays = validate_arrays(arrays)
        nbytes = sum(a.nbytes for a in arrays)
        self._send(arrays)
        self.stats.bytes_sent += nbytes
        self.stats.messages_sent += 1
        self._count(label, nbytes, 0)

    def recv_only(self, label: str = "") -> list[np.ndarray]:
        t0 = time.perf_counter()
        got = self._recv()
        self.stats.wait_seconds += time.perf_counter() - t0
        self.stats.bytes_received += sum(a.nbytes for a in got)
        self._count(label, 0, 0)
        return got
