"""Micro-benchmarks of the kernel layer (ss_engine.kernels) against numpy and float BLAS.

    python -m benchmarks.micro_kernels --json-out FILE [--repeat N] [--cache-timing]

Ring matmul: the Numba kernel (as called, and single-threaded), numpy's int64 ``@`` (no
BLAS) and float64 BLAS ``@`` of the same shape (a lower bound no exact ring product
reaches).  Convolution lowering for the LeNet shapes: im2col, col2im and a full ring conv
forward (im2col + ring matmul) against the numpy twins.  Bit slicing for the comparison
circuit.  Step functions of comparison bits and their products with a form (the nonlinear
protocols' normalisation, Adam's over every parameter).  Times are the minimum over ``--repeat`` runs (the machine may be shared, the
minimum is the least disturbed); medians are in the JSON.  ``--cache-timing`` also times
import + first call in fresh processes with an empty and then a warm Numba cache.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Callable

import numpy as np

from ss_engine import kernels as K
from ss_engine.kernels import matmul as _mm

I64_MIN, I64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max


def _timeit(fn: Callable[[], object], repeat: int) -> dict:
    fn()  # warm-up (compilation, caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"min": min(times), "median": float(np.median(times))}


def _serial_ring_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ring_matmul forced onto the calling thread (what each party gets when both compute)."""
    a3 = np.ascontiguousarray(a)[None]
    bt3 = np.ascontiguousarray(b.T)[None]
    c = np.empty((1, a.shape[0], b.shape[1]), dtype=np.int64)
    _mm._matmul_bt_ser(a3, bt3, c)
    return c[0]


def _ring(rng: np.random.Generator, shape) -> np.ndarray:
    return rng.integers(I64_MIN, I64_MAX, size=shape, dtype=np.int64, endpoint=True)


