"""Secure vs plaintext training and inference (issue 5, suite item 1).

Secure training runs ``train_party`` in the local runtime (two party threads and the
in-process dealer, the code path of ``ss-engine train`` without servers) for ``warm`` steps,
then times ``steps`` more; plain torch float32 trains the same model, batch size and optimiser in the same process
right before, so the ratio compares like with like on whatever load the machine had.  Torch
runs with ``torch.set_num_threads(2)`` and with 1 thread; the faster is the baseline (on a
loaded machine torch's spinning OpenMP barrier makes 2 threads far slower, see
``plaintext_best``).

    python -m benchmarks.bench_train [--quick] [--out benchmarks/out]
"""
from __future__ import annotations

import math
import os
import threading
import time

import numpy as np

from ss_engine.description import init_params
from ss_engine.job import TrainJob, steps_per_epoch
from ss_engine.training import PartyState, predict_party, train_party

from .common import (Timer, load_data, log, machine_info, make_runtime, shared_data, shared_params,
                     summary_stats, write_json, section_main)

__all__ = ["secure_training", "plaintext_training", "plaintext_best", "secure_inference",
           "plaintext_inference",
           "run", "CONFIGS"]

#: (model, training batch, inference batch, inference samples full / quick); the issue's bars
#: are stated for network-a inference at batch 1,000; LeNet inference costs ~45 ms per image
#: here, so it runs on fewer images
CONFIGS = (("network-a", 128, 1000, (3000, 1000)), ("lenet", 64, 256, (512, 64)))


def secure_training(model: str = "network-a", batch_size: int = 128, warm: int = 3, steps: int = 20,
                    frac_bits: int = 16, netem=None, data=None) -> dict:
    """Time ``steps`` warm steps of ``train_party``; counters are per step and per party.

    ``netem`` (a :class:`ss_engine.comm.netem.NetemConfig`) puts a simulated network between
    the parties.  ``data`` = (x, y) float images and labels, else MNIST.
    """
    total = warm + steps
    if data is None:
        x, y, _, _, dataset = load_data(total * batch_size)
    else:
        (x, y), dataset = data, "given"
    rt = make_runtime(frac_bits)
    if netem is not None:
        from ss_engine.comm.netem import install_netem
        install_netem(rt.contexts, netem)
    init = init_params(model, 0)
    p0, p1 = shared_params(rt, init)
    (x0, x1), (y0, y1) = shared_data(rt, x, y)
    spe = steps_per_epoch(len(x), batch_size)
    job = TrainJob(model=model, epochs=max(1, math.ceil(total / spe)), batch_size=batch_size,
                   lr=0.1, momentum=0.9)
    states = [PartyState(p0), PartyState(p1)]
    timer = Timer()
    cpu: list[list[float]] = [[], []]   # each party thread's CPU clock after each timed step

    def on_step(step, epoch, state, py):
        if step >= warm:
            cpu[0 if state is states[0] else 1].append(time.thread_time())
            if state is states[0]:
                timer.mark()

    t0 = time.perf_counter()
    rt.run(train_party, (x0, y0, job, states[0], on_step), (x1, y1, job, states[1], on_step),
           stop_at_step=warm)
    warm_seconds = time.perf_counter() - t0
    ch = [c.channel.stats.snapshot() for c in rt.contexts]
    src = [c.source.stats.as_dict() for c in rt.contexts]
    dealer0 = _dealer_cpu()
    t0 = time.perf_counter()
    rt.run(train_party, (x0, y0, job, states[0], on_step), (x1, y1, job, states[1], on_step),
           stop_at_step=total)
    dt = time.perf_counter() - t0
    dealer1 = _dealer_cpu()
    per_step = timer.deltas(t0)
    d_ch = [c.channel.stats.minus(s) for c, s in zip(rt.contexts, ch)]
    d_src = [{k: c.source.stats.as_dict()[k] - s[k] for k in ("items", "dealer_bytes", "wait_seconds",
                                                             "uncompressed_bytes")}
             for c, s in zip(rt.contexts, src)]
    return {
        "model": model, "batch_size": batch_size, "frac_bits": frac_bits, "dataset": dataset,
        "warm_steps": warm, "steps": steps, "first_steps_seconds": warm_seconds,
        "netem": None if netem is None else {"rtt_seconds": netem.rtt_seconds,
                                             "bandwidth_bps": netem.bandwidth_bps},
        "seconds_per_step": dt / steps,
        "step_seconds": summary_stats(per_step),
        # thread CPU clocks (steadier than wall time on a loaded machine), first to last step
        "cpu_seconds_per_step": [(c[-1] - c[0]) / (len(c) - 1) if len(c) > 1 else None for c in cpu],
        # the in-process dealer's worker thread (generating announced runs), over the timed steps
        "dealer_cpu_seconds_per_step": (dealer1 - dealer0) / steps
        if dealer0 is not None and dealer1 is not None else None,
        "samples_per_second": steps * batch_size / dt,
        "bytes_per_step": d_ch[0].bytes_sent / steps,                 # sent by each party
        "bytes_per_step_party1": d_ch[1].bytes_sent / steps,
        "rounds_per_step": d_ch[0].rounds / steps,
        "messages_per_step": d_ch[0].messages_sent / steps,
        "by_label_per_step": {k: {"rounds": v[0] / steps, "bytes": v[1] / steps}
                              for k, v in sorted(d_ch[0].by_label.items())},
        "peer_wait_fraction": [c.wait_seconds / dt for c in d_ch],
        "dealer_wait_fraction": d_src[1]["wait_seconds"] / dt,      # party 1 fetches corrections
        "dealer_bytes_per_step": d_src[1]["dealer_bytes"] / steps,
        "dealer_bytes_uncompressed_per_step": (d_src[0]["uncompressed_bytes"]
                                               + d_src[1]["uncompressed_bytes"]) / steps,
        "material_items_per_step": d_src[0]["items"] / steps,
    }


