"""The suite's Markdown report (``benchmarks/out/report.md``) from its JSON files."""
from __future__ import annotations

import os

from .readme_table import load_results, render

__all__ = ["write_report", "render_report"]


def _t(head: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out + [""]


def _ms(s: float) -> str:
    return f"{1e3 * s:.1f}"


def _train(train: dict) -> list[str]:
    out = ["## 1. Secure vs plaintext training and inference", ""]
    rows = []
    for r in train["results"]:
        s, p = r["secure"], r["plaintext"]
        rows.append([r["model"], r["batch_size"], f"{s['warm_steps']}+{s['steps']}",
                     f"{s['samples_per_second']:,.0f}", _ms(s["seconds_per_step"]),
                     _ms(s["step_seconds"]["median"]), f"{p['samples_per_second']:,.0f}",
                     _ms(p["seconds_per_step"]), f"{r['slowdown_vs_plaintext']:.0f}x",
                     f"{s['bytes_per_step'] / 1e6:.2f}", f"{s['rounds_per_step']:.0f}",
                     f"{100 * s['peer_wait_fraction'][0]:.0f}% / {100 * s['peer_wait_fraction'][1]:.0f}%",
                     f"{100 * s['dealer_wait_fraction']:.0f}%"])
    out += _t(["model", "batch", "warm+timed steps", "secure samples/s", "ms/step (mean)", "ms/step (median)",
               "torch samples/s", "torch ms/step", "slowdown", "MB/step/party", "rounds/step",
               "peer wait p0/p1", "dealer wait p1"], rows)
    rows = []
    for r in train["results"]:
        i = r["inference"]
        rows.append([r["model"], i["secure"]["batch_size"], i["secure"]["samples"],
                     f"{i['secure']['samples_per_second']:,.0f}", f"{i['plaintext']['samples_per_second']:,.0f}",
                     f"{i['slowdown_vs_plaintext']:.0f}x", f"{i['secure']['bytes_per_batch'] / 1e6:.1f}",
                     f"{i['secure']['rounds_per_batch']:.0f}"])
    out += ["Secure inference (forward + secure argmax):", ""]
    out += _t(["model", "batch", "samples", "secure samples/s", "torch samples/s", "slowdown",
               "MB/batch/party", "rounds/batch"], rows)
    return out


def _breakdown(bd: dict) -> list[str]:
    out = ["## 2. Breakdown of one training step", "",
           "Self time of each phase (a parent's row is what it does outside its children). compute = wall - peer wait - dealer wait; party 1 alone talks to the dealer "
           "(in-process here: its dealer wait is the dealer's compute). ms per step.", ""]
    for r in bd["results"]:
        p0, p1 = r["parties"]
        out += [f"### {r['model']}, batch {r['batch_size']} ({r['steps']} timed steps; "
                f"{_ms(p0['step_seconds'])} ms/step)", ""]
        rows = []
        p1_by = {b["phase"]: b for b in p1["phases"]}
        for a in p0["phases"]:
            b = p1_by.get(a["phase"], a)
            rows.append([a["phase"], _ms(a["compute"]), _ms(b["compute"]), _ms(a["peer_wait"]), _ms(b["peer_wait"]),
                         _ms(b["dealer_wait"]), f"{a['bytes_sent'] / 1e3:,.0f}", f"{a['rounds']:.0f}",
                         f"{b['dealer_bytes'] / 1e3:,.0f}"])
        t0, t1 = p0["phases_total"], p1["phases_total"]
        rows.append(["**total**", _ms(t0["compute"]), _ms(t1["compute"]), _ms(t0["peer_wait"]), _ms(t1["peer_wait"]),
                     _ms(t1["dealer_wait"]), f"{t0['bytes_sent'] / 1e3:,.0f}", f"{t0['rounds']:.0f}",
                     f"{t1['dealer_bytes'] / 1e3:,.0f}"])
        out += _t(["phase", "compute p0", "compute p1", "peer wait p0", "peer wait p1", "dealer wait p1",
                   "kB sent/party", "rounds", "dealer kB"], rows)
        out += ["Per protocol label (party 0):", ""]
        out += _t(["label", "rounds", "kB sent", "peer wait ms"],
                  [[k, f"{v['rounds']:.0f}", f"{v['bytes'] / 1e3:,.1f}", _ms(v["peer_wait_seconds"])]
                   for k, v in sorted(p0["by_label"].items(), key=lambda kv: -kv[1]["bytes"])])
        out += ["Matrix products: bytes to open their operands vs the Beaver lower bound "
                "(each operand opened once, masks reused across forward/backward):", ""]
        mm = [x for x in r["products"] if "beaver_bound_bytes" in x]
        out += _t(["layer", "product", "left", "right", "measured bytes", "Beaver bound"],
                  [[x["layer"], x["product"], x["left"], x["right"], f"{x['measured_bytes']:,}",
                    f"{x['beaver_bound_bytes']:,}"] for x in mm]
                  + [["**all matmuls**", "", "", "", f"{r['matmul_measured_bytes']:,}",
                      f"{r['matmul_beaver_bound_bytes']:,}"]])
        out += [f"All mask openings: {r['mask_open_bytes'] / 1e6:.3f} MB of "
                f"{r['total_bytes_sent_per_step'] / 1e6:.3f} MB sent per party per step; the rest is "
                f"truncation and comparison traffic."]
        out += [""]
    return out


def _scaling(sc: dict) -> list[str]:
    out = ["## 3. Scaling (784-h-h-10 MLPs)", "", "![scaling](scaling.png)", ""]
    out += _t(["batch", "h", "ms/step (median)", "samples/s", "MB/step/party", "rounds"],
              [[r["batch_size"], r["hidden"], _ms(r["seconds_per_step"]), f"{r['samples_per_second']:,.0f}",
                f"{r['bytes_per_step'] / 1e6:.2f}", f"{r['rounds_per_step']:.0f}"]
               for r in sc["batch_sweep"] + sc["width_sweep"]])
    f = sc.get("fit", {})
    out += [f"Fitted exponents: time ~ batch^{f.get('time_vs_batch_exponent', 0):.2f}, "
            f"time ~ h^{f.get('time_vs_width_exponent', 0):.2f}, bytes ~ batch^{f.get('bytes_vs_batch_exponent', 0):.2f}, "
            f"bytes ~ h^{f.get('bytes_vs_width_exponent', 0):.2f}.", ""]
    return out


def _network(net: dict) -> list[str]:
    out = ["## 4. Simulated network between the parties", "", "![network](network.png)", ""]
    for res in net["results"]:
        out += [f"{res['model']}, batch {res['batch_size']}: compute (no network, same run) "
                f"{_ms(res['compute_seconds_per_step'])} ms/step.", ""]
        out += _t(["RTT ms", "s/step measured", "rounds", "MB/party", "rounds x RTT/2 (s)", "bytes/bw (s)",
                   "predicted s", "pessimistic (rounds x RTT) s"],
                  [[f"{r['rtt_ms']:g}", f"{r['seconds_per_step']:.3f}", f"{r['rounds_per_step']:.0f}",
                    f"{r['bytes_per_step'] / 1e6:.2f}", f"{r['latency_term_seconds']:.3f}",
                    f"{r['bandwidth_term_seconds']:.3f}", f"{r['predicted_seconds_per_step']:.3f}",
                    f"{r['pessimistic_seconds_per_step']:.3f}"] for r in res["rows"]])
    return out


def _fracbits(fb: dict) -> list[str]:
    out = ["## 5. Accuracy vs fractional bits (network-a, 1 epoch)", "", "![fracbits](fracbits.png)", ""]
    out += _t(["f", "train images", "secure acc", "torch twin acc", "gap", "final loss", "catastrophic steps",
               "s/step"],
              [[r["frac_bits"], f"{r['train_samples']:,}", f"{100 * r['test_accuracy']:.2f}%",
                f"{100 * (r['plaintext_test_accuracy'] or 0):.2f}%", f"{100 * r['accuracy_gap']:+.2f} pt",
                "-" if r["final_loss"] is None else f"{r['final_loss']:.3f}", r["catastrophic_steps"],
                f"{r['seconds_per_step']:.3f}"] for r in fb["results"]])
    return out


def render_report(out_dir: str, summary: dict | None = None) -> str:
    res = load_results(out_dir)
    lines = ["# ss-engine benchmark report", ""]
    if summary:
        m = summary.get("machine", {})
        lines += [f"Run {m.get('time')} at git {m.get('git')}, {m.get('cpus')} cores, load average before "
                  f"{summary.get('loadavg_before')}, after {summary.get('loadavg_after')}"
                  f"{' (QUICK)' if summary.get('quick') else ''}. Seconds per section: "
                  + ", ".join(f"{k} {v:.0f}" for k, v in summary.get("section_seconds", {}).items()) + ".",
                  "", "The machine is shared: absolute times move with its load; ratios are measured in "
                  "the same run.", ""]
    lines += ["## Summary (README table)", "", render(res)]
    for key, fn in (("train", _train), ("breakdown", _breakdown), ("scaling", _scaling),
                    ("network", _network), ("fracbits", _fracbits)):
        if key in res:
            lines += fn(res[key])
    if "breakdown" in res:
        lines += ["![breakdown](breakdown.png)", ""]
    return "\n".join(lines)


def write_report(out_dir: str, summary: dict | None = None) -> str:
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as fh:
        fh.write(render_report(out_dir, summary))
    return path