def bench_matmul(rng, repeat: int) -> list[dict]:
    rows = []
    cases = [("fc1 forward", (128, 784), (784, 128), False),
             ("fc2 forward", (128, 128), (128, 128), False),
             ("fc1 weight grad X^T dY", (784, 128), (128, 128), True),
             ("fc3 forward", (128, 128), (128, 10), False)]
    for label, sa, sb, transposed_view in cases:
        if transposed_view:  # backprop passes X.T, a view of the (128, 784) activations
            a = _ring(rng, sa[::-1]).T
        else:
            a = _ring(rng, sa)
        b = _ring(rng, sb)
        assert np.array_equal(K.ring_matmul(a, b), a @ b)
        af, bf = a.astype(np.float64), b.astype(np.float64)
        t = {
            "numba": _timeit(lambda: K.ring_matmul(a, b), repeat),
            "numba_1thread": _timeit(lambda: _serial_ring_matmul(a, b), repeat),
            "numpy_int64": _timeit(lambda: a @ b, max(3, repeat // 4)),
            "blas_float64": _timeit(lambda: af @ bf, repeat),
        }
        rows.append({
            "group": "ring_matmul", "case": label,
            "shape": f"{sa[0]}x{sa[1]} @ {sb[0]}x{sb[1]}" + (" (a = X.T view)" if transposed_view else ""),
            "seconds": t,
            "speedup_vs_numpy": t["numpy_int64"]["min"] / t["numba"]["min"],
            "speedup_1thread_vs_numpy": t["numpy_int64"]["min"] / t["numba_1thread"]["min"],
            "slowdown_vs_blas_float64": t["numba"]["min"] / t["blas_float64"]["min"],
        })
    return rows


def bench_conv(rng, repeat: int) -> list[dict]:
    rows = []
    try:
        import torch  # optional: a float reference point only
        torch_conv = torch.nn.functional.conv2d
    except ImportError:  # pragma: no cover - torch is an optional extra
        torch = None
    cases = [("conv1 LeNet", (64, 1, 28, 28), 16, 5), ("conv2 LeNet", (64, 16, 12, 12), 16, 5)]
    for label, shape, out_ch, ksz in cases:
        x = _ring(rng, shape)
        w = _ring(rng, (out_ch, shape[1], ksz, ksz))
        wmat = w.reshape(out_ch, -1).T          # (C*k*k, O), a transposed view
        cols = K.im2col(x, ksz, ksz, 1, 0)
        dcols = _ring(rng, cols.shape)

        def conv_numba():
            return K.ring_matmul(K.im2col(x, ksz, ksz, 1, 0), wmat)

        def conv_numpy():
            return K.im2col_np(x, ksz, ksz, 1, 0) @ wmat

        assert np.array_equal(conv_numba(), conv_numpy())
        t = {
            "im2col_numba": _timeit(lambda: K.im2col(x, ksz, ksz, 1, 0), repeat),
            "im2col_numpy": _timeit(lambda: K.im2col_np(x, ksz, ksz, 1, 0), repeat),
            "col2im_numba": _timeit(lambda: K.col2im(dcols, shape, ksz, ksz, 1, 0), repeat),
            "col2im_numpy": _timeit(lambda: K.col2im_np(dcols, shape, ksz, ksz, 1, 0), repeat),
            "conv_ring_numba": _timeit(conv_numba, repeat),
            "conv_ring_numpy": _timeit(conv_numpy, max(3, repeat // 4)),
        }
        if torch is not None:
            xt = torch.from_numpy(x.astype(np.float64))
            wt = torch.from_numpy(w.astype(np.float64))
            t["conv_float64_torch"] = _timeit(lambda: torch_conv(xt, wt), repeat)
        rows.append({
            "group": "conv", "case": label,
            "shape": f"x {shape}, w ({out_ch}, {shape[1]}, {ksz}, {ksz}); cols {cols.shape}",
            "seconds": t,
            "speedup_im2col": t["im2col_numpy"]["min"] / t["im2col_numba"]["min"],
            "speedup_col2im": t["col2im_numpy"]["min"] / t["col2im_numba"]["min"],
            "speedup_conv_ring": t["conv_ring_numpy"]["min"] / t["conv_ring_numba"]["min"],
        })
    return rows


def bench_bits(rng, repeat: int) -> list[dict]:
    n, w = 100_000, 64
    v = _ring(rng, n)
    s = K.bit_slices(v, w)
    bits = K.unpack_bits(s, n)
    t = {
        "bit_slices_numba": _timeit(lambda: K.bit_slices(v, w), repeat),
        "bit_slices_numpy": _timeit(lambda: K.bit_slices_np(v, w), repeat),
        "from_bit_slices_numba": _timeit(lambda: K.from_bit_slices(s, n), repeat),
        "from_bit_slices_numpy": _timeit(lambda: K.from_bit_slices_np(s, n), repeat),
        "pack_bits_numba": _timeit(lambda: K.pack_bits(bits), repeat),
        "pack_bits_numpy": _timeit(lambda: K.pack_bits_np(bits), repeat),
        "unpack_bits_numba": _timeit(lambda: K.unpack_bits(s, n), repeat),
        "unpack_bits_numpy": _timeit(lambda: K.unpack_bits_np(s, n), repeat),
    }
    return [{
        "group": "bits", "case": "comparison circuit", "shape": f"n={n}, w={w}",
        "seconds": t,
        **{f"speedup_{op}": t[f"{op}_numpy"]["min"] / t[f"{op}_numba"]["min"]
           for op in ("bit_slices", "from_bit_slices", "pack_bits", "unpack_bits")},
    }]


def bench_steps(rng, repeat: int) -> list[dict]:
    """Step functions of comparison bits times a linear form (the nonlinear protocols'
    normalisation): the one-pass kernel against its numpy twin, which does what the
    generic linear-form product does (a temporary per bit and item)."""
    rows = []
    # Adam over network-a's first weight (11 powers of 16, m_t a truncation result), exp's
    # and the softmax's split (44 / 13 integer thresholds, a 3-term u or p)
    for case, j, t, n in (("adam fc1 (v vs 16^e)", 11, 2, 100_352), ("exp 128x10", 44, 2, 1280),
                          ("softmax 128x10", 13, 2, 1280)):
        e = rng.integers(0, 2, (j, n)).astype(np.int64)
        d, rho, pub = _ring(rng, (j,)), _ring(rng, (j, n)), _ring(rng, (n,))
        coeffs, items, prods = _ring(rng, (t, n)), _ring(rng, (t, n)), _ring(rng, (j, t, n))
        args = (e, d, rho, 7, pub, coeffs, items, prods, True)
        tm = {"step_product_numba": _timeit(lambda: K.step_product(*args), repeat),
              "step_product_numpy": _timeit(lambda: K.step_product_np(*args), repeat),
              "step_share_numba": _timeit(lambda: K.step_share(e, d, rho, 7, True), repeat),
              "step_share_numpy": _timeit(lambda: K.step_share_np(e, d, rho, 7, True), repeat)}
        rows.append({"group": "steps", "case": case, "shape": f"J={j}, T={t}, n={n}", "seconds": tm,
                     **{f"speedup_{op}": tm[f"{op}_numpy"]["min"] / tm[f"{op}_numba"]["min"]
                        for op in ("step_product", "step_share")}})
    return rows


_FIRST_CALL = """
import time, numpy as np
t0 = time.perf_counter()
from ss_engine import kernels as K
t1 = time.perf_counter()
a = np.ones((128, 784), np.int64); b = np.ones((784, 128), np.int64)
K.ring_matmul(a, b); K.ring_matmul(a[:3, :5], b[:5, :3])
x = np.ones((64, 1, 28, 28), np.int64); cols = K.im2col(x, 5, 5, 1, 0)
K.col2im(cols, x.shape, 5, 5, 1, 0); K.im2col(x[:1], 5, 5, 1, 0)
s = K.bit_slices(np.arange(100000, dtype=np.int64), 64); K.from_bit_slices(s, 100000)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def bench_cache() -> dict:
    """Import + first calls of the main kernels in fresh processes, cold then warm cache."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="numba_cache_") as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=tmp)
        for label in ("cold_cache", "warm_cache"):
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, check=True,
                                 capture_output=True, text=True)
            wall = time.perf_counter() - t0
            imp, first = (float(v) for v in res.stdout.split())
            out[label] = {"process_wall": wall, "import": imp, "first_calls": first}
    return out


def _fmt(sec: float) -> str:
    return f"{sec * 1e3:9.3f} ms"


def print_table(rows: list[dict], cache: dict | None) -> None:
    for row in rows:
        print(f"\n[{row['group']}] {row['case']}: {row['shape']}")
        for name, t in row["seconds"].items():
            print(f"  {name:24s} {_fmt(t['min'])}   (median {_fmt(t['median'])})")
        for key, val in row.items():
            if key.startswith(("speedup", "slowdown")):
                print(f"  {key:24s} {val:9.2f}x")
    if cache:
        print("\n[numba cache] import + first calls in a fresh process")
        for label, t in cache.items():
            print(f"  {label:12s} import {t['import']:.2f} s, first calls {t['first_calls']:.2f} s,"
                  f" process {t['process_wall']:.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json-out", help="write the results as JSON to this file")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per measurement")
    parser.add_argument("--cache-timing", action="store_true",
                        help="also time compilation vs cached load in fresh processes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    rows = (bench_matmul(rng, args.repeat) + bench_conv(rng, args.repeat) + bench_bits(rng, args.repeat)
            + bench_steps(rng, args.repeat))
    cache = bench_cache() if args.cache_timing else None
    print_table(rows, cache)
    report = {
        "benchmark": "micro_kernels",
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "numpy": np.__version__,
                    "numba": __import__("numba").__version__,
                    "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "kernel_runtime": dataclasses.asdict(K.runtime_info()),
        "repeat": args.repeat,
        "results": rows,
        "numba_cache": cache,
    }
    if args.json_out:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
        with open(args.json_out, "w") as fh:
            json.dump(report, fh, indent=1)
        print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
