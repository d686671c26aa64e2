"""The trainer's commands against real servers: train, predict, status, export.

``train_remote`` is ``ss-engine train`` with servers: it shares the model and the data
(the trainer's device only shares and reconstructs), uploads each server its shares,
submits the job, shows progress and the loss (reconstructed here from the two servers'
p_y shares, never by a server), fetches both model shares, reconstructs and evaluates the
model, and runs secure inference on test images through a prediction job.
``train_with_local_servers`` starts dealer + servers first and stops them afterwards.
"""
from __future__ import annotations

import tempfile
import time

import numpy as np

from ss_engine.config import FixedPointConfig
from ss_engine.deploy.config import DeployConfig, load_config
from ss_engine.encoding import encode
from ss_engine.local_train import (LossMonitor, Progress, TrainReport, load_preprocessed,
                                   plaintext_fields, secure_inference_fields)
from ss_engine.nn.models import init_params
from ss_engine.owner import (encode_images, encode_labels, reconstruct_params,
                             reconstruct_predictions, share_arrays)
from ss_engine.prg import PRG, derive_seed
from ss_engine.sharing import share
from ss_engine.job import TrainJob, steps_per_epoch

from .session import ClientSession, new_job_id

__all__ = ["train_remote", "train_with_local_servers", "predict_remote", "predict_dataset",
           "job_status", "format_status", "fetch_model", "export_state_dict"]


def _input_prg(test_seed: bytes | None) -> PRG:
    # the local runtime's LocalRuntime(seed) shares inputs with derive_seed(seed, "input")
    return PRG(derive_seed(test_seed, "input")) if test_seed is not None else PRG.from_os_random()


def _cfg(config) -> DeployConfig:
    return config if isinstance(config, DeployConfig) else load_config(config)


def predict_remote(config, images: np.ndarray, *, model_job: str, model: str = "network-a",
                   frac_bits: int = 16, client: str = "client", prg: PRG | None = None,
                   session: ClientSession | None = None, timeout: float | None = None) -> np.ndarray:
    """Secure inference on the servers with the trained model of ``model_job``.

    ``images``: preprocessed float images (N, 784), as ``load_preprocessed`` returns them."""
    fixed = FixedPointConfig(frac_bits=frac_bits)
    own = session is None
    s = session or ClientSession(_cfg(config), client)
    try:
        job = new_job_id("predict")
        x0, x1 = share(encode_images(images, fixed), prg or PRG.from_os_random())
        s.upload(job, "input/x", x0, x1)
        s.submit(job, "predict", TrainJob(model=model), frac_bits, model_job=model_job)
        s.wait(job, timeout=timeout)
        r0, r1 = s.fetch(job)
        s.delete(job)
        return reconstruct_predictions(r0["onehot"], r1["onehot"])
    finally:
        if own:
            s.close()


def fetch_model(config, job: str, *, frac_bits: int = 16, client: str = "client") -> dict:
    """Both servers' model shares of a finished training job, reconstructed (float32)."""
    with ClientSession(_cfg(config), client) as s:
        r0, r1 = s.fetch(job)
    return reconstruct_params(r0, r1, FixedPointConfig(frac_bits=frac_bits))


