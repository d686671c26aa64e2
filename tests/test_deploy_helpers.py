"""Shared helpers of the deployment tests (no tests here): a live three-process deployment,
and the local-runtime reference a remote run must equal bit for bit."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import zmq

from ss_engine.net.keys import ensure_keypair, load_keypair, load_public_key, public_path
from ss_engine.net.wire import WireCaps, decode_message
from ss_engine.net.zmq_channel import CurveContext
from ss_engine.config import EngineConfig, FixedPointConfig
from ss_engine.deploy.launch import launch_local
from ss_engine.encoding import encode
from ss_engine.local_train import load_preprocessed
from ss_engine.description import init_params
from ss_engine.owner import encode_images, encode_labels, share_arrays
from ss_engine.simulate import LocalRuntime
from ss_engine.job import TrainJob
from ss_engine.training import PartyState, train_party

SEED = b"e2e-test-seed-16"
REPLY_CAPS = WireCaps(max_arrays=10_001, max_elements=1 << 26, max_total_bytes=1 << 32,
                      max_header_bytes=4 << 20, max_container=1 << 16)


def start(root, **overrides):
    """dealer + server0 + server1 on free loopback ports (the caller must .stop() it)."""
    kw = dict(dealer_allow_test_seed=True, clients=("client", "fuzzer"), checkpoint_every=3,
              peer_timeout=10.0, dealer_timeout=20.0, peer_wait_limit=120.0)
    kw.update(overrides)
    return launch_local(root=root, **kw)


def local_reference(n: int, batch_size: int, epochs: int = 1, loss_every: int = 0,
                    seed: bytes = SEED, with_stats: bool = False, **job_settings):
    """The local runtime's model (ring values) for the seeds train_remote(test_seed=seed) uses
    (and, ``with_stats``, the runtime's per-party channel and dealer counts; ``job_settings``:
    further ``TrainJob`` fields, e.g. the optimizer)."""
    fixed = FixedPointConfig(frac_bits=16)
    xtr, ytr, _, _ = load_preprocessed("mnist-small", n, 10)
    rt = LocalRuntime(EngineConfig(fixed=fixed), seed=seed)
    init = init_params("network-a", 0)
    p0, p1 = share_arrays({k: encode(v, fixed) for k, v in init.items()}, rt._input_prg)
    x0, x1 = rt.share_ring(encode_images(xtr, fixed))
    y0, y1 = rt.share_ring(encode_labels(ytr, fixed))
    job = TrainJob(batch_size=batch_size, epochs=epochs, loss_every=loss_every, **job_settings)
    st = [PartyState(p0), PartyState(p1)]
    rt.run(train_party, (x0, y0, job, st[0], None), (x1, y1, job, st[1], None))
    model = {k: st[0].params[k] + st[1].params[k] for k in st[0].params}
    return (model, rt.stats()) if with_stats else model


class RawClient:
    """A DEALER socket for sending arbitrary frames and reading whatever comes back."""

    def __init__(self, dep, name: str, server: int = 0):
        keys = dep.config.path(dep.config.keys_dir)
        own = ensure_keypair(keys, name) if name == "intruder" else load_keypair(keys, name)
        self.curve = CurveContext(own)
        srv = dep.config.servers[server]
        self.sock = self.curve.client_socket(zmq.DEALER, load_public_key(public_path(keys, srv.key)),
                                             caps=REPLY_CAPS)
        self.sock.connect(srv.client)

    def send(self, frames, timeout: float = 10.0):
        self.sock.send_multipart(frames)
        if not self.sock.poll(int(timeout * 1000)):
            return None
        return decode_message(self.sock.recv_multipart(copy=False), REPLY_CAPS)

    def close(self):
        self.sock.close(linger=0)
        self.curve.close()


def process_running(pid: int) -> bool:
    """Alive and not a zombie (a finished process its parent, maybe init, has not reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def ring_sum(r0: dict, r1: dict) -> dict:
    return {k: np.asarray(r0[k]) + np.asarray(r1[k]) for k in r0}