def _dealer_cpu() -> float | None:
    """CPU seconds of the local runtime's dealer thread (``LocalDealer``'s worker), if running."""
    for t in threading.enumerate():
        if t.name == "local-dealer" and t.is_alive() and t.ident is not None:
            return time.clock_gettime(time.pthread_getcpuclockid(t.ident))
    return None


def _torch_setup(model: str, threads: int = 2):
    import torch
    from ss_engine.twin import torch_model
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    return torch, torch_model(model, init_params(model, 0))


def plaintext_training(model: str, batch_size: int, warm: int, steps: int, x: np.ndarray,
                       y: np.ndarray, threads: int = 2) -> dict:
    """Plain torch float32, same model/init/batch/optimiser (SGD, momentum 0.9)."""
    from ss_engine.description import describe
    torch, net = _torch_setup(model, threads)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    xt = torch.as_tensor(np.asarray(x, np.float32).reshape((len(x),) + describe(model).input_shape))
    yt = torch.as_tensor(np.asarray(y, np.int64))
    n = len(x)
    marks = []
    for step in range(warm + steps):
        if step == warm:
            t0 = time.perf_counter()
        lo = (step * batch_size) % max(1, n - batch_size + 1)
        loss = torch.nn.functional.cross_entropy(net(xt[lo:lo + batch_size]), yt[lo:lo + batch_size])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= warm:
            marks.append(time.perf_counter())
    dt = time.perf_counter() - t0
    return {"threads": threads, "steps": steps, "seconds_per_step": dt / steps,
            "step_seconds": summary_stats(np.diff([t0] + marks).tolist()),
            "samples_per_second": steps * batch_size / dt}


def plaintext_best(fn, *args, thread_counts=(2, 1), **kwargs) -> dict:
    """Run a plain-torch measurement with 2 and with 1 thread and keep the faster.

    On an idle 2-core machine 2 threads win; on a loaded one torch's spinning OpenMP barrier
    can make 2 threads ~100x slower than 1 (measured here: 170 ms vs 1.3 ms per network-a
    step), which would flatter the secure engine.  Both figures are kept.
    """
    runs = {str(t): fn(*args, threads=t, **kwargs) for t in thread_counts}
    best = max(runs.values(), key=lambda r: r["samples_per_second"])
    return dict(best, by_threads={k: v["samples_per_second"] for k, v in runs.items()})


