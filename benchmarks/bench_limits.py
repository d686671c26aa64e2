"""The limit beside the step (issue 13, item 7): how far a training step is from the machine.

Per run, in the local runtime (two party threads, the dealer's thread):
  * wall time per step;
  * CPU time per step of each role: each party thread's clock, the dealer thread's clock,
    and the process clock (everything: the roles plus kernel worker threads and glue), so
    the roles' sum and the whole are both there;
  * fresh bytes allocated per step by each role (numpy's allocation hooks,
    ``alloc_meter``, in a separate pass so the hooks do not slow the timed steps), beside
    the bytes a party sends;
  * the *floor*: the step's own matrix products (every bilinear product the plan holds:
    two per party and one for the dealer, the same kernels on operands of the same
    shapes) and its keystream (both parties' and the dealer's fills of the plan's regions),
    each timed alone, summed, divided by the cores; and step / floor.
Through the three processes (dealer and two servers on this machine): wall time per step
from the servers' clocks and each process's CPU clock (utime + stime) per step over a
steady window of the training (read from /proc at steps 10 and 90, as the job's status
reports them: no upload, warm-up or evaluation), and split by thread: the busiest (the
step), zmq's I/O threads, the rest.  And the ``samples_per_second`` that ``python -m client.cli train --json-out``
reports over a 100-step epoch (12,800 images), ``--local`` and through the processes.

    python -m benchmarks.bench_limits [--quick] [--out benchmarks/out]
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from ss_engine.description import init_params
from ss_engine.job import TrainJob, steps_per_epoch
from ss_engine.kernels import serial_kernels
from ss_engine.preprocessing.bilinear import apply_bilinear
from ss_engine.preprocessing.expand import DealerCore
from ss_engine.preprocessing.specs import ProductSpec
from ss_engine.prg import CounterStream
from ss_engine.training import PartyState, step_key, train_party

from .alloc_meter import AllocationMeter
from .common import (load_data, log, machine_info, make_runtime, section_main, shared_data,
                     shared_params, summary_stats, write_json)

__all__ = ["local_limits", "process_limits", "cli_epoch", "floor_of", "run"]

MATMUL_OPS = ("matmul", "conv", "conv_wgrad", "conv_dgrad")


def _thread_cpu(thread: threading.Thread | None) -> float:
    if thread is None or thread.ident is None or not thread.is_alive():
        return 0.0
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (OSError, ProcessLookupError):
        return 0.0


def _best(fn, reps: int) -> float:
    fn()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def floor_of(plan, cores: int | None = None, reps: int = 5) -> dict:
    """The step's own matrix products and keystream, each timed alone with the engine's
    (serial) kernels, and their sum divided by the cores."""
    rng = np.random.default_rng(0)
    mm = 0.0
    products = 0
    for it in plan.items:
        spec = it.spec
        if not isinstance(spec, ProductSpec) or spec.op not in MATMUL_OPS:
            continue
        a = rng.integers(-2**62, 2**62, spec.left.spec.shape)
        b = rng.integers(-2**62, 2**62, spec.right.spec.shape)
        t = _best(lambda: apply_bilinear(spec.op, a, b, spec.transpose_left, spec.transpose_right,
                                         spec.conv), reps)
        mm += 5 * t   # two per party (op(E, B_p), op(A_p, F)), one for the dealer (op(A, B))
        products += 1
    stream = CounterStream(bytes(16))
    ks = 0.0
    for nbytes in (plan.own_bytes(0), plan.own_bytes(1), plan.own_bytes(0) + plan.own_bytes(1)):
        buf = np.empty(nbytes + 16, np.uint8)
        ks += _best(lambda: stream.fill(1 << 64, buf, 0, nbytes), reps)
    cores = cores or os.cpu_count() or 1
    return {"kernels": "serial", "matmul_seconds": mm, "bilinear_products": products, "keystream_seconds": ks,
            "keystream_bytes": plan.own_bytes(0) * 2 + plan.own_bytes(1) * 2, "cores": cores,
            "floor_seconds": (mm + ks) / cores}


class _MeteredCore:
    """The dealer core, counting the allocations of the thread that generates runs."""

    def __init__(self, core: DealerCore, meter: AllocationMeter):
        self._core, self._meter = core, meter
        self.thread_ids: set[int] = set()

    def step(self, *args, **kwargs):
        self._meter.install()
        self.thread_ids.add(threading.get_ident())
        return self._core.step(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._core, name)


def local_limits(model: str = "network-a", batch_size: int = 128, warm: int = 3, steps: int = 20,
                 metered: int = 3) -> dict:
    """The local runtime's figures (module doc) over ``steps`` timed steps after ``warm``;
    allocations over ``metered`` more steps."""
    total = warm + steps + metered + 1
    x, y, _, _, dataset = load_data(total * batch_size)
    rt = make_runtime()
    p0, p1 = shared_params(rt, init_params(model, 0))
    (x0, x1), (y0, y1) = shared_data(rt, x, y)
    spe = steps_per_epoch(len(x), batch_size)
    job = TrainJob(model=model, epochs=max(1, math.ceil(total / spe)), batch_size=batch_size,
                   lr=0.1, momentum=0.9)
    states = [PartyState(p0), PartyState(p1)]
    meter = AllocationMeter.shared()
    marks: dict[str, list] = {"wall": [], "cpu0": [], "cpu1": [], "dealer": [], "process": [],
                              "alloc0": [], "alloc1": [], "alloc_dealer": []}
    metering = [False]
    core = _MeteredCore(rt.local_dealer.core, meter)

    def on_step(step, epoch, state, py):
        rank = 0 if state is states[0] else 1
        if metering[0]:
            meter.install()
            marks[f"alloc{rank}"].append(meter.bytes_of())
            if rank == 0:
                marks["alloc_dealer"].append(sum(meter.bytes_of(t) for t in core.thread_ids))
            return
        marks[f"cpu{rank}"].append(time.thread_time())
        if rank == 0:
            marks["wall"].append(time.perf_counter())
            marks["process"].append(time.process_time())
            marks["dealer"].append(_thread_cpu(rt.local_dealer._worker))

    def train(stop: int) -> None:
        rt.run(train_party, (x0, y0, job, states[0], on_step), (x1, y1, job, states[1], on_step),
               stop_at_step=stop)

    t0 = time.perf_counter()
    train(warm)
    first = time.perf_counter() - t0
    for k in marks:
        marks[k].clear()
    ch0 = [c.channel.stats.snapshot() for c in rt.contexts]
    train(warm + steps)
    d_ch = [c.channel.stats.minus(s) for c, s in zip(rt.contexts, ch0)]
    rt.local_dealer.core = core
    metering[0] = True
    train(total)
    rt.close()
    n = len(marks["wall"]) - 1

    def per_step(key: str) -> float:
        v = marks[key]
        return (v[-1] - v[0]) / (len(v) - 1) if len(v) > 1 else float("nan")

    wall = per_step("wall")
    cpu = {"party0": per_step("cpu0"), "party1": per_step("cpu1"), "dealer": per_step("dealer")}
    cpu["roles_sum"] = sum(cpu.values())
    cpu["process"] = per_step("process")
    alloc = {"party0": per_step("alloc0"), "party1": per_step("alloc1"),
             "dealer": per_step("alloc_dealer")}
    sent = d_ch[0].bytes_sent / steps
    plan = rt.contexts[0].source.plan_of(step_key(batch_size, False))
    with serial_kernels():
        floor = floor_of(plan)
    return {
        "model": model, "batch_size": batch_size, "dataset": dataset, "warm_steps": warm,
        "steps": n, "first_steps_seconds": first,
        "seconds_per_step": wall, "samples_per_second": batch_size / wall,
        "step_seconds": summary_stats(np.diff(marks["wall"]).tolist()),
        "cpu_seconds_per_step": cpu,
        "bytes_sent_per_step": sent, "rounds_per_step": d_ch[0].rounds / steps,
        "fresh_bytes_per_step": alloc,
        "fresh_bytes_over_bytes_sent": {k: v / sent for k, v in alloc.items()},
        "floor": floor, "step_over_floor": wall / floor["floor_seconds"],
        "plan": {"items": len(plan.items), "keystream_bytes": [plan.own_bytes(0), plan.own_bytes(1)],
                 "dealer_blob_bytes": [8 * e for e in plan.blob_elements]},
    }


def _stat_cpu(path: str) -> tuple[str, float]:
    """(comm, utime + stime in seconds) of a /proc stat file."""
    with open(path) as fh:
        raw = fh.read()
    comm, rest = raw[raw.index("(") + 1:raw.rindex(")")], raw.rsplit(")", 1)[1].split()
    return comm, (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    return _stat_cpu(f"/proc/{pid}/stat")[1]


def _threads_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """Each thread's (comm, CPU seconds) of process ``pid``: zmq names its I/O threads
    (ZMQbg/...), Python threads carry the process's name."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[int(tid)] = _stat_cpu(f"/proc/{pid}/task/{tid}/stat")
        except OSError:   # the thread ended
            pass
    return out