def predict_dataset(config, job: str, *, dataset: str = "mnist", limit: int = 1000,
                    model: str = "network-a", frac_bits: int = 16, standardize: bool = True,
                    client: str = "client") -> dict:
    """``ss-engine predict``: secure inference of ``limit`` test images with ``job``'s model."""
    _, _, x, y = load_preprocessed(dataset, 1, limit, standardize)
    t0 = time.perf_counter()
    pred = predict_remote(config, x, model_job=job, model=model, frac_bits=frac_bits, client=client)
    dt = time.perf_counter() - t0
    return {"samples": int(len(x)), "accuracy": float((pred == y).mean()), "seconds": dt,
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


def export_state_dict(model: str, params: dict[str, np.ndarray], path: str | None = None) -> dict:
    """The reconstructed model as a torch ``state_dict`` (saved to ``path`` if given)."""
    import torch

    from ss_engine.twin import torch_model
    sd = torch_model(model, params).state_dict()
    if path:
        torch.save(sd, path)
    return sd


def train_remote(config, *, dataset: str = "mnist", model: str = "network-a", epochs: int = 1,
                 batch_size: int = 128, lr: float = 0.1, momentum: float = 0.9,
                 weight_decay: float = 0.0, lr_step: int = 0, lr_gamma: float = 0.1,
                 train_limit: int | None = None, test_limit: int | None = None,
                 compare_plaintext: bool = False, frac_bits: int = 16, seed: int = 0,
                 loss_every: int = 0, secure_eval_limit: int = 1000, progress: bool = True,
                 json_out: str | None = None, export_path: str | None = None,
                 standardize: bool = True, client: str = "client", test_seed: bytes | None = None,
                 job: str | None = None, timeout: float | None = None) -> dict:
    """Train on the servers of ``config``; returns a report like the local runner's."""
    cfg = _cfg(config)
    fixed = FixedPointConfig(frac_bits=frac_bits)
    tj = TrainJob(model=model, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                  weight_decay=weight_decay, lr_step=lr_step, lr_gamma=lr_gamma,
                  shuffle_seed=seed, loss_every=loss_every)
    xtr, ytr, x_test, yte = load_preprocessed(dataset, train_limit, test_limit, standardize)
    prg = _input_prg(test_seed)
    init = init_params(model, seed)
    # the same sharing order as the local runtime, so a test seed reproduces it bit for bit
    p0, p1 = share_arrays({k: encode(v, fixed) for k, v in init.items()}, prg)
    x0, x1 = share(encode_images(xtr, fixed), prg)
    y0, y1 = share(encode_labels(ytr, fixed), prg)
    job = job or new_job_id("train")
    spe = steps_per_epoch(len(xtr), batch_size)
    bar = Progress(epochs * spe, spe, batch_size, progress)
    monitor = LossMonitor(fixed)
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
        elif progress and h0["state"] in ("waiting", "queued", "unreachable"):
            import sys
            sys.stderr.write(f"\r{h0['state']}: {h0['message'][:100]}   ")
    t_start = time.perf_counter()
    with ClientSession(cfg, client) as s:
        s.upload_params(job, p0, p1)
        s.upload_part(job, "owner0", (x0, x1), (y0, y1))
        t_up = time.perf_counter()
        s.submit(job, "train", tj, frac_bits, parts=["owner0"], test_seed=test_seed)
        final = s.wait(job, on_status, timeout=timeout)
        bar.close()
        t_train = time.perf_counter()
        r0, r1 = s.fetch(job)
        params = reconstruct_params(r0, r1, fixed)
        report = _report(cfg, job, dataset, tj, frac_bits, len(xtr), len(x_test), final, monitor,
                         t_up - t_start, t_train - t_up, s.bytes_uploaded)
        report["shares"] = None  # shares stay out of the report; see fetch()
        from ss_engine.twin import evaluate
        report["test_accuracy"] = evaluate(model, params, x_test, yte)
        report["params"] = params
        if secure_eval_limit:
            n = min(secure_eval_limit, len(x_test))
            t0 = time.perf_counter()
            pred = predict_remote(cfg, x_test[:n], model_job=job, model=model, frac_bits=frac_bits,
                                  session=s, prg=prg, timeout=timeout)
            report.update(secure_inference_fields(model, params, x_test[:n], yte[:n], pred,
                                                  time.perf_counter() - t0))
    if compare_plaintext:
        report.update(plaintext_fields(model, init, fixed, xtr, ytr, tj, x_test, yte,
                                       report["samples_per_second"]))
    if export_path:
        export_state_dict(model, params, export_path)
    if json_out:
        TrainReport({k: v for k, v in report.items() if k != "params"}).write(json_out)
    return report


def _report(cfg, job, dataset, tj, frac_bits, n_train, n_test, final, monitor, up_s, train_s,
            uploaded) -> dict:
    steps = final[0]["total"]
    secs = max(final[0]["seconds"], 1e-9)
    ch, dl = final[0]["channel"], final[1]["dealer"]
    # steady state: the steps after the run's warm-up steps (kernels load, the dealer learns
    # the step's schedule), as the local benchmarks exclude warm-up steps
    warm_end, warm_s = final[0].get("warmup_end_step"), final[0].get("warmup_seconds")
    done = steps - (warm_end or 0)
    steady = (secs - warm_s) / done if warm_s is not None and done > 0 else None
    return {
        "dataset": dataset, "model": tj.model, "epochs": tj.epochs, "batch_size": tj.batch_size,
        "lr": tj.lr, "momentum": tj.momentum, "frac_bits": frac_bits, "runtime": "servers",
        "job": job, "train_samples": n_train, "test_samples": n_test, "steps": steps,
        "servers": [cfg.servers[0].client, cfg.servers[1].client], "dealer": cfg.dealer.connect,
        "server_train_seconds": secs, "seconds_per_step": secs / steps,
        "samples_per_second": tj.epochs * n_train / secs,
        "warmup_seconds": warm_s, "steady_seconds_per_step": steady,
        "steady_samples_per_second": tj.batch_size / steady if steady else None,
        "wall_seconds_train": train_s, "upload_seconds": up_s, "upload_bytes": uploaded,
        "bytes_per_step": ch.get("bytes_sent", 0) / steps if ch else None,
        "rounds_per_step": ch.get("rounds", 0) / steps if ch else None,
        "peer_wait_fraction": ch.get("wait_seconds", 0) / secs if ch else None,
        "dealer_bytes_per_step": dl.get("bytes_received", 0) / steps if dl else None,
        "dealer_link": dl,
        "losses": monitor.losses, "catastrophic_steps": monitor.catastrophic,
    }


def train_with_local_servers(root: str | None = None, *, keep: bool = False, **kw) -> dict:
    """``ss-engine train`` with no servers named: start dealer + 2 servers, train, stop."""
    from ss_engine.deploy.launch import launch_local
    tmp = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="ss-engine-")
        root = tmp.name
    try:
        with launch_local(root=root) as dep:
            report = train_remote(dep.config, **kw)
            report["runtime"] = "local servers (3 processes)"
            return report
    finally:
        if tmp is not None and not keep:
            tmp.cleanup()

