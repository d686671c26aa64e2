"""Deployment throughput: the CurveZMQ peer channel, and network-a training through the
three real processes vs the local runtime vs plaintext torch (same data, same schedule).

    python -m benchmarks.deploy_throughput [--train-limit 15360] [--dataset mnist]
                                           [--batch-size 128] [--json-out F]

The three-process figures come from the servers' own clocks; ``steady_three_processes``
leaves out the run's two warm-up steps (kernels load; the dealer learns the step's schedule),
as the local benchmarks leave out theirs.
"""
from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
import time

import numpy as np

from ss_engine.comm import memory_channel_pair
from ss_engine.net.keys import generate_keypair
from ss_engine.net.zmq_channel import CurveContext, ZmqPeerChannel

__all__ = ["channel_rates", "training_comparison", "main"]


def _pair():
    k0, k1 = generate_keypair(), generate_keypair()
    c0, c1 = CurveContext(k0), CurveContext(k1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ep = f"tcp://127.0.0.1:{port}"
    a, b = ZmqPeerChannel(c0, 0, ep, k1.public), ZmqPeerChannel(c1, 1, ep, k0.public)
    th = threading.Thread(target=b.open)
    th.start()
    a.open()
    th.join()
    return a, b, (c0, c1)


def _rounds(a, b, nbytes: int, seconds: float) -> dict:
    x = np.zeros(max(1, nbytes // 8), np.int64)
    def peer():
        while True:
            got = b.exchange([x])
            if got[0].size == 1 and got[0][0] == -1:
                return
    th = threading.Thread(target=peer)
    th.start()
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < seconds:
        a.exchange([x])
        n += 1
    dt = time.perf_counter() - t0
    a.exchange([np.array([-1], np.int64)])
    th.join()
    return {"payload_bytes": int(x.nbytes), "rounds_per_second": n / dt,
            "megabytes_per_second_each_way": n * x.nbytes / dt / 1e6}


def channel_rates(seconds: float = 2.0) -> dict:
    a, b, ctxs = _pair()
    try:
        out = {"zmq_curve": [_rounds(a, b, nb, seconds) for nb in (8, 64 << 10, 8 << 20)],
               "wire_overhead_bytes_per_message": None}
        out["wire_overhead_bytes_per_message"] = (a.wire_bytes_sent - a.stats.bytes_sent) / max(1, a.stats.messages_sent)
    finally:
        a.close()
        b.close()
        for c in ctxs:
            c.close()
    m0, m1 = memory_channel_pair()
    out["in_memory"] = [_rounds(m0, m1, nb, seconds) for nb in (8, 8 << 20)]
    return out


def training_comparison(train_limit: int, batch_size: int, epochs: int = 1,
                        dataset: str = "mnist") -> dict:
    from client.train import train_remote
    from ss_engine.deploy.launch import launch_local
    from ss_engine.local_train import run_local_training
    from ss_engine.request import TrainRequest
    kw = dict(dataset=dataset, train_limit=train_limit, test_limit=500, batch_size=batch_size,
              epochs=epochs, secure_eval=0, progress=False)
    local = run_local_training(TrainRequest.build(compare_plaintext=True, **kw))
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        with launch_local(root=root) as dep:
            launch = time.perf_counter() - t0
            remote = train_remote(dep.config, TrainRequest.build(**kw), timeout=1800)
    dl = remote["dealer_link"]
    return {
        "model": "network-a", "dataset": dataset, "train_samples": remote["train_samples"],
        "batch_size": batch_size, "epochs": epochs,
        "samples_per_second": {"three_processes": remote["samples_per_second"],
                               "local_runtime": local["samples_per_second"],
                               "plaintext_torch": local.get("plaintext_samples_per_second")},
        "seconds_per_step": {"three_processes": remote["seconds_per_step"],
                             "local_runtime": local["seconds_per_step"]},
        # without the run's 2 warm-up steps (kernel loading; the dealer learns the schedule)
        "steady_three_processes": {"samples_per_second": remote["steady_samples_per_second"],
                                   "seconds_per_step": remote["steady_seconds_per_step"],
                                   "warmup_seconds": remote["warmup_seconds"]},
        "test_accuracy": {"three_processes": remote["test_accuracy"], "local_runtime": local["test_accuracy"],
                          "plaintext_torch": local.get("plaintext_test_accuracy")},
        "bytes_per_step": {"server_to_server_each_way": remote["bytes_per_step"],
                           "dealer_to_server1": remote["dealer_bytes_per_step"],
                           "dealer_to_server1_local_runtime_equivalent": local["dealer_bytes_per_step"],
                           "dealer_to_server0": 0},
        "rounds_per_step": remote["rounds_per_step"],
        "client_upload_bytes_per_server": remote["upload_bytes"],
        "upload_seconds": remote["upload_seconds"],
        "dealer": {"run_blobs": dl["blobs"], "item_requests": dl["requests"],
                   "plans_registered": dl["plans"], "resends": dl["resends"],
                   "server1_wait_on_dealer_seconds": dl["wait_seconds"]},
        "peer_wait_fraction": remote["peer_wait_fraction"],
        "launch_seconds": launch,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train-limit", type=int, default=15360)
    ap.add_argument("--dataset", default="mnist",
                    help="mnist (the full set, from SS_ENGINE_DATA) or mnist-small (shipped, 2,000 images)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--json-out")
    args = ap.parse_args(argv)
    out = {"channel": channel_rates(), "training": training_comparison(args.train_limit, args.batch_size,
                                                                        args.epochs, args.dataset)}
    print(json.dumps(out, indent=2))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
