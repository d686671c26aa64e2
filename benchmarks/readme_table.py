"""The README's performance table, generated from the suite's JSON files.

    python -m benchmarks.readme_table [--dir benchmarks/out] [--insert README.md]

Prints Markdown.  ``--insert FILE`` replaces the text between the lines
``<!-- perf-table:start -->`` and ``<!-- perf-table:end -->`` of FILE (which must hold both).
Sections whose JSON file is missing are left out.  The CrypTen column repeats the figures
stated in issue 5 (measured once on this machine); this suite does not run CrypTen.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

from .common import read_json

__all__ = ["load_results", "render", "insert", "START", "END"]

START, END = "<!-- perf-table:start -->", "<!-- perf-table:end -->"
FILES = ("train", "breakdown", "network", "fracbits", "scaling")


def load_results(out_dir: str) -> dict:
    res = {}
    for name in FILES:
        path = os.path.join(out_dir, f"{name}.json")
        if os.path.exists(path):
            res[name] = read_json(path)
    return res


def _sps(v: float) -> str:
    return f"{v:,.0f} samples/s"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _train_rows(train: dict) -> list[list[str]]:
    rows = []
    by_model = {r["model"]: r for r in train["results"]}
    a = by_model.get("network-a")
    if a:
        s, p = a["secure"], a["plaintext"]
        rows.append([f"network-a training, batch {a['batch_size']}",
                     f"{_sps(s['samples_per_second'])} ({s['seconds_per_step'] * 1e3:.0f} ms/step)",
                     _sps(p["samples_per_second"]), f"{a['slowdown_vs_plaintext']:.0f}x",
                     "60-90 samples/s", ">= 2,500 samples/s, within 40x",
                     _yes(s["samples_per_second"] >= 2500 and a["slowdown_vs_plaintext"] <= 40)])
        comm_ok = s["bytes_per_step"] <= 10e6 and s["rounds_per_step"] <= 120
        rows.append(["network-a communication per step and party",
                     f"{s['bytes_per_step'] / 1e6:.2f} MB, {s['rounds_per_step']:.0f} rounds", "-", "-",
                     "~85 MB, 217 rounds", "<= 10 MB, <= 120 rounds", _yes(comm_ok)])
        rows.append(["network-a dealer: wait (party 1), bytes per step",
                     f"{100 * s['dealer_wait_fraction']:.1f}% of step, "
                     f"{s['dealer_bytes_per_step'] / 1e6:.1f} MB "
                     f"({s['dealer_bytes_uncompressed_per_step'] / 1e6:.1f} MB uncompressed)", "-", "-", "-",
                     "wait < 5% of step", _yes(s["dealer_wait_fraction"] < 0.05)])
        inf = a["inference"]
        rows.append([f"network-a secure inference, batch {inf['secure']['batch_size']:,}",
                     _sps(inf["secure"]["samples_per_second"]), _sps(inf["plaintext"]["samples_per_second"]),
                     f"{inf['slowdown_vs_plaintext']:.0f}x", "~630 samples/s", ">= 10,000 samples/s",
                     _yes(inf["secure"]["samples_per_second"] >= 10_000)])
    b = by_model.get("lenet")
    if b:
        s, p = b["secure"], b["plaintext"]
        rows.append([f"lenet training, batch {b['batch_size']}",
                     f"{_sps(s['samples_per_second'])} ({s['seconds_per_step'] * 1e3:.0f} ms/step; "
                     f"{s['bytes_per_step'] / 1e6:.0f} MB, {s['rounds_per_step']:.0f} rounds)",
                     _sps(p["samples_per_second"]), f"{b['slowdown_vs_plaintext']:.0f}x", "~9 samples/s",
                     ">= 150 samples/s", _yes(s["samples_per_second"] >= 150)])
        inf = b["inference"]
        rows.append([f"lenet secure inference, batch {inf['secure']['batch_size']:,}",
                     _sps(inf["secure"]["samples_per_second"]), _sps(inf["plaintext"]["samples_per_second"]),
                     f"{inf['slowdown_vs_plaintext']:.0f}x", "-", "-", "-"])
    return rows


def _breakdown_rows(bd: dict) -> list[list[str]]:
    rows = []
    for r in bd["results"]:
        m, bound = r["matmul_measured_bytes"], r["matmul_beaver_bound_bytes"]
        rows.append([f"{r['model']} matmul operands opened per step (batch {r['batch_size']})",
                     f"{m / 1e6:.3f} MB of {r['total_bytes_sent_per_step'] / 1e6:.2f} MB",
                     "-", f"{m / bound:.2f}x bound" if bound else "-", "-",
                     f"Beaver bound {bound / 1e6:.3f} MB", _yes(m <= bound)])
    return rows


def _network_rows(net: dict) -> list[list[str]]:
    rows = []
    for res in net["results"]:
        parts = [f"{r['rtt_ms']:g} ms: {r['seconds_per_step']:.2f} s" for r in res["rows"]]
        rounds = res["rows"][0]["rounds_per_step"] if res["rows"] else 0
        pred = ", ".join(f"{r['predicted_seconds_per_step']:.2f}" for r in res["rows"])
        rtts = " / ".join(f"{r['rtt_ms']:g}" for r in res["rows"])
        bw = res["rows"][0]["bandwidth_bps"] / 1e9 if res["rows"] else 1
        rows.append([f"{res['model']} step over RTT {rtts} ms, {bw:g} Gbit/s",
                     "; ".join(parts), "-", "-", "-",
                     f"{rounds:.0f} rounds; model {pred} s", "-"])
    return rows


def _fracbits_rows(fb: dict) -> list[list[str]]:
    rs = fb["results"]
    if not rs:
        return []
    sec = " / ".join(f"{100 * r['test_accuracy']:.1f}%" for r in rs)
    plain = " / ".join(f"{100 * (r['plaintext_test_accuracy'] or 0):.1f}%" for r in rs)
    fs = "/".join(str(r["frac_bits"]) for r in rs)
    return [[f"network-a test accuracy after 1 epoch ({rs[0]['train_samples']:,} images), f = {fs}",
             sec, plain, "-", "-", "-", "-"]]


def render(res: dict) -> str:
    head = ["", "ss-engine (secure)", "plain PyTorch", "ratio", "CrypTen (issue 5)", "bar", "met"]
    rows = []
    if "train" in res:
        rows += _train_rows(res["train"])
    if "breakdown" in res:
        rows += _breakdown_rows(res["breakdown"])
    if "network" in res:
        rows += _network_rows(res["network"])
    if "fracbits" in res:
        rows += _fracbits_rows(res["fracbits"])
    machine = next((v["machine"] for v in res.values() if "machine" in v), {})
    quick = any(v.get("quick") for v in res.values())
    lines = [f"Measured {machine.get('time', '?')} at {machine.get('git', '?')} on {machine.get('cpus', '?')} cores "
             f"(load average {', '.join(f'{x:.1f}' for x in machine.get('loadavg', []))}), local runtime "
             f"(both parties and the dealer in one process); plain PyTorch float32 in the same run, "
             f"the faster of 2 and 1 threads"
             f"{'; QUICK run: few steps, small subsets' if quick else ''}. "
             f"Generated by `python -m benchmarks.run_all` and `python -m benchmarks.readme_table`.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def insert(path: str, table: str) -> None:
    with open(path) as fh:
        text = fh.read()
    pat = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pat.search(text):
        raise SystemExit(f"{path} has no {START} ... {END} block")
    with open(path, "w") as fh:
        fh.write(pat.sub(lambda _m: f"{START}\n{table}{END}", text, count=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="benchmarks/out")
    ap.add_argument("--insert", metavar="FILE", help="replace the marked block of FILE with the table")
    args = ap.parse_args(argv)
    res = load_results(args.dir)
    if not res:
        print(f"no benchmark JSON in {args.dir}; run python -m benchmarks.run_all first", file=sys.stderr)
        return 1
    table = render(res)
    print(table, end="")
    if args.insert:
        insert(args.insert, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
