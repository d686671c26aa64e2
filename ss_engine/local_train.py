"""Train in the local runtime (two party threads + in-process dealer) and report.

The trainer initialises the model and shares it; the data owner shares images and one-hot
labels; the parties run ``train_party``; at each epoch end the trainer (only) reconstructs
the model to evaluate it, and at the end secure inference is checked against the
reconstructed model.  ``--compare-plaintext`` trains the torch twin with the same initial
weights, batches and schedule.
"""
from __future__ import annotations

import json
import math
import resource
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .config import EngineConfig, FixedPointConfig
from .datasets import load_dataset, normalize
from .encoding import decode, encode
from .nn.models import init_params
from .owner import encode_images, encode_labels, reconstruct_params, reconstruct_predictions, share_arrays
from .simulate import LocalRuntime
from .job import TrainJob, steps_per_epoch
from .training import PartyState, predict_party, train_party

__all__ = ["TrainReport", "run_local_training", "LossMonitor", "Progress", "load_preprocessed",
           "secure_inference_fields", "plaintext_fields", "plot_learning_curve"]


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
    """The trainer's side of loss reporting: combines both parties' p_y shares.

    A *catastrophic* step is one whose loss exceeds max(5, 4 x the mean of the previous
    50 reported losses): the signature of a wrap-around failure in fixed-point training.
    """

    def __init__(self, fixed: FixedPointConfig):
        self.fixed = fixed
        self.pending: dict[int, np.ndarray] = {}
        self.losses: list[tuple[int, float]] = []
        self.catastrophic = 0

    def add(self, step: int, share: np.ndarray) -> float | None:
        other = self.pending.pop(step, None)
        if other is None:
            self.pending[step] = share
            return None
        p = np.clip(decode(share + other, self.fixed), 1e-6, None)
        loss = float(-np.mean(np.log(p)))
        recent = [v for _, v in self.losses[-50:]]
        if recent and loss > max(5.0, 4.0 * float(np.mean(recent))):
            self.catastrophic += 1
        self.losses.append((step, loss))
        return loss


@dataclass
class TrainReport:
    data: dict = field(default_factory=dict)

    def write(self, path: str) -> None:
        with open(path, "w") as fh:
            json.dump(self.data, fh, indent=2)


def load_preprocessed(dataset: str, train_limit: int | None, test_limit: int | None,
                      standardize: bool = True):
    """(x_train, y_train, x_test, y_test): float32 images (N, 784), standardised with the
    data set's mean/std by default (what both the secure run and the twin see)."""
    xtr, ytr = load_dataset(dataset, "train", train_limit)
    xte, yte = load_dataset(dataset, "test", test_limit)
    def prep(imgs):
        return normalize(imgs, standardize, dataset).reshape(len(imgs), -1)

    return prep(xtr), np.asarray(ytr), prep(xte), np.asarray(yte)


