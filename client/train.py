"""The trainer's commands against real servers: train, predict, status.

``train_remote`` is ``ss-engine train`` with servers: it prepares the request (model, data,
job: ``ss_engine.request.prepare``, as the local runtime does), shares the model and the
data (the trainer's device only shares and reconstructs), uploads each server its shares,
submits the job, shows progress and the loss (reconstructed here from the two servers' loss
shares, never by a server), fetches both model shares, reconstructs the model, and finishes
the report like every runtime (``ss_engine.report.finish_report``: test metrics, secure
inference through a prediction job, the torch twin, export, JSON, plot).
``train_with_local_servers`` starts dealer + servers first and stops them afterwards.
"""
from __future__ import annotations

import sys
import tempfile
import time

import numpy as np

from ss_engine.comm.channel import ChannelTimeout
from ss_engine.config import FixedPointConfig
from ss_engine.net.zmq_channel import RpcError
from ss_engine.deploy.config import DeployConfig, load_config
from ss_engine.description import ModelDescription, describe
from ss_engine.job import TrainJob, steps_per_epoch
from ss_engine.owner import (encode_inputs, reconstruct_outputs, reconstruct_params,
                             reconstruct_predictions)
from ss_engine.prg import PRG, derive_seed
from ss_engine.report import LossMonitor, Progress, base_fields, finish_report
from ss_engine.request import RequestError, TrainRequest, prepare, share_training_inputs
from ss_engine.sharing import share

from .session import ClientSession, JobFailed, new_job_id

__all__ = ["train_remote", "train_with_local_servers", "predict_remote", "predict_dataset",
           "job_status", "format_status", "fetch_model", "list_jobs", "format_jobs", "delete_job"]


def _input_prg(test_seed: bytes | None) -> PRG:
    # the local runtime's LocalRuntime(seed) shares inputs with derive_seed(seed, "input")
    return PRG(derive_seed(test_seed, "input")) if test_seed is not None else PRG.from_os_random()


def _cfg(config) -> DeployConfig:
    return config if isinstance(config, DeployConfig) else load_config(config)


def predict_remote(config, samples: np.ndarray, *, model_job: str,
                   model: ModelDescription | str = "network-a", task: str = "classification",
                   frac_bits: int = 16, client: str = "client", prg: PRG | None = None,
                   session: ClientSession | None = None, timeout: float | None = None) -> np.ndarray:
    """Secure inference on the servers with the trained model of ``model_job``: predicted
    classes (N,) or regression outputs (N, outputs).

    ``samples``: normalised float samples (N, ...), as the training run saw them."""
    fixed = FixedPointConfig(frac_bits=frac_bits)
    own = session is None
    s = session or ClientSession(_cfg(config), client)
    try:
        job = new_job_id("predict")
        try:
            enc = encode_inputs(samples, fixed, "samples to predict")
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        x0, x1 = share(enc, prg or PRG.from_os_random())
        s.create(job)
        try:
            s.upload(job, "input/x", x0, x1)
            s.submit(job, "predict", TrainJob(model=describe(model), task=task), frac_bits,
                     model_job=model_job)
            s.wait(job, timeout=timeout)
            r0, r1 = s.fetch(job)
        finally:
            _delete_quietly(s, job)
        if task == "classification":
            return reconstruct_predictions(r0["onehot"], r1["onehot"])
        return reconstruct_outputs(r0["outputs"], r1["outputs"], fixed)
    finally:
        if own:
            s.close()


def fetch_model(config, job: str, *, frac_bits: int = 16, client: str = "client") -> dict:
    """Both servers' model shares of a finished training job, reconstructed (float32)."""
    with ClientSession(_cfg(config), client) as s:
        r0, r1 = s.fetch(job)
    return reconstruct_params(r0, r1, FixedPointConfig(frac_bits=frac_bits))


