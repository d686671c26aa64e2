"""What every runtime tells the user: progress, the loss, the report, its outputs and summary.

Each runtime trains in its own way and hands :func:`finish_report` the reconstructed model,
its own figures and a way to run secure inference; everything after that (test metrics,
secure inference checked against the plaintext model, the torch twin, ``--export``,
``--json-out``, ``--plot-out``) is this one code path, so an output flag works on every
runtime.
"""
from __future__ import annotations

import json
import math
import sys
import time
from typing import Callable

import numpy as np

from .config import FixedPointConfig
from .encoding import decode, encode
from .request import Prepared

#: torch threads of the twin whose throughput the summary compares with the secure run's
PLAINTEXT_THREADS = 1

__all__ = ["PLAINTEXT_THREADS", "Progress", "LossMonitor", "finish_report", "format_summary", "plot_learning_curve",
           "write_json", "base_fields"]


class Progress:
    """A one-line progress bar on stderr: epoch, step, loss, throughput, ETA."""

    def __init__(self, total_steps: int, steps_per_epoch: int, batch_size: int, enabled: bool = True):
        self.total, self.spe, self.bs, self.enabled = total_steps, steps_per_epoch, batch_size, enabled
        self.t0 = time.perf_counter()
        self.done0 = None
        self.loss = None

    def update(self, step: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.done0 is None:
            self.done0, self.t0, self.shown = step, now, now
            return
        if now - self.shown < 0.5 and step + 1 < self.total:
            return  # redraw at most twice a second
        self.shown = now
        el = now - self.t0
        rate = (step - self.done0) / el if el > 0 else 0.0
        eta = (self.total - step - 1) / rate if rate else float("nan")
        loss = f" loss {self.loss:.4f}" if self.loss is not None else ""
        width = 24
        filled = int(width * (step + 1) / self.total)
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(f"\r[{bar}] epoch {step // self.spe + 1} step {step % self.spe + 1}/{self.spe}"
                         f"{loss} {rate * self.bs:,.0f} samples/s ETA {_hms(eta)}   ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _hms(s: float) -> str:
    if not math.isfinite(s):
        return "--:--"
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class LossMonitor:
    """The trainer's side of loss reporting: combines both parties' loss shares.

    Classification: the shares are p_y (the probability of the true label) and the loss is
    -mean(log p_y); regression: per-sample squared errors, loss = mean / 2.  A
    *catastrophic* step is one whose loss exceeds max(5, 4 x the mean of the previous 50
    reported losses): the signature of a wrap-around failure in fixed-point training.
    """

    def __init__(self, fixed: FixedPointConfig, task: str = "classification"):
        self.fixed, self.task = fixed, task
        self.pending: dict[int, np.ndarray] = {}
        self.losses: list[tuple[int, float]] = []
        self.catastrophic = 0

    def add(self, step: int, share: np.ndarray) -> float | None:
        other = self.pending.pop(step, None)
        if other is None:
            self.pending[step] = share
            return None
        v = decode(share + other, self.fixed)
        if self.task == "classification":
            loss = float(-np.mean(np.log(np.clip(v, 1e-6, None))))
        else:
            loss = float(np.mean(v) / 2)
        recent = [x for _, x in self.losses[-50:]]
        if recent and loss > max(5.0, 4.0 * float(np.mean(recent))):
            self.catastrophic += 1
        self.losses.append((step, loss))
        return loss


def base_fields(prep: Prepared, runtime: str) -> dict:
    """The report's description of the run (every runtime writes the same)."""
    job, data, req = prep.job, prep.data, prep.request
    return {"dataset": data.name, "model": job.model.name or "model", "task": job.task,
            "epochs": job.epochs, "batch_size": job.batch_size, "lr": job.lr,
            "momentum": job.momentum, "weight_decay": job.weight_decay,
            "optimizer": job.optimizer, "frac_bits": prep.fixed.frac_bits,
            **({"betas": [job.beta1, job.beta2], "eps": job.eps} if job.optimizer == "adam" else {}),
            "normalize": data.normalizer.kind, "train_samples": int(len(data.x_train)),
            "test_samples": int(len(data.x_test)), "runtime": runtime,
            "parameters": job.model.param_count(), "model_description": job.model.to_dict(),
            "seed": req.seed}


def _prefixed(m: dict, prefix: str) -> dict:
    return {f"{prefix}{k}": v for k, v in m.items()}


def finish_report(prep: Prepared, params: dict, report: dict, monitor: LossMonitor,
                  secure_predict: Callable[[np.ndarray], np.ndarray] | None,
                  epoch_metrics: list[dict] | None = None) -> dict:
    """Complete ``report`` (the runtime's own figures) for the reconstructed ``params``."""
    from .twin import metrics, predict, score
    job, data, out = prep.job, prep.data, prep.request.outputs
    final = metrics(job.model, params, data.x_test, data.y_test, job.task)
    report.update(_prefixed(final, "test_"))
    if epoch_metrics is not None:
        report["epoch_test_metrics"] = epoch_metrics
        if job.task == "classification":
            report["epoch_test_accuracy"] = [m["accuracy"] for m in epoch_metrics]
    report["losses"] = monitor.losses
    report["catastrophic_steps"] = monitor.catastrophic if job.loss_every else None
    if out.secure_eval and secure_predict is not None and len(data.x_test):
        n = min(out.secure_eval, len(data.x_test))
        t0 = time.perf_counter()
        pred = secure_predict(data.x_test[:n])
        dt = time.perf_counter() - t0
        plain = predict(job.model, params, data.x_test[:n], job.task)
        s = score(pred, data.y_test[:n], job.task)
        report.update({"secure_inference_samples": int(n), "secure_inference_seconds": dt,
                       "secure_inference_samples_per_second": n / dt if dt > 0 else None})
        report.update(_prefixed(s, "secure_inference_"))
        if job.task == "classification":
            report["secure_vs_plain_agreement"] = float((pred == plain).mean())
        else:
            report["secure_vs_plain_max_abs_diff"] = float(np.abs(pred - plain).max())
    if out.compare_plaintext:
        report.update(plaintext_fields(prep, report.get("samples_per_second")))
    if out.export:
        from .export import export_model
        report["export"] = export_model(out.export, job.model, params, data.normalizer)
    if out.json_out:
        write_json(report, out.json_out)
    if out.plot_out:
        plot_learning_curve(report, out.plot_out)
    report["params"] = params  # the reconstructed model (left out of the JSON)
    return report


def plaintext_fields(prep: Prepared, secure_samples_per_second: float | None) -> dict:
    """Train the torch twin from the same (fixed-point rounded) start, batches and schedule.

    Both throughputs count training steps only (no evaluation, no start-up), over the same
    data, batch size and epochs; the secure one is what the runtime measured.  The twin runs
    on one thread: torch's default pool spins, and on a loaded 2-core machine (or beside the
    servers' processes) it ran small models many times slower than one thread does, which
    made the summary print "secure is 2x slower" where the benchmarks measure 78x."""
    import torch

    from .twin import train_twin
    fixed, data, job = prep.fixed, prep.data, prep.job
    init_q = {k: decode(encode(v, fixed), fixed).astype(np.float32) for k, v in prep.init.items()}
    threads = torch.get_num_threads()
    try:
        twin = train_twin(job.model, init_q, data.x_train, data.y_train, job, data.x_test,
                          data.y_test, threads=PLAINTEXT_THREADS)
    finally:
        torch.set_num_threads(threads)
    out = _prefixed(twin["epoch_metrics"][-1], "plaintext_test_") if twin["epoch_metrics"] else {}
    out["plaintext_epoch_test_metrics"] = twin["epoch_metrics"]
    if job.task == "classification":
        out["plaintext_epoch_test_accuracy"] = twin["epoch_test_accuracy"]
    out["plaintext_samples_per_second"] = twin["samples_per_second"]
    out["plaintext_threads"] = PLAINTEXT_THREADS
    if twin["samples_per_second"] and secure_samples_per_second:
        out["slowdown_vs_plaintext"] = twin["samples_per_second"] / secure_samples_per_second
    return out


def write_json(report: dict, path: str) -> None:
    with open(path, "w") as fh:
        json.dump({k: v for k, v in report.items() if k != "params"}, fh, indent=2, default=str)


def _fmt(v, spec: str, unit: str = "", scale: float = 1.0) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return "n/a"
    return f"{v * scale:{spec}}{unit}"


def format_summary(r: dict) -> str:
    """The lines ``ss-engine train`` prints; any figure a runtime did not measure is "n/a"."""
    task = r.get("task", "classification")
    where = (f"({r.get('model', '?')}, {r.get('dataset', '?')}, {r.get('epochs', '?')} epoch(s), "
             f"{r.get('runtime', '?')} runtime)")
    if task == "classification":
        lines = [f"secure test accuracy      {_fmt(r.get('test_accuracy'), '.2f', '%', 100)}  {where}"]
        if "plaintext_test_accuracy" in r:
            lines.append(f"plaintext torch accuracy  {_fmt(r.get('plaintext_test_accuracy'), '.2f', '%', 100)}")
    else:
        lines = [f"secure test MSE           {_fmt(r.get('test_mse'), '.5g')}  R^2 "
                 f"{_fmt(r.get('test_r2'), '.4f')}  {where}"]
        if "plaintext_test_mse" in r:
            lines.append(f"plaintext torch MSE       {_fmt(r.get('plaintext_test_mse'), '.5g')}  R^2 "
                         f"{_fmt(r.get('plaintext_test_r2'), '.4f')}")
    lines.append(f"throughput                {_fmt(r.get('samples_per_second'), ',.0f')} samples/s "
                 f"({_fmt(r.get('seconds_per_step'), '.1f', scale=1000)} ms/step)")
    if r.get("plaintext_samples_per_second"):
        lines.append(f"plaintext throughput      {_fmt(r.get('plaintext_samples_per_second'), ',.0f')} "
                     f"samples/s, same batches (secure is {_fmt(r.get('slowdown_vs_plaintext'), ',.0f')}x "
                     "slower)")
    lines.append(f"per step and party        {_fmt(r.get('bytes_per_step'), '.2f', scale=1e-6)} MB sent, "
                 f"{_fmt(r.get('rounds_per_step'), '.0f')} rounds; dealer "
                 f"{_fmt(r.get('dealer_bytes_per_step'), '.2f', scale=1e-6)} MB")
    if "secure_inference_accuracy" in r:
        lines.append(f"secure inference          {_fmt(r.get('secure_inference_accuracy'), '.2f', '%', 100)} on "
                     f"{r.get('secure_inference_samples', '?')} test samples, agreement with plaintext "
                     f"{_fmt(r.get('secure_vs_plain_agreement'), '.1f', '%', 100)}")
    elif "secure_inference_mse" in r:
        lines.append(f"secure inference          MSE {_fmt(r.get('secure_inference_mse'), '.5g')} on "
                     f"{r.get('secure_inference_samples', '?')} test samples")
    if r.get("export"):
        lines.append(f"exported model            {r['export']} (normalisation included)")
    return "\n".join(lines)


def plot_learning_curve(report: dict, path: str) -> None:
    """Training loss by step (as revealed to the trainer) and test metric by epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cls = report.get("task", "classification") == "classification"
    key = "accuracy" if cls else "mse"
    fig, (ax_l, ax_m) = plt.subplots(1, 2, figsize=(9, 3.5))
    losses = report.get("losses") or []
    if losses:
        ax_l.plot([s + 1 for s, _ in losses], [v for _, v in losses], "-", lw=1)
    else:
        ax_l.text(0.5, 0.5, "loss not revealed (--loss-every 0)", ha="center", va="center",
                  transform=ax_l.transAxes)
    ax_l.set_xlabel("step")
    ax_l.set_ylabel("training loss")
    per_epoch = [m[key] for m in report.get("epoch_test_metrics", [])]
    if not per_epoch and report.get(f"test_{key}") is not None:
        per_epoch = [None] * (report.get("epochs", 1) - 1) + [report[f"test_{key}"]]
    scale = 100 if cls else 1
    ep = [i + 1 for i, v in enumerate(per_epoch) if v is not None]
    ax_m.plot(ep, [scale * v for v in per_epoch if v is not None], "o-", label="secure (ss-engine)")
    twin = [m[key] for m in report.get("plaintext_epoch_test_metrics", [])]
    if twin:
        ax_m.plot(range(1, len(twin) + 1), [scale * v for v in twin], "s--", label="plaintext torch twin")
    ax_m.set_xlabel("epoch")
    ax_m.set_ylabel("test accuracy (%)" if cls else "test MSE")
    ax_m.legend()
    for ax in (ax_l, ax_m):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{report.get('model')} on {report.get('dataset')} ({report.get('runtime')} runtime)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