def run_local_training(*, dataset: str = "mnist", model: str = "network-a", epochs: int = 1,
                       batch_size: int = 128, lr: float = 0.1, momentum: float = 0.9,
                       weight_decay: float = 0.0, lr_step: int = 0, lr_gamma: float = 0.1,
                       train_limit: int | None = None, test_limit: int | None = None,
                       compare_plaintext: bool = False, frac_bits: int = 16, seed: int = 0,
                       loss_every: int = 0, secure_eval_limit: int = 1000, progress: bool = True,
                       standardize: bool = True,
                       json_out: str | None = None, plot_out: str | None = None,
                       runtime_seed: bytes | None = None) -> dict:
    config = EngineConfig(fixed=FixedPointConfig(frac_bits=frac_bits))
    fixed = config.fixed
    job = TrainJob(model=model, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                   weight_decay=weight_decay, lr_step=lr_step, lr_gamma=lr_gamma,
                   shuffle_seed=seed, loss_every=loss_every)
    xtr, ytr, x_test, yte = load_preprocessed(dataset, train_limit, test_limit, standardize)
    rt = LocalRuntime(config, seed=runtime_seed)

    # trainer: initialise and share the model; data owner: share images and labels
    init = init_params(model, seed)
    p0, p1 = share_arrays({k: encode(v, fixed) for k, v in init.items()}, rt._input_prg)
    x0, x1 = rt.share_ring(encode_images(xtr, fixed))
    y0, y1 = rt.share_ring(encode_labels(ytr, fixed))
    states = [PartyState(p0), PartyState(p1)]

    spe = steps_per_epoch(len(xtr), batch_size)
    bar = Progress(epochs * spe, spe, batch_size, progress)
    monitor = LossMonitor(fixed)

    def on_step(step, epoch, state, py_share):
        if py_share is not None:
            loss = monitor.add(step, py_share)
            if loss is not None:
                bar.loss = loss
        if state is states[0]:
            bar.update(step)

    epoch_acc, epoch_seconds = [], []
    train_seconds = 0.0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        rt.run(train_party, (x0, y0, job, states[0], on_step), (x1, y1, job, states[1], on_step),
               stop_at_step=(epoch + 1) * spe)
        dt = time.perf_counter() - t0
        train_seconds += dt
        epoch_seconds.append(dt)
        # the trainer, and only the trainer, reconstructs the model to evaluate it
        from .twin import evaluate  # torch is needed only for evaluation
        params = reconstruct_params(states[0].params, states[1].params, fixed)
        epoch_acc.append(evaluate(model, params, x_test, yte))
        if not progress:
            sys.stderr.write(f"epoch {epoch + 1}/{epochs}: test accuracy {100 * epoch_acc[-1]:.2f}% "
                             f"({dt:.0f} s, {spe * batch_size / dt:,.0f} samples/s)\n")
    bar.close()
    stats = rt.stats()
    steps = epochs * spe
    ch0 = stats["party0"]["channel"]
    dealer1 = stats["party1"]["dealer"]

    final = reconstruct_params(states[0].params, states[1].params, fixed)
    report = {
        "dataset": dataset, "model": model, "epochs": epochs, "batch_size": batch_size,
        "lr": lr, "momentum": momentum, "weight_decay": weight_decay, "frac_bits": frac_bits,
        "train_samples": int(len(xtr)), "test_samples": int(len(x_test)), "runtime": "local",
        "standardize": standardize,
        "test_accuracy": epoch_acc[-1], "epoch_test_accuracy": epoch_acc,
        "epoch_seconds": epoch_seconds, "steps": steps,
        "seconds_per_step": train_seconds / steps,
        "samples_per_second": epochs * len(xtr) / train_seconds,
        "bytes_per_step": ch0["bytes_sent"] / steps,          # sent by each party
        "rounds_per_step": ch0["rounds"] / steps,
        "dealer_bytes_per_step": dealer1["dealer_bytes"] / steps,
        "dealer_bytes_uncompressed_per_step": (stats["party0"]["dealer"]["uncompressed_bytes"]
                                               + dealer1["uncompressed_bytes"]) / steps,
        "peer_wait_fraction": ch0["wait_seconds"] / train_seconds,
        # both parties and the dealer live in this process in the local runtime
        "peak_rss_mb_all_parties": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "losses": monitor.losses if loss_every else [],
        "catastrophic_steps": monitor.catastrophic if loss_every else None,
    }
    if secure_eval_limit:
        n = min(secure_eval_limit, len(x_test))
        t0 = time.perf_counter()
        xs0, xs1 = rt.share_ring(encode_images(x_test[:n], fixed))
        h0, h1 = rt.run(predict_party, (model, states[0].params, xs0), (model, states[1].params, xs1))
        dt = time.perf_counter() - t0
        pred = reconstruct_predictions(h0, h1)
        report.update(secure_inference_fields(model, final, x_test[:n], yte[:n], pred, dt))
    if compare_plaintext:
        report.update(plaintext_fields(model, init, fixed, xtr, ytr, job, x_test, yte,
                                       report["samples_per_second"]))
    if json_out:
        TrainReport(report).write(json_out)
    if plot_out:
        plot_learning_curve(report, plot_out)
    return report


def secure_inference_fields(model: str, params: dict, x: np.ndarray, y: np.ndarray,
                            pred: np.ndarray, seconds: float) -> dict:
    """Report fields for secure predictions ``pred`` of ``x``, checked against the
    reconstructed model run in plaintext."""
    import torch

    from .twin import _x, torch_model
    with torch.no_grad():
        plain = torch_model(model, params)(_x(model, x)).argmax(1).numpy()
    return {"secure_inference_samples": int(len(x)),
            "secure_inference_accuracy": float((pred == y).mean()),
            "secure_vs_plain_agreement": float((pred == plain).mean()),
            "secure_inference_seconds": seconds,
            "secure_inference_samples_per_second": len(x) / seconds}


def plaintext_fields(model: str, init: dict, fixed: FixedPointConfig, xtr, ytr, job: TrainJob,
                     x_test, y_test, secure_samples_per_second: float) -> dict:
    """Train the torch twin from the same (fixed-point rounded) start, batches and schedule."""
    from .twin import train_twin
    init_q = {k: decode(encode(v, fixed), fixed).astype(np.float32) for k, v in init.items()}
    twin = train_twin(model, init_q, xtr, ytr, job, x_test, y_test)
    return {"plaintext_test_accuracy": twin["epoch_test_accuracy"][-1],
            "plaintext_epoch_test_accuracy": twin["epoch_test_accuracy"],
            "plaintext_samples_per_second": twin["samples_per_second"],
            "slowdown_vs_plaintext": twin["samples_per_second"] / secure_samples_per_second}


def plot_learning_curve(report: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = np.arange(1, len(report["epoch_test_accuracy"]) + 1)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ep, 100 * np.array(report["epoch_test_accuracy"]), "o-", label="secure (ss-engine)")
    if "plaintext_epoch_test_accuracy" in report:
        ax.plot(ep, 100 * np.array(report["plaintext_epoch_test_accuracy"]), "s--", label="plaintext torch twin")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{report['model']} on {report['dataset']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
