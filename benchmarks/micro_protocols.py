"""Microbenchmark of the protocols in the local runtime (issue: secret-sharing core).

For each protocol: seconds per call and per element, bytes sent per party, rounds, and
dealer bytes per call against the uncompressed size.  Run:

    python -m benchmarks.micro_protocols --json-out benchmarks/out/micro_protocols.json
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from ss_engine import protocols as P
from ss_engine.simulate import LocalRuntime


def _measure(name, fn, args_fn, elements, repeat=5):
    rt = LocalRuntime()
    args = args_fn(rt)
    rt.run_same(fn, *args)  # warm-up (Numba caches, allocators)
    c0, d1 = rt.contexts[0].channel.stats.snapshot(), rt.contexts[1].source.stats
    d1_bytes, d_unc = d1.dealer_bytes, rt.contexts[0].source.stats.uncompressed_bytes + d1.uncompressed_bytes
    t0 = time.perf_counter()
    for _ in range(repeat):
        rt.run_same(fn, *args)
    dt = (time.perf_counter() - t0) / repeat
    ch = rt.contexts[0].channel.stats.minus(c0)
    dealer = (rt.contexts[1].source.stats.dealer_bytes - d1_bytes) / repeat
    unc = (rt.contexts[0].source.stats.uncompressed_bytes + rt.contexts[1].source.stats.uncompressed_bytes - d_unc) / repeat
    return {"protocol": name, "elements": elements, "seconds_per_call": dt,
            "ns_per_element": 1e9 * dt / elements, "bytes_sent_per_party": ch.bytes_sent / repeat,
            "bytes_per_element": ch.bytes_sent / repeat / elements, "rounds": ch.rounds / repeat,
            "dealer_bytes": dealer, "dealer_bytes_uncompressed": unc,
            "dealer_compression": unc / dealer if dealer else None}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    n = 128 * 128
    vec = lambda rt: (rt.share_float(rng.normal(size=n)),)  # noqa: E731
    pair = lambda rt: (rt.share_float(rng.normal(size=n)), rt.share_float(rng.normal(size=n)))  # noqa: E731
    mm = lambda rt: (rt.share_float(rng.normal(size=(128, 784))), rt.share_float(rng.normal(size=(784, 128)) * 0.05))  # noqa: E731
    rows = [
        _measure("matmul_ss 128x784@784x128", P.matmul_ss, mm, 128 * 128, args.repeat),
        _measure("mul_ss", P.mul_ss, pair, n, args.repeat),
        _measure("trunc_s", lambda c, x: P.trunc_s(c, x, 16), vec, n, args.repeat),
        _measure("drelu_s (64-bit)", P.drelu_s, vec, n, args.repeat),
        _measure("relu_s (64-bit)", P.relu_s, vec, n, args.repeat),
        _measure("max_s 128x10", lambda c, x: P.max_s(c, x.reshape(128, 10), axis=1),
                 lambda rt: (rt.share_float(rng.normal(size=1280)),), 1280, args.repeat),
        _measure("softmax_s 128x10", lambda c, x: P.softmax_s(c, x.reshape(128, 10)),
                 lambda rt: (rt.share_float(rng.normal(size=1280)),), 1280, args.repeat),
    ]
    for r in rows:
        comp = f"{r['dealer_compression']:.1f}x" if r["dealer_compression"] else "-"
        print(f"{r['protocol']:28s} {1000 * r['seconds_per_call']:8.2f} ms  {r['ns_per_element']:8.0f} ns/el  "
              f"{r['bytes_per_element']:7.1f} B/el  {r['rounds']:4.0f} rounds  dealer {r['dealer_bytes'] / 1e3:8.1f} kB "
              f"(uncompressed {r['dealer_bytes_uncompressed'] / 1e3:8.1f} kB, {comp})")
    out = {"machine": {"cpus": os.cpu_count()}, "protocols": rows}
    if args.json_out:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
        with open(args.json_out, "w") as fh:
            json.dump(out, fh, indent=2)
    return out


if __name__ == "__main__":
    main()