def _thread_split(before: dict, after: dict, steps: int) -> dict:
    """A process's CPU per step over a window by thread: the busiest thread (the runner's
    step), zmq's I/O threads, and every other thread."""
    d = {tid: (comm, sec - before.get(tid, (comm, 0.0))[1]) for tid, (comm, sec) in after.items()}
    zmq_io = sum(sec for comm, sec in d.values() if comm.startswith("ZMQbg"))
    rest = sorted((sec for comm, sec in d.values() if not comm.startswith("ZMQbg")), reverse=True)
    return {"busiest_thread": (rest[0] if rest else 0.0) / steps, "zmq_io_threads": zmq_io / steps,
            "other_threads": sum(rest[1:]) / steps}


def process_limits(train_limit: int = 12800, batch_size: int = 128, dataset: str = "mnist",
                   window: tuple[int, int] = (10, 90)) -> dict:
    """Network-a through the dealer and two server processes on this machine: the servers'
    step times, and each process's CPU clock per step between steps ``window`` (read from
    /proc while the job runs: steady state, without upload, warm-up or evaluation)."""
    from client.session import ClientSession
    from client.train import train_remote
    from ss_engine.deploy.launch import launch_local
    from ss_engine.request import TrainRequest
    req = TrainRequest.build(dataset=dataset, train_limit=train_limit, test_limit=500,
                             batch_size=batch_size, epochs=1, secure_eval=0, progress=False)
    steps_total = math.ceil(train_limit / batch_size)
    lo, hi = window[0], min(window[1], steps_total - 2)
    out: dict = {}
    with tempfile.TemporaryDirectory() as root:
        with launch_local(root=root) as dep:
            pids = {n: h.pid for n, h in dep.handles.items()}
            job = "limits"
            th = threading.Thread(target=lambda: out.update(
                r=train_remote(dep.config, req, job=job, timeout=3600)), daemon=True)
            th.start()
            marks = {}
            with ClientSession(dep.config, timeout=10) as sess:
                while th.is_alive() and len(marks) < 2:
                    try:
                        step = sess.status(job, timeout=5)[0][0].get("step", 0)
                    except Exception:  # noqa: BLE001 - not created yet, or busy: ask again
                        step = 0
                    for name, at in (("lo", lo), ("hi", hi)):
                        if name not in marks and step >= at:
                            marks[name] = (step, time.perf_counter(), {n: _proc_cpu(p) for n, p in pids.items()},
                                           {n: _threads_cpu(p) for n, p in pids.items()})
                    time.sleep(0.05)
            th.join()
    r = out["r"]
    (s0, t0, c0, th0), (s1, t1, c1, th1) = marks["lo"], marks["hi"]
    n = s1 - s0
    cpu = {name: (c1[name] - c0[name]) / n for name in pids}
    cpu["sum"] = sum(cpu.values())
    by_thread = {name: _thread_split(th0[name], th1[name], n) for name in pids}
    return {"model": "network-a", "batch_size": batch_size, "steps": r["steps"],
            "samples_per_second": r["samples_per_second"], "seconds_per_step": r["seconds_per_step"],
            "steady_samples_per_second": r["steady_samples_per_second"],
            "window_steps": [s0, s1], "window_seconds_per_step": (t1 - t0) / n,
            "cpu_seconds_per_step": cpu, "cpu_seconds_per_step_by_thread": by_thread, "dealer_link": r["dealer_link"], "bytes_per_step": r["bytes_per_step"]}


