"""Train a :class:`~ss_engine.request.TrainRequest` in the local runtime and report.

Two party threads and an in-process dealer (``simulate.LocalRuntime``).  The trainer
initialises the model and shares it; the data owner shares the normalised samples and the
labels (one-hot) or targets; the parties run ``train_party``; at each epoch end the trainer
(only) reconstructs the model to evaluate it, and at the end secure inference is checked
against the reconstructed model (``report.finish_report``, shared with the servers' runtime).
"""
from __future__ import annotations

import resource
import sys
import time

import numpy as np

from .config import EngineConfig
from .job import steps_per_epoch
from .owner import encode_inputs, reconstruct_outputs, reconstruct_params, reconstruct_predictions
from .report import LossMonitor, Progress, base_fields, finish_report
from .request import Prepared, RequestError, TrainRequest, prepare, share_training_inputs
from .simulate import LocalRuntime
from .training import PartyState, predict_party, train_party

__all__ = ["run_local_training", "load_preprocessed"]


def load_preprocessed(dataset: str, train_limit: int | None, test_limit: int | None,
                      standardize: bool = True, model: str = "network-a"):
    """(x_train, y_train, x_test, y_test) of a built-in data set as a run sees them:
    float32 samples flattened (N, features), standardised with the set's statistics."""
    from .request import load_model
    from .userdata import fit_data, read_data
    raw = read_data(dataset, train_limit=train_limit, test_limit=test_limit)
    desc, _ = load_model(model, raw.sample_shape, 0)
    d = fit_data(raw, input_shape=desc.input_shape, outputs=desc.num_outputs,
                 normalize="standard" if standardize else "unit")
    return d.x_train, d.y_train, d.x_test, d.y_test


def run_local_training(request: TrainRequest | Prepared | None = None, *,
                       runtime_seed: bytes | None = None) -> dict:
    """Train ``request`` (or a request already prepared) with party threads and an
    in-process dealer; returns the report.

    ``runtime_seed`` (tests only) fixes the dealer keys and the input sharing."""
    prep = request if isinstance(request, Prepared) else prepare(request or TrainRequest())
    req = prep.request
    job, data, fixed = prep.job, prep.data, prep.fixed
    rt = LocalRuntime(EngineConfig(fixed=fixed), seed=runtime_seed)
    (p0, p1), (x0, x1), (y0, y1) = share_training_inputs(prep, rt._input_prg)
    states = [PartyState(p0), PartyState(p1)]

    spe = steps_per_epoch(len(data.x_train), job.batch_size)
    bar = Progress(job.epochs * spe, spe, job.batch_size, req.outputs.progress)
    monitor = LossMonitor(fixed, job.task)

    def on_step(step, epoch, state, loss_share):
        if loss_share is not None:
            loss = monitor.add(step, loss_share)
            if loss is not None:
                bar.loss = loss
        if state is states[0]:
            bar.update(step)

    from .twin import metrics  # torch is needed only for evaluation
    epoch_metrics, epoch_seconds = [], []
    for epoch in range(job.epochs):
        t0 = time.perf_counter()
        rt.run(train_party, (x0, y0, job, states[0], on_step), (x1, y1, job, states[1], on_step),
               stop_at_step=(epoch + 1) * spe)
        dt = time.perf_counter() - t0
        epoch_seconds.append(dt)
        # the trainer, and only the trainer, reconstructs the model to evaluate it
        params = reconstruct_params(states[0].params, states[1].params, fixed)
        epoch_metrics.append(metrics(job.model, params, data.x_test, data.y_test, job.task))
        if not req.outputs.progress:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in epoch_metrics[-1].items())
            sys.stderr.write(f"epoch {epoch + 1}/{job.epochs}: test {shown} ({dt:.0f} s, "
                             f"{spe * job.batch_size / dt:,.0f} samples/s)\n")
    bar.close()
    stats = rt.stats()
    steps = job.epochs * spe
    train_seconds = sum(epoch_seconds)
    ch0, dealer1 = stats["party0"]["channel"], stats["party1"]["dealer"]
    report = base_fields(prep, "local")
    report.update({
        "epoch_seconds": epoch_seconds, "steps": steps,
        "seconds_per_step": train_seconds / steps,
        "samples_per_second": job.epochs * len(data.x_train) / train_seconds,
        "bytes_per_step": ch0["bytes_sent"] / steps,          # sent by each party
        "rounds_per_step": ch0["rounds"] / steps,
        "dealer_bytes_per_step": dealer1["dealer_bytes"] / steps,
        "dealer_bytes_uncompressed_per_step": (stats["party0"]["dealer"]["uncompressed_bytes"]
                                               + dealer1["uncompressed_bytes"]) / steps,
        "peer_wait_fraction": ch0["wait_seconds"] / train_seconds,
        # both parties and the dealer live in this process in the local runtime
        "peak_rss_mb_all_parties": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    })
    final = reconstruct_params(states[0].params, states[1].params, fixed)

    def secure_predict(x: np.ndarray) -> np.ndarray:
        try:
            xs0, xs1 = rt.share_ring(encode_inputs(x, fixed, "test samples"))
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        h0, h1 = rt.run(predict_party, (job.model, states[0].params, xs0),
                        (job.model, states[1].params, xs1), task=job.task)
        return (reconstruct_predictions(h0, h1) if job.task == "classification"
                else reconstruct_outputs(h0, h1, fixed))

    return finish_report(prep, final, report, monitor, secure_predict, epoch_metrics)
