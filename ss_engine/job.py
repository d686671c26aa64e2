"""A training job as the trainer describes it: public settings both servers agree on.

Everything here is public (the servers see it in the job record): the model description,
the task, the hyper-parameters and schedule, and the sample order of every epoch.  What the
servers must receive for a job (row shapes of every upload) and the size caps they apply are
derived here from the job's model description (``upload_shapes``), never from a registry.

Every field is checked by one rule of :data:`FIELD_RULES` (type and range) when a job is
made, whichever entry point makes it (the CLI, the local runtime, a server's ``submit``),
so a setting like ``epochs=1.5``, ``batch_size="x"``, ``epochs=True`` or ``lr=nan`` is
refused at once with a one-line :class:`JobError` naming the field.  A new field joins by
adding its rule; a test checks that every field has one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

from .description import DescriptionError, ModelCaps, ModelDescription, describe

__all__ = ["TrainJob", "JobError", "batch_order", "steps_per_epoch", "TASKS", "OPTIMIZERS",
           "UploadShapes", "upload_shapes", "FIELD_RULES", "IntRule", "FloatRule", "ChoiceRule",
           "ModelRule"]

#: classification: softmax cross-entropy over k >= 2 logits, one-hot labels;
#: regression: half the squared error summed over the outputs, float targets
TASKS = ("classification", "regression")
#: SGD with momentum and weight decay, or Adam (betas, eps; ``nn.optim``), both on shares
OPTIMIZERS = ("sgd", "adam")


class JobError(ValueError):
    """A training job description is invalid."""


def _is_integer(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _show(v) -> str:
    if _is_integer(v) or isinstance(v, (float, np.floating)):
        return repr(v.item() if isinstance(v, np.generic) else v)
    return f"{type(v).__name__} {str(v)[:40]!r}"


@dataclass(frozen=True)
class IntRule:
    """An integer (never a bool, never a float, even 2.0) in [lo, hi]."""

    lo: int
    hi: int

    def check(self, name: str, v):
        if not _is_integer(v) or not self.lo <= v <= self.hi:
            raise JobError(f"{name} must be an integer in [{self.lo}, {self.hi}], got {_show(v)}")
        return int(v)


@dataclass(frozen=True)
class FloatRule:
    """A finite real number (an int is accepted and made a float; a bool is not) in the
    interval from lo to hi, each end open or closed."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def check(self, name: str, v):
        ok = (_is_integer(v) or isinstance(v, (float, np.floating))) and math.isfinite(v)
        if ok:
            v = float(v)
            ok = (v > self.lo if self.lo_open else v >= self.lo) and \
                (v < self.hi if self.hi_open else v <= self.hi)
        if not ok:
            interval = f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
            raise JobError(f"{name} must be a finite number in {interval}, got {_show(v)}")
        return v


@dataclass(frozen=True)
class ChoiceRule:
    """One of a fixed tuple of strings."""

    choices: tuple

    def check(self, name: str, v):
        if not isinstance(v, str) or v not in self.choices:
            raise JobError(f"{name} must be one of {', '.join(self.choices)}, got {_show(v)}")
        return v


class ModelRule:
    """A :class:`ModelDescription`: one as given, its mapping (the wire form), or the name
    of a built-in network."""

    def check(self, name: str, v):
        try:
            return ModelDescription.from_dict(v) if isinstance(v, dict) else describe(v)
        except DescriptionError as exc:
            raise JobError(f"{name}: {exc}") from None


#: the type and range of every TrainJob field
FIELD_RULES: dict = {
    "model": ModelRule(),
    "epochs": IntRule(1, 10_000),
    "batch_size": IntRule(1, 65_536),
    "lr": FloatRule(0.0, 10.0, lo_open=True),
    "momentum": FloatRule(0.0, 1.0, hi_open=True),
    "weight_decay": FloatRule(0.0, 1.0, hi_open=True),
    "lr_step": IntRule(0, 10_000),
    "lr_gamma": FloatRule(0.0, 1.0, lo_open=True),
    "shuffle_seed": IntRule(0, 2**63 - 1),
    "loss_every": IntRule(0, 1 << 30),
    "task": ChoiceRule(TASKS),
    "optimizer": ChoiceRule(OPTIMIZERS),
    "beta1": FloatRule(0.0, 1.0, hi_open=True),
    "beta2": FloatRule(0.0, 1.0, lo_open=True, hi_open=True),
    "eps": FloatRule(0.0, 1.0),
}


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
    beta1: float = 0.9        # Adam's decay rates and eps (torch's defaults); unused by SGD
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        for f in fields(self):
            rule = FIELD_RULES.get(f.name)
            if rule is None:
                raise JobError(f"field {f.name} has no validation rule")  # a programming error
            # normalised (an int lr becomes a float), so both servers hash the same settings
            object.__setattr__(self, f.name, rule.check(f.name, getattr(self, f.name)))
        if self.optimizer == "adam" and not self.beta1 ** 2 < self.beta2:
            # Adam's normalised step m / sqrt(v) is bounded only then (``nn.optim.Adam``)
            raise JobError(f"adam needs beta1^2 < beta2, got beta1={self.beta1}, beta2={self.beta2}")
        if self.task == "classification" and self.model.num_outputs < 2:
            raise JobError(f"classification needs at least 2 outputs (one logit per class); the "
                           f"model has {self.model.num_outputs}")

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
            raise JobError(f"unknown job fields {sorted(str(k)[:40] for k in unknown)}")
        if "model" in d and not isinstance(d["model"], dict):
            # the wire carries the description itself: a server never looks a name up
            raise JobError("model must be a model description (a mapping)")
        return cls(**d)


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
