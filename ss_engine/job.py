"""A training job as the trainer describes it: public settings both servers agree on.

Everything here is public (the servers see it in the job record): the model description,
the task, the hyper-parameters and schedule, and the sample order of every epoch.  What the
servers must receive for a job (row shapes of every upload) and the size caps they apply are
derived here from the job's model description (``upload_shapes``), never from a registry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

from .description import DescriptionError, ModelCaps, ModelDescription, describe

__all__ = ["TrainJob", "JobError", "batch_order", "steps_per_epoch", "TASKS", "OPTIMIZERS",
           "UploadShapes", "upload_shapes"]

#: classification: softmax cross-entropy over k >= 2 logits, one-hot labels;
#: regression: half the squared error summed over the outputs, float targets
TASKS = ("classification", "regression")
#: "adam" is accepted by the job and trained by the torch twin; the secure update on shares
#: is not written yet, so a secure run refuses it (``training.train_party``)
OPTIMIZERS = ("sgd", "adam")


class JobError(ValueError):
    """A training job description is invalid."""


@dataclass(frozen=True)
class TrainJob:
    """``model`` is a :class:`ModelDescription` (a built-in name is resolved on creation)."""

    model: ModelDescription = field(default_factory=lambda: describe("network-a"))
    epochs: int = 1
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_step: int = 0          # multiply lr by lr_gamma every lr_step epochs (0: constant)
    lr_gamma: float = 0.1
    shuffle_seed: int = 0
    loss_every: int = 0       # report p_y shares to the trainer every N steps (0: never)
    task: str = "classification"
    optimizer: str = "sgd"

    def __post_init__(self):
        try:
            object.__setattr__(self, "model", ModelDescription.from_dict(self.model)
                               if isinstance(self.model, dict) else describe(self.model))
        except DescriptionError as exc:
            raise JobError(f"model: {exc}") from None
        if self.task not in TASKS:
            raise JobError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.optimizer not in OPTIMIZERS:
            raise JobError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.task == "classification" and self.model.num_outputs < 2:
            raise JobError(f"classification needs at least 2 outputs (one logit per class); the "
                           f"model has {self.model.num_outputs}")
        if not (1 <= self.epochs <= 10_000 and 1 <= self.batch_size <= 65_536):
            raise JobError("epochs must be in [1, 10000] and batch_size in [1, 65536]")
        if not (0 < self.lr <= 10 and 0 <= self.momentum < 1 and 0 <= self.weight_decay < 1):
            raise JobError("need 0 < lr <= 10, 0 <= momentum < 1, 0 <= weight_decay < 1")
        if self.lr_step < 0 or not 0 < self.lr_gamma <= 1 or self.loss_every < 0:
            raise JobError("need lr_step >= 0, 0 < lr_gamma <= 1, loss_every >= 0")

    def lr_at(self, epoch: int) -> float:
        return self.lr * (self.lr_gamma ** (epoch // self.lr_step) if self.lr_step else 1.0)

    @property
    def num_classes(self) -> int | None:
        return self.model.num_outputs if self.task == "classification" else None

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainJob":
        if not isinstance(d, dict):
            raise JobError("job must be a mapping")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise JobError(f"unknown job fields {sorted(unknown)}")
        if "model" in d and not isinstance(d["model"], dict):
            # the wire carries the description itself: a server never looks a name up
            raise JobError("model must be a model description (a mapping)")
        try:
            return cls(**d)
        except TypeError as exc:
            raise JobError(str(exc)) from None


@dataclass(frozen=True)
class UploadShapes:
    """Row shapes a server expects for a job: ``data/<part>/x`` and ``input/x`` rows are the
    flattened inputs, ``data/<part>/y`` rows one-hot labels (classification) or targets,
    ``param/<name>`` one row of the parameter's shape."""

    x: tuple
    y: tuple
    params: dict


def upload_shapes(job: TrainJob, caps: ModelCaps | None = None) -> UploadShapes:
    """What a server must receive for ``job``; JobError if its model exceeds ``caps``."""
    if caps is not None:
        try:
            job.model.check_caps(caps, job.batch_size)
        except DescriptionError as exc:
            raise JobError(str(exc)) from None
    return UploadShapes((job.model.input_size,), (job.model.num_outputs,), job.model.param_shapes())


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def batch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The public sample order of an epoch (not secret: it is known to both servers)."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)
