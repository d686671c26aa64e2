"""Free loopback ports for local deployments and tests."""
from __future__ import annotations

import os
import random
import socket
import time

__all__ = ["free_ports"]


def free_ports(n: int, low: int = 20000, high: int = 32000) -> tuple[int, ...]:
    """n distinct free loopback TCP ports.

    Taken below the kernel's ephemeral range (32768+ on Linux), so a client reconnecting
    to a restarting server can never be handed the server's port as its own source port
    (a TCP self-connect would hold the port and hide the server)."""
    socks, ports = [], []
    rng = random.Random(os.getpid() ^ int(time.time() * 1000))
    try:
        for _ in range(50 * n):
            if len(ports) == n:
                break
            port = rng.randrange(low, high)
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(port)
        if len(ports) < n:
            raise OSError(f"no {n} free ports in [{low}, {high})")
        return tuple(ports)
    finally:
        for s in socks:
            s.close()
