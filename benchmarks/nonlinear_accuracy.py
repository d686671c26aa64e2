"""Measured error of every nonlinear function over its documented domain, and its cost.

For exp, sigmoid, log, reciprocal, division, rsqrt and softmax at f = 12, 16, 20, 24
fractional bits: a dense grid over the function's domain (uniform, or log-uniform for the
positive-domain functions) plus its ends, 0 and +-1 ulp, run in the local runtime (the
same SPMD code the processes run), against float64 numpy.  Per function and f:

* ``max_abs_ulp``: max |y - ref| in units of 2^-f over the whole grid;
* ``max_abs_ulp_small``: the same where |ref| <= 1 (exp's and the reciprocal's large
  outputs carry a relative error: their absolute error grows with them);
* ``max_rel``: max |y - ref| / |ref| where |ref| >= 1/2 (below that the result's own
  rounding, half an ulp, is already a relative error above 2^-f: the absolute figure
  is the one that says something there);
* ``rounds`` and ``bytes_per_element`` sent per party (the cost card), and the dealer's
  bytes per element to party 1.

The inputs are what the encoding holds (rounded to 2^-f), so the error is the protocol's
alone.  Run:

    python -m benchmarks.nonlinear_accuracy --json-out benchmarks/results/nonlinear_accuracy.json
"""
from __future__ import annotations

import argparse

import numpy as np

from ss_engine import protocols as P
from ss_engine.config import EngineConfig, FixedPointConfig
from ss_engine.encoding import decode
from ss_engine.protocols.exp import ExpDomain
from ss_engine.protocols.normalized import log_domain, reciprocal_domain, rsqrt_domain
from ss_engine.protocols.rounds import resolve
from ss_engine.simulate import LocalRuntime
from ss_engine.tensor import SharedTensor, ops

from .common import machine_info, write_json

FRAC_BITS = (12, 16, 20, 24)


def _grid(f: int, lo: float, hi: float, n: int, log: bool, edges=()) -> np.ndarray:
    ulp = 2.0 ** -f
    pts = np.exp(np.linspace(np.log(lo), np.log(hi), n)) if log else np.linspace(lo, hi, n)
    extra = [lo, lo + ulp, hi, hi - ulp, *edges]
    x = np.round(np.concatenate([pts, extra]) / ulp) * ulp
    return np.unique(x[(x >= lo) & (x <= hi)])


def _cases(f: int, n: int):
    """(name, inputs, reference, protocol on (ctx, *shares)) per function."""
    ulp = 2.0 ** -f
    ed = ExpDomain(f)
    x_exp = _grid(f, -40.0, ed.x_hi, n, False, [0.0, ulp, -ulp, ed.k_lo, ed.k_lo - ulp])
    x_sig = _grid(f, -50.0, 50.0, n, False, [0.0, ulp, -ulp, 1.0, -1.0])
    yield "exp", (x_exp,), np.exp(x_exp), P.exp_s
    yield "sigmoid", (x_sig,), 0.5 * (1 + np.tanh(x_sig / 2)), P.sigmoid_s
    for name, dom, fn, proto in (("log", log_domain(f), np.log, P.log_s),
                                 ("reciprocal", reciprocal_domain(f), lambda v: 1 / v, P.reciprocal_s),
                                 ("rsqrt", rsqrt_domain(f), lambda v: v ** -0.5, P.rsqrt_s)):
        x = _grid(f, dom.lo, dom.hi, n, True, [1.0, 1.0 - ulp, 1.0 + ulp])
        yield name, (x,), fn(x), proto
    # x / y for a secret y over [1/16, 2^8] and a secret x with |x / y| <= 2^8
    rng = np.random.default_rng(f)
    y = _grid(f, 2.0 ** -4, 2.0 ** 8, n, True, [1.0, 1.0 - ulp, 1.0 + ulp])
    q = rng.uniform(-256, 256, y.size)
    x = np.round(q * y / ulp) * ulp
    x = np.where(np.abs(x / y) <= 256, x, 0.0)

    def div(ctx, sx, sy):
        got = yield from ops.div(SharedTensor(ctx, sx), SharedTensor(ctx, sy), lo=2.0 ** -4, hi=2.0 ** 8)
        return (yield from resolve(ops.truncate(got))).share
    yield "div", (x, y), x / y, div
    # softmax over rows of 10 logits: spreads from 0.1 to 40, and gaps of any size
    rows = max(8, n // 10)
    z = rng.normal(size=(rows, 10)) * rng.choice([0.1, 1.0, 4.0, 16.0, 40.0], (rows, 1))
    z[0] = 0.0
    z[1, 0] += 300.0
    z = np.round(z / ulp) * ulp
    e = np.exp(z - z.max(-1, keepdims=True))
    yield "softmax", (z,), e / e.sum(-1, keepdims=True), P.softmax_s


def measure(f: int, n: int = 4000) -> list[dict]:
    out = []
    for name, xs, ref, proto in _cases(f, n):
        rt = LocalRuntime(EngineConfig(fixed=FixedPointConfig(frac_bits=f)), seed=b"nonlinear-accuracy")
        shares = [rt.share_float(x) for x in xs]
        y0, y1 = rt.run_same(proto, *shares)
        y = decode(np.asarray(y0) + np.asarray(y1), f).reshape(ref.shape)
        err = np.abs(y - ref)
        small, big = np.abs(ref) <= 1, np.abs(ref) >= 0.5
        st = rt.contexts[0].channel.stats
        out.append({
            "function": name, "frac_bits": f, "points": int(ref.size),
            "domain": [float(xs[-1].min()), float(xs[-1].max())],
            "max_abs_ulp": float(err.max() * 2.0 ** f),
            "max_abs_ulp_small": float(err[small].max() * 2.0 ** f) if small.any() else None,
            "max_rel": float((err[big] / np.abs(ref[big])).max()),
            "rounds": int(st.rounds), "bytes_per_element": st.bytes_sent / ref.size,
            "dealer_bytes_per_element": rt.contexts[1].source.stats.dealer_bytes / ref.size,
        })
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--points", type=int, default=4000, help="grid points per function")
    ap.add_argument("--frac-bits", type=int, nargs="*", default=list(FRAC_BITS))
    args = ap.parse_args(argv)
    rows = [r for f in args.frac_bits for r in measure(f, args.points)]
    print(f"{'function':11s} {'f':>3s} {'max abs (ulp)':>14s} {'|ref|<=1':>9s} {'max rel':>9s} "
          f"{'rounds':>6s} {'B/el':>7s} {'dealer B/el':>11s}")
    for r in rows:
        small = "-" if r["max_abs_ulp_small"] is None else f"{r['max_abs_ulp_small']:.2f}"
        print(f"{r['function']:11s} {r['frac_bits']:3d} {r['max_abs_ulp']:14.3g} {small:>9s} "
              f"{r['max_rel']:9.2e} {r['rounds']:6d} {r['bytes_per_element']:7.0f} "
              f"{r['dealer_bytes_per_element']:11.0f}")
    out = {"machine": machine_info(), "functions": rows}
    if args.json_out:
        write_json(args.json_out, out)
    return out


if __name__ == "__main__":
    main()
