"""Latency of the tensor library's handle ops, in LocalSession and in RemoteSession (the
dealer and two servers as local processes), beside numpy on the same values.

For each op: rounds and bytes per party (the local counters; the remote session adds one
agreement round per batch), wall seconds of ``op + reveal`` (one batch) in each session,
the caller's process CPU seconds locally, and the same op eight times in one batch
(independent ops share rounds).  Run:

    python -m benchmarks.bench_session --json-out benchmarks/results/session.json
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

import ss_engine as sse
from ss_engine.deploy.launch import launch_local

from .common import machine_info, write_json

__all__ = ["OPS", "measure", "main"]

#: name -> (shape of x, the op on handles, the same on numpy arrays)
OPS = {
    "add": ((64, 64), lambda x, y: x + y, lambda a, b: a + b),
    "mul": ((64, 64), lambda x, y: x * y, lambda a, b: a * b),
    "matmul 64x64": ((64, 64), lambda x, y: x @ y, lambda a, b: a @ b),
    "relu": ((64, 64), lambda x, y: x.relu(), lambda a, b: np.maximum(a, 0)),
    "lt": ((64, 64), lambda x, y: x < y, lambda a, b: a < b),
    "max (rows of 10)": ((64, 10), lambda x, y: x.max(axis=1), lambda a, b: a.max(1)),
    "exp": ((64, 64), lambda x, y: (x - 4.0).exp(), lambda a, b: np.exp(a - 4)),
    "sigmoid": ((64, 64), lambda x, y: x.sigmoid(), lambda a, b: 0.5 * (1 + np.tanh(a / 2))),
    "reciprocal": ((64, 64), lambda x, y: (x * x + 1).reciprocal(1, 64), lambda a, b: 1 / (a * a + 1)),
    "log": ((64, 64), lambda x, y: (x * x + 1).log(1, 64), lambda a, b: np.log(a * a + 1)),
    "x / y": ((64, 64), lambda x, y: x / (y * y + 1), lambda a, b: a / (b * b + 1)),
    "softmax (rows of 10)": ((64, 10), lambda x, y: x.softmax(), lambda a, b: np.exp(a) / np.exp(a).sum(1, keepdims=True)),
    "reveal": ((64, 64), lambda x, y: x, lambda a, b: a),
}


def _timed(fn, repeat: int) -> tuple[float, float]:
    fn()                                     # warm: kernels loaded, openings made
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat, (time.process_time() - c0) / repeat


def measure(s, repeat: int, counters=None) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for name, (shape, op, plain) in OPS.items():
        a, b = rng.normal(size=shape), rng.normal(size=(shape[1], shape[1]) if "matmul" in name else shape)
        x, y = s.share(a), s.share(b)
        s.flush()
        row = {"shape": list(shape)}
        if counters is not None:
            r0, b0 = counters()
            op(x, y).reveal()
            r1, b1 = counters()
            row.update(rounds=r1 - r0, bytes_per_party=b1 - b0)
        row["seconds"], row["cpu_seconds"] = _timed(lambda: op(x, y).reveal(), repeat)
        row["seconds_8_in_one_batch"], _ = _timed(lambda: s.reveal(*[op(x, y) for _ in range(8)]),
                                                  max(1, repeat // 2))
        row["numpy_seconds"], _ = _timed(lambda: plain(a, b), 20)
        out[name] = row
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args(argv)
    report = {"machine": machine_info(), "repeat": args.repeat}
    with sse.LocalSession() as s:
        def counters():
            st = s.stats()["party0"]["channel"]
            return st["rounds"], st["bytes_sent"]
        report["local"] = measure(s, args.repeat, counters)
    with tempfile.TemporaryDirectory(prefix="ss-engine-bench-") as root:
        with launch_local(root=root) as dep:
            t0 = time.perf_counter()
            with sse.RemoteSession(dep.config) as s:
                report["remote_open_seconds"] = time.perf_counter() - t0
                report["remote"] = measure(s, args.repeat)
    for name, row in report["local"].items():
        row["remote_seconds"] = report["remote"][name]["seconds"]
        row["remote_over_local"] = row["remote_seconds"] / row["seconds"]
        print(f"{name:<22} rounds {row['rounds']:>3}  {row['bytes_per_party']:>8} B  local "
              f"{1e3 * row['seconds']:7.2f} ms  remote {1e3 * row['remote_seconds']:7.2f} ms  "
              f"8 in a batch (local) {1e3 * row['seconds_8_in_one_batch']:7.2f} ms")
    if args.json_out:
        write_json(args.json_out, report)
    return report


if __name__ == "__main__":
    main()
