"""A training job as the trainer describes it: public settings both servers agree on.

Everything here is public (the servers see it in the job record): the model, the
hyper-parameters and schedule, and the sample order of every epoch.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .nn.models import MODEL_SPECS

__all__ = ["TrainJob", "JobError", "batch_order", "steps_per_epoch"]


class JobError(ValueError):
    """A training job description is invalid."""


@dataclass(frozen=True)
class TrainJob:
    model: str = "network-a"
    epochs: int = 1
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_step: int = 0          # multiply lr by lr_gamma every lr_step epochs (0: constant)
    lr_gamma: float = 0.1
    shuffle_seed: int = 0
    loss_every: int = 0       # report p_y shares to the trainer every N steps (0: never)

    def __post_init__(self):
        if self.model not in MODEL_SPECS:
            raise JobError(f"unknown model {self.model!r}")
        if not (1 <= self.epochs <= 10_000 and 1 <= self.batch_size <= 65_536):
            raise JobError("epochs must be in [1, 10000] and batch_size in [1, 65536]")
        if not (0 < self.lr <= 10 and 0 <= self.momentum < 1 and 0 <= self.weight_decay < 1):
            raise JobError("need 0 < lr <= 10, 0 <= momentum < 1, 0 <= weight_decay < 1")
        if self.lr_step < 0 or not 0 < self.lr_gamma <= 1 or self.loss_every < 0:
            raise JobError("need lr_step >= 0, 0 < lr_gamma <= 1, loss_every >= 0")

    def lr_at(self, epoch: int) -> float:
        return self.lr * (self.lr_gamma ** (epoch // self.lr_step) if self.lr_step else 1.0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainJob":
        if not isinstance(d, dict):
            raise JobError("job must be a mapping")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise JobError(f"unknown job fields {sorted(unknown)}")
        try:
            return cls(**d)
        except TypeError as exc:
            raise JobError(str(exc)) from None


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def batch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The public sample order of an epoch (not secret: it is known to both servers)."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)
