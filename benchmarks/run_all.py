"""The benchmark suite of issue 5, one command:

    python -m benchmarks.run_all --out benchmarks/out [--quick] [--only train,network]

Sections (each writes ``<out>/<name>.json`` and, where it has one, a PNG):
  train      secure vs plain-torch training and inference, network-a (b128) and lenet (b64)
  breakdown  per-layer / per-protocol time, bytes and rounds of a step; matmuls vs Beaver bound
  scaling    batch 32..512 and hidden width 64..1024 of 784-h-h-10 MLPs (log-log PNG)
  network    step time at 0.1 / 10 / 50 ms RTT and 1 Gbit/s (simulated in the channel)
  fracbits   network-a accuracy after one epoch at f = 12, 16, 20, 24 (full MNIST)
then ``report.md`` (everything), ``readme_table.md`` (the README's table) and ``run_all.json``
(machine, load, seconds per section).  ``--quick`` runs few steps on small subsets
(~2-3 minutes on an idle 2-core machine): a smoke test of the suite, not a measurement.
"""
from __future__ import annotations

import argparse
import os
import time

from . import bench_breakdown, bench_fracbits, bench_network, bench_scaling, bench_train
from .common import log, machine_info, read_json, write_json
from .readme_table import load_results, render
from .report import write_report

__all__ = ["SECTIONS", "main"]

SECTIONS = {
    "train": bench_train.run,
    "breakdown": bench_breakdown.run,
    "scaling": bench_scaling.run,
    "network": bench_network.run,
    "fracbits": bench_fracbits.run,
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/out", help="output folder (default: benchmarks/out)")
    ap.add_argument("--quick", action="store_true", help="few steps, small subsets: a smoke test")
    ap.add_argument("--only", default="", help=f"comma-separated sections out of {','.join(SECTIONS)}")
    args = ap.parse_args(argv)
    only = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}")
    os.makedirs(args.out, exist_ok=True)
    summary = {"quick": args.quick, "sections": only, "machine": machine_info(),
               "loadavg_before": [round(x, 2) for x in os.getloadavg()], "section_seconds": {}}
    t_all = time.perf_counter()
    for name in only:
        t0 = time.perf_counter()
        log(f"== {name} ==")
        SECTIONS[name](quick=args.quick, out_dir=args.out)
        summary["section_seconds"][name] = time.perf_counter() - t0
    summary["total_seconds"] = time.perf_counter() - t_all
    summary["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    path = os.path.join(args.out, "run_all.json")
    if args.only and os.path.exists(path):  # a partial re-run: keep the other sections' record
        earlier = read_json(path)
        summary["section_seconds"] = {**earlier.get("section_seconds", {}), **summary["section_seconds"]}
        summary["sections"] = sorted(set(earlier.get("sections", [])) | set(only))
    write_json(path, summary)
    report = write_report(args.out, summary)
    table = render(load_results(args.out))
    with open(os.path.join(args.out, "readme_table.md"), "w") as fh:
        fh.write(table)
    print(table, end="")
    log(f"done in {summary['total_seconds']:.0f} s: {report}, {os.path.join(args.out, 'readme_table.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
