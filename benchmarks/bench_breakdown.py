"""Where one training step's time and bytes go (issue 5, suite item 2).

Per layer (forward and backward separately) and per party: compute, time blocked on the
peer, time blocked on the dealer, bytes sent and rounds; per protocol label: rounds, bytes
and time blocked on the peer; per kind of dealer material: items and fetch time; and for
every matrix product (Linear/Conv forward, weight gradient, input gradient) the bytes its
operands cost to open beside the Beaver lower bound:

    open each masked operand once, reusing a mask when the same secret is multiplied again
    (X in forward and in dW = dY^T X; W in forward and in dX = dY W; dY in dW and dX), so a
    layer costs at least 8 (|X| + |W| + |dY|) bytes per party and step.

The measured bytes of a product are 8 x the elements of the operand masks it is the first
product of the step to use (read from the dealer requests: every mask is opened exactly
once).  The step is the engine's own ``train_party``, observed through its hooks
(``ss_engine.nn.StepHooks``: the phases forward/loss/backward/update and every layer); the
parameters' updates run as concurrent tasks, so their rounds and time count in the
backward layer during which they run.

In the local runtime the dealer is in-process, in a thread of its own that prepares each
replayed step's blob ahead: party 1's dealer wait inside the step's phases is that of
one-off items; a replayed step takes its whole blob as it begins, before any phase
(``run_begin_dealer_wait_seconds``), and the dealer bytes count from the sources' totals.

    python -m benchmarks.bench_breakdown [--quick] [--out benchmarks/out]
"""
from __future__ import annotations

import os
import time

import numpy as np

from ss_engine.description import init_params
from ss_engine.job import TrainJob
from ss_engine.training import PartyState, train_party

from .common import (load_data, log, machine_info, make_runtime, shared_data, shared_params,
                     write_json, section_main)
from .profile_tools import FIELDS, LabelTimedChannel, Recorder, TimedSource

__all__ = ["breakdown", "beaver_bound", "product_table", "run"]

#: names of the parents' self rows (what a phase does outside its children)
SELF_NAMES = {"forward": "forward: between layers", "backward": "backward: between layers",
              "update": "update: the last parameters' truncation"}
MATMUL_OPS = {"matmul": None, "conv": "fwd", "conv_wgrad": "dW", "conv_dgrad": "dX"}


