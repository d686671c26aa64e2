"""Fuzz the live servers (and the dealer) with random and mutated messages.

    python -m benchmarks.deploy_fuzz [--count 10000] [--seed 0] [--json-out FILE]

Starts dealer + server 0 + server 1 on free loopback ports, trains a small *victim* job as
client "client", then sends ``count`` messages as another authorised client "fuzzer":
valid messages of every type with fields replaced by random values, dropped or added
fields, wrong dtypes/shapes/frame counts, flipped and truncated bytes, random frames.
Every message must be answered (no hang: 5 s each), no process may die, and afterwards the
victim job's model shares must be unchanged and a fresh request must work.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time

import msgpack
import numpy as np
import zmq

from ss_engine.net.keys import load_keypair, load_public_key, public_path
from ss_engine.net.wire import PROTOCOL_VERSION, WireCaps, decode_message
from ss_engine.net.zmq_channel import CurveContext
from ss_engine.preprocessing import Addr, ItemRef, MaskSpec, MaterialPlan, ProductSpec, TruncSpec

__all__ = ["run_fuzz", "fuzz_messages", "main"]

_CAPS = WireCaps(max_arrays=10_001, max_elements=1 << 26, max_total_bytes=1 << 32,
                 max_header_bytes=4 << 20, max_container=1 << 16)
DTYPES = ["int64", "uint64", "int32", "uint8", "float64", "object", "<i8", "", "int64\x00"]


def _rand_value(rng: random.Random, depth: int = 0):
    makers = [
        lambda: None, lambda: True, lambda: rng.randint(-2**63, 2**64 - 1),
        lambda: rng.choice([0, 1, -1, 2**31, 2**62]),
        lambda: rng.random() * 1e300 * rng.choice([1, -1]), lambda: float("nan"),
        lambda: "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(0, 40))),
        lambda: rng.randbytes(rng.randrange(0, 40)), lambda: "x" * rng.choice([1, 65, 300, 5000]),
        lambda: {"kind": rng.choice(["mask", "product", "cmp", "trunc"]), "shape": [rng.randint(-5, 10**9)]},
        lambda: [_rand_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))],
        lambda: {str(_rand_value(rng, 3))[:8]: _rand_value(rng, depth + 1)
                 for _ in range(rng.randrange(0, 4))},
    ]
    return makers[rng.randrange(len(makers) if depth < 2 else len(makers) - 2)]()


def _nonce(rng: random.Random):
    return rng.choice([[rng.randbytes(16), rng.randbytes(16)], [rng.randbytes(16)], rng.randbytes(32),
                       [rng.randbytes(15), rng.randbytes(16)], [b"", b""], None])


def _templates(victim: str, rng: random.Random) -> list:
    job = rng.choice([victim, "fz-" + str(rng.randrange(8)), "", "nojob"])
    x = np.zeros((rng.randrange(1, 4), 784), np.int64)
    return [
        ({"type": "ping"}, []),
        ({"type": "create", "job": job, "owners": rng.choice([[], ["fuzzer"], ["client"], ["nobody"],
                                                               ["fuzzer", "fuzzer"], [3]])}, []),
        ({"type": "jobs"}, []),
        ({"type": "upload", "job": job, "name": rng.choice(["data/a/x", "data/a/y", "param/0.weight",
                                                            "input/x"]),
          "offset": 0, "rows": 3, "row_shape": [784]}, [x]),
        ({"type": "upload_status", "job": job}, []),
        ({"type": "submit", "job": job, "kind": "train", "train": {"batch_size": 2}, "frac_bits": 16,
          "parts": ["a"], "model_job": "", "nonce": _nonce(rng)}, []),
        ({"type": "submit", "job": job, "kind": "predict", "train": {}, "frac_bits": 16, "parts": [],
          "model_job": victim, "nonce": _nonce(rng)}, []),
        ({"type": "status", "job": job, "since": 0}, []),
        ({"type": "fetch", "job": job}, []),
        ({"type": "delete", "job": job}, []),
        ({"type": "session_start", "job": job, "frac_bits": 16, "nonce": _nonce(rng), "idle": 5.0}, []),
        ({"type": "session_ops", "job": job, "seq": 0, "ops": [["share", 1, [], {"a": 0}],
                                                             ["relu", 2, [1], {}]],
          "reveal": [2], "free": [1]}, [np.zeros((3,), np.int64)]),
        ({"type": "session_close", "job": job}, []),
    ]


def _encode(h: dict, arrays: list) -> list:
    h = dict(h)
    h.setdefault("job", "")
    h["v"] = PROTOCOL_VERSION
    h["arrays"] = [[a.dtype.name, list(a.shape)] for a in arrays]
    return [msgpack.packb(h, use_bin_type=True, default=str)] + [a.tobytes() for a in arrays]


def fuzz_messages(victim: str, rng: random.Random):
    """An endless stream of hostile messages (lists of byte frames)."""
    while True:
        h, arrays = rng.choice(_templates(victim, rng))
        h = {**h, "rid": rng.randrange(1, 2**31)}
        op = rng.randrange(12)
        if op == 0:      # replace a field by a random value
            h[rng.choice(list(h))] = _rand_value(rng)
        elif op == 1:    # drop a field
            h.pop(rng.choice(list(h)))
        elif op == 2:    # add a field
            h[rng.choice(["x", "arrays", "v", "rid", "names", "seq"])] = _rand_value(rng)
        elif op == 3:    # wrong descriptor dtype / shape
            frames = _encode(h, arrays)
            hh = msgpack.unpackb(frames[0], raw=False)
            hh["arrays"] = [[rng.choice(DTYPES), [rng.choice([-1, 0, 3, 784, 2**40, True])
                                                   for _ in range(rng.randrange(0, 8))]]
                            for _ in range(rng.randrange(0, 3))]
            yield [msgpack.packb(hh, use_bin_type=True)] + frames[1:]
            continue
        elif op == 4:    # payload of another dtype/shape
            arrays = [np.zeros(rng.choice([(0,), (1, 783), (2, 784, 1), (5,)]),
                               rng.choice([np.int64, np.uint8, np.int32]))]
        frames = _encode(h, arrays)
        if op == 5:      # flip header bytes
            b = bytearray(frames[0])
            for _ in range(rng.randrange(1, 4)):
                b[rng.randrange(len(b))] ^= rng.randrange(1, 256)
            frames[0] = bytes(b)
        elif op == 6 and len(frames) > 1:   # truncate / extend the payload
            frames[1] = frames[1][:rng.randrange(len(frames[1]))] if rng.random() < .5 \
                else frames[1] + rng.randbytes(rng.randrange(1, 9))
        elif op == 7:    # drop or add frames
            if len(frames) > 1 and rng.random() < .5:
                frames.pop()
            else:
                frames.append(rng.randbytes(rng.randrange(0, 64)))
        elif op == 8:    # pure noise
            frames = [rng.randbytes(rng.randrange(0, 200)) for _ in range(rng.randrange(1, 4))]
        elif op == 9:    # truncated header
            frames[0] = frames[0][:rng.randrange(len(frames[0]))]
        elif op == 10:   # wrong version
            hh = msgpack.unpackb(frames[0], raw=False)
            hh["v"] = rng.choice([0, 2, -1, "1", 1.0, None])
            frames[0] = msgpack.packb(hh, use_bin_type=True)
        yield frames


def _dealer_messages(rng: random.Random):
    m = MaskSpec((4, 5))
    product = ProductSpec("matmul", ItemRef(Addr(1, 0, 0), m, "a"), ItemRef(Addr(2, 0, 0), MaskSpec((5, 2)), "a"),
                          (4, 2))
    good = [m.to_wire(), TruncSpec((3,), 16).to_wire(), product.to_wire()]
    plan = MaterialPlan([m, TruncSpec((3,), 16)]).to_wire()
    while True:
        t = rng.choice(["open", "get", "plan", "runs", "release", "nope"])
        h = {"type": t, "job": rng.choice(["dz", "dz2", ""]), "rid": rng.randrange(1, 2**31),
             "nonce": rng.choice([b"z" * 32, rng.randbytes(32), rng.randbytes(31), "x" * 32]),
             "digest": rng.choice(["d" * 32, "", "x" * 65, 7]),
             "addr": rng.choice([[0, 0, 0], [5, 1, 2], [-1, 0, 0], [2**63, 0, 0], [1, 2]]),
             "spec": rng.choice(good + [_rand_value(rng)]),
             "plan": rng.choice([plan, {"items": good, "digest": b"x" * 16}, _rand_value(rng)]),
             "at": rng.randrange(0, 100),
             "runs": [[rng.randrange(-2, 200), rng.choice([plan["digest"], rng.randbytes(16), 3])]
                      for _ in range(rng.randrange(0, 5))]}
        if rng.random() < 0.3:
            h[rng.choice(list(h))] = _rand_value(rng)
        frames = _encode(h, [])
        if rng.random() < 0.2:
            b = bytearray(frames[0])
            b[rng.randrange(len(b))] ^= 0xFF
            frames[0] = bytes(b)
        yield frames


def _socket(dep, me: str, server_key: str, endpoint: str):
    keys = dep.config.path(dep.config.keys_dir)
    curve = CurveContext(load_keypair(keys, me))
    s = curve.client_socket(zmq.DEALER, load_public_key(public_path(keys, server_key)), caps=_CAPS)
    s.connect(endpoint)
    return curve, s


def run_fuzz(dep, victim: str, count: int, seed: int = 0, dealer_count: int = 0,
             reply_timeout: float = 5.0) -> dict:
    """Send ``count`` hostile messages to the servers (alternating) and ``dealer_count`` to
    the dealer (as server 1, whose key the dealer accepts); returns counts."""
    rng = random.Random(seed)
    socks = [_socket(dep, "fuzzer", dep.config.servers[r].key, dep.config.servers[r].client) for r in (0, 1)]
    stats = {"sent": 0, "answered": 0, "errors": 0, "hangs": 0, "bytes_sent": 0}
    t0 = time.perf_counter()
    try:
        for i, frames in zip(range(count), fuzz_messages(victim, rng)):
            _, s = socks[i % 2]
            _send_one(s, frames, stats, reply_timeout)
        if dealer_count:
            curve, s = _socket(dep, dep.config.servers[1].key, dep.config.dealer.key, dep.config.dealer.connect)
            socks.append((curve, s))
            for _, frames in zip(range(dealer_count), _dealer_messages(rng)):
                _send_one(s, frames, stats, reply_timeout, replies_optional=True)
    finally:
        for curve, s in socks:
            s.close(linger=0)
            curve.close()
    stats["seconds"] = time.perf_counter() - t0
    stats["messages_per_second"] = stats["sent"] / stats["seconds"]
    return stats


def _send_one(s, frames, stats, timeout, replies_optional=False) -> None:
    s.send_multipart(frames)
    stats["sent"] += 1
    stats["bytes_sent"] += sum(len(f) for f in frames)
    # the dealer does not answer well-formed one-way messages (schedule/consumed)
    wait = 0.01 if replies_optional else timeout
    if s.poll(int(wait * 1000)):
        while s.poll(0):
            got = s.recv_multipart()
            stats["answered"] += 1
            try:
                h, _ = decode_message(got, _CAPS)
                stats["errors"] += h["type"] == "error"
            except Exception:  # noqa: BLE001 - a reply that does not decode is a finding
                stats.setdefault("undecodable_replies", 0)
                stats["undecodable_replies"] += 1
    elif not replies_optional:
        stats["hangs"] += 1


def main(argv=None) -> int:
    from client.session import ClientSession
    from client.train import train_remote
    from ss_engine.request import TrainRequest
    from ss_engine.deploy.launch import launch_local
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--dealer-count", type=int, default=2_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        with launch_local(root=root, clients=("client", "fuzzer")) as dep:
            r = train_remote(dep.config, TrainRequest.build(
                dataset="mnist-small", train_limit=64, test_limit=10, batch_size=32,
                secure_eval=0, progress=False), timeout=120, keep_job=True)
            with ClientSession(dep.config) as s:
                before = s.fetch(r["job"])
            stats = run_fuzz(dep, r["job"], args.count, args.seed, args.dealer_count)
            alive = {n: h.alive() for n, h in dep.handles.items()}
            with ClientSession(dep.config) as s:
                after = s.fetch(r["job"])
                pong = s.ping()
            intact = all(np.array_equal(before[p][k], after[p][k]) for p in (0, 1) for k in before[p])
    stats.update({"processes_alive": alive, "victim_intact": intact, "ping_after": len(pong) == 2})
    print(json.dumps(stats, indent=2))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(stats, f, indent=2)
    ok = stats["hangs"] == 0 and all(alive.values()) and intact
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
