"""What every baseline shares: data in torch form, the networks, one training loop.

Plain PyTorch, float32, CPU. ``network-a`` is the MLP 784-128-128-10 with ReLU that the
engine also trains, so accuracies are comparable across schemes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ss_engine.datasets import load_dataset, normalize

__all__ = [
    "DEFAULT_THREADS",
    "THREADS_ENV",
    "TrainConfig",
    "Data",
    "setup_torch",
    "load_data",
    "network_a",
    "small_cnn",
    "make_model",
    "train",
    "predict",
    "accuracy",
    "key_rng",
    "lstsq",
    "matmul64",
    "write_json",
    "Stopwatch",
]

# One intra-op thread by default: these networks are small, and on a shared 2-core machine
# two OpenMP threads that compete with other processes made training 5-35x slower in
# measurements (VAE fit 0.46 s with 1 thread vs 16 s with 2 under load). Override with
# ``setup_torch(threads=...)`` or the environment variable SS_ENGINE_TORCH_THREADS.
DEFAULT_THREADS = 1
THREADS_ENV = "SS_ENGINE_TORCH_THREADS"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0


@dataclass(frozen=True)
class Data:
    """Flattened float32 images in [0, 1] (N, 784) and int64 labels (N,)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    name: str

    def subset(self, classes: tuple[int, ...]) -> "Data":
        mtr = _mask(self.y_train, classes)
        mte = _mask(self.y_test, classes)
        return Data(self.x_train[mtr], self.y_train[mtr], self.x_test[mte], self.y_test[mte], self.name)


def _mask(y: torch.Tensor, classes: tuple[int, ...]) -> torch.Tensor:
    m = torch.zeros_like(y, dtype=torch.bool)
    for c in classes:
        m |= y == c
    return m


def setup_torch(seed: int, threads: int | None = None) -> torch.Generator:
    """Fix the thread count and seeds; return a generator for data order."""
    if threads is None:
        threads = int(os.environ.get(THREADS_ENV, DEFAULT_THREADS))
    torch.set_num_threads(threads)
    _warm_up()
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _warm_up() -> None:
    """One tiny forward/backward so one-off start-up cost does not land in a timed run."""
    m = nn.Linear(8, 2)
    torch.optim.Adam(m.parameters()).zero_grad()
    m(torch.zeros(4, 8)).sum().backward()


def load_data(dataset: str = "mnist", train_limit: int | None = None,
              test_limit: int | None = None) -> Data:
    """Load a dataset through :mod:`ss_engine.datasets` as torch tensors."""
    xtr, ytr = load_dataset(dataset, "train", limit=train_limit)
    xte, yte = load_dataset(dataset, "test", limit=test_limit)

    def flat(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(normalize(x).reshape(len(x), -1))

    def lab(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.int64))

    return Data(flat(xtr), lab(ytr), flat(xte), lab(yte), dataset)


def network_a(in_features: int = 784, hidden: int = 128, classes: int = 10) -> nn.Sequential:
    """MLP 784-128-128-10, ReLU (the engine's network A)."""
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, classes),
    )


def small_cnn(classes: int = 10) -> nn.Sequential:
    """Conv(1->8,5)-ReLU-MaxPool2-Conv(8->16,5)-ReLU-MaxPool2-FC(256->100)-ReLU-FC(100->classes).

    Takes flattened (N, 784) inputs, like network-a, so the same data path serves both.
    """
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 100), nn.ReLU(),
        nn.Linear(100, classes),
    )


def make_model(name: str, classes: int = 10) -> nn.Module:
    if name == "network-a":
        return network_a(classes=classes)
    if name == "cnn":
        return small_cnn(classes=classes)
    raise ValueError(f"unknown model {name!r}; known: network-a, cnn")


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
          gen: torch.Generator, optimizer: str = "adam") -> list[float]:
    """Mini-batch training with cross-entropy; returns the mean loss per epoch."""
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    losses = []
    n = len(x)
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / max(n, 1))
    model.eval()
    return losses


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 2048) -> torch.Tensor:
    """Logits of ``model`` on ``x`` (evaluation mode)."""
    model.eval()
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)]) if len(x) else \
        torch.empty(0)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x).argmax(1) == y).float().mean())


def key_rng(key: bytes | str | int, purpose: str) -> np.random.Generator:
    """A numpy generator derived from a secret key and a purpose label (SHA-256 seeded)."""
    import hashlib

    if isinstance(key, int):
        key = key.to_bytes(32, "little", signed=True)
    elif isinstance(key, str):
        key = key.encode()
    digest = hashlib.sha256(purpose.encode() + b"\x00" + key).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "little")))


def lstsq(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """Minimum-norm least squares ``argmin_x ||a x - b||`` in float64, and ``rank(a)``.

    Runs in torch (SVD driver ``gelsd``), which honours ``torch.set_num_threads``; numpy's
    BLAS threads ignore it and were 8x slower on a loaded 2-core machine.
    """
    sol = torch.linalg.lstsq(torch.from_numpy(np.asarray(a, np.float64)),
                             torch.from_numpy(np.asarray(b, np.float64)), driver="gelsd")
    return sol.solution.numpy(), int(sol.rank)


def matmul64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in float64 through torch (same thread control as :func:`lstsq`)."""
    return (torch.from_numpy(np.ascontiguousarray(a, np.float64))
            @ torch.from_numpy(np.ascontiguousarray(b, np.float64))).numpy()


def write_json(result: dict, path: str | os.PathLike | None) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")


class Stopwatch:
    """``with Stopwatch() as t: ...; t.seconds``."""

    def __enter__(self) -> "Stopwatch":
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0
