"""The plaintext torch twin of each model: same spec, same initial weights, same batches.

Used by the tests (one secure SGD step against one torch step), by
``--compare-plaintext``, and by the trainer to evaluate a reconstructed model.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .nn.models import INPUT_SHAPES, MODEL_SPECS
from .job import TrainJob, batch_order, steps_per_epoch

__all__ = ["torch_model", "train_twin", "evaluate", "twin_step"]


def torch_model(name: str, params: dict[str, np.ndarray] | None = None) -> nn.Sequential:
    layers = []
    for layer in MODEL_SPECS[name]:
        kind = layer[0]
        if kind == "linear":
            layers.append(nn.Linear(layer[1], layer[2]))
        elif kind == "conv":
            _, cin, cout, k, stride, pad = layer
            layers.append(nn.Conv2d(cin, cout, k, stride=stride, padding=pad))
        elif kind == "relu":
            layers.append(nn.ReLU())
        elif kind == "maxpool":
            layers.append(nn.MaxPool2d(layer[1]))
        elif kind == "avgpool":
            layers.append(nn.AvgPool2d(layer[1]))
        elif kind == "flatten":
            layers.append(nn.Flatten())
    model = nn.Sequential(*layers)
    if params is not None:
        model.load_state_dict({k: torch.as_tensor(np.asarray(v, np.float32)) for k, v in params.items()})
    return model


def _x(name: str, x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.array(x, np.float32).reshape((len(x),) + INPUT_SHAPES[name]))


@torch.no_grad()
def evaluate(name: str, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
             batch_size: int = 2000) -> float:
    """Plaintext test accuracy of a (reconstructed) model."""
    model = torch_model(name, params).eval()
    correct = 0
    for s in range(0, len(x), batch_size):
        pred = model(_x(name, x[s:s + batch_size])).argmax(1).numpy()
        correct += int((pred == y[s:s + batch_size]).sum())
    return correct / max(1, len(x))


def _optimizer(model: nn.Module, job: TrainJob) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=job.lr, momentum=job.momentum,
                           weight_decay=job.weight_decay)


def twin_step(name: str, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
              job: TrainJob) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One float64 SGD step: (gradients of the batch-summed loss, updated parameters)."""
    model = torch_model(name, params).double()
    opt = torch.optim.SGD(model.parameters(), lr=job.lr, momentum=job.momentum,
                          weight_decay=job.weight_decay)
    loss = nn.functional.cross_entropy(model(_x(name, x).double()), torch.as_tensor(y, dtype=torch.long),
                                       reduction="sum")
    opt.zero_grad()
    loss.backward()
    grads = {k: p.grad.detach().numpy().copy() for k, p in model.named_parameters()}
    # the summed loss's gradient with lr / B reproduces torch's mean-loss step
    for g in opt.param_groups:
        g["lr"] = job.lr / len(x)
    opt.step()
    return grads, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def train_twin(name: str, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
               job: TrainJob, x_test: np.ndarray | None = None, y_test: np.ndarray | None = None,
               threads: int | None = None) -> dict:
    """Float32 training with the secure run's schedule; per-epoch test accuracy.

    ``threads`` is left to torch unless given: on a loaded 2-core machine torch's spinning
    pool can make 2 threads far slower than 1, so benchmarks choose it explicitly."""
    torch.manual_seed(0)
    if threads is not None:
        torch.set_num_threads(threads)
    model = torch_model(name, params)
    opt = _optimizer(model, job)
    n = len(x)
    spe = steps_per_epoch(n, job.batch_size)
    xt = _x(name, x)
    yt = torch.as_tensor(np.array(y, dtype=np.int64))
    accs, seconds = [], 0.0
    import time
    for epoch in range(job.epochs):
        for g in opt.param_groups:
            g["lr"] = job.lr_at(epoch)
        order = torch.as_tensor(batch_order(n, job.shuffle_seed, epoch))
        t0 = time.perf_counter()
        model.train()
        for i in range(spe):
            idx = order[i * job.batch_size:(i + 1) * job.batch_size]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds += time.perf_counter() - t0
        if x_test is not None:
            state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
            accs.append(evaluate(name, state, x_test, y_test))
    return {"params": {k: v.detach().numpy().copy() for k, v in model.state_dict().items()},
            "epoch_test_accuracy": accs, "train_seconds": seconds,
            "samples_per_second": job.epochs * n / seconds if seconds else None}
