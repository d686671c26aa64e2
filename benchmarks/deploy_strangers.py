"""Silent strangers on server 0's data port (issue 10): handshake and training time.

    python -m benchmarks.deploy_strangers [--steps 12] [--json-out F]

The attacker is a co-tenant of server 0's host: it watches ``/proc/net/tcp`` for a new
listening port of the server process (the ephemeral AES-GCM data port of a starting
session) and opens ``connections`` silent TCP connections to it at once, for every new
port, for as long as it runs (:class:`DataPortFlood`).  Measured:

* the peer channel's session handshake (``ZmqPeerChannel.open`` on both sides) with 0, 50
  and 500 silent connections (50 made before the session starts, the rest while it starts);
* a training job through the three real processes with and without the flood: wall time
  from upload to done, and the servers' own seconds per step.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["DataPortFlood", "listening_ports", "handshake_seconds", "main"]


def listening_ports(pid: int) -> set[int]:
    """TCP ports (IPv4 and IPv6) on which process ``pid`` listens, read as a co-tenant
    would: /proc/net/tcp lists every listening socket with its inode; the process's file
    descriptors name the inodes it holds."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return set()
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            f = ln.split()
            if len(f) > 9 and f[3] == "0A" and f[9] in inodes:   # 0A: LISTEN
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


class DataPortFlood:
    """Open ``connections`` silent connections to every new listening port of ``pid``
    except ``known`` (its zmq endpoints); hold them until :meth:`stop`."""

    def __init__(self, pid: int, known: set[int], connections: int = 50, host: str = "127.0.0.1"):
        self.pid, self.known, self.n, self.host = pid, set(known), int(connections), host
        self.ports_attacked: list[int] = []
        self.connections_made = 0
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="data-port-flood", daemon=True)

    def start(self) -> "DataPortFlood":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for port in sorted(listening_ports(self.pid) - self.known - set(self.ports_attacked)):
                self.ports_attacked.append(port)
                for _ in range(self.n):
                    s = socket.socket()
                    s.setblocking(False)
                    if s.connect_ex((self.host, port)) not in (0, errno.EINPROGRESS):
                        s.close()
                        break
                    self._socks.append(s)
                    self.connections_made += 1
            self._stop.wait(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for s in self._socks:
            s.close()
        self._socks.clear()


def handshake_seconds(strangers: int, before: int = 50, repeats: int = 5) -> list[float]:
    """Seconds for both sides' ``open`` with ``strangers`` silent connections to the data
    port: ``min(strangers, before)`` made before the session starts, the rest while it does."""
    from ss_engine.net.keys import generate_keypair
    from ss_engine.net.zmq_channel import CurveContext, ZmqPeerChannel
    from ss_engine.deploy.ports import free_ports
    k0, k1 = generate_keypair(), generate_keypair()
    c0, c1 = CurveContext(k0), CurveContext(k1)
    ep = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    out = []
    try:
        for _ in range(repeats):
            a, b = ZmqPeerChannel(c0, 0, ep, k1.public), ZmqPeerChannel(c1, 1, ep, k0.public)
            socks = [socket.create_connection(("127.0.0.1", a._data_port))
                     for _ in range(min(strangers, before))]

            def more():
                for _ in range(strangers - len(socks)):
                    try:
                        socks.append(socket.create_connection(("127.0.0.1", a._data_port), timeout=2))
                    except OSError:
                        return
            flood = threading.Thread(target=more)
            t0 = time.perf_counter()
            flood.start()
            th = threading.Thread(target=b.open, args=(None, 10))
            th.start()
            a.open(None, 10)
            th.join()
            out.append(time.perf_counter() - t0)
            flood.join()
            for s in socks:
                s.close()
            a.close()
            b.close()
    finally:
        c0.close()
        c1.close()
    return out


def _train_seconds(steps: int, flood: bool) -> dict:
    from client.train import train_remote
    from ss_engine.deploy.launch import launch_local
    from ss_engine.request import TrainRequest
    with tempfile.TemporaryDirectory(prefix="ss-strangers-") as root:
        dep = launch_local(root=root, checkpoint_every=1000)
        attacker = None
        try:
            if flood:
                c = dep.config
                known = {int(e.rsplit(":", 1)[1]) for e in (c.servers[0].client_endpoint, c.peer_bind)}
                attacker = DataPortFlood(dep.handles["server0"].pid, known).start()
            t0 = time.perf_counter()
            r = train_remote(dep.config, TrainRequest.build(
                dataset="mnist-small", train_limit=32 * steps, test_limit=100, batch_size=32,
                secure_eval=0, progress=False), timeout=600)
            wall = time.perf_counter() - t0
        finally:
            if attacker is not None:
                attacker.stop()
            dep.stop()
    return {"flood": flood, "steps": r["steps"], "wall_seconds": wall,
            "server_seconds_per_step": r["seconds_per_step"],
            "ports_attacked": len(attacker.ports_attacked) if attacker else 0,
            "silent_connections": attacker.connections_made if attacker else 0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.deploy_strangers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args(argv)
    res = {"load_average": os.getloadavg(),
           "handshake_seconds": {n: handshake_seconds(n) for n in (0, 50, 500)},
           "training": [_train_seconds(args.steps, f) for f in (False, True)]}
    base, attacked = res["training"]
    res["wall_ratio_flood_vs_none"] = attacked["wall_seconds"] / base["wall_seconds"]
    res["step_ratio_flood_vs_none"] = attacked["server_seconds_per_step"] / base["server_seconds_per_step"]
    text = json.dumps(res, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