def _n(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape is not None else 0


def beaver_bound(shapes: dict, which: str) -> int:
    """Lower bound in bytes per party for one product of a Linear/Conv layer with the given
    input/output/weight shapes: fwd opens X and W, dW opens dY, dX reuses everything."""
    if which == "fwd":
        return 8 * (_n(shapes["in_shape"]) + _n(shapes["weight_shape"]))
    if which == "dW":
        return 8 * _n(shapes["out_shape"])
    return 0


def _which(stage: str, spec) -> str:
    if spec.op == "matmul":
        if stage == "forward":
            return "fwd"
        return "dW" if spec.transpose_left else "dX"
    return MATMUL_OPS.get(spec.op) or "elementwise"


def _operand(ref) -> str:
    """'mask (128, 784)' for an opened operand, else the material it comes from."""
    sp = ref.spec
    shape = getattr(sp, "shape", None)
    if shape is None:
        shape = (getattr(sp, "n", "?"),)
    return f"{sp.kind} {tuple(shape)}" + ("" if ref.field == "a" else f" .{ref.field}")


def product_table(rec: Recorder) -> list[dict]:
    """One row per product of the recorded step (party 0's log; both parties' are equal)."""
    seen: set[int] = set()
    rows = []
    for path, spec in rec.products:
        parts = path.split("/")
        stage, layer = parts[0], (parts[1] if len(parts) > 1 else "")
        fresh = 0
        for ref in (spec.left, spec.right):
            if ref.addr not in seen:
                fresh += rec.mask_elements.get(ref.addr, 0)
                seen.add(ref.addr)
        which = _which(stage, spec)
        row = {"stage": stage, "layer": layer or stage, "op": spec.op, "product": which,
               "left": _operand(spec.left), "right": _operand(spec.right),
               "out": list(spec.out_shape), "measured_bytes": 8 * fresh}
        shapes = rec.shapes.get(f"forward/{layer}") if layer else None
        if which in ("fwd", "dW", "dX") and shapes and shapes.get("weight_shape"):
            row["beaver_bound_bytes"] = beaver_bound(shapes, which)
        rows.append(row)
    return rows


def breakdown(model: str = "network-a", batch_size: int = 128, warm: int = 1, steps: int = 3,
              frac_bits: int = 16) -> dict:
    if warm < 1:
        raise ValueError("need at least one warm-up step")
    x, y, _, _, dataset = load_data((warm + steps) * batch_size)
    rt = make_runtime(frac_bits)
    recs = []
    for ctx in rt.contexts:
        rec = Recorder(ctx)
        ctx.channel = LabelTimedChannel(ctx.channel)
        ctx.source = TimedSource(ctx.source, rec)
        recs.append(rec)
    p0, p1 = shared_params(rt, init_params(model, 0))
    (x0, x1), (y0, y1) = shared_data(rt, x, y)
    job = TrainJob(model=model, epochs=1, batch_size=batch_size, lr=0.1, momentum=0.9)
    states = [PartyState(p0), PartyState(p1)]
    marks: list[dict] = [{}, {}]

    def on_step_of(rank: int):
        ctx, rec = rt.contexts[rank], recs[rank]

        def on_step(step, epoch, state, py):
            if step + 1 == warm:
                rec.enabled = True
                st = ctx.source.stats
                marks[rank] = {"t": time.perf_counter(), "ch": ctx.channel.stats.snapshot(),
                               "wait": dict(ctx.channel.wait_by_label),
                               "dealer": (st.dealer_bytes, st.wait_seconds)}
            elif step + 1 < warm + steps:
                rec.new_step()  # keep the product log of the last step only
            else:
                marks[rank]["t_end"] = time.perf_counter()
                st = ctx.source.stats
                marks[rank]["dealer_end"] = (st.dealer_bytes, st.wait_seconds)
        return on_step

    rt.run(train_party, (x0, y0, job, states[0], on_step_of(0), warm + steps, recs[0]),
           (x1, y1, job, states[1], on_step_of(1), warm + steps, recs[1]))
    labels = recs[0].labels
    parties = []
    for ctx, rec, mk in zip(rt.contexts, recs, marks):
        d = ctx.channel.stats.minus(mk["ch"])
        wall = (mk["t_end"] - mk["t"]) / steps
        rows = rec.rows(steps)
        for r in rows:
            r["phase"] = SELF_NAMES.get(r["phase"], r["phase"])
        # what a step does outside its phases: the run's start (a replayed run's keystream
        # fill and its dealer blob) and the loop's batch gathering
        begin_wait = (mk["dealer_end"][1] - mk["dealer"][1]) / steps - sum(r["dealer_wait"] for r in rows)
        gap = max(0.0, wall - sum(r["wall"] for r in rows))
        rows.append({**dict.fromkeys(FIELDS, 0.0), "phase": "between steps: run start, batch",
                     "wall": gap, "dealer_wait": min(gap, max(0.0, begin_wait)),
                     "compute": gap - min(gap, max(0.0, begin_wait))})
        parties.append({
            "rank": ctx.rank, "step_seconds": wall,
            "phases": rows,
            "phases_total": {f: sum(r[f] for r in rows) for f in FIELDS + ("compute",)},
            "bytes_sent_per_step": d.bytes_sent / steps, "rounds_per_step": d.rounds / steps,
            "dealer_bytes_per_step": (mk["dealer_end"][0] - mk["dealer"][0]) / steps,
            "run_begin_dealer_wait_seconds": begin_wait,
            "by_label": {k: {"rounds": v[0] / steps, "bytes": v[1] / steps,
                             "peer_wait_seconds": (ctx.channel.wait_by_label.get(k, 0.0)
                                                   - mk["wait"].get(k, 0.0)) / steps}
                         for k, v in sorted(d.by_label.items())},
            "material_by_kind": {k: {"items": v[0] / steps, "seconds": v[1] / steps}
                                 for k, v in sorted(rec.kind_stats.items())},
        })
    table = product_table(recs[0])
    mm = [r for r in table if "beaver_bound_bytes" in r]
    per_layer: dict[str, dict] = {}
    for r in mm:
        agg = per_layer.setdefault(r["layer"], {"layer": r["layer"], "measured_bytes": 0, "beaver_bound_bytes": 0})
        agg["measured_bytes"] += r["measured_bytes"]
        agg["beaver_bound_bytes"] += r["beaver_bound_bytes"]
    out = {
        "model": model, "batch_size": batch_size, "frac_bits": frac_bits, "dataset": dataset,
        "warm_steps": warm, "steps": steps, "layers": labels, "parties": parties,
        "products": table, "matmul_bytes_by_layer": list(per_layer.values()),
        "matmul_measured_bytes": sum(r["measured_bytes"] for r in mm),
        "matmul_beaver_bound_bytes": sum(r["beaver_bound_bytes"] for r in mm),
        "mask_open_bytes": 8 * sum(recs[0].mask_elements[s] for s in recs[0].step_masks),
        "total_bytes_sent_per_step": parties[0]["bytes_sent_per_step"],
    }
    return out


def plot(results: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(results), 2, figsize=(12, 0.34 * max(len(r["parties"][0]["phases"])
                                                                      for r in results) * len(results) + 1.5),
                             squeeze=False)
    for row, res in zip(axes, results):
        for ax, party in zip(row, res["parties"]):
            ph = party["phases"]
            names = [p["phase"] for p in ph]
            ypos = np.arange(len(ph))[::-1]
            left = np.zeros(len(ph))
            for key, color in (("compute", "tab:blue"), ("peer_wait", "tab:orange"), ("dealer_wait", "tab:red")):
                v = np.array([1e3 * max(0.0, p[key]) for p in ph])
                ax.barh(ypos, v, left=left, color=color, label=key.replace("_", " "))
                left += v
            ax.set_yticks(ypos, names, fontsize=7)
            ax.set_xlabel("ms per step")
            ax.set_title(f"{res['model']} batch {res['batch_size']}, party {party['rank']} "
                         f"({1e3 * party['step_seconds']:.0f} ms/step)", fontsize=9)
            ax.grid(axis="x", alpha=0.3)
        row[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(quick: bool = False, out_dir: str = "benchmarks/out",
        configs=(("network-a", 128), ("lenet", 64))) -> dict:
    warm, steps = (1, 2) if quick else (2, 5)
    results = []
    for model, bs in configs:
        m_steps = steps if model == "network-a" else max(1, steps - 2)
        log(f"breakdown: {model} batch {bs}, {warm}+{m_steps} steps")
        res = breakdown(model, bs, warm, m_steps)
        results.append(res)
        p0 = res["parties"][0]
        log(f"  {model}: {1e3 * p0['step_seconds']:.0f} ms/step, {p0['bytes_sent_per_step'] / 1e6:.2f} MB, "
            f"{p0['rounds_per_step']:.0f} rounds; matmul operands {res['matmul_measured_bytes'] / 1e6:.3f} MB "
            f"vs Beaver bound {res['matmul_beaver_bound_bytes'] / 1e6:.3f} MB")
    out = {"benchmark": "breakdown", "quick": quick, "machine": machine_info(), "results": results}
    write_json(os.path.join(out_dir, "breakdown.json"), out)
    plot(results, os.path.join(out_dir, "breakdown.png"))
    return out


def main(argv=None) -> int:
    return section_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