def cli_epoch(local: bool, train_limit: int = 12800, batch_size: int = 128) -> dict:
    """``python -m client.cli train --json-out`` over one epoch; its samples_per_second."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        cmd = [sys.executable, "-m", "client.cli", "train", "--model", "network-a", "--dataset", "mnist",
               "--epochs", "1", "--batch-size", str(batch_size), "--train-limit", str(train_limit),
               "--json-out", out] + (["--local"] if local else [])
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, timeout=3600,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        wall = time.perf_counter() - t0
        with open(out) as fh:
            r = json.load(fh)
    return {"command": " ".join(["python"] + cmd[1:-2] + (["--local"] if local else [])),
            "runtime": "local" if local else "three processes", "wall_seconds": wall,
            "samples_per_second": r["samples_per_second"], "seconds_per_step": r.get("seconds_per_step"),
            "test_accuracy": r.get("test_accuracy")}


def run(quick: bool = False, out_dir: str = "benchmarks/out") -> dict:
    out = {"benchmark": "limits", "quick": quick, "machine": machine_info()}
    warm, steps = (2, 4) if quick else (3, 30)
    out["local"] = []
    for model, bs in (("network-a", 128), ("lenet", 64)):
        log(f"limits: {model} batch {bs}, local runtime")
        r = local_limits(model, bs, warm, steps if model == "network-a" else max(3, steps // 3),
                         metered=2 if quick else 3)
        out["local"].append(r)
        c = r["cpu_seconds_per_step"]
        log(f"  {1e3 * r['seconds_per_step']:.1f} ms/step ({r['samples_per_second']:,.0f} samples/s); CPU "
            f"{1e3 * c['party0']:.0f} + {1e3 * c['party1']:.0f} + {1e3 * c['dealer']:.0f} ms (process "
            f"{1e3 * c['process']:.0f}); floor {1e3 * r['floor']['floor_seconds']:.1f} ms, step/floor "
            f"{r['step_over_floor']:.2f}; fresh bytes / sent {r['fresh_bytes_over_bytes_sent']['party0']:.2f}")
    if not quick:
        log("limits: network-a through the three processes")
        out["processes"] = process_limits()
        for local in (True, False):
            log(f"limits: the CLI over a 100-step epoch ({'--local' if local else 'three processes'})")
            out.setdefault("cli", []).append(cli_epoch(local))
    write_json(os.path.join(out_dir, "limits.json"), out)
    return out


def main(argv=None) -> int:
    return section_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
