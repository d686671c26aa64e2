"""The plaintext torch twin of a model description: same layers, initial weights, batches.

Used by the tests (one secure SGD step against one torch step), by
``--compare-plaintext``, and by the trainer to evaluate a reconstructed model.  The twin
trains with the job's optimizer: SGD with momentum and weight decay (what the secure run
computes) or Adam (``torch.optim.Adam`` with the job's betas and eps: the oracle the
secure Adam update is tested against).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from .description import (AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, ModelDescription, ReLU,
                          describe)
from .job import TrainJob, batch_order, steps_per_epoch

__all__ = ["torch_model", "torch_layers", "train_twin", "evaluate", "metrics", "score", "predict",
           "twin_step", "as_inputs", "loss_fn"]


def torch_layers(model: ModelDescription | str) -> list[nn.Module]:
    """The description's layers as torch modules (flat, so state_dict keys are "i.weight")."""
    out = []
    for layer in describe(model).layers:
        if isinstance(layer, Linear):
            out.append(nn.Linear(layer.in_features, layer.out_features))
        elif isinstance(layer, Conv2d):
            out.append(nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                 stride=layer.stride, padding=layer.padding))
        elif isinstance(layer, ReLU):
            out.append(nn.ReLU())
        elif isinstance(layer, MaxPool2d):
            out.append(nn.MaxPool2d(layer.kernel_size))
        elif isinstance(layer, AvgPool2d):
            out.append(nn.AvgPool2d(layer.kernel_size))
        elif isinstance(layer, Flatten):
            out.append(nn.Flatten())
        else:  # a ModelDescription holds only the kinds above
            raise TypeError(f"no torch layer for {type(layer).__name__}")
    return out


def torch_model(model: ModelDescription | str, params: dict[str, np.ndarray] | None = None) -> nn.Sequential:
    net = nn.Sequential(*torch_layers(model))
    if params is not None:
        net.load_state_dict({k: torch.as_tensor(np.asarray(v, np.float32)) for k, v in params.items()})
    return net


def as_inputs(model: ModelDescription | str, x: np.ndarray) -> torch.Tensor:
    """Samples (N, ...) reshaped to (N, *input_shape), float32."""
    desc = describe(model)
    return torch.as_tensor(np.array(x, np.float32).reshape((len(x),) + desc.input_shape))


def loss_fn(task: str, out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy (classification) or half the squared error summed over the outputs
    (regression): the losses whose gradients the secure run computes."""
    if task == "classification":
        return nn.functional.cross_entropy(out, y, reduction=reduction)
    per_sample = 0.5 * ((out - y.reshape(out.shape)) ** 2).sum(dim=1)
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


def _targets(task: str, y: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    if task == "classification":
        return torch.as_tensor(np.asarray(y, dtype=np.int64))
    return torch.as_tensor(np.asarray(y, dtype=np.float64).reshape(len(y), -1)).to(dtype)


@torch.no_grad()
def predict(model: ModelDescription | str, params: dict[str, np.ndarray], x: np.ndarray,
            task: str = "classification", batch_size: int = 2000) -> np.ndarray:
    """Predicted classes (N,) or outputs (N, outputs) of a (reconstructed) model."""
    net = torch_model(model, params).eval()
    out = []
    for s in range(0, len(x), batch_size):
        z = net(as_inputs(model, x[s:s + batch_size]))
        out.append((z.argmax(1) if task == "classification" else z).numpy())
    if out:
        return np.concatenate(out)
    return np.zeros((0,) if task == "classification" else (0, describe(model).num_outputs))


def metrics(model, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
            task: str = "classification") -> dict:
    """``{"accuracy"}`` (classification) or ``{"mse", "r2"}`` (regression) on (x, y)."""
    pred = predict(model, params, x, task)
    return score(pred, y, task)


def score(pred: np.ndarray, y: np.ndarray, task: str) -> dict:
    if task == "classification":
        return {"accuracy": float((pred == np.asarray(y)).mean()) if len(y) else 0.0}
    t = np.asarray(y, np.float64).reshape(pred.shape)
    mse = float(np.mean((pred - t) ** 2)) if t.size else 0.0
    var = float(np.mean((t - t.mean(axis=0)) ** 2)) if t.size else 0.0
    return {"mse": mse, "r2": 1.0 - mse / var if var > 0 else 0.0}


def evaluate(model, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """Plaintext test accuracy of a (reconstructed) classifier."""
    return metrics(model, params, x, y)["accuracy"]


def _optimizer(net: nn.Module, job: TrainJob, lr: float | None = None) -> torch.optim.Optimizer:
    lr = job.lr if lr is None else lr
    if job.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=lr, betas=(job.beta1, job.beta2), eps=job.eps,
                                weight_decay=job.weight_decay)
    return torch.optim.SGD(net.parameters(), lr=lr, momentum=job.momentum,
                           weight_decay=job.weight_decay)


def twin_step(model, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
              job: TrainJob) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One float64 step: (gradients of the batch-summed loss, updated parameters)."""
    net = torch_model(model, params).double()
    opt = _optimizer(net, job)
    loss = loss_fn(job.task, net(as_inputs(model, x).double()), _targets(job.task, y, torch.float64),
                   reduction="sum")
    opt.zero_grad()
    loss.backward()
    grads = {k: p.grad.detach().numpy().copy() for k, p in net.named_parameters()}
    # the summed loss's gradient with lr / B reproduces torch's mean-loss step (SGD; Adam is
    # invariant to the gradient's scale up to eps, so it takes the mean-loss gradient)
    if job.optimizer == "adam":
        for p in net.parameters():
            p.grad /= len(x)
    else:
        for g in opt.param_groups:
            g["lr"] = job.lr / len(x)
    opt.step()
    return grads, {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def train_twin(model, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
               job: TrainJob, x_test: np.ndarray | None = None, y_test: np.ndarray | None = None,
               threads: int | None = None) -> dict:
    """Float32 training with the secure run's schedule; per-epoch test metrics.

    ``threads`` is left to torch unless given: on a loaded 2-core machine torch's spinning
    pool can make 2 threads far slower than 1, so benchmarks choose it explicitly."""
    torch.manual_seed(0)
    if threads is not None:
        torch.set_num_threads(threads)
    net = torch_model(model, params)
    opt = _optimizer(net, job)
    n = len(x)
    spe = steps_per_epoch(n, job.batch_size)
    xt = as_inputs(model, x)
    yt = _targets(job.task, y)
    per_epoch, seconds = [], 0.0
    for epoch in range(job.epochs):
        for g in opt.param_groups:
            g["lr"] = job.lr_at(epoch)
        order = torch.as_tensor(batch_order(n, job.shuffle_seed, epoch))
        t0 = time.perf_counter()
        net.train()
        for i in range(spe):
            idx = order[i * job.batch_size:(i + 1) * job.batch_size]
            loss = loss_fn(job.task, net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds += time.perf_counter() - t0
        if x_test is not None:
            state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
            per_epoch.append(metrics(model, state, x_test, y_test, job.task))
    out = {"params": {k: v.detach().numpy().copy() for k, v in net.state_dict().items()},
           "epoch_metrics": per_epoch, "train_seconds": seconds,
           "samples_per_second": job.epochs * n / seconds if seconds else None}
    if job.task == "classification":
        out["epoch_test_accuracy"] = [m["accuracy"] for m in per_epoch]
    return out
