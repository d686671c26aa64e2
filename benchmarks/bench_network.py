"""Step time over a simulated network between the two parties (issue 5, suite item 4).

``ss_engine.comm.netem.NetemChannel`` adds a one-way delay of RTT/2 and 1 Gbit/s
serialisation to every message between the parties of the local runtime (the dealer link
is not delayed).  For each RTT the benchmark reports the measured seconds per step of
``train_party`` beside the model

    step ~= compute + rounds * RTT/2 + bytes_sent_per_party * 8 / bandwidth

where *compute* is the step time measured without the network in the same run (all step
times are medians over the timed steps, which the load of a shared machine disturbs less) and
*rounds* is counted by the channel.  A round in which both parties send at once (every
``exchange``) costs one one-way delay; ``rounds * RTT`` (a full round trip per round, as a
request/response protocol would pay) is printed as the pessimistic bound.

    python -m benchmarks.bench_network [--quick] [--out benchmarks/out]
"""
from __future__ import annotations

import os

from ss_engine.comm.netem import NetemConfig

from .bench_train import secure_training
from .common import load_data, log, machine_info, write_json, section_main

__all__ = ["network_sweep", "run", "RTTS_MS"]

RTTS_MS = (0.1, 10.0, 50.0)
BANDWIDTH_BPS = 1e9


def network_sweep(model: str = "network-a", batch_size: int = 128, rtts_ms=RTTS_MS,
                  bandwidth_bps: float = BANDWIDTH_BPS, warm: int = 1, steps: int = 3) -> dict:
    x, y, _, _, dataset = load_data((warm + steps) * batch_size)
    base = secure_training(model, batch_size, warm, steps, data=(x, y))
    compute = base["step_seconds"]["median"]  # medians: robust to the load of a shared machine
    rows = []
    for rtt in rtts_ms:
        cfg = NetemConfig(rtt_seconds=rtt / 1e3, bandwidth_bps=bandwidth_bps)
        log(f"network: {model} batch {batch_size}, {cfg.label()}")
        r = secure_training(model, batch_size, warm, steps, data=(x, y), netem=cfg)
        rounds, nbytes = r["rounds_per_step"], r["bytes_per_step"]
        latency = rounds * cfg.one_way_seconds
        transfer = 8 * nbytes / bandwidth_bps
        rows.append({
            "rtt_ms": rtt, "bandwidth_bps": bandwidth_bps,
            "seconds_per_step": r["step_seconds"]["median"], "mean_seconds_per_step": r["seconds_per_step"],
            "samples_per_second": batch_size / r["step_seconds"]["median"],
            "rounds_per_step": rounds, "bytes_per_step": nbytes,
            "latency_term_seconds": latency, "bandwidth_term_seconds": transfer,
            "predicted_seconds_per_step": compute + latency + transfer,
            "pessimistic_seconds_per_step": compute + rounds * cfg.rtt_seconds + transfer,
            "peer_wait_fraction": r["peer_wait_fraction"],
        })
    return {"model": model, "batch_size": batch_size, "dataset": dataset, "steps": steps,
            "compute_seconds_per_step": compute, "no_network": base, "rows": rows}


def plot(results: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for res, color in zip(results, ("tab:blue", "tab:orange", "tab:green")):
        rtt = [r["rtt_ms"] for r in res["rows"]]
        ax.plot(rtt, [r["seconds_per_step"] for r in res["rows"]], "o-", color=color,
                label=f"{res['model']} b{res['batch_size']}: measured ({res['rows'][0]['rounds_per_step']:.0f} rounds)")
        ax.plot(rtt, [r["predicted_seconds_per_step"] for r in res["rows"]], "x--", color=color,
                label="compute + rounds*RTT/2 + bytes/bw")
        ax.plot(rtt, [r["pessimistic_seconds_per_step"] for r in res["rows"]], ":", color=color, alpha=0.6,
                label="compute + rounds*RTT + bytes/bw")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_yscale("log")
    ax.set_xlabel("round-trip time (ms), 1 Gbit/s")
    ax.set_ylabel("seconds per training step")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(quick: bool = False, out_dir: str = "benchmarks/out", configs=(("network-a", 128),),
        rtts_ms=RTTS_MS) -> dict:
    warm, steps = (1, 2) if quick else (2, 5)
    results = [network_sweep(m, b, rtts_ms, warm=warm, steps=steps) for m, b in configs]
    for res in results:
        for r in res["rows"]:
            log(f"  {res['model']} RTT {r['rtt_ms']:g} ms: {r['seconds_per_step']:.3f} s/step measured, "
                f"{r['predicted_seconds_per_step']:.3f} predicted ({r['rounds_per_step']:.0f} rounds)")
    out = {"benchmark": "network", "quick": quick, "machine": machine_info(), "results": results}
    write_json(os.path.join(out_dir, "network.json"), out)
    plot(results, os.path.join(out_dir, "network.png"))
    return out


def main(argv=None) -> int:
    return section_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
