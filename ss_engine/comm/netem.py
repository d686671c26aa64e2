"""A simulated network between the two parties: one-way delay and bandwidth in the channel.

``NetemChannel`` wraps any :class:`~ss_engine.comm.channel.Channel` (the in-memory twin, or
the ZeroMQ channel) and delays every message as a link of the configured round-trip time
and bandwidth would, in the spirit of Linux ``tc qdisc ... netem delay D rate R`` on both
ends of a link:

* each direction is a FIFO link with one-way delay ``rtt / 2`` and serialisation time
  ``8 * (bytes + overhead) / bandwidth``; a message starts serialising when the previous one
  on the same direction has left (``link_free_at``);
* the sender does not block (an unbounded socket buffer, like ZeroMQ's); the sender stamps
  each message with its arrival time and the receiver sleeps until then;
* counters: the wrapper *is* a Channel, so ``exchange``/``send_only``/``recv_only`` count bytes
  and rounds exactly as the inner channel would (the time stamp is a transport detail and is
  not counted); ``wait_seconds`` includes the simulated delay, which is what a party would
  wait on a real link.

Both parties must wrap their ends (the time stamp travels as one trailing int64 word).
The stamp is ``time.monotonic_ns()``: CLOCK_MONOTONIC, shared by all processes of one
Linux machine, so the wrapper also works between the three local processes.

What it predicts for a step (checked by ``benchmarks/bench_network.py``): a round in which
both parties send at once costs one *one-way* delay, so
``step ~= compute + rounds * rtt / 2 + bytes_sent_per_party * 8 / bandwidth``
(full duplex: both directions serialise at the same time).  A TCP window smaller than the
bandwidth-delay product, loss and jitter are not modelled.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .channel import Channel

__all__ = ["NetemConfig", "NetemChannel", "install_netem", "PRESETS"]


@dataclass(frozen=True)
class NetemConfig:
    """Round-trip time in seconds, bandwidth in bits per second (None: unlimited), and a
    fixed per-message overhead in bytes (headers; 0 by default)."""

    rtt_seconds: float = 0.0
    bandwidth_bps: float | None = None
    overhead_bytes: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rtt_seconds <= 10.0:
            raise ValueError(f"rtt_seconds must be in [0, 10], got {self.rtt_seconds}")
        if self.bandwidth_bps is not None and not self.bandwidth_bps > 0:
            raise ValueError("bandwidth_bps must be positive (or None for unlimited)")
        if self.overhead_bytes < 0:
            raise ValueError("overhead_bytes must be >= 0")

    @property
    def one_way_seconds(self) -> float:
        return self.rtt_seconds / 2.0

    def serialisation_seconds(self, nbytes: int) -> float:
        if self.bandwidth_bps is None:
            return 0.0
        return 8.0 * (nbytes + self.overhead_bytes) / self.bandwidth_bps

    def label(self) -> str:
        bw = "unlimited" if self.bandwidth_bps is None else f"{self.bandwidth_bps / 1e9:g} Gbit/s"
        return f"RTT {1e3 * self.rtt_seconds:g} ms, {bw}"


#: The settings the benchmark suite reports (issue 5): LAN, metro, WAN at 1 Gbit/s.
PRESETS = {
    "lan": NetemConfig(rtt_seconds=0.0001, bandwidth_bps=1e9),
    "metro": NetemConfig(rtt_seconds=0.010, bandwidth_bps=1e9),
    "wan": NetemConfig(rtt_seconds=0.050, bandwidth_bps=1e9),
}


class NetemChannel(Channel):
    """``inner`` with the delay and bandwidth of ``config`` added (see the module docstring)."""

    def __init__(self, inner: Channel, config: NetemConfig):
        super().__init__()
        if isinstance(inner, NetemChannel):
            raise ValueError("the channel already has a simulated network")
        self.inner = inner
        self.config = config
        self._link_free_at = 0.0          # monotonic seconds when our outgoing link is idle
        self._lock = threading.Lock()     # a party may send from more than one thread
        self.simulated_sleep_seconds = 0.0

    def _send(self, arrays: list[np.ndarray]) -> None:
        nbytes = sum(a.nbytes for a in arrays)
        with self._lock:
            now = time.monotonic()
            start = max(now, self._link_free_at)
            self._link_free_at = start + self.config.serialisation_seconds(nbytes)
            arrive = self._link_free_at + self.config.one_way_seconds
        stamp = np.array([int(arrive * 1e9)], dtype=np.int64)
        self.inner._send(list(arrays) + [stamp])

    def _recv(self) -> list[np.ndarray]:
        msg = self.inner._recv()
        if not msg or msg[-1].dtype != np.int64 or msg[-1].shape != (1,):
            raise ValueError("message without a netem time stamp: wrap both ends of the link")
        arrive = int(msg[-1][0]) / 1e9
        delay = arrive - time.monotonic()
        if delay > 0:
            time.sleep(delay)
            self.simulated_sleep_seconds += delay
        return list(msg[:-1])

    def close(self) -> None:
        self.inner.close()


def install_netem(contexts: Iterable, config: NetemConfig) -> list[NetemChannel]:
    """Wrap the ``channel`` of each party context (e.g. ``LocalRuntime(...).contexts``) in place.

    Call it before the parties run; counters start from zero on the new channels.
    """
    out = []
    for ctx in contexts:
        ch = NetemChannel(ctx.channel, config)
        ctx.channel = ch
        out.append(ch)
    return out
