"""In-process twin of the network channel: two queues between two party threads.

``queue.SimpleQueue`` (C, one lock-free handoff per message) rather than ``queue.Queue``
(a Python condition and three locks per put/get): about half the CPU per round here.
"""
from __future__ import annotations

import queue

import numpy as np

from .channel import Channel, ChannelClosed, ChannelTimeout

__all__ = ["InMemoryChannel", "memory_channel_pair"]

_CLOSE = object()


class InMemoryChannel(Channel):
    def __init__(self, outbox: "queue.SimpleQueue", inbox: "queue.SimpleQueue", timeout: float = 600.0):
        super().__init__()
        self._outbox, self._inbox, self._timeout = outbox, inbox, timeout

    def _send(self, arrays: list[np.ndarray]) -> None:
        frozen = []
        for a in arrays:
            v = a.view()
            v.flags.writeable = False  # the receiver gets a read-only view, never our buffer to mutate
            frozen.append(v)
        self._outbox.put(frozen)

    def _recv(self) -> list[np.ndarray]:
        try:
            msg = self._inbox.get(timeout=self._timeout)
        except queue.Empty:
            raise ChannelTimeout(f"no message from the peer within {self._timeout} s") from None
        if msg is _CLOSE:
            raise ChannelClosed("peer closed the channel")
        return msg

    def close(self) -> None:
        self._outbox.put(_CLOSE)


def memory_channel_pair(timeout: float = 600.0) -> tuple[InMemoryChannel, InMemoryChannel]:
    a_to_b, b_to_a = queue.SimpleQueue(), queue.SimpleQueue()
    return InMemoryChannel(a_to_b, b_to_a, timeout), InMemoryChannel(b_to_a, a_to_b, timeout)