def predict_dataset(config, job: str, request: TrainRequest, *, limit: int = 1000,
                    client: str = "client") -> dict:
    """``ss-engine predict``: secure inference of ``limit`` test samples of the request's
    data (normalised as in training) with ``job``'s model."""
    from ss_engine.twin import score
    for i, st in enumerate(job_status(config, job, client)):   # RpcError if nobody knows it
        if st["kind"] != "train" or st["state"] != "done":
            raise JobFailed(f"job {job!r} is not a finished training job on server {i} "
                            f"({st['state']} {st['kind'] or 'upload'} job): no model to predict with")
    prep = prepare(request)
    x, y = prep.data.x_test[:limit], prep.data.y_test[:limit]
    t0 = time.perf_counter()
    pred = predict_remote(config, x, model_job=job, model=prep.model, task=prep.job.task,
                          frac_bits=request.frac_bits, client=client)
    dt = time.perf_counter() - t0
    return {"samples": int(len(x)), **score(pred, y, prep.job.task), "seconds": dt,
            "samples_per_second": len(x) / dt, "predictions": pred}


def format_status(statuses: list[dict]) -> str:
    lines = []
    for i, h in enumerate(statuses):
        lines.append(f"server {i}: {h['state']:<8} step {h['step']}/{h['total']} ({h['message']})")
    return "\n".join(lines)


def job_status(config, job: str, client: str = "client") -> list[dict]:
    """``ss-engine status``: both servers' view of a job."""
    with ClientSession(_cfg(config), client, timeout=10) as s:
        return [h for h, _ in s.status(job)]


def list_jobs(config, client: str = "client") -> list[list[dict]]:
    """``ss-engine jobs``: per server, the jobs ``client`` trains or is named in."""
    with ClientSession(_cfg(config), client, timeout=10) as s:
        return s.jobs()


def format_jobs(per_server: list[list[dict]]) -> str:
    rows = {}
    for rank, jobs in enumerate(per_server):
        for j in jobs:
            rows.setdefault(j["job"], [j["role"], "-", "-"])[1 + rank] = j["state"]
    if not rows:
        return "no jobs"
    lines = [f"{'job':<40} {'role':<14} {'server 0':<12} server 1"]
    lines += [f"{job:<40} {r[0]:<14} {r[1]:<12} {r[2]}" for job, r in sorted(rows.items())]
    return "\n".join(lines)


def delete_job(config, job: str, client: str = "client") -> None:
    """``ss-engine delete``: remove one of ``client``'s jobs (and its shares) from both servers."""
    with ClientSession(_cfg(config), client, timeout=10) as s:
        s.delete(job)


def _delete_quietly(s: ClientSession, job: str) -> bool:
    """Delete ``job`` on both servers; False (and a warning) if either refuses or is away."""
    try:
        s.delete(job)
        return True
    except (RpcError, ChannelTimeout) as exc:
        sys.stderr.write(f"ss-engine: warning: job {job} was not deleted ({exc}); "
                         f"see ss-engine jobs\n")
        return False


def train_remote(config, request: TrainRequest | None = None, *, client: str = "client",
                 test_seed: bytes | None = None, job: str | None = None,
                 timeout: float | None = None, runtime: str = "servers",
                 keep_job: bool = False) -> dict:
    """Train ``request`` on the servers of ``config``; returns a report like the local
    runtime's.  ``test_seed`` (tests only) fixes the dealer keys and the input sharing.

    The job is deleted from both servers once its model is fetched (and the secure
    evaluation ran), unless ``keep_job`` (then ``ss-engine predict --job`` can use it)."""
    cfg = _cfg(config)
    req = request or TrainRequest()
    prep = prepare(req)
    tj, fixed, data = prep.job, prep.fixed, prep.data
    prg = _input_prg(test_seed)
    # the same sharing order as the local runtime, so a test seed reproduces it bit for bit
    (p0, p1), (x0, x1), (y0, y1) = share_training_inputs(prep, prg)
    job = job or new_job_id("train")
    spe = steps_per_epoch(len(data.x_train), tj.batch_size)
    bar = Progress(tj.epochs * spe, spe, tj.batch_size, req.outputs.progress)
    monitor = LossMonitor(fixed, tj.task)
    seen: tuple = (set(), set())  # loss steps already taken from server 0 / 1

    def on_status(st):
        h0 = st[0][0]
        for p, (h, arrays) in enumerate(st):
            for s, a in zip(h["loss_steps"], arrays):
                if s not in seen[p]:
                    seen[p].add(s)
                    loss = monitor.add(s, np.array(a))
                    if loss is not None:
                        bar.loss = loss
        if h0["state"] == "running" and h0["step"]:
            bar.update(h0["step"] - 1)
        elif req.outputs.progress and h0["state"] in ("waiting", "queued", "unreachable"):
            sys.stderr.write(f"\r{h0['state']}: {h0['message'][:100]}   ")
    t_start = time.perf_counter()
    with ClientSession(cfg, client) as s:
        s.create(job, owners=[client])   # this trainer uploads the one data part itself
        try:
            s.upload_params(job, p0, p1)
            s.upload_part(job, "owner0", (x0, x1), (y0, y1))
            t_up = time.perf_counter()
            s.submit(job, "train", tj, fixed.frac_bits, parts=["owner0"], test_seed=test_seed)
            try:
                final = s.wait(job, on_status, timeout=timeout)
            finally:
                bar.close()   # end the progress line, also when stopped or failed
            t_train = time.perf_counter()
            r0, r1 = s.fetch(job)
            params = reconstruct_params(r0, r1, fixed)
            report = base_fields(prep, runtime)
            report.update(_report(cfg, job, tj, final, t_up - t_start, t_train - t_up,
                                  s.bytes_uploaded, len(data.x_train)))

            def secure_predict(x: np.ndarray) -> np.ndarray:
                return predict_remote(cfg, x, model_job=job, model=tj.model, task=tj.task,
                                      frac_bits=fixed.frac_bits, session=s, prg=prg, timeout=timeout)
            report = finish_report(prep, params, report, monitor, secure_predict)
        finally:   # a finished (or failed) job is deleted at once, unless asked to keep it
            deleted = not keep_job and _delete_quietly(s, job)
        report["job_kept"] = not deleted
        return report


