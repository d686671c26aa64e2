"""``RemoteSession``: the same handles on a deployment's two servers and dealer.

The caller is the session's *trainer* (a client key listed in the config's ``clients``):
it creates a job of kind "session" on both servers (each returns half of the instance
nonce), starts it with both halves, and waits until both runners hold it (their peer
channel and dealer link open).  Every batch goes to both servers with its sequence
number, each server receiving only its own shares; the servers check it, agree on it in
one round and run it (``servers.session``); each replies with its shares of the revealed
values, which only this client adds.  ``close()`` ends the session on both servers (they
forget every value, the dealer the instance's keys) and deletes the job.

Costs: every batch is one request to each server (sent to both before waiting) and one
agreement round between the servers on top of the ops' own rounds.
"""
from __future__ import annotations

import os
import time

import numpy as np

from ..comm.channel import ChannelTimeout
from ..config import EngineConfig, FixedPointConfig
from ..deploy.config import DeployConfig, load_config
from ..deploy.protocol import SESSION_IDLE
from ..dispatch import OpError, SessionLimits
from ..net.keys import load_keypair, load_public_key, public_path
from ..net.wire import WireCaps
from ..net.zmq_channel import CurveContext, RpcClient, RpcError
from .core import Session, SessionFailed, check_seed, input_prg

__all__ = ["RemoteSession"]

_REPLY_CAPS = WireCaps(max_arrays=10_001, max_elements=1 << 26, max_total_bytes=1 << 32,
                       max_header_bytes=4 << 20, max_container=1 << 16)


class RemoteSession(Session):
    """A session on the servers of ``config`` (a DeployConfig or its file), as client
    ``client``: ``with sse.RemoteSession("deploy.toml") as s: ...``.

    ``idle``: seconds the servers keep the session without a batch; ``timeout``: seconds
    to wait for a batch's replies; ``start_timeout``: for both runners to take the session
    (a runner busy with a training job takes it when that job ends).  ``seed`` (16 bytes,
    tests only, and only where the dealer has ``allow_test_seed``) fixes the instance's
    keys and the sharing, so a seeded remote session equals ``LocalSession(seed=...)``
    bit for bit.
    """

    def __init__(self, config, *, client: str = "client", frac_bits: int = 16,
                 seed: bytes | None = None, idle: float = SESSION_IDLE, timeout: float = 300.0,
                 start_timeout: float = 120.0):
        cfg = config if isinstance(config, DeployConfig) else load_config(config)
        engine = EngineConfig(fixed=FixedPointConfig(frac_bits=frac_bits))
        super().__init__(engine, input_prg(check_seed(seed)), SessionLimits())
        keys = cfg.path(cfg.keys_dir)
        self._curve = CurveContext(load_keypair(keys, client))
        self._rpc = [RpcClient(self._curve, srv.client, load_public_key(public_path(keys, srv.key)),
                               timeout=timeout, caps=_REPLY_CAPS) for srv in cfg.servers]
        self.job = f"session-{time.strftime('%Y%m%d%H%M%S')}-{os.urandom(4).hex()}"
        self._made: list[RpcClient] = []
        try:
            halves = []
            for rpc in self._rpc:
                h, _ = rpc.request({"type": "create", "job": self.job, "owners": []})
                self._made.append(rpc)
                halves.append(h["nonce_part"])
            start = {"type": "session_start", "job": self.job, "frac_bits": int(frac_bits),
                     "nonce": halves, "idle": float(idle)}
            if seed is not None:
                start["test_seed"] = seed
            digests = [h["digest"] for h, _ in self._both(start)]
            if digests[0] != digests[1]:
                raise SessionFailed("the servers hold different session settings")
            self._wait_running(start_timeout)
        except BaseException:
            self._shutdown()
            raise

    def _both(self, header: dict, arrays=((), ())) -> list:
        """Send to both servers, then wait for both (so neither waits for the other's copy)."""
        rids = [rpc.send(header, a) for rpc, a in zip(self._rpc, arrays)]
        return [rpc.receive(rid, what=header["type"]) for rpc, rid in zip(self._rpc, rids)]

    def _wait_running(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while True:
            states = [h for h, _ in self._both({"type": "status", "job": self.job, "since": 0})]
            if all(h["state"] == "running" for h in states):
                return
            bad = [f"server {i}: {h['state']} ({h['message']})" for i, h in enumerate(states)
                   if h["state"] in ("failed", "done")]
            if bad:
                raise SessionFailed("the session did not start: " + "; ".join(bad))
            if time.monotonic() > deadline:
                raise SessionFailed(f"the servers did not open the session within {limit:.0f} s: " +
                                    "; ".join(f"server {i}: {h['state']} ({h['message']})"
                                              for i, h in enumerate(states)))
            time.sleep(0.05)

    def _execute(self, header: dict, arrays0: list, arrays1: list) -> tuple[list, list]:
        msg = {"type": "session_ops", "job": self.job, **header}
        rids = [rpc.send(msg, a) for rpc, a in zip(self._rpc, (arrays0, arrays1))]
        got, errors = [], []
        for rpc, rid in zip(self._rpc, rids):
            # once a server says the session ended, the other has little left to say
            wait = 5.0 if any("session ended" in e for e in errors) else None
            try:
                h, arrays = rpc.receive(rid, wait, what="session_ops")
                if len(h.get("reveal", ())) != len(arrays) or len(arrays) != len(header["reveal"]):
                    raise SessionFailed(f"{rpc.endpoint}: a reply that does not match the batch")
                got.append([(np.array(a), int(f)) for a, (f, _) in zip(arrays, h["reveal"])])
            except RpcError as exc:
                errors.append(str(exc))
            except ChannelTimeout as exc:
                errors.append(f"session ended: {exc}")
        if errors:
            if all("session op refused" in e for e in errors):
                raise OpError(errors[0].split("session op refused", 1)[1].lstrip(": "))
            raise SessionFailed("; ".join(errors))
        return got[0], got[1]

    def stats(self) -> dict:
        """Each server's peer-channel counters for this session (they include the one
        agreement round per batch)."""
        return {f"server{i}": h.get("channel", {}) for i, (h, _) in
                enumerate(self._both({"type": "status", "job": self.job, "since": 0}))}

    def _shutdown(self) -> None:
        try:
            if len(self._made) == 2:       # close (the values go), then delete the job record
                rids = [rpc.send({"type": "session_close", "job": self.job}) for rpc in self._rpc]
                for rpc, rid in zip(self._rpc, rids):
                    try:
                        rpc.receive(rid, timeout=30.0, what="session_close")
                    except (RpcError, ChannelTimeout):
                        pass
            for rpc in self._made:
                try:
                    rpc.request({"type": "delete", "job": self.job}, timeout=30.0)
                except (RpcError, ChannelTimeout):
                    pass
        finally:
            for rpc in self._rpc:
                rpc.close()
            self._curve.close()