def secure_inference(model: str, batch_size: int, n: int, frac_bits: int = 16, data=None) -> dict:
    """``predict_party`` (forward pass + secure argmax) on ``n`` shared images, after one
    warm-up batch; samples/s of the timed pass."""
    x = data if data is not None else load_data(n)[0]
    rt = make_runtime(frac_bits)
    p0, p1 = shared_params(rt, init_params(model, 0))
    from ss_engine.owner import encode_images
    x0, x1 = rt.share_ring(encode_images(x, rt.config.fixed))
    # warm-up: one full batch (kernels load, the allocator faults in arrays of the timed
    # batches' sizes; a 128-row warm-up left the first 1,000-row batch paying for that)
    wb = min(batch_size, n)
    rt.run(predict_party, (model, p0, x0[:wb], batch_size), (model, p1, x1[:wb], batch_size))
    c = rt.contexts[0].channel.stats.snapshot()
    t0 = time.perf_counter()
    rt.run(predict_party, (model, p0, x0, batch_size), (model, p1, x1, batch_size))
    dt = time.perf_counter() - t0
    d = rt.contexts[0].channel.stats.minus(c)
    batches = math.ceil(n / batch_size)
    return {"model": model, "batch_size": batch_size, "samples": n, "seconds": dt,
            "samples_per_second": n / dt, "bytes_per_batch": d.bytes_sent / batches,
            "rounds_per_batch": d.rounds / batches}


def plaintext_inference(model: str, batch_size: int, n: int, x: np.ndarray, threads: int = 2) -> dict:
    from ss_engine.description import describe
    torch, net = _torch_setup(model, threads)
    net.eval()
    xt = torch.as_tensor(np.asarray(x[:n], np.float32).reshape((-1,) + describe(model).input_shape))
    with torch.no_grad():
        net(xt[:batch_size])
        reps, t0 = 0, time.perf_counter()
        while reps == 0 or (time.perf_counter() - t0 < 0.5 and reps < 50):  # fast: repeat passes
            for s in range(0, n, batch_size):
                net(xt[s:s + batch_size]).argmax(1)
            reps += 1
        dt = time.perf_counter() - t0
    return {"threads": threads, "samples_per_second": reps * n / dt}


def run(quick: bool = False, out_dir: str = "benchmarks/out", configs=CONFIGS,
        warm_steps: tuple[int, int] | None = None) -> dict:
    warm, steps = warm_steps or ((2, 5) if quick else (3, 30))
    rows = []
    for model, bs, inf_bs, (n_full, n_quick) in configs:
        m_steps = steps if model == "network-a" else max(3, steps // 3)
        x, y, _, _, dataset = load_data((warm + m_steps) * bs)
        log(f"train: {model} batch {bs}: plain torch, then {warm}+{m_steps} secure steps")
        p_steps = max(5, m_steps) if warm_steps else max(20 if quick else 50, m_steps)
        plain = plaintext_best(plaintext_training, model, bs, min(5, warm + 3), p_steps, x, y)
        sec = secure_training(model, bs, warm, m_steps, data=(x, y))
        sec["dataset"] = dataset
        n_inf = n_quick if quick else n_full
        log(f"inference: {model} {n_inf} samples, batch {min(inf_bs, n_inf)}")
        xi = load_data(n_inf)[0]
        s_inf = secure_inference(model, min(inf_bs, n_inf), n_inf, data=xi)
        p_inf = plaintext_best(plaintext_inference, model, min(inf_bs, n_inf), n_inf, xi)
        rows.append({
            "model": model, "batch_size": bs, "secure": sec, "plaintext": plain,
            "slowdown_vs_plaintext": plain["samples_per_second"] / sec["samples_per_second"],
            "inference": {"secure": s_inf, "plaintext": p_inf,
                          "slowdown_vs_plaintext": p_inf["samples_per_second"] / s_inf["samples_per_second"]},
        })
        log(f"  {model}: secure {sec['samples_per_second']:,.0f} samples/s "
            f"({1e3 * sec['seconds_per_step']:.0f} ms/step, CPU "
            f"{'/'.join(f'{1e3 * c:.0f}' for c in sec['cpu_seconds_per_step'] if c)} ms per party, "
            f"{sec['bytes_per_step'] / 1e6:.2f} MB, "
            f"{sec['rounds_per_step']:.0f} rounds), plain {plain['samples_per_second']:,.0f} samples/s, "
            f"inference {s_inf['samples_per_second']:,.0f} samples/s")
    out = {"benchmark": "train", "quick": quick, "machine": machine_info(), "results": rows}
    write_json(os.path.join(out_dir, "train.json"), out)
    return out


def main(argv=None) -> int:
    return section_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
