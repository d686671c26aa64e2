"""Microbenchmark of the protocols in the local runtime (issue: secret-sharing core).

For each protocol: wall time per call (median and range over the repeats), each party's
thread CPU time per call (its own clock: steadier than wall time on a loaded machine; party
1's includes the in-process dealer, which runs on demand in its thread here), bytes sent per
party, rounds, and dealer bytes per call against the uncompressed size.  The comparison
rows run DReLU on 16,384 values under several comparator circuits
(``ProtocolConfig.cmp_block_bits`` b, ``cmp_fan_in`` g; ``preprocessing.circuits``): b = g = 2
is the classic tree (pairs local, then fan-in-2 ANDs: the circuit and costs of before,
on today's kernels), b = g = 4 the default, b = g = 8 the 3-round one.  Run:

    python -m benchmarks.micro_protocols --json-out benchmarks/out/micro_protocols.json
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from ss_engine import protocols as P
from ss_engine.config import EngineConfig, ProtocolConfig
from ss_engine.simulate import LocalRuntime

from .common import machine_info, write_json

#: (label, cmp_block_bits, cmp_fan_in) of the comparator settings measured
CIRCUITS = (("pair tree, b=2 g=2", 2, 2), ("default, b=4 g=4", 4, 4), ("b=3 g=5", 3, 5),
            ("3 rounds, b=8 g=8", 8, 8))


def _measure(name, fn, args_fn, elements, repeat=5, config: EngineConfig | None = None):
    rt = LocalRuntime(config)
    args = args_fn(rt)
    cpu: dict[int, list[float]] = {0: [], 1: []}

    def timed(ctx, *a):
        t0 = time.thread_time()
        out = yield from fn(ctx, *a)
        cpu[ctx.rank].append(time.thread_time() - t0)
        return out

    rt.run_same(fn, *args)  # warm-up (Numba caches, allocators)
    c0, d1 = rt.contexts[0].channel.stats.snapshot(), rt.contexts[1].source.stats
    d1_bytes, d_unc = d1.dealer_bytes, rt.contexts[0].source.stats.uncompressed_bytes + d1.uncompressed_bytes
    walls = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        rt.run_same(timed, *args)
        walls.append(time.perf_counter() - t0)
    dt = float(np.median(walls))
    ch = rt.contexts[0].channel.stats.minus(c0)
    dealer = (rt.contexts[1].source.stats.dealer_bytes - d1_bytes) / repeat
    unc = (rt.contexts[0].source.stats.uncompressed_bytes + rt.contexts[1].source.stats.uncompressed_bytes - d_unc) / repeat
    return {"protocol": name, "elements": elements, "seconds_per_call": dt,
            "seconds_min": min(walls), "seconds_max": max(walls),
            "cpu_seconds_per_call": [float(np.median(cpu[r])) for r in (0, 1)],
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
    logits = lambda rt: (rt.share_float(rng.normal(size=1280)),)  # noqa: E731
    rows = [
        _measure("matmul_ss 128x784@784x128", P.matmul_ss, mm, 128 * 128, args.repeat),
        _measure("mul_ss", P.mul_ss, pair, n, args.repeat),
        _measure("trunc_s", lambda c, x: P.trunc_s(c, x, 16), vec, n, args.repeat),
    ]
    for label, block, fan_in in CIRCUITS:
        cfg = EngineConfig(protocol=ProtocolConfig(cmp_block_bits=block, cmp_fan_in=fan_in))
        rows.append(_measure(f"drelu_s (64-bit) {label}", P.drelu_s, vec, n, args.repeat, cfg))
    rows += [
        _measure("relu_s (64-bit)", P.relu_s, vec, n, args.repeat),
        _measure("max_s 128x10", lambda c, x: P.max_s(c, x.reshape(128, 10), axis=1), logits, 1280,
                 args.repeat),
        _measure("max_s 128x10, and_fan_in=3", lambda c, x: P.max_s(c, x.reshape(128, 10), axis=1),
                 logits, 1280, args.repeat, EngineConfig(protocol=ProtocolConfig(and_fan_in=3))),
        _measure("softmax_s 128x10", lambda c, x: P.softmax_s(c, x.reshape(128, 10)), logits, 1280,
                 args.repeat),
    ]
    for r in rows:
        comp = f"{r['dealer_compression']:.1f}x" if r["dealer_compression"] else "-"
        cpu = "/".join(f"{1e3 * c:.2f}" for c in r["cpu_seconds_per_call"])
        print(f"{r['protocol']:38s} {1000 * r['seconds_per_call']:8.2f} ms ({1000 * r['seconds_min']:.2f}-"
              f"{1000 * r['seconds_max']:.2f})  cpu {cpu} ms  {r['bytes_per_element']:7.1f} B/el  "
              f"{r['rounds']:4.0f} rounds  dealer {r['dealer_bytes'] / 1e3:8.1f} kB "
              f"(uncompressed {r['dealer_bytes_uncompressed'] / 1e3:8.1f} kB, {comp})")
    out = {"machine": machine_info(), "protocols": rows}
    if args.json_out:
        write_json(args.json_out, out)
    return out


if __name__ == "__main__":
    main()