def _report(cfg, job, tj, final, up_s, train_s, uploaded, n_train) -> dict:
    steps = final[0]["total"]
    # per-step figures over the steps each server ran for this job, every session counted
    # (a resume after a restart re-runs the steps since the checkpoint); server 0 reports
    # the peer traffic, server 1 the dealer traffic
    run0 = final[0].get("steps_run") or steps
    run1 = final[1].get("steps_run") or steps
    secs = max(final[0]["seconds"], 1e-9)
    ch, dl = final[0]["channel"], final[1]["dealer"]
    # steady state: the steps after each session's warm-up steps (kernels load, the dealer
    # learns the step's schedule), as the local benchmarks exclude warm-up steps
    warm_n, warm_s = final[0].get("warmup_steps", 0), final[0].get("warmup_seconds")
    done = run0 - warm_n
    steady = (secs - warm_s) / done if warm_s is not None and done > 0 else None
    return {
        "job": job, "steps": steps, "steps_run": run0,
        "servers": [cfg.servers[0].client, cfg.servers[1].client], "dealer": cfg.dealer.connect,
        "server_train_seconds": secs, "seconds_per_step": secs / run0,
        "samples_per_second": tj.epochs * n_train * run0 / steps / secs,
        "warmup_seconds": warm_s, "steady_seconds_per_step": steady,
        "steady_samples_per_second": tj.batch_size / steady if steady else None,
        "wall_seconds_train": train_s, "upload_seconds": up_s, "upload_bytes": uploaded,
        "bytes_per_step": ch.get("bytes_sent", 0) / run0 if ch else None,
        "rounds_per_step": ch.get("rounds", 0) / run0 if ch else None,
        "peer_wait_fraction": ch.get("wait_seconds", 0) / secs if ch else None,
        "dealer_bytes_per_step": dl.get("bytes_received", 0) / run1 if dl else None,
        "dealer_link": dl,
    }


def train_with_local_servers(request: TrainRequest | None = None, root: str | None = None, *,
                             keep: bool = False, **kw) -> dict:
    """``ss-engine train`` with no servers named: start dealer + 2 servers, train, stop.

    ``kw`` goes to ``train_remote`` (client, test_seed, job, timeout).  With no ``root`` the
    deployment lives in a temporary folder (mode 0700) holding both servers' shares and every
    secret key: removed on every way out of this function, and by the three processes
    themselves if this process is killed (``ephemeral``)."""
    from ss_engine.deploy.launch import launch_local
    tmp = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="ss-engine-")
        root = tmp.name
    try:
        with launch_local(root=root, ephemeral=tmp is not None and not keep) as dep:
            return train_remote(dep.config, request, runtime="local servers (3 processes)", **kw)
    finally:
        if tmp is not None and not keep:
            tmp.cleanup()
